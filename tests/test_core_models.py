"""The forward pass of real model families: its pieces against independent loops, and one attention implementation."""

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from qkvgui.core import multi_head_attention  # noqa: E402
from qkvgui.core.models import (  # noqa: E402
    AttentionWeights,
    Block,
    Embedding,
    Mlp,
    Model,
    ModelError,
    Norm,
    Stack,
    gelu_exact,
    gelu_tanh,
    run,
)


def test_exact_gelu_matches_math_erf_everywhere():
    x = np.linspace(-12, 12, 2001)
    expected = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(gelu_exact(x), expected, rtol=1e-13, atol=1e-15)  # ulps of 1 + erf near -1


def test_tanh_gelu_is_gpt2s_formula():
    x = np.linspace(-6, 6, 101)
    expected = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))) for v in x]
    np.testing.assert_allclose(gelu_tanh(x), expected, rtol=1e-12, atol=1e-15)


def test_layer_norm_and_rms_norm_against_a_loop():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(3, 5)), rng.normal(size=5), rng.normal(size=5)
    for i in range(3):
        row = x[i]
        mean = sum(row) / 5
        var = sum((v - mean) ** 2 for v in row) / 5
        np.testing.assert_allclose(
            Norm(w, b, 1e-5)(x)[i],
            [(v - mean) / math.sqrt(var + 1e-5) * wj + bj for v, wj, bj in zip(row, w, b, strict=True)],
        )
        ms = sum(v * v for v in row) / 5
        np.testing.assert_allclose(
            Norm(w, None, 1e-6, "rms")(x)[i], [v / math.sqrt(ms + 1e-6) * wj for v, wj in zip(row, w, strict=True)]
        )


def _tiny_model(pre_norm: bool, seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    d, h, n_layers, vocab = 6, 2, 3, 9

    def norm():
        return Norm(1 + 0.1 * rng.normal(size=d), 0.1 * rng.normal(size=d), 1e-5)

    attention = [
        AttentionWeights(
            *(rng.normal(size=s) * 0.5 for s in ((h, d, 3), (h, d, 3), (h, d, 3), (6, d))),
            b_q=rng.normal(size=(h, 3)) * 0.1,
        )
        for _ in range(n_layers)
    ]
    blocks = [
        Block(
            pre_norm,
            norm(),
            norm(),
            Mlp(rng.normal(size=(d, 8)), rng.normal(size=8), rng.normal(size=(8, d)), None, "gelu"),
        )
        for _ in range(n_layers)
    ]
    table = rng.normal(size=(vocab, d))
    return Model(
        "test",
        Embedding(lambda ids: table[ids], positions=rng.normal(size=(10, d))),
        attention,
        blocks,
        causal=pre_norm,
        max_positions=10,
    )


@pytest.mark.parametrize("pre_norm", [True, False])
def test_run_is_the_block_arrangement_written_out(pre_norm):
    model = _tiny_model(pre_norm)
    ids = np.array([1, 4, 2, 8, 1])
    runs = run(model, ids)
    s = model.embedding(ids)
    for layer, (w, b) in enumerate(zip(model.attention, model.blocks, strict=True)):
        x = b.norm_attn(s) if pre_norm else s
        r = multi_head_attention(x, w.w_q, w.w_k, w.w_v, w.w_o, b_q=w.b_q, causal=pre_norm)
        np.testing.assert_array_equal(runs[layer].result.weights, r.weights)  # the one attention implementation
        if pre_norm:
            s = s + r.output
            s = s + b.mlp(b.norm_mlp(s))
        else:
            s = b.norm_attn(s + r.output)
            s = b.norm_mlp(s + b.mlp(s))
        np.testing.assert_allclose(runs[layer].after, s, rtol=1e-13, atol=1e-13)


def test_run_refuses_too_long_sentences_and_layer_counts():
    model = _tiny_model(True)
    with pytest.raises(ModelError, match="at most 10"):
        run(model, np.zeros(11, int))
    with pytest.raises(ModelError, match="3 layers"):
        run(model, np.zeros(2, int), layers=4)


def test_a_stack_round_trips_through_plain_data_and_is_read_only():
    model = _tiny_model(False)
    stack = Stack("test", tuple(model.blocks), (1.0, 0.5, 1 / 3))
    doc, arrays = stack.to_plain()
    back = Stack.from_plain(doc, {k: np.array(v) for k, v in arrays.items()})
    assert back.check(3, 6) is None and back.scale_factors == (1.0, 0.5, 1 / 3)
    x = np.random.default_rng(1).normal(size=(4, 6))
    for a, b in zip(stack.blocks, back.blocks, strict=True):
        np.testing.assert_array_equal(a.after_attention(x, x), b.after_attention(x, x))
    assert not stack.blocks[0].mlp.w_in.flags.writeable
    assert "2 layers" not in (stack.check(2, 6) or "") and stack.check(2, 6)
    broken = dict(arrays)
    del broken["1/mlp.w_out"]
    with pytest.raises(ModelError, match="incomplete"):
        Stack.from_plain(doc, broken)
