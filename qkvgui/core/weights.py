"""The weights of one attention layer, declared once: a preset's, a model's and a session's layer build on these.

Row vectors throughout: a head reads X [n, d_model] through W_Q, W_K [d_model, d_k] and W_V [d_model, d_v], and
W_O maps the concatenated head outputs [n, h·d_v] back to the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LayerWeights", "Weights"]


@dataclass(frozen=True, eq=False)
class Weights:
    """The four matrices of an attention layer (``core.presets.Preset`` builds on these)."""

    w_q: np.ndarray  # [h, d_model, d_k]
    w_k: np.ndarray  # [h_kv, d_model, d_k]  (h_kv = h, or fewer key/value heads shared by groups of query heads)
    w_v: np.ndarray  # [h_kv, d_model, d_v]
    w_o: np.ndarray  # [h·d_v, d_model]


@dataclass(frozen=True, eq=False)
class LayerWeights(Weights):
    """The four matrices and their biases, None where a layer has none (``core.models.AttentionWeights`` and
    ``state.Layer`` build on these)."""

    b_q: np.ndarray | None = None  # [h, d_k]
    b_k: np.ndarray | None = None  # [h_kv, d_k]
    b_v: np.ndarray | None = None  # [h_kv, d_v]
    b_o: np.ndarray | None = None  # [d_model]
