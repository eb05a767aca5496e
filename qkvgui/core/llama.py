"""The LLaMA block in NumPy: RMSNorm, attention with rotary positions and grouped key/value heads, SwiGLU MLP.

x = RMSNorm(s)·g₁;  s = s + attention(x)  (Q, K rotated by position; query head h reads kv head h // group)
s = s + (silu(RMSNorm(s)·g₂ · W_gate) ⊙ (RMSNorm(s)·g₂ · W_up)) · W_down
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .rope import rope_angles, rope_rotate

__all__ = ["rms_norm", "silu", "swiglu", "llama_attention", "llama_run"]


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / √(mean(x²) + eps) · weight, row-wise.  # [n, d_model]"""
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(−x) → inf for very negative x gives x/inf = −0, the right limit
        return x / (1.0 + np.exp(-x))


def swiglu(x: np.ndarray, w_gate: np.ndarray, w_up: np.ndarray, w_down: np.ndarray) -> np.ndarray:
    """(silu(x·W_gate) ⊙ x·W_up)·W_down.  # [n, d_model]"""
    return (silu(x @ w_gate) * (x @ w_up)) @ w_down


def llama_attention(x: np.ndarray, w_q, w_k, w_v, w_o, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Causal attention with RoPE and GQA, as the model computes it (kv heads repeated per query group)."""
    h, n_kv = w_q.shape[0], w_k.shape[0]
    group = h // n_kv
    angles = rope_angles(x.shape[0], w_q.shape[2], theta)  # [n, d_k/2]
    q = rope_rotate(x @ w_q, angles)  # [h, n, d_k]
    k = rope_rotate(x @ w_k, angles)  # [kv, n, d_k]
    k = np.repeat(k, group, axis=0)  # [h, n, d_k]
    v = np.repeat(x @ w_v, group, axis=0)  # [h, n, d_v]
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(w_q.shape[2])  # [h, n, n]
    n = x.shape[0]
    scores = np.where(np.tri(n, dtype=bool), scores, -np.inf)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    weights = e / e.sum(-1, keepdims=True)  # [h, n, n]
    out = (weights @ v).transpose(1, 0, 2).reshape(n, -1) @ w_o  # [n, d_model]
    return weights, out


def llama_run(
    embed: np.ndarray, layer: Callable[[int], dict], count: int, theta: float, eps: float, keep: Sequence[int] = ()
) -> list:
    """Run `count` layers from the embedded tokens [n, d_model]; per layer (x, stream, weights [h, n, n])."""
    stream = embed
    runs = []
    for i in range(count):
        w = layer(i)
        x = rms_norm(stream, w["attn_norm"], eps)
        weights, out = llama_attention(x, w["w_q"], w["w_k"], w["w_v"], w["w_o"], theta)
        runs.append((x, stream, weights))
        stream = stream + out
        stream = stream + swiglu(rms_norm(stream, w["mlp_norm"], eps), w["w_gate"], w["w_up"], w["w_down"])
    return runs
