"""Per-head intermediates on demand and blockwise outputs: the same numbers as before, bit for bit, in less memory.

`attention_v1` is the core as it was when every head's n_q × n_k steps were kept; the lazy result must give
exactly its numbers (not merely close ones) for every field a user reads, whatever the block size.
"""

import tracemalloc

import attention_v1
import numpy as np
import pytest

from qkvgui.core import attention
from qkvgui.core.attention import block_max, multi_head_attention
from qkvgui.core.parallel import one_blas_thread

FIELDS_N = ("q", "k", "v", "head_outputs", "concat", "output", "residual", "visible", "dead_rows")
FIELDS_NN = ("scores", "scaled", "masked", "weights")


def layer(rng, *, n_q, n_k=None, h=3, d_model=16, d_k=8, d_v=None, dtype=np.float64, biases=False):
    d_v = d_k if d_v is None else d_v
    args = {
        "x_q": rng.standard_normal((n_q, d_model)),
        "w_q": rng.standard_normal((h, d_model, d_k)) / np.sqrt(d_model),
        "w_k": rng.standard_normal((h, d_model, d_k)) / np.sqrt(d_model),
        "w_v": rng.standard_normal((h, d_model, d_v)) / np.sqrt(d_model),
        "w_o": rng.standard_normal((h * d_v, d_model)) / np.sqrt(h * d_v),
    }
    kw = {}
    if n_k is not None:
        kw["x_kv"] = rng.standard_normal((n_k, d_model))
    if biases:
        kw |= {
            "b_q": rng.standard_normal((h, d_k)),
            "b_k": rng.standard_normal((h, d_k)),
            "b_v": rng.standard_normal((h, d_v)),
            "b_o": rng.standard_normal(d_model),
        }
    args = {k: v.astype(dtype) for k, v in args.items()}
    kw = {k: v.astype(dtype) for k, v in kw.items()}
    return args, kw


def old_core(*args, **kw):
    """The old core's numbers with every product on one BLAS thread, as the core now runs a large layer's (with
    BLAS's own threads, a product's last bits depend on how many cores the machine has)."""
    with one_blas_thread():
        return attention_v1.multi_head_attention(*args, **kw)


def both(args, kw, **options):
    new = multi_head_attention(*args.values(), **kw, **options)
    old = old_core(*args.values(), **kw, **options)
    return new, old


def assert_same_bits(new, old):
    for name in FIELDS_N + FIELDS_NN:
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name, strict=True)
    for h in range(new.n_heads):
        one = new.head(h)
        for name in FIELDS_NN:
            np.testing.assert_array_equal(
                getattr(one, name), getattr(old, name)[h], err_msg=f"head {h} {name}", strict=True
            )
    assert new.scale == old.scale


CASES = {
    "teaching size": ({"n_q": 6}, {"causal": True}),
    "no mask": ({"n_q": 7}, {}),
    "cross, padding, a query that sees nothing": (
        {"n_q": 5, "n_k": 4},
        {"causal": True, "key_padding_mask": np.array([True, False, False, True])},
    ),
    "biases, custom scale, a switched-off head": (
        {"n_q": 9, "biases": True},
        {"scale": 0.3, "ablate": [False, True, False]},
    ),
    "float32": ({"n_q": 8, "dtype": np.float32}, {"causal": True}),
    "one token": ({"n_q": 1}, {"causal": True}),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_small_layers_give_the_old_numbers_bit_for_bit(case):
    shape, options = CASES[case]
    args, kw = layer(np.random.default_rng(1), **shape)
    assert_same_bits(*both(args, kw, **options))


@pytest.mark.parametrize(
    "options",
    [
        {"causal": True},
        {},
        {"causal": True, "key_padding_mask": np.r_[np.ones(70, bool), np.zeros(1030, bool)]},  # rows 0..69 see nothing
    ],
)
def test_long_layers_computed_in_blocks_give_the_old_numbers_bit_for_bit(options):
    # 1,100 tokens with 64-wide heads: the softmax runs in blocks of 235 query rows; the old path kept every step.
    args, kw = layer(np.random.default_rng(2), n_q=1100, h=2, d_model=96, d_k=64)
    assert len(attention._row_blocks(1100, 1100, 5)) == 5
    assert_same_bits(*both(args, kw, **options))


def test_block_boundaries_do_not_change_a_bit(monkeypatch):
    # Blocks of 64, 128 and 256 rows (a short one last), and one row at a time.
    args, kw = layer(np.random.default_rng(3), n_q=700, n_k=650, h=2, d_model=32, d_k=64)
    old = old_core(*args.values(), **kw, causal=True)
    for entries in (64 * 650, 128 * 650, 256 * 650, 1):
        monkeypatch.setattr(attention, "BLOCK_ENTRIES", entries)
        new = multi_head_attention(*args.values(), **kw, causal=True)
        for name in ("head_outputs", "output", "residual"):
            np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=f"{entries}: {name}")


def test_the_result_never_holds_every_heads_n_by_n_steps():
    # 12 heads × 1,024²: the old result kept 4 × 96 MiB; now each thread's one n × n buffer at a time beside Q, K, V,
    # and the result keeps none: one head's four steps are made when asked for.
    from qkvgui.core.parallel import task_threads

    n, h = 1024, 12
    args, kw = layer(np.random.default_rng(4), n_q=n, h=h, d_model=64, d_k=16)
    one_field, nn = h * n * n * 8, n * n * 8
    threads = task_threads(h, True)  # up to 4 threads share the heads (as many as the machine's cores)
    tracemalloc.start()
    try:
        r = multi_head_attention(*args.values(), **kw, causal=True)
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        weights = r.head(5).weights
        _, head_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < one_field / 4, f"the result keeps {kept / 2**20:.0f} MiB"  # Q, K, V, outputs: no n × n step
    # while computing: one n × n buffer per thread (and small blocks) beyond what the result keeps
    assert peak - kept < threads * nn + nn / 2, f"computing the layer peaked at {peak / 2**20:.0f} MiB"
    assert peak < one_field / 2
    # one head asked for: its four steps (scores, scaled, masked, weights) and no n × n temporary beside them
    assert head_peak - kept < r.head_nbytes() + nn / 2, f"one head's steps peaked at {head_peak / 2**20:.0f} MiB"
    assert weights.shape == (n, n) and r.head_nbytes() == 4 * nn


def test_recently_viewed_heads_are_kept_within_the_budget(monkeypatch):
    args, kw = layer(np.random.default_rng(5), n_q=40, h=4)
    r = multi_head_attention(*args.values(), **kw, causal=True)
    first = r.head(0)
    assert r.head(0) is first  # kept: asking again costs nothing
    assert r.head(-4) is first
    monkeypatch.setattr(attention, "HEAD_CACHE_BYTES", 2 * r.head_nbytes())
    r.head(1)
    r.head(2)  # room for two: head 0, the least recently viewed, goes
    assert r.head(2) is r.head(2) and r.head(1) is r.head(1)
    assert r.head(0) is not first
    np.testing.assert_array_equal(r.head(0).weights, first.weights)
    with pytest.raises(IndexError):
        r.head(4)


def test_full_fields_are_computed_once_and_read_only():
    args, kw = layer(np.random.default_rng(6), n_q=10, h=2)
    r = multi_head_attention(*args.values(), **kw, causal=True)
    assert r.weights is r.weights
    assert r.weights.shape == (2, 10, 10)
    with pytest.raises(ValueError):
        r.head(1).weights[0, 0] = 1.0
    with pytest.raises(ValueError):
        r.scores[0, 0, 0] = 1.0
    np.testing.assert_allclose(r.weights.sum(axis=-1), 1.0)


def loop_block_max(a, fy, fx):
    rows, cols = -(-a.shape[0] // fy), -(-a.shape[1] // fx)
    out = np.empty((rows, cols))
    for i in range(rows):
        for j in range(cols):
            out[i, j] = a[i * fy : (i + 1) * fy, j * fx : (j + 1) * fx].max()
    return out


@pytest.mark.parametrize("shape, f", [((10, 10), (2, 2)), ((11, 7), (3, 2)), ((5, 9), (1, 4)), ((4, 4), (1, 1))])
def test_block_max_keeps_the_largest_value_of_each_block(shape, f):
    a = np.random.default_rng(7).standard_normal(shape)
    np.testing.assert_array_equal(block_max(a, *f), loop_block_max(a, *f))


def test_overview_of_every_head_keeps_a_one_token_attention_line():
    # 600 tokens, pooled 3 × 3: head 1 attends only to token 0 (an attention sink), a one-pixel line in 600.
    n = 600
    args, kw = layer(np.random.default_rng(8), n_q=n, h=2, d_model=8, d_k=4)
    x = args["x_q"]
    x[:, 0] = 1.0
    x[0, 1] = 30.0  # only token 0 has a large key component
    args["w_q"][1] = 0.0
    args["w_k"][1] = 0.0
    args["w_q"][1][0, 0] = 10.0
    args["w_k"][1][1, 0] = 10.0
    r = multi_head_attention(*args.values(), **kw, causal=True)
    assert r.pool == 3 and r.weights_pooled.shape == (2, 200, 200)
    np.testing.assert_array_equal(r.weights_pooled[0], loop_block_max(r.head(0).weights, 3, 3))
    np.testing.assert_array_equal(r.weights_pooled[1], loop_block_max(r.head(1).weights, 3, 3))
    assert np.all(r.weights_pooled[1][:, 0] > 0.99)  # the sink column survives pooling at full strength


def test_an_edit_of_one_head_recomputes_that_head_only_and_gives_the_same_numbers():
    args, kw = layer(np.random.default_rng(9), n_q=300, h=4, d_model=16, d_k=8)
    before = multi_head_attention(*args.values(), **kw, causal=True, keep_head=2)
    assert before._cache.heads.keys() == {2}  # the kept head came with the layer
    args["w_q"] = args["w_q"].copy()
    args["w_q"][1, 3, 2] += 0.5  # one cell of head 2's W_Q (index 1)
    same_q = np.array([True, False, True, True])
    after = multi_head_attention(
        *args.values(), **kw, causal=True, keep_head=2, reuse=(before, same_q, np.ones(4, bool))
    )
    fresh = old_core(*args.values(), **kw, causal=True)
    assert_same_bits(after, fresh)
    assert after.head(2) is before.head(2)  # the selected head did not change: its steps carry over
    assert not np.array_equal(after.head_outputs[1], before.head_outputs[1])


def test_the_session_carries_unchanged_heads_over_and_matches_a_fresh_computation():
    from qkvgui import Session
    from qkvgui.state import compute_state

    s = Session()
    s.set_state(__import__("qkvgui.ui.bench_gui", fromlist=["_layer_state"])._layer_state(s.state(), 200, 24, 3, 8))
    first = s.state()
    results = compute_state(first)
    for k, edit in enumerate(
        (
            lambda: s.set_block("W_Q", 2, 1, np.array([[0.7]]), head=1),
            lambda: s.set_block("W_O", 0, 0, np.array([[0.2]])),
            lambda: s.set_block("X", 5, 5, np.array([[1.5]])),
        )
    ):
        edit()
        state = s.state()
        carried = compute_state(state, (first, results))
        plain = compute_state(state)
        for a, b in zip(carried, plain, strict=True):
            for name in FIELDS_N:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
            np.testing.assert_array_equal(a.head(state.head).weights, b.head(state.head).weights)
        # Head 1's W_Q or W_O changed: the selected head 0 was carried over, not recomputed; X changes every head.
        assert (carried[0].head(0) is results[0].head(0)) == (k < 2)
        first, results = state, carried
