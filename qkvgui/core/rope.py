"""Rotary position embeddings (RoPE): the LLaMA family's position step, rotating each query and key by its position.

A d_k-wide vector is read as d_k/2 pairs of coordinates; pair i is (x[i], x[i + d_k/2]) (Hugging Face's
"rotate_half" layout, the one LLaMA checkpoints are stored for) and turns by the angle ``p · θ^(−2i/d_k)`` at
position p. The frequency falls from 1 radian per position (pair 0) to nearly 0 (the last pair), so early pairs
tell neighbours apart and late pairs carry content over long distances.

Because a rotation by α followed by the transpose of a rotation by β is a rotation by α − β, the score of a rotated
query at position i and a rotated key at position j is

    rot(q, i) · rot(k, j) = q · R((j − i)·θ_f) k

which depends on the positions only through i − j: this is what makes RoPE "relative".
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .errors import ShapeError

__all__ = ["DEFAULT_THETA", "rope_frequencies", "rope_angles", "rope_rotate", "rotate_half"]

#: The base θ of the original RoPE paper and LLaMA 1/2 (SmolLM2 uses 1e5, LLaMA 3 5e5).
DEFAULT_THETA = 10000.0


def _check_width(d_k: int) -> int:
    d_k = int(d_k)
    if d_k < 2 or d_k % 2:
        raise ShapeError(
            f"Rotary positions turn pairs of coordinates, so d_k must be even and at least 2; it is {d_k}."
        )
    return d_k


def rope_frequencies(d_k: int, theta: float = DEFAULT_THETA) -> np.ndarray:
    """The angle per position of each coordinate pair: ``θ^(−2i/d_k)`` for i = 0 … d_k/2 − 1.  # [d_k/2]"""
    d_k = _check_width(d_k)
    theta = float(theta)
    if not np.isfinite(theta) or theta <= 1.0:
        raise ShapeError(f"The rotary base θ must be a finite number above 1 (LLaMA uses 10000); it is {theta}.")
    # Written as HF writes it, 1 / θ^(2i/d), so the frequencies are the same numbers (here in float64).
    return 1.0 / theta ** (np.arange(0, d_k, 2, dtype=np.float64) / d_k)  # [d_k/2]


def rope_angles(n: int, d_k: int, theta: float = DEFAULT_THETA, positions: ArrayLike | None = None) -> np.ndarray:
    """The rotation angle of every position and frequency pair, in radians.  # [n, d_k/2]

    positions [n] defaults to 0, 1, …, n − 1 (the token's index in the sentence).
    """
    pos = np.arange(n, dtype=np.float64) if positions is None else np.asarray(positions, dtype=np.float64)
    if pos.shape != (n,):
        raise ShapeError(f"There are {n} tokens but {pos.shape} positions were given: one position per token.")
    angles: np.ndarray = pos[:, None] * rope_frequencies(d_k, theta)[None, :]  # [n, d_k/2]
    return angles


def rotate_half(x: np.ndarray) -> np.ndarray:
    """(x1, x2) -> (−x2, x1) on the two halves of the last axis: the 90° turn of every pair."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope_rotate(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate every pair (x[..., i], x[..., i + d/2]) of row p by angles[p, i].

    x [..., n, d_k] (e.g. [h, n, d_k]); angles [n, d_k/2]. Returns a new array of x's shape:
    ``x·cos + rotate_half(x)·sin`` with cos, sin repeated over both halves.
    """
    x = np.asarray(x)
    n, d_k = x.shape[-2], x.shape[-1]
    _check_width(d_k)
    if angles.shape != (n, d_k // 2):
        raise ShapeError(f"Rotating {n} rows of width {d_k} needs angles of shape {(n, d_k // 2)}, not {angles.shape}.")
    cos = np.cos(angles)  # [n, d_k/2]
    sin = np.sin(angles)  # [n, d_k/2]
    half = d_k // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = np.empty(x.shape, dtype=x.dtype if x.dtype.kind == "f" else np.float64)  # [..., n, d_k]
    out[..., :half] = x1 * cos - x2 * sin
    out[..., half:] = x2 * cos + x1 * sin
    return out
