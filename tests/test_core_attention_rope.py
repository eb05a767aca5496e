"""Rotary positions and grouped key/value heads inside multi_head_attention, against loops and plain MHA."""

import numpy as np
import pytest

from qkvgui.core import multi_head_attention
from qkvgui.core.errors import ShapeError


def rng_layer(h=6, h_kv=2, d_model=12, d_k=8, d_v=5, n=30, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        x_q=rng.standard_normal((n, d_model)),
        w_q=rng.standard_normal((h, d_model, d_k)) / 3,
        w_k=rng.standard_normal((h_kv, d_model, d_k)) / 3,
        w_v=rng.standard_normal((h_kv, d_model, d_v)),
        w_o=rng.standard_normal((h * d_v, d_model)),
    )


def loop_attention(x, w_q, w_k, w_v, w_o, theta, causal):
    """One query head at a time, its key head found by division, each pair rotated by a 2×2 matrix."""
    h, h_kv = w_q.shape[0], w_k.shape[0]
    n, d_k = x.shape[0], w_q.shape[2]

    def rotate(a):
        out = a.copy()
        for p in range(n):
            for i in range(d_k // 2):
                ang = p * theta ** (-2 * i / d_k)
                c, s = np.cos(ang), np.sin(ang)
                out[p, i] = c * a[p, i] - s * a[p, i + d_k // 2]
                out[p, i + d_k // 2] = s * a[p, i] + c * a[p, i + d_k // 2]
        return out

    weights, heads = [], []
    for head in range(h):
        kv = head // (h // h_kv)
        q, k = rotate(x @ w_q[head]), rotate(x @ w_k[kv])
        s = q @ k.T / np.sqrt(d_k)
        if causal:
            s = np.where(np.tri(n, dtype=bool), s, -np.inf)
        e = np.exp(s - s.max(1, keepdims=True))
        w = e / e.sum(1, keepdims=True)
        weights.append(w)
        heads.append(w @ (x @ w_v[kv]))
    return np.array(weights), np.concatenate(heads, axis=1) @ w_o


@pytest.mark.parametrize("h_kv", [1, 2, 6])  # multi-query, grouped, ordinary multi-head
def test_rotary_grouped_attention_matches_a_loop(h_kv):
    c = rng_layer(h_kv=h_kv)
    r = multi_head_attention(**c, causal=True, rotary=500.0)
    weights, output = loop_attention(c["x_q"], c["w_q"], c["w_k"], c["w_v"], c["w_o"], 500.0, True)
    np.testing.assert_allclose(r.weights, weights, atol=1e-12)
    np.testing.assert_allclose(r.output, output, atol=1e-10)
    assert r.n_kv_heads == h_kv and r.k.shape == (h_kv, 30, 8) and r.k_rope.shape == (h_kv, 30, 8)
    assert r.q_angles.shape == (30, 4) and r.rotary == 500.0
    np.testing.assert_array_equal(r.q_rope[:, 0], r.q[:, 0])  # position 0 is not turned
    assert not np.allclose(r.q_rope[:, 5], r.q[:, 5])


def test_grouped_heads_equal_plain_heads_with_repeated_keys_and_values():
    c = rng_layer(h=6, h_kv=3)
    r = multi_head_attention(**c)
    plain = multi_head_attention(**{**c, "w_k": np.repeat(c["w_k"], 2, axis=0), "w_v": np.repeat(c["w_v"], 2, axis=0)})
    np.testing.assert_array_equal(r.weights, plain.weights)
    np.testing.assert_array_equal(r.output, plain.output)
    assert [r.kv_head(i) for i in range(6)] == [0, 0, 1, 1, 2, 2]


def test_without_rotary_the_rotated_fields_are_q_and_k():
    r = multi_head_attention(**rng_layer(h_kv=6))
    assert r.q_rope is r.q and r.k_rope is r.k and r.rotary is None and r.q_angles is None


def test_key_heads_must_divide_query_heads_and_rotary_needs_even_d_k():
    with pytest.raises(ShapeError, match="must divide 6"):
        multi_head_attention(**rng_layer(h=6, h_kv=4))
    c = rng_layer(h_kv=2)
    with pytest.raises(ShapeError, match="W_V"):
        multi_head_attention(**{**c, "w_v": np.zeros((3, 12, 5))})
    with pytest.raises(ShapeError, match="even"):
        multi_head_attention(**rng_layer(d_k=7), rotary=10000.0)
    with pytest.raises(ShapeError, match="above 1"):
        multi_head_attention(**rng_layer(), rotary=0.0)
