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
    qk1 = qk_circuit(w_q1, w_k1)  # [h1, d, d]
    ov1 = ov_circuit(w_v1, w_o1)  # [h1, d, d]
    ov0 = ov_circuit(w_v0, w_o0)  # [h0, d, d]
    if qk1.shape[1] != ov0.shape[1]:
        raise ShapeError(f"The layers have d_model {qk1.shape[1]} and {ov0.shape[1]}: they must share one residual "
                         "stream.")

    def fro(m: np.ndarray) -> np.ndarray:  # [..., d, d] -> [...]
        return np.sqrt(np.einsum("...ij,...ij->...", m, m))

    def score(products: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [h1, h0, d, d]; [h1|h0, d, d]
        denom = fro(a)[:, None] * fro(b)[None, :]
        return np.divide(fro(products), denom, out=np.zeros_like(denom), where=denom > 0)

    q = np.einsum("gij,hjk->hgik", ov0, qk1)  # W_OV^{0,g}·W_QK^{1,h}
    k = np.einsum("hij,gkj->hgik", qk1, ov0)  # W_QK^{1,h}·W_OV^{0,g}ᵀ
    v = np.einsum("gij,hjk->hgik", ov0, ov1)  # W_OV^{0,g}·W_OV^{1,h}
    return {"Q": score(q, qk1, ov0), "K": score(k, qk1, ov0), "V": score(v, ov1, ov0)}
