"""The core against an independent loop reference, PyTorch's attention, and properties that must always hold."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_attention

from qkvgui.core import NonFiniteError, ShapeError, multi_head_attention, softmax

DATA = Path(__file__).parent / "data" / "torch_reference.npz"
ARGS = ("x_q", "w_q", "w_k", "w_v", "w_o")


def random_layer(rng, h=2, d_model=6, d_k=3, d_v=3, n_q=5, n_k=None):
    n_k = n_q if n_k is None else n_k
    layer = {
        "x_q": rng.standard_normal((n_q, d_model)),
        "w_q": rng.standard_normal((h, d_model, d_k)),
        "w_k": rng.standard_normal((h, d_model, d_k)),
        "w_v": rng.standard_normal((h, d_model, d_v)),
        "w_o": rng.standard_normal((h * d_v, d_model)),
    }
    return layer, (rng.standard_normal((n_k, d_model)) if n_k != n_q else None)


def run(layer, **kw):
    return multi_head_attention(*(layer[a] for a in ARGS), **kw)


def torch_cases():
    data = np.load(DATA, allow_pickle=False)
    names = sorted({key.split("/")[0] for key in data.files})
    for name in names:
        fields = {key.split("/")[1]: data[key] for key in data.files if key.startswith(name + "/")}
        yield pytest.param(fields, id=name)


def core_kwargs(fields):
    kw = {k: fields[k] for k in ("x_kv", "b_q", "b_k", "b_v", "b_o", "key_padding_mask") if k in fields}
    if "causal" in fields:
        kw["causal"] = bool(fields["causal"])
    if "scale" in fields:
        kw["scale"] = float(fields["scale"])
    return kw


@pytest.mark.parametrize("fields", list(torch_cases()))
def test_matches_pytorch_reference(fields):
    r = multi_head_attention(*(fields[a] for a in ARGS), **core_kwargs(fields))
    np.testing.assert_allclose(r.weights, fields["torch_weights"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.output, fields["torch_output"], rtol=1e-9, atol=1e-9)
    assert np.isfinite(r.residual).all()


@pytest.mark.parametrize("fields", list(torch_cases()))
def test_matches_pytorch_live(fields):
    pytest.importorskip("torch")
    import make_torch_reference

    inputs = {k: v for k, v in fields.items() if not k.startswith("torch_")}
    if "causal" in inputs:
        inputs["causal"] = bool(inputs["causal"])
    if "scale" in inputs:
        inputs["scale"] = float(inputs["scale"])
    weights, output = make_torch_reference.torch_attention(inputs)
    r = multi_head_attention(*(fields[a] for a in ARGS), **core_kwargs(fields))
    np.testing.assert_allclose(r.weights, weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.output, output, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"causal": True},
        {"cross": 4, "pad": [False, True, False, True]},
        {"cross": 3, "causal": True, "pad": [True, False, False]},  # query 0 sees no key at all
        {"biases": True, "scale": 0.5},
    ],
)
def test_every_intermediate_matches_loop_reference(kw):
    rng = np.random.default_rng(7)
    layer, x_kv = random_layer(rng, h=2, d_model=5, d_k=3, d_v=2, n_q=4, n_k=kw.get("cross", 4))
    extra = {}
    if kw.get("biases"):
        extra = {
            "b_q": rng.standard_normal((2, 3)),
            "b_k": rng.standard_normal((2, 3)),
            "b_v": rng.standard_normal((2, 2)),
            "b_o": rng.standard_normal(5),
        }
    pad = np.array(kw["pad"]) if "pad" in kw else None
    r = run(layer, x_kv=x_kv, causal=kw.get("causal", False), key_padding_mask=pad, scale=kw.get("scale"), **extra)
    w_ref, heads_ref, out_ref = reference_attention(
        *(layer[a] for a in ARGS), x_kv=x_kv, causal=kw.get("causal", False), pad=pad, scale=kw.get("scale"), **extra
    )
    np.testing.assert_allclose(r.weights, w_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.head_outputs, heads_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.output, out_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(r.residual, layer["x_q"] + out_ref, rtol=1e-12, atol=1e-13)
    # The named intermediates relate to each other as the formulas on the panels say.
    kv = layer["x_q"] if x_kv is None else x_kv
    np.testing.assert_allclose(r.q[1], layer["x_q"] @ layer["w_q"][1] + extra.get("b_q", np.zeros((2, 3)))[1])
    np.testing.assert_allclose(r.v[0], kv @ layer["w_v"][0] + extra.get("b_v", np.zeros((2, 2)))[0])
    np.testing.assert_allclose(r.scores, r.q @ np.swapaxes(r.k, 1, 2))
    np.testing.assert_allclose(r.scaled, r.scores * r.scale)
    np.testing.assert_array_equal(r.concat[:, :2], r.head_outputs[0])
    np.testing.assert_array_equal(r.concat[:, 2:], r.head_outputs[1])
    hidden = ~r.visible
    assert np.all(np.isneginf(r.masked[:, hidden]))
    np.testing.assert_array_equal(r.masked[:, ~hidden], r.scaled[:, ~hidden])


def test_fully_masked_row_is_zero_and_reported():
    rng = np.random.default_rng(1)
    layer, x_kv = random_layer(rng, n_q=3, n_k=4)
    r = run(layer, x_kv=x_kv, key_padding_mask=np.ones(4, bool))
    assert r.dead_rows.tolist() == [0, 1, 2]
    assert np.all(r.weights == 0) and np.all(r.head_outputs == 0)
    np.testing.assert_allclose(r.residual, layer["x_q"])  # nothing is written
    r = run(layer, x_kv=x_kv, causal=True, key_padding_mask=np.array([True, False, False, False]))
    assert r.dead_rows.tolist() == [0]
    assert not np.isnan(r.weights).any()


def test_default_scale_and_default_dtype():
    rng = np.random.default_rng(2)
    layer, _ = random_layer(rng, d_k=4)
    r = run(layer)
    assert r.scale == 0.5
    assert r.weights.dtype == np.float64
    r32 = run({k: v.astype(np.float32) for k, v in layer.items()})
    assert r32.weights.dtype == np.float32 and r32.output.dtype == np.float32
    ints = run({k: np.round(v).astype(int) for k, v in layer.items()})
    assert ints.output.dtype == np.float64


def test_result_is_immutable():
    rng = np.random.default_rng(3)
    layer, _ = random_layer(rng)
    r = run(layer)
    with pytest.raises(ValueError):
        r.weights[0, 0, 0] = 1.0
    with pytest.raises(AttributeError):
        r.weights = None


@pytest.mark.parametrize("logit", [1e4, -1e4, 7e2])
def test_softmax_is_stable_for_huge_logits(logit):
    import math

    row = [logit, logit - 1.0, logit - 2.5, -np.inf]
    s = softmax(np.array([row]))
    exps = [math.exp(v - logit) for v in row[:3]]  # shifted by hand, so nothing overflows
    expected = [e / math.fsum(exps) for e in exps] + [0.0]
    np.testing.assert_allclose(s[0], expected, rtol=1e-12)


def test_huge_logits_in_attention_stay_finite():
    rng = np.random.default_rng(4)
    layer, _ = random_layer(rng)
    r = run(layer, scale=1e4)
    assert np.isfinite(r.weights).all()
    np.testing.assert_allclose(r.weights.sum(-1), 1.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda L: L.update(w_k=L["w_k"][:, :, :2]),
            "W_K has d_k = 2 but W_Q has d_k = 3: the scores Q·Kᵀ need the same d_k",
        ),
        (lambda L: L.update(x_q=L["x_q"][:, :4]), "X has d_model = 4 but W_Q has d_model = 6"),
        (lambda L: L.update(w_v=L["w_v"][:1]), "W_V has heads = 1 but W_K has heads = 2"),
        (lambda L: L.update(w_o=L["w_o"][:5]), "W_O has rows = 5 but heads·d_v has rows = 6"),
        (lambda L: L.update(w_q=L["w_q"][0]), "W_Q must be 3-D"),
    ],
)
def test_bad_shapes_name_both_sides(change, message):
    layer, _ = random_layer(np.random.default_rng(5))
    change(layer)
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("·", ".")):
        run(layer)


def test_bad_padding_and_bias_shapes():
    layer, _ = random_layer(np.random.default_rng(5))
    with pytest.raises(ShapeError, match="padding mask has 3 entries but there are 5 keys"):
        run(layer, key_padding_mask=np.zeros(3, bool))
    with pytest.raises(ShapeError, match="b_Q has shape"):
        run(layer, b_q=np.zeros(3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_with_location(bad):
    layer, _ = random_layer(np.random.default_rng(6))
    layer["w_v"][1, 2, 0] = bad
    with pytest.raises(NonFiniteError, match=r"W_V holds .* at \[1, 2, 0\]"):
        run(layer)
    layer, _ = random_layer(np.random.default_rng(6))
    with pytest.raises(NonFiniteError, match="scale"):
        run(layer, scale=np.nan)


def test_overflow_is_reported_not_returned_as_nan():
    layer, _ = random_layer(np.random.default_rng(6))
    layer["x_q"] *= 1e200
    with pytest.raises(NonFiniteError, match="overflowed"):
        run(layer)


def test_an_overflow_inside_a_switched_off_head_is_reported_not_left_in_v():
    """The head writes nothing, so the residual stays finite; its V would hold inf and is refused by name."""
    layer, _ = random_layer(np.random.default_rng(7))
    h = layer["w_v"].shape[0]
    layer["w_v"] = layer["w_v"].copy()
    layer["w_v"][0] = 1.5e308  # finite, but X·W_V is not
    off = np.zeros(h, bool)
    off[0] = True
    with pytest.raises(NonFiniteError, match=r"V = X_kv·W_V \+ b_V overflowed"):
        run(layer, ablate=off)


# ---- properties -------------------------------------------------------------------------------------------

dims = st.integers(min_value=1, max_value=5)


@st.composite
def layers(draw, cross=None):
    h, d_model, d_k, d_v, n_q = draw(dims), draw(dims), draw(dims), draw(dims), draw(dims)
    cross = draw(st.booleans()) if cross is None else cross
    n_k = draw(dims) if cross else n_q
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    layer, _ = random_layer(rng, h=h, d_model=d_model, d_k=d_k, d_v=d_v, n_q=n_q)
    x_kv = rng.standard_normal((n_k, d_model)) * 3 if cross else None
    pad = rng.random(n_k) < 0.3 if draw(st.booleans()) else None
    return layer, x_kv, pad, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(layers())
def test_weight_rows_sum_to_one_or_zero(case):
    layer, x_kv, pad, causal = case
    r = run(layer, x_kv=x_kv, key_padding_mask=pad, causal=causal)
    sums = r.weights.sum(axis=-1)
    dead = np.zeros(r.weights.shape[1], bool)
    dead[r.dead_rows] = True
    np.testing.assert_allclose(sums[:, ~dead], 1.0, rtol=1e-12)
    assert np.all(sums[:, dead] == 0)
    assert np.all(r.weights >= 0)
    assert np.isfinite(r.residual).all()
    assert np.all(r.weights[:, ~r.visible] == 0)


@settings(max_examples=80, deadline=None)
@given(layers(cross=False))
def test_causal_weights_are_zero_above_the_diagonal(case):
    layer, _, _, _ = case
    r = run(layer, causal=True)
    n = r.weights.shape[1]
    assert np.all(r.weights[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] == 0)
    np.testing.assert_allclose(r.weights[:, 0, 0], 1.0)  # the first token can only see itself


@settings(max_examples=80, deadline=None)
@given(layers(cross=False), st.randoms(use_true_random=False))
def test_unmasked_self_attention_is_permutation_equivariant(case, rnd):
    layer, _, _, _ = case
    n = layer["x_q"].shape[0]
    perm = list(range(n))
    rnd.shuffle(perm)
    r = run(layer)
    permuted = dict(layer, x_q=layer["x_q"][perm])
    rp = run(permuted)
    np.testing.assert_allclose(rp.output, r.output[perm], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rp.weights, r.weights[:, perm][:, :, perm], rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(layers(cross=True))
def test_cross_attention_shapes_follow_both_sequences(case):
    layer, x_kv, pad, causal = case
    x_kv = layer["x_q"][:1] if x_kv is None else x_kv
    r = run(layer, x_kv=x_kv, key_padding_mask=None if pad is None else pad[: len(x_kv)], causal=causal)
    h, n_q, n_k = layer["w_q"].shape[0], len(layer["x_q"]), len(x_kv)
    d_v, d_model = layer["w_v"].shape[2], layer["x_q"].shape[1]
    assert r.scores.shape == r.weights.shape == (h, n_q, n_k)
    assert r.head_outputs.shape == (h, n_q, d_v)
    assert r.concat.shape == (n_q, h * d_v)
    assert r.output.shape == r.residual.shape == (n_q, d_model)
    w_ref, _, out_ref = reference_attention(
        *(layer[a] for a in ARGS), x_kv=x_kv, causal=causal, pad=None if pad is None else pad[:n_k]
    )
    np.testing.assert_allclose(r.weights, w_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.output, out_ref, rtol=1e-9, atol=1e-10)


def test_single_key_gets_all_the_weight():
    layer, _ = random_layer(np.random.default_rng(8), h=1, n_q=3)
    r = run(layer, x_kv=np.ones((1, 6)))
    assert np.all(r.weights == 1.0)
    np.testing.assert_allclose(r.head_outputs[0], np.repeat(np.ones((1, 6)) @ layer["w_v"][0], 3, axis=0))


def test_ablated_heads_write_nothing():
    layer, _ = random_layer(np.random.default_rng(9), h=3, d_v=2)
    full = run(layer)
    r = run(layer, ablate=[False, True, False])
    np.testing.assert_array_equal(r.weights, full.weights)  # the pattern is still there to see
    assert not r.head_outputs[1].any() and not r.concat[:, 2:4].any()
    np.testing.assert_allclose(r.output, full.concat[:, [0, 1, 4, 5]] @ layer["w_o"][[0, 1, 4, 5]])
    with pytest.raises(ShapeError, match="one flag per head"):
        run(layer, ablate=[True])
