"""QK and OV circuits against the per-head products they stand for, and the scores they predict."""

import numpy as np
import pytest

from qkvgui.core import NonFiniteError, ShapeError, multi_head_attention, ov_circuit, qk_circuit, spectrum


def test_qk_circuit_predicts_the_scores_and_has_rank_at_most_d_k():
    rng = np.random.default_rng(0)
    h, d_model, d_k, d_v, n = 3, 8, 2, 3, 5
    x = rng.standard_normal((n, d_model))
    w_q, w_k = rng.standard_normal((2, h, d_model, d_k))
    w_v = rng.standard_normal((h, d_model, d_v))
    w_o = rng.standard_normal((h * d_v, d_model))
    qk = qk_circuit(w_q, w_k)
    assert qk.shape == (h, d_model, d_model)
    r = multi_head_attention(x, w_q, w_k, w_v, w_o)
    for head in range(h):
        np.testing.assert_allclose(qk[head], w_q[head] @ w_k[head].T)
        np.testing.assert_allclose(x @ qk[head] @ x.T, r.scores[head], rtol=1e-10, atol=1e-12)
        assert spectrum(qk[head]).rank == d_k


def test_ov_circuit_uses_each_heads_block_of_w_o():
    rng = np.random.default_rng(1)
    h, d_model, d_v = 2, 6, 3
    w_v = rng.standard_normal((h, d_model, d_v))
    w_o = rng.standard_normal((h * d_v, d_model))
    ov = ov_circuit(w_v, w_o)
    np.testing.assert_allclose(ov[0], w_v[0] @ w_o[:3])
    np.testing.assert_allclose(ov[1], w_v[1] @ w_o[3:])
    s = spectrum(ov[1])
    assert s.rank == d_v
    # an independent reference: the singular values are the square roots of the eigenvalues of OVᵀ·OV
    eig = np.sort(np.linalg.eigvalsh(ov[1].T @ ov[1]))[::-1]
    np.testing.assert_allclose(s.singular_values[:d_v], np.sqrt(eig[:d_v]), rtol=1e-10)
    assert np.all(np.abs(s.singular_values[d_v:]) < 1e-10 * s.singular_values[0])
    assert np.all(np.diff(s.singular_values) <= 0)


def test_spectrum_of_a_known_matrix_and_of_a_non_finite_one():
    u, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((5, 5)))
    v, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((4, 4)))
    want = np.array([3.0, 2.0, 0.5, 0.0])
    m = u[:, :4] @ np.diag(want) @ v.T  # singular values 3, 2, 0.5, 0 by construction
    s = spectrum(m)
    np.testing.assert_allclose(s.singular_values, want, atol=1e-12)
    assert s.rank == 3
    m[1, 2] = np.inf
    with pytest.raises(NonFiniteError, match=r"W_QK holds inf at \[1, 2\]"):
        spectrum(m, "W_QK")


def test_symmetric_qk_when_w_q_equals_w_k():
    w = np.random.default_rng(2).standard_normal((1, 5, 2))
    qk = qk_circuit(w, w)[0]
    np.testing.assert_allclose(qk, qk.T)


def test_circuit_shape_errors():
    with pytest.raises(ShapeError, match="W_Q has shape"):
        qk_circuit(np.zeros((2, 4, 3)), np.zeros((2, 4, 2)))
    with pytest.raises(ShapeError, match="W_O has shape"):
        ov_circuit(np.zeros((2, 4, 3)), np.zeros((5, 4)))


def test_composition_scores_against_a_direct_loop():
    from qkvgui.core import composition_scores

    rng = np.random.default_rng(3)
    d, h0, h1, dk, dv = 7, 2, 3, 2, 3
    w_q1, w_k1 = rng.standard_normal((2, h1, d, dk))
    w_v1, w_v0 = rng.standard_normal((h1, d, dv)), rng.standard_normal((h0, d, dv))
    w_o1, w_o0 = rng.standard_normal((h1 * dv, d)), rng.standard_normal((h0 * dv, d))
    c = composition_scores(w_q1, w_k1, w_v1, w_o1, w_v0, w_o0)
    for h in range(h1):
        qk = w_q1[h] @ w_k1[h].T
        ov1 = w_v1[h] @ w_o1[h * dv : (h + 1) * dv]
        for g in range(h0):
            ov0 = w_v0[g] @ w_o0[g * dv : (g + 1) * dv]
            norm = np.linalg.norm
            assert c["Q"][h, g] == pytest.approx(norm(ov0 @ qk) / (norm(qk) * norm(ov0)))
            assert c["K"][h, g] == pytest.approx(norm(qk @ ov0.T) / (norm(qk) * norm(ov0)))
            assert c["V"][h, g] == pytest.approx(norm(ov0 @ ov1) / (norm(ov1) * norm(ov0)))
            # the paper's column-vector form gives the same numbers (W_QK^T W_OV with W_OV = ov0^T)
            assert c["Q"][h, g] == pytest.approx(norm(qk.T @ ov0.T) / (norm(qk) * norm(ov0)))
    assert np.all((c["K"] >= 0) & (c["K"] <= 1))
