"""The two circuits a head is read by: QK = W_Q·W_Kᵀ (who attends to whom) and OV = W_V·W_O (what moves)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .checks import check_finite
from .errors import ShapeError

__all__ = ["COMPOSITION_FORMULAS", "qk_circuit", "ov_circuit", "Spectrum", "spectrum", "composition_scores"]

#: what composition_scores computes, in our row-vector convention (⁰ the earlier head, ¹ the later one); the UI
#: shows these words, so the formula a learner reads is the one computed
COMPOSITION_FORMULAS = {
    "Q": "‖W_OV⁰·W_QK¹‖_F / (‖W_OV⁰‖_F ‖W_QK¹‖_F)",
    "K": "‖W_QK¹·W_OV⁰ᵀ‖_F / (‖W_QK¹‖_F ‖W_OV⁰‖_F)",
    "V": "‖W_OV⁰·W_OV¹‖_F / (‖W_OV⁰‖_F ‖W_OV¹‖_F)",
}


def qk_circuit(w_q: ArrayLike, w_k: ArrayLike) -> np.ndarray:
    """W_QK[h] = W_Q[h]·W_K[h]ᵀ, the bilinear form with score(i, j) = x_i·W_QK·x_jᵀ (before biases, scale, mask).

    w_q, w_k [h, d_model, d_k] -> [h, d_model, d_model], of rank at most d_k.
    """
    q, k = np.asarray(w_q), np.asarray(w_k)
    if q.ndim != 3 or k.ndim != 3:
        raise ShapeError(f"W_Q and W_K must be (heads × d_model × d_k); got {q.shape} and {k.shape}.")
    if q.shape != k.shape:
        raise ShapeError(f"W_Q has shape {q.shape} but W_K has shape {k.shape}: the QK circuit needs both alike.")
    out: np.ndarray = q @ k.transpose(0, 2, 1)  # [h, d_model, d_model]
    return out


def ov_circuit(w_v: ArrayLike, w_o: ArrayLike) -> np.ndarray:
    """W_OV[h] = W_V[h]·W_O[block h]: what head h writes to the residual stream for each unit it attends to.

    w_v [h, d_model, d_v], w_o [h·d_v, d_model] -> [h, d_model, d_model], of rank at most d_v.
    """
    v, o = np.asarray(w_v), np.asarray(w_o)
    if v.ndim != 3 or o.ndim != 2:
        raise ShapeError(
            f"W_V must be (heads × d_model × d_v) and W_O (heads·d_v × d_model); got {v.shape}, {o.shape}."
        )
    h, d_model, d_v = v.shape
    if o.shape != (h * d_v, d_model):
        raise ShapeError(
            f"W_O has shape {o.shape} but {h} heads × d_v {d_v} into d_model {d_model} needs ({h * d_v}, {d_model})."
        )
    out: np.ndarray = v @ o.reshape(h, d_v, d_model)  # [h, d_model, d_model]
    return out


@dataclass(frozen=True, slots=True)
class Spectrum:
    """The singular values of a circuit matrix (largest first) and its numerical rank."""

    singular_values: np.ndarray
    rank: int


def spectrum(m: ArrayLike, name: str = "The matrix") -> Spectrum:
    """Singular values and rank of a 2-D matrix; rank counts values above NumPy's default tolerance.

    A matrix holding NaN or an infinity (an overflowed circuit) raises NonFiniteError naming it, not LinAlgError."""
    a = np.asarray(m, dtype=np.float64)
    check_finite(name, a)
    s = np.linalg.svd(a, compute_uv=False)
    tol = s.max(initial=0.0) * max(a.shape) * np.finfo(a.dtype).eps
    return Spectrum(singular_values=s, rank=int(np.count_nonzero(s > tol)))


def factored_spectrum(a: ArrayLike, b: ArrayLike) -> Spectrum:
    """The spectrum of the circuit a·bᵀ (a, b [d, r], r ≤ d) from its factors, never the d × d product:
    with a = Q_a·R_a and b = Q_b·R_b, a·bᵀ = Q_a·(R_a·R_bᵀ)·Q_bᵀ has the singular values of the r × r core.
    Returns the r singular values (the other d − r are 0); rank with the tolerance spectrum() uses."""
    fa, fb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if fa.ndim != 2 or fa.shape != fb.shape:
        raise ShapeError(f"The two factors must both be (d × r); got {fa.shape} and {fb.shape}.")
    r_a, r_b = np.linalg.qr(fa).R, np.linalg.qr(fb).R  # [r, r] each
    s = np.linalg.svd(r_a @ r_b.T, compute_uv=False)
    tol = s.max(initial=0.0) * fa.shape[0] * np.finfo(np.float64).eps
    return Spectrum(singular_values=s, rank=int(np.count_nonzero(s > tol)))


def composition_scores(
    w_q1: ArrayLike, w_k1: ArrayLike, w_v1: ArrayLike, w_o1: ArrayLike, w_v0: ArrayLike, w_o0: ArrayLike
) -> dict[str, np.ndarray]:
    """Q-, K- and V-composition between every head of a later layer (1) and every head of an earlier one (0).

    Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits": the composition of head h of
    layer 1 with head h' of layer 0 is ‖M‖_F / (‖A‖_F ‖B‖_F) for the product M = A·B of the two circuits through
    which h' can influence h. In our row-vector convention (score = x_q·W_QK·x_kᵀ, written = x·W_OV):
    Q: W_OV^{0,h'}·W_QK^{1,h} (h' writes into what h's queries read);
    K: W_QK^{1,h}·W_OV^{0,h'}ᵀ (h' writes into what h's keys read);
    V: W_OV^{0,h'}·W_OV^{1,h} (h' writes into what h's values read).
    Shapes: layer-1 weights as for qk_circuit/ov_circuit; returns {"Q", "K", "V"}: each [h1, h0] in [0, 1].
    """
    # Computed through the factors, never the d × d circuits: for M = A·N·Bᵀ with thin A [d, a], B [d, b],
    # ‖M‖_F² = tr(Nᵀ·(AᵀA)·N·(BᵀB)), so every norm is a product of small Gram matrices (exact; the d × d
    # products cost h1·h0·d³ and ~170 MB at 12 heads and d_model 384).
    w_q1, w_k1, w_v1, w_v0 = (np.asarray(w, dtype=np.float64) for w in (w_q1, w_k1, w_v1, w_v0))
    qk_circuit(w_q1[:1], w_k1[:1])  # shape checks (one head: cheap)
    ov_circuit(w_v1[:1], np.asarray(w_o1)[: w_v1.shape[2]])
    ov_circuit(w_v0[:1], np.asarray(w_o0)[: w_v0.shape[2]])
    for w_v, w_o in ((w_v1, w_o1), (w_v0, w_o0)):
        if np.shape(w_o) != (w_v.shape[0] * w_v.shape[2], w_v.shape[1]):
            raise ShapeError(
                f"W_O has shape {np.shape(w_o)} but {w_v.shape[0]} heads × d_v {w_v.shape[2]} into "
                f"d_model {w_v.shape[1]} needs ({w_v.shape[0] * w_v.shape[2]}, {w_v.shape[1]})."
            )
    h1, d, _ = w_q1.shape
    h0, d0, v0 = w_v0.shape
    if d0 != d:
        raise ShapeError(f"The layers have d_model {d} and {d0}: they must share one residual stream.")
    o1 = np.asarray(w_o1, dtype=np.float64).reshape(h1, -1, d)  # [h1, v1, d]
    o0 = np.asarray(w_o0, dtype=np.float64).reshape(h0, v0, d)  # [h0, v0, d]

    def gram(a: np.ndarray) -> np.ndarray:  # [h, d, a] -> [h, a, a]  aᵀ·a (matmul: BLAS, unlike einsum)
        return a.transpose(0, 2, 1) @ a

    g_q, g_k, g_v1, g_v0 = gram(w_q1), gram(w_k1), gram(w_v1), gram(w_v0)  # W_Qᵀ·W_Q ...
    g_o1, g_o0 = gram(o1.transpose(0, 2, 1)), gram(o0.transpose(0, 2, 1))  # W_O·W_Oᵀ per head

    def sq_norm(n: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        # ‖A·N·Bᵀ‖² = Σ N ⊙ (AᵀA·N·BᵀB); n [h1, h0, a, b], left [.., a, a], right [.., b, b]
        return np.maximum(np.einsum("hgab,hgab->hg", n, left @ n @ right), 0.0)

    qk_norm = np.sqrt(np.maximum(np.einsum("hij,hji->h", g_q, g_k), 0.0))  # ‖W_QK^{1,h}‖_F  [h1]
    ov1_norm = np.sqrt(np.maximum(np.einsum("hij,hji->h", g_v1, g_o1), 0.0))  # [h1]
    ov0_norm = np.sqrt(np.maximum(np.einsum("gij,gji->g", g_v0, g_o0), 0.0))  # [h0]
    gq, gk, go1 = (g[:, None] for g in (g_q, g_k, g_o1))  # [h1, 1, ., .]
    gv0 = g_v0[None]  # [1, h0, v0, v0]
    # Q: W_V0·(W_O0·W_Q1)·W_K1ᵀ;  K: W_Q1·(W_K1ᵀ·W_O0ᵀ)·W_V0ᵀ;  V: W_V0·(W_O0·W_V1)·W_O1
    n_q = o0[None] @ w_q1[:, None]  # [h1, h0, v0, k]
    n_k = (o0[None] @ w_k1[:, None]).transpose(0, 1, 3, 2)  # [h1, h0, k, v0]
    n_v = o0[None] @ w_v1[:, None]  # [h1, h0, v0, v1]
    q = np.sqrt(sq_norm(n_q, gv0, gk))
    k = np.sqrt(sq_norm(n_k, gq, gv0))
    v = np.sqrt(sq_norm(n_v, gv0, go1))

    def score(norms: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # norms [h1, h0]; a [h1]; b [h0]
        denom = a[:, None] * b[None, :]
        return np.divide(norms, denom, out=np.zeros_like(denom), where=denom > 0)

    return {"Q": score(q, qk_norm, ov0_norm), "K": score(k, qk_norm, ov0_norm), "V": score(v, ov1_norm, ov0_norm)}
