"""Rotary positions: the angles, the rotation of Q and K, and the score depending on i − j only."""

import numpy as np
import pytest

from qkvgui.core.errors import ShapeError
from qkvgui.core.rope import rope_angles, rope_frequencies, rope_rotate, rotate_half


def loop_rotate(x, theta):
    """Pair i of row p = (x[p, i], x[p, i + d/2]) turned by p·θ^(−2i/d), one 2×2 rotation at a time."""
    n, d = x.shape
    out = np.empty_like(x)
    for p in range(n):
        for i in range(d // 2):
            a = p * theta ** (-2 * i / d)
            c, s = np.cos(a), np.sin(a)
            out[p, i] = c * x[p, i] - s * x[p, i + d // 2]
            out[p, i + d // 2] = s * x[p, i] + c * x[p, i + d // 2]
    return out


def test_angles_per_position_and_frequency_pair():
    a = rope_angles(30, 64, theta=1e5)
    assert a.shape == (30, 32)
    assert np.all(a[0] == 0)  # position 0 is not rotated
    np.testing.assert_allclose(a[:, 0], np.arange(30))  # pair 0 turns one radian per position
    np.testing.assert_allclose(a[7, 31], 7 * 1e5 ** (-62 / 64), rtol=1e-14)
    np.testing.assert_allclose(rope_frequencies(8, 10000.0), [1, 0.1, 0.01, 0.001], rtol=1e-14)


def test_rotation_matches_a_loop_over_pairs_and_keeps_lengths():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 3, 30, 16))  # any leading axes: [layers, heads, n, d_k]
    angles = rope_angles(30, 16, 500.0)
    r = rope_rotate(x, angles)
    np.testing.assert_allclose(r[4, 2], loop_rotate(x[4, 2], 500.0), atol=1e-12)
    pair_len = lambda a: np.hypot(a[..., :8], a[..., 8:])  # noqa: E731
    np.testing.assert_allclose(pair_len(r), pair_len(x), atol=1e-12)
    np.testing.assert_array_equal(r[..., 0, :], x[..., 0, :])  # position 0 stays put


def test_score_depends_on_positions_only_through_their_difference():
    rng = np.random.default_rng(5)
    q, k = rng.standard_normal(64), rng.standard_normal(64)
    angles = rope_angles(40, 64, 1e5)
    rq = rope_rotate(np.tile(q, (40, 1)), angles)  # the same query at every position
    rk = rope_rotate(np.tile(k, (40, 1)), angles)
    scores = rq @ rk.T  # [i, j]
    for offset in (0, 1, 5, -3):
        diagonal = np.diagonal(scores, offset=-offset)  # all (i, j) with i − j = offset
        np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-10)
    assert not np.allclose(np.diagonal(scores, 0)[0], np.diagonal(scores, -1)[0])


def test_rotate_half_and_bad_widths():
    np.testing.assert_array_equal(rotate_half(np.array([1.0, 2, 3, 4])), [-3, -4, 1, 2])
    with pytest.raises(ShapeError, match="even"):
        rope_angles(3, 5)
    with pytest.raises(ShapeError, match="above 1"):
        rope_frequencies(4, 0.5)
    with pytest.raises(ShapeError, match="angles of shape"):
        rope_rotate(np.zeros((3, 4)), np.zeros((2, 2)))


def test_matches_transformers_apply_rotary_pos_emb_when_installed():
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    rng = np.random.default_rng(9)
    q, k = rng.standard_normal((2, 3, 10, 8)), rng.standard_normal((2, 3, 10, 8))
    angles = rope_angles(10, 8, 10000.0)
    emb = np.concatenate([angles, angles], axis=-1)  # HF's cos/sin tables repeat the frequencies over both halves
    cos, sin = torch.tensor(np.cos(emb))[None], torch.tensor(np.sin(emb))[None]
    tq, tk = llama.apply_rotary_pos_emb(torch.tensor(q), torch.tensor(k), cos, sin)
    np.testing.assert_allclose(rope_rotate(q, angles), tq.numpy(), atol=1e-12)
    np.testing.assert_allclose(rope_rotate(k, angles), tk.numpy(), atol=1e-12)
