"""The two circuits a head is read by: QK = W_Q·W_Kᵀ (who attends to whom) and OV = W_V·W_O (what moves)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ShapeError

__all__ = ["qk_circuit", "ov_circuit", "Spectrum", "spectrum"]


def qk_circuit(w_q, w_k) -> np.ndarray:
    """W_QK[h] = W_Q[h]·W_K[h]ᵀ, the bilinear form with score(i, j) = x_i·W_QK·x_jᵀ (before biases, scale, mask).

    w_q, w_k [h, d_model, d_k] -> [h, d_model, d_model], of rank at most d_k.
    """
    w_q, w_k = np.asarray(w_q), np.asarray(w_k)
    if w_q.ndim != 3 or w_k.ndim != 3:
        raise ShapeError(f"W_Q and W_K must be (heads × d_model × d_k); got {w_q.shape} and {w_k.shape}.")
    if w_q.shape != w_k.shape:
        raise ShapeError(f"W_Q has shape {w_q.shape} but W_K has shape {w_k.shape}: the QK circuit needs both alike.")
    return w_q @ w_k.transpose(0, 2, 1)  # [h, d_model, d_model]


def ov_circuit(w_v, w_o) -> np.ndarray:
    """W_OV[h] = W_V[h]·W_O[block h]: what head h writes to the residual stream for each unit it attends to.

    w_v [h, d_model, d_v], w_o [h·d_v, d_model] -> [h, d_model, d_model], of rank at most d_v.
    """
    w_v, w_o = np.asarray(w_v), np.asarray(w_o)
    if w_v.ndim != 3 or w_o.ndim != 2:
        raise ShapeError(
            f"W_V must be (heads × d_model × d_v) and W_O (heads·d_v × d_model); got {w_v.shape}, {w_o.shape}."
        )
    h, d_model, d_v = w_v.shape
    if w_o.shape != (h * d_v, d_model):
        raise ShapeError(
            f"W_O has shape {w_o.shape} but {h} heads × d_v {d_v} into d_model {d_model} needs ({h * d_v}, {d_model})."
        )
    return w_v @ w_o.reshape(h, d_v, d_model)  # [h, d_model, d_model]


@dataclass(frozen=True, slots=True)
class Spectrum:
    """The singular values of a circuit matrix (largest first) and its numerical rank."""

    singular_values: np.ndarray
    rank: int


def spectrum(m) -> Spectrum:
    """Singular values and rank of a 2-D matrix; rank counts values above NumPy's default tolerance."""
    m = np.asarray(m, dtype=np.float64)
    s = np.linalg.svd(m, compute_uv=False)
    tol = s.max(initial=0.0) * max(m.shape) * np.finfo(m.dtype).eps
    return Spectrum(singular_values=s, rank=int(np.count_nonzero(s > tol)))
