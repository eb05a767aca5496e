"""The LLaMA block in NumPy: RMSNorm, attention with rotary positions and grouped key/value heads, SwiGLU MLP.

x = RMSNorm(s)·g₁;  s = s + attention(x)  (Q, K rotated by position; query head h reads kv head h // group)
s = s + (silu(RMSNorm(s)·g₂ · W_gate) ⊙ (RMSNorm(s)·g₂ · W_up)) · W_down
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .attention import multi_head_attention

__all__ = ["rms_norm", "silu", "swiglu", "llama_run"]


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / √(mean(x²) + eps) · weight, row-wise.  # [n, d_model]"""
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(−x) → inf for very negative x gives x/inf = −0, the right limit
        return x / (1.0 + np.exp(-x))


def swiglu(x: np.ndarray, w_gate: np.ndarray, w_up: np.ndarray, w_down: np.ndarray) -> np.ndarray:
    """(silu(x·W_gate) ⊙ x·W_up)·W_down.  # [n, d_model]"""
    return (silu(x @ w_gate) * (x @ w_up)) @ w_down


def llama_run(embed: np.ndarray, layer: Callable[[int], dict], count: int, theta: float, eps: float) -> list:
    """Run `count` layers from the embedded tokens [n, d_model]; per layer (x, stream, AttentionResult, after)."""
    stream = embed
    runs = []
    for i in range(count):
        w = layer(i)
        x = rms_norm(stream, w["attn_norm"], eps)
        r = multi_head_attention(x, w["w_q"], w["w_k"], w["w_v"], w["w_o"], causal=True, rotary=theta)
        after = stream + r.output
        after = after + swiglu(rms_norm(after, w["mlp_norm"], eps), w["w_gate"], w["w_up"], w["w_down"])
        runs.append((x, stream, r, after))
        stream = after
    return runs
