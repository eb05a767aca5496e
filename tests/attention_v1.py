"""The core's attention as it was before per-head intermediates became lazy (qkvgui 0.x, every head kept).

Kept verbatim so the tests can check that the lazy, blockwise result gives bit-for-bit the numbers this gave.
"""

# ruff: noqa
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qkvgui.core.errors import NonFiniteError, ShapeError

__all__ = ["AttentionResult", "multi_head_attention", "attention_mask", "softmax"]


@dataclass(frozen=True, slots=True, eq=False)
class AttentionResult:
    """Every step of one multi-head attention layer. All arrays are read-only.

    h heads, n_q queries, n_k keys, d_k query/key width, d_v value width.
    """

    q: np.ndarray  # [h, n_q, d_k]
    k: np.ndarray  # [h, n_k, d_k]
    v: np.ndarray  # [h, n_k, d_v]
    scores: np.ndarray  # [h, n_q, n_k]  Q·Kᵀ
    scaled: np.ndarray  # [h, n_q, n_k]  scores · scale
    masked: np.ndarray  # [h, n_q, n_k]  scaled, −inf where a key is hidden
    weights: np.ndarray  # [h, n_q, n_k]  softmax(masked) row-wise; a row with no visible key is all 0
    head_outputs: np.ndarray  # [h, n_q, d_v]  weights·V
    concat: np.ndarray  # [n_q, h·d_v]  the heads side by side, head 0 first
    output: np.ndarray  # [n_q, d_model]  concat·W_O + b_O
    residual: np.ndarray  # [n_q, d_model]  X + output
    visible: np.ndarray  # [n_q, n_k] bool: True where query i may look at key j
    dead_rows: np.ndarray  # [m] int: the query rows that can see no key at all (their weights are 0)
    scale: float  # the factor the scores were multiplied by

    @property
    def n_heads(self) -> int:
        return self.q.shape[0]


def attention_mask(n_q: int, n_k: int, *, causal: bool = False, key_padding_mask=None) -> np.ndarray | None:
    """Which keys each query may see, as a bool [n_q, n_k] array (True = visible), or None when all are.

    Causal hides key j from query i when j > i; padding hides the keys marked True in key_padding_mask [n_k].
    """
    visible = None
    if causal:
        visible = np.tri(n_q, n_k, dtype=bool)  # [n_q, n_k]  j <= i
    if key_padding_mask is not None:
        pad = np.asarray(key_padding_mask, dtype=bool)
        if pad.shape != (n_k,):
            raise ShapeError(
                f"The padding mask has {pad.shape[0] if pad.ndim == 1 else pad.shape} entries but there are "
                f"{n_k} keys: it needs one True/False per key token."
            )
        if pad.any():
            visible = ~pad[None, :] if visible is None else visible & ~pad[None, :]  # [n_q or 1, n_k]
            visible = np.broadcast_to(visible, (n_q, n_k))
    return visible


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax; a slice that is entirely −inf becomes all zeros instead of NaN."""
    peak = np.max(logits, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)  # all-hidden rows: exp(−inf − 0) = 0, no NaN
    e = np.exp(logits - peak)
    total = np.sum(e, axis=axis, keepdims=True)
    np.divide(e, total, out=e, where=total > 0)
    return e


def _freeze(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


def _as_array(name: str, a, dtype) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiub":
        raise ShapeError(f"{name} must hold numbers, but it holds {arr.dtype} values.")
    return arr.astype(dtype, copy=False)


def _check_finite(name: str, a: np.ndarray) -> None:
    # One fast reduction first: the sum of finite numbers is finite unless it overflows, so only a
    # non-finite sum needs the element-wise search that says where the bad value is.
    if np.isfinite(np.sum(a)):
        return
    bad = np.argwhere(~np.isfinite(a))
    if len(bad) == 0:
        return
    where = ", ".join(str(int(i)) for i in bad[0])
    value = a[tuple(bad[0])]
    raise NonFiniteError(
        f"{name} holds {value} at [{where}] ({len(bad)} non-finite value{'s' if len(bad) > 1 else ''}): "
        "every entry must be a finite number."
    )


def _check_overflow(what: str, a: np.ndarray) -> None:
    # Finite inputs can still overflow a product (1e200 · 1e200); say so rather than let NaN out.
    if not np.isfinite(np.sum(a)) and not np.isfinite(a).all():
        raise NonFiniteError(
            f"{what} overflowed to infinity: the inputs are finite but too large for {a.dtype}. "
            "Scale the matrices down."
        )


def _check_ndim(name: str, a: np.ndarray, ndim: int, shape_doc: str) -> None:
    if a.ndim != ndim:
        raise ShapeError(f"{name} must be {ndim}-D {shape_doc}, but it has shape {a.shape}.")


def _same(what: str, left: tuple[str, int], right: tuple[str, int], why: str) -> None:
    if left[1] != right[1]:
        raise ShapeError(f"{left[0]} has {what} = {left[1]} but {right[0]} has {what} = {right[1]}: {why}.")


def _result_dtype(arrays) -> np.dtype:
    """float32 only when every floating input is float32; float64 otherwise (and for integer inputs)."""
    floats = [np.asarray(a).dtype for a in arrays if a is not None and np.asarray(a).dtype.kind == "f"]
    if floats and all(d == np.float32 for d in floats):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def multi_head_attention(
    x_q,
    w_q,
    w_k,
    w_v,
    w_o,
    *,
    x_kv=None,
    b_q=None,
    b_k=None,
    b_v=None,
    b_o=None,
    causal: bool = False,
    key_padding_mask=None,
    scale: float | None = None,
    ablate=None,
) -> AttentionResult:
    """One multi-head attention layer with every intermediate kept.

    Shapes: x_q [n_q, d_model]; x_kv [n_k, d_model] (None: self-attention, x_kv = x_q); w_q, w_k
    [h, d_model, d_k]; w_v [h, d_model, d_v]; w_o [h·d_v, d_model]; b_q, b_k [h, d_k]; b_v [h, d_v];
    b_o [d_model]; key_padding_mask bool [n_k] (True = padding, hidden); scale defaults to 1/√d_k;
    ablate bool [h] switches heads off: their head output is zero, so they write nothing to the output.
    """
    dtype = _result_dtype((x_q, x_kv, w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o))
    x_q = _as_array("X", x_q, dtype)
    self_attention = x_kv is None
    x_kv = x_q if self_attention else _as_array("X_kv", x_kv, dtype)
    w_q = _as_array("W_Q", w_q, dtype)
    w_k = _as_array("W_K", w_k, dtype)
    w_v = _as_array("W_V", w_v, dtype)
    w_o = _as_array("W_O", w_o, dtype)

    _check_ndim("X", x_q, 2, "(tokens × d_model)")
    _check_ndim("X_kv", x_kv, 2, "(source tokens × d_model)")
    _check_ndim("W_Q", w_q, 3, "(heads × d_model × d_k)")
    _check_ndim("W_K", w_k, 3, "(heads × d_model × d_k)")
    _check_ndim("W_V", w_v, 3, "(heads × d_model × d_v)")
    _check_ndim("W_O", w_o, 2, "(heads·d_v × d_model)")
    h, d_model, d_k = w_q.shape
    d_v = w_v.shape[2]
    n_q, n_k = x_q.shape[0], x_kv.shape[0]
    _same("d_model", ("X", x_q.shape[1]), ("W_Q", d_model), "Q = X·W_Q needs X's columns to match W_Q's rows")
    _same("d_model", ("X_kv", x_kv.shape[1]), ("X", x_q.shape[1]), "keys and queries live in one residual width")
    _same("heads", ("W_K", w_k.shape[0]), ("W_Q", h), "every head needs its own W_Q and W_K")
    _same("heads", ("W_V", w_v.shape[0]), ("W_Q", h), "every head needs its own W_V")
    _same("d_model", ("W_K", w_k.shape[1]), ("W_Q", d_model), "K = X·W_K reads the same residual stream")
    _same("d_model", ("W_V", w_v.shape[1]), ("W_Q", d_model), "V = X·W_V reads the same residual stream")
    _same("d_k", ("W_K", w_k.shape[2]), ("W_Q", d_k), "the scores Q·Kᵀ need the same d_k")
    _same(
        "rows",
        ("W_O", w_o.shape[0]),
        ("heads·d_v", h * d_v),
        f"W_O maps the concatenated heads ({h} heads × d_v {d_v}) back to the residual stream",
    )
    _same("columns", ("W_O", w_o.shape[1]), ("d_model", d_model), "the output is added to X, so it needs d_model")
    if n_q == 0 or n_k == 0 or h == 0:
        raise ShapeError("Attention needs at least one query token, one key token and one head.")

    biases = {}
    for name, b, shape in (
        ("b_Q", b_q, (h, d_k)),
        ("b_K", b_k, (h, d_k)),
        ("b_V", b_v, (h, d_v)),
        ("b_O", b_o, (d_model,)),
    ):
        if b is not None:
            b = _as_array(name, b, dtype)
            if b.shape != shape:
                raise ShapeError(f"{name} has shape {b.shape} but it must be {shape} to be added after its product.")
            _check_finite(name, b)
        biases[name] = b
    for name, a in (("X", x_q), ("W_Q", w_q), ("W_K", w_k), ("W_V", w_v), ("W_O", w_o)):
        _check_finite(name, a)
    if not self_attention:
        _check_finite("X_kv", x_kv)

    if scale is None:
        scale = 1.0 / np.sqrt(d_k) if d_k > 0 else 1.0
    scale = float(scale)
    if not np.isfinite(scale):
        raise NonFiniteError(f"The scale is {scale}; it must be a finite number (1/√d_k = {1 / np.sqrt(d_k):.4g}).")

    if ablate is not None:
        ablate = np.asarray(ablate, dtype=bool)
        if ablate.shape != (h,):
            raise ShapeError(f"The ablation mask has shape {ablate.shape} but there are {h} heads: one flag per head.")
        ablate = ablate if ablate.any() else None

    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by _check_overflow instead
        return _compute(x_q, x_kv, w_q, w_k, w_v, w_o, biases, causal, key_padding_mask, dtype.type(scale), ablate)


def _compute(x_q, x_kv, w_q, w_k, w_v, w_o, biases, causal, key_padding_mask, scale, ablate) -> AttentionResult:
    """The math of multi_head_attention on validated inputs (see there for shapes)."""
    h, d_v = w_q.shape[0], w_v.shape[2]
    n_q, n_k = x_q.shape[0], x_kv.shape[0]
    dtype = x_q.dtype
    # Projections as batched products over heads: x [n, d_model] broadcasts against W [h, d_model, d],
    # giving [h, n, d] directly, with no copy of the weights (fusing them into one [d_model, 3·h·d]
    # matrix costs more in copying than one GEMM saves at these sizes).
    q = x_q @ w_q  # [h, n_q, d_k]
    k = x_kv @ w_k  # [h, n_k, d_k]
    v = x_kv @ w_v  # [h, n_k, d_v]
    if biases["b_Q"] is not None:
        q += biases["b_Q"][:, None, :]
    if biases["b_K"] is not None:
        k += biases["b_K"][:, None, :]
    if biases["b_V"] is not None:
        v += biases["b_V"][:, None, :]

    scores = q @ k.transpose(0, 2, 1)  # [h, n_q, n_k]
    scaled = scores * scale  # [h, n_q, n_k]
    _check_overflow("The scaled scores Q·Kᵀ·scale", scaled)
    visible = attention_mask(n_q, n_k, causal=causal, key_padding_mask=key_padding_mask)
    if visible is None:
        masked = scaled
        visible = np.ones((n_q, n_k), dtype=bool)
        dead_rows = np.zeros(0, dtype=np.intp)
    else:
        masked = np.where(visible, scaled, dtype.type(-np.inf))  # [h, n_q, n_k]
        dead_rows = np.flatnonzero(~visible.any(axis=1))
    weights = softmax(masked)  # [h, n_q, n_k]
    head_outputs = weights @ v  # [h, n_q, d_v]
    if ablate is not None:
        head_outputs[ablate] = 0.0  # a switched-off head writes nothing
    concat = head_outputs.transpose(1, 0, 2).reshape(n_q, h * d_v)  # [n_q, h·d_v]
    output = concat @ w_o  # [n_q, d_model]
    if biases["b_O"] is not None:
        output += biases["b_O"]
    residual = x_q + output  # [n_q, d_model]
    _check_overflow("The residual X + output", residual)

    visible = np.ascontiguousarray(visible)
    _freeze(q, k, v, scores, scaled, masked, weights, head_outputs, concat, output, residual, visible, dead_rows)
    return AttentionResult(
        q=q,
        k=k,
        v=v,
        scores=scores,
        scaled=scaled,
        masked=masked,
        weights=weights,
        head_outputs=head_outputs,
        concat=concat,
        output=output,
        residual=residual,
        visible=visible,
        dead_rows=dead_rows,
        scale=float(scale),
    )
