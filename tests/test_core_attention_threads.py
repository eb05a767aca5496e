"""A large layer's heads and projections share the cores: the same numbers, bit for bit, on 1, 2 or 4 threads, and
every product on one BLAS thread (so the numbers do not depend on the machine's cores either)."""

import math
import sys

import attention_v1
import numpy as np
import pytest

from qkvgui.core import NonFiniteError, attention, multi_head_attention, parallel
from qkvgui.core.parallel import one_blas_thread

threadpoolctl = pytest.importorskip("threadpoolctl")

FIELDS = ("q", "k", "v", "head_outputs", "concat", "output", "residual", "weights_pooled")
STEPS = ("scores", "scaled", "masked", "weights")


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def layer(rng, n=150, h=4, d_model=48, d_k=32, d_v=24):
    return {
        "x_q": rng.standard_normal((n, d_model)),
        "w_q": rng.standard_normal((h, d_model, d_k)) / np.sqrt(d_model),
        "w_k": rng.standard_normal((h, d_model, d_k)) / np.sqrt(d_model),
        "w_v": rng.standard_normal((h, d_model, d_v)) / np.sqrt(d_model),
        "w_o": rng.standard_normal((h * d_v, d_model)) / np.sqrt(h * d_v),
    }


@pytest.fixture
def threads_used(monkeypatch):
    """The largest number of threads a layer's tasks were given, with the machine's cores set by cores(n)."""
    seen = []
    real = parallel.run_tasks

    def spy(tasks, threads):
        seen.append(threads if len(tasks) > 1 else 1)
        return real(tasks, threads)

    monkeypatch.setattr(attention, "run_tasks", spy)

    def cores(n):
        monkeypatch.setattr(parallel, "_cores", lambda: n)
        seen.clear()

    return cores, seen


def loop_reference(x, w_q, w_k, w_v, w_o, b_o=None, causal=True):
    """Head by head, query row by query row: the scores of a row, its stable softmax over the visible keys
    (math.fsum), its output; then the output projection row by row. Independent of the core's blocks and threads."""
    h, _, d_k = w_q.shape
    n = len(x)
    weights = np.zeros((h, n, n))
    outs = np.zeros((h, n, w_v.shape[2]))
    for head in range(h):
        q, k, v = x @ w_q[head], x @ w_k[head], x @ w_v[head]
        for i in range(n):
            seen = i + 1 if causal else n
            logits = [float(np.dot(q[i], k[j])) / math.sqrt(d_k) for j in range(seen)]
            top = max(logits)
            e = [math.exp(s - top) for s in logits]
            total = math.fsum(e)
            weights[head, i, :seen] = [a / total for a in e]
            outs[head, i] = weights[head, i] @ v
    concat = np.concatenate(list(outs), axis=1)
    output = np.array([row @ w_o for row in concat]) + (0 if b_o is None else b_o)
    return weights, outs, output


def test_a_large_layer_runs_on_several_threads_and_matches_a_loop_reference(threads_used):
    cores, seen = threads_used
    cores(2)
    args = layer(np.random.default_rng(0))
    r = multi_head_attention(*args.values(), causal=True, keep_head=1)
    assert max(seen) == 2  # the heads and the projections were shared between two threads
    weights, outs, output = loop_reference(*args.values())
    np.testing.assert_allclose(r.weights, weights, rtol=0, atol=1e-13)
    np.testing.assert_allclose(r.head_outputs, outs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(r.output, output, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(r.head(1).weights, r.weights[1], strict=True)


@pytest.mark.parametrize("options", [{"causal": True, "keep_head": 2}, {"keep_head": 0}, {"causal": True}])
def test_the_number_of_threads_never_changes_a_bit(threads_used, options):
    cores, seen = threads_used
    args = layer(np.random.default_rng(1))
    options = options | {"b_o": np.random.default_rng(2).standard_normal(args["x_q"].shape[1])}
    results = {}
    for n in (1, 2, 4):
        cores(n)
        results[n] = multi_head_attention(*args.values(), **options)
        assert max(seen) == n
    with one_blas_thread():
        old = attention_v1.multi_head_attention(
            *args.values(), **{k: v for k, v in options.items() if k != "keep_head"}
        )
    for n, r in results.items():
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(r, name), getattr(results[1], name), err_msg=f"{n}: {name}")
        for name in ("q", "k", "v", "head_outputs", "output", "residual"):
            np.testing.assert_array_equal(getattr(r, name), getattr(old, name), err_msg=f"{n}: {name} vs old")
        for head in range(r.n_heads):
            for name in STEPS:
                np.testing.assert_array_equal(
                    getattr(r.head(head), name), getattr(old, name)[head], err_msg=f"{n}: head {head} {name}"
                )


def test_an_edit_of_one_head_on_threads_gives_a_fresh_computations_bits(threads_used):
    cores, _ = threads_used
    cores(2)
    args = layer(np.random.default_rng(3), h=6)
    before = multi_head_attention(*args.values(), causal=True, keep_head=3)
    args["w_k"] = args["w_k"].copy()
    args["w_k"][4, 0, 0] += 0.25  # head 4's W_K
    same = np.ones(6, bool)
    same_kv = same.copy()
    same_kv[4] = False
    after = multi_head_attention(*args.values(), causal=True, keep_head=3, reuse=(before, same, same_kv))
    fresh = multi_head_attention(*args.values(), causal=True, keep_head=3)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(after, name), getattr(fresh, name), err_msg=name)
    assert after.head(3) is before.head(3)  # the selected head carried over
    assert after.visible is before.visible  # the same mask: not another n × n copy


def test_blas_is_held_to_one_thread_while_a_large_layer_computes_and_released_after(threads_used, monkeypatch):
    cores, _ = threads_used
    cores(2)
    before = blas_threads()
    if not before or not parallel.blas_limited():
        pytest.skip("no BLAS library threadpoolctl can drive")
    during = []
    real = attention._softmax_rows

    def spy(*a, **kw):
        during.append(blas_threads())
        return real(*a, **kw)

    monkeypatch.setattr(attention, "_softmax_rows", spy)
    multi_head_attention(*layer(np.random.default_rng(4)).values(), causal=True)
    assert during and all(t == [1] * len(before) for t in during)
    assert blas_threads() == before


def test_an_overflow_in_a_threaded_head_is_reported_and_the_threads_stop(threads_used):
    cores, _ = threads_used
    cores(2)
    args = layer(np.random.default_rng(5))
    args["w_q"][2] *= 1e156  # head 2's scores overflow (its Q and K stay finite)
    args["w_k"][2] *= 1e156
    with pytest.raises(NonFiniteError, match="scaled scores"):
        multi_head_attention(*args.values(), causal=True, keep_head=0)
    r = multi_head_attention(*layer(np.random.default_rng(5)).values(), causal=True)  # the threads still work
    assert np.isfinite(r.output).all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="small pages are asked of Linux")
def test_a_large_fresh_step_array_asks_for_small_pages():
    # A fresh huge page can cost ~0.3 s per 128 MB on a virtual machine; the n × n steps ask for small pages.
    a = parallel.fresh_array((2048, 2048), np.dtype(np.float64))  # 32 MiB
    assert a.shape == (2048, 2048) and a.dtype == np.float64 and a.flags.writeable and a.flags.c_contiguous
    address = a.ctypes.data + a.nbytes // 2
    flags = None
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                flags = line.split()[1:]
                break
    assert flags is not None
    assert "nh" in flags  # MADV_NOHUGEPAGE
    small = parallel.fresh_array((10, 10), np.dtype(np.float32))  # small arrays are plain np.empty
    assert small.shape == (10, 10) and small.dtype == np.float32
