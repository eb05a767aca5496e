"""Multi-head attention in NumPy, keeping every intermediate a learner wants to see.

Conventions (row vectors): X is (n, d_model), one row per token; ``Q = X @ W_Q[h]``; ``scores = Q @ Kᵀ``
(with rotary positions, of the rotated ``Q_rope``, ``K_rope``: see ``rope.py``);
``weights = softmax(scores * scale)`` row-wise over visible keys; ``head_outputs = weights @ V``; the heads are
concatenated (head 0 first) and projected by ``W_O``; the residual stream receives ``X + output``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .checks import check_finite as _check_finite
from .errors import NonFiniteError, ShapeError
from .parallel import fresh_array, one_blas_thread, run_tasks, task_threads
from .rope import rope_angles, rope_rotate

__all__ = ["AttentionResult", "HeadResult", "multi_head_attention", "attention_mask", "softmax", "block_max"]


#: the softmax of a head works on about this many entries at a time (2 MB in float64), so they stay in cache
BLOCK_ENTRIES = 1 << 18
#: the overview of every head's weights (weights_pooled) is at most this many cells along a side
OVERVIEW_CELLS = 256
#: result.head(h) keeps recently viewed heads while they fit in this many bytes (always at least the newest)
HEAD_CACHE_BYTES = 600 * 2**20
#: a layer with a product of more multiply-adds than this (m·n·k) runs every product on one BLAS thread, its heads
#: on several threads (OpenBLAS splits a product between threads from 65,536 · 4; smaller ones always run on one)
SPLIT_PRODUCT = 1 << 16


@dataclass(frozen=True, slots=True, eq=False)
class HeadResult:
    """The (n_q × n_k) steps of one head. All arrays are read-only."""

    head: int
    scores: np.ndarray  # [n_q, n_k]  Q·Kᵀ
    scaled: np.ndarray  # [n_q, n_k]  scores · scale
    masked: np.ndarray  # [n_q, n_k]  scaled, −inf where a key is hidden (the same array as scaled without a mask)
    weights: np.ndarray  # [n_q, n_k]  softmax(masked) row-wise; a row with no visible key is all 0

    @property
    def nbytes(self) -> int:
        arrays = {id(a): a for a in (self.scores, self.scaled, self.masked, self.weights)}
        return sum(a.nbytes for a in arrays.values())


class _Cache:
    """The mutable part of a frozen result: recently viewed heads and full fields asked for, behind one lock."""

    __slots__ = ("lock", "heads", "fields")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.heads: OrderedDict[int, HeadResult] = OrderedDict()  # most recently viewed last
        self.fields: dict[str, np.ndarray] = {}


@dataclass(frozen=True, eq=False)  # no slots: the lazy fields are properties (and slots break their setter)
class AttentionResult:
    """Every step of one multi-head attention layer. All arrays are read-only.

    h heads, n_q queries, n_k keys, d_k query/key width, d_v value width. The result keeps what grows like n
    (Q, K, V, the outputs); the (n_q × n_k) steps of a head are computed when asked for: ``result.head(h)``
    gives one head's scores, scaled, masked and weights (recently viewed heads are kept), and ``result.weights``
    (likewise ``scores``, ``scaled``, ``masked``) gives every head's at once, [h, n_q, n_k], for scripts and
    small layers. ``weights_pooled`` is every head's weights at a glance, max-pooled so no sharp line is lost.
    """

    q: np.ndarray  # [h, n_q, d_k]
    k: np.ndarray  # [h_kv, n_k, d_k]  (h_kv = h, or fewer when heads share keys and values)
    v: np.ndarray  # [h_kv, n_k, d_v]
    head_outputs: np.ndarray  # [h, n_q, d_v]  weights·V
    concat: np.ndarray  # [n_q, h·d_v]  the heads side by side, head 0 first
    output: np.ndarray  # [n_q, d_model]  concat·W_O + b_O
    residual: np.ndarray  # [n_q, d_model]  X + output
    visible: np.ndarray  # [n_q, n_k] bool: True where query i may look at key j
    dead_rows: np.ndarray  # [m] int: the query rows that can see no key at all (their weights are 0)
    scale: float  # the factor the scores were multiplied by
    weights_pooled: np.ndarray  # [h, ⌈n_q/pool⌉, ⌈n_k/pool⌉]  max of the weights over pool × pool blocks
    pool: int  # 1 when weights_pooled is the weights themselves (n ≤ OVERVIEW_CELLS)
    masked_keys: bool = True  # False when every query sees every key (then masked is scaled)
    # Rotary positions (RoPE): Q and K turned by their position before the scores; without them these are q and k.
    q_rope: np.ndarray = None  # type: ignore[assignment]  # [h, n_q, d_k]  q rotated by its query's position
    k_rope: np.ndarray = None  # type: ignore[assignment]  # [h_kv, n_k, d_k]  k rotated by its key's position
    rotary: float | None = None  # the base θ, or None when positions are not rotated
    q_angles: np.ndarray | None = None  # [n_q, d_k/2]  rotation angle of each query position and frequency pair
    k_angles: np.ndarray | None = None  # [n_k, d_k/2]  the same for the keys (the same rows in self-attention)
    # Whole models (qkvgui.core.models): the model's own block after this attention, run read-only.
    after: np.ndarray | None = None  # [n_q, d_model]  the residual stream after the block (norms, MLP)
    next_x: np.ndarray | None = None  # [n_q, d_model]  what the next layer's attention reads (after, or its norm)
    _cache: _Cache = field(default_factory=_Cache, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.q_rope is None:  # no rotation: the scores read Q and K themselves
            object.__setattr__(self, "q_rope", self.q)
        if self.k_rope is None:
            object.__setattr__(self, "k_rope", self.k)

    @property
    def n_heads(self) -> int:
        return self.q.shape[0]

    @property
    def n_kv_heads(self) -> int:
        """The number of key/value heads: n_heads, or fewer when groups of query heads share one (GQA, MQA)."""
        return self.k.shape[0]

    @property
    def n_q(self) -> int:
        return self.q.shape[1]

    @property
    def n_k(self) -> int:
        return self.k.shape[1]

    def kv_head(self, h: int) -> int:
        """The index into k and v that head h reads (h itself unless heads share keys and values)."""
        return h * self.k.shape[0] // self.q.shape[0]

    def head(self, h: int) -> HeadResult:
        """Head h's scores, scaled, masked and weights, [n_q, n_k] each: computed on first use, then kept while
        it is among the recently viewed heads (HEAD_CACHE_BYTES). Safe to call from any thread."""
        if not -self.n_heads <= h < self.n_heads:
            raise IndexError(f"head {h} is out of range: the layer has {self.n_heads} heads")
        h = int(h) % self.n_heads
        cache = self._cache
        with cache.lock:  # held only to look up and store, never while computing (head_ready must not wait)
            if h in cache.heads:
                cache.heads.move_to_end(h)
                return cache.heads[h]
            self._make_room(self.head_nbytes())  # first, so the new head and the old ones are not all in memory
        result = self._compute_head(h)
        with cache.lock:
            result = cache.heads.setdefault(h, result)  # another thread may have stored it meanwhile
            cache.heads.move_to_end(h)
            self._make_room(0)
            return result

    def head_weights(self, h: int) -> np.ndarray:
        """Head h's weights [n_q, n_k], without keeping them among the viewed heads (scores over every head of a
        model read one head at a time, and leave the viewed heads' steps where they are). Safe from any thread."""
        h = int(h) % self.n_heads
        with self._cache.lock:
            every = self._cache.fields.get("weights")
            kept = self._cache.heads.get(h)
        if every is not None:
            return every[h]
        return (kept if kept is not None else self._compute_head(h)).weights

    def _make_room(self, need: int) -> None:
        """Forget the least recently viewed heads until need more bytes fit (the newest is always kept)."""
        heads = self._cache.heads
        while len(heads) > (0 if need else 1) and sum(r.nbytes for r in heads.values()) + need > HEAD_CACHE_BYTES:
            heads.popitem(last=False)

    def head_ready(self, h: int) -> bool:
        """True when head(h) returns at once (it is small or kept), so the GUI thread may ask for it."""
        with self._cache.lock:
            return h in self._cache.heads or self.head_nbytes() <= 4 * 2**20

    def head_nbytes(self) -> int:
        """The memory one head(h) takes."""
        return (3 + self.masked_keys) * self.n_q * self.n_k * self.q.dtype.itemsize

    def _compute_head(self, h: int) -> HeadResult:
        visible = self.visible if self.masked_keys else None
        q, k = self.q_rope[h], self.k_rope[self.kv_head(h)]
        with one_blas_thread(_blas_may_split(self)) as held:  # the layer's own rule: the same bits as its kept head
            scores = np.matmul(q, k.T, out=fresh_array((q.shape[0], k.shape[0]), q.dtype))  # [n_q, n_k]
            return _head_steps(h, scores, visible, self.q.dtype.type(self.scale), task_threads(4, held))

    def _all_heads(self, name: str) -> np.ndarray:
        """Field name of every head, [h, n_q, n_k], computed once on first use."""
        cache = self._cache
        with cache.lock:
            if name not in cache.fields:
                if name == "masked" and not self.masked_keys:
                    cache.fields[name] = self._all_heads("scaled")
                else:
                    out = np.empty((self.n_heads, self.n_q, self.n_k), dtype=self.q.dtype)
                    for h in range(self.n_heads):
                        kept = cache.heads.get(h)
                        out[h] = getattr(kept if kept is not None else self._compute_head(h), name)
                    _freeze(out)
                    cache.fields[name] = out
            return cache.fields[name]

    @property
    def scores(self) -> np.ndarray:
        """[h, n_q, n_k]  Q·Kᵀ of every head (computed on first use: h·n_q·n_k numbers)."""
        return self._all_heads("scores")

    @property
    def scaled(self) -> np.ndarray:
        """[h, n_q, n_k]  scores · scale of every head (computed on first use)."""
        return self._all_heads("scaled")

    @property
    def masked(self) -> np.ndarray:
        """[h, n_q, n_k]  scaled with −inf where a key is hidden, every head (computed on first use)."""
        return self._all_heads("masked")

    @property
    def weights(self) -> np.ndarray:
        """[h, n_q, n_k]  softmax(masked) row-wise, every head (computed on first use); rows with no visible
        key are all 0."""
        return self._all_heads("weights")


def attention_mask(
    n_q: int, n_k: int, *, causal: bool = False, key_padding_mask: ArrayLike | None = None
) -> np.ndarray | None:
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
    e = logits - peak
    np.exp(e, out=e)
    total = np.sum(e, axis=axis, keepdims=True)
    np.divide(e, total, out=e, where=total > 0)
    return e


def _freeze(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


def _as_array(name: str, a: ArrayLike, dtype: DTypeLike) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiub":
        raise ShapeError(f"{name} must hold numbers, but it holds {arr.dtype} values.")
    return arr.astype(dtype, copy=False)


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


def _result_dtype(arrays: tuple[ArrayLike | None, ...]) -> np.dtype:
    """float32 only when every floating input is float32; float64 otherwise (and for integer inputs)."""
    floats = [np.asarray(a).dtype for a in arrays if a is not None and np.asarray(a).dtype.kind == "f"]
    if floats and all(d == np.float32 for d in floats):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def multi_head_attention(
    x_q: ArrayLike,
    w_q: ArrayLike,
    w_k: ArrayLike,
    w_v: ArrayLike,
    w_o: ArrayLike,
    *,
    x_kv: ArrayLike | None = None,
    b_q: ArrayLike | None = None,
    b_k: ArrayLike | None = None,
    b_v: ArrayLike | None = None,
    b_o: ArrayLike | None = None,
    causal: bool = False,
    key_padding_mask: ArrayLike | None = None,
    scale: float | None = None,
    ablate: ArrayLike | None = None,
    rotary: float | None = None,
    keep_head: int | None = None,
    reuse: tuple[AttentionResult, np.ndarray, np.ndarray] | None = None,
) -> AttentionResult:
    """One multi-head attention layer; every intermediate is in the result (a head's n_q × n_k ones on demand).

    Shapes: x_q [n_q, d_model]; x_kv [n_k, d_model] (None: self-attention, x_kv = x_q); w_q, w_k
    [h, d_model, d_k]; w_v [h, d_model, d_v]; w_o [h·d_v, d_model]; b_q, b_k [h, d_k]; b_v [h, d_v];
    b_o [d_model]; key_padding_mask bool [n_k] (True = padding, hidden); scale defaults to 1/√d_k;
    ablate bool [h] switches heads off: their head output is zero, so they write nothing to the output.

    Grouped-query attention: w_k, w_v (and b_k, b_v) may hold h_kv < h heads when h_kv divides h; query head i
    then reads key/value head i // (h / h_kv) (one key/value head for all: multi-query attention).
    keep_head=i computes head i's n_q × n_k steps along the way and keeps them (result.head(i) is then at hand).
    reuse=(previous, same_q bool [h], same_kv bool [h_kv]): the caller vouches that previous was computed from the
    same X, X_kv, mask, scale and rotation, and from the same weights and biases for the query heads marked in
    same_q and the key/value heads marked in same_kv; their projections and outputs are taken from previous
    (the numbers are the same, bit for bit) and only the others are computed: an edit of one head's W_Q costs one
    head, not h.
    rotary=θ rotates every query and key by its position (0, 1, … in its own sequence) before the scores
    (RoPE, pairs (i, i + d_k/2) as in LLaMA); result.q_rope, k_rope hold the rotated vectors.
    """
    dtype = _result_dtype((x_q, x_kv, w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o))
    x_q = _as_array("X", x_q, dtype)
    self_attention = x_kv is None
    x_kv = x_q if x_kv is None else _as_array("X_kv", x_kv, dtype)
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
    h_kv = w_k.shape[0]
    if h_kv == 0 or h % h_kv:
        raise ShapeError(
            f"W_K has {h_kv} heads but W_Q has {h}: query heads share key/value heads in equal groups, so the "
            f"number of key/value heads must divide {h} (e.g. {h} for one each, 1 for all to share one)."
        )
    _same("heads", ("W_V", w_v.shape[0]), ("W_K", h_kv), "every key head has its value head")
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
        ("b_K", b_k, (h_kv, d_k)),
        ("b_V", b_v, (h_kv, d_v)),
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

    if rotary is not None:
        rotary = float(rotary)
        if not np.isfinite(rotary) or rotary <= 1.0:
            raise ShapeError(f"The rotary base θ must be a finite number above 1 (LLaMA uses 10000), not {rotary}.")
        if d_k % 2:
            raise ShapeError(f"Rotary positions turn pairs of coordinates, so d_k must be even; it is {d_k}.")

    if keep_head is not None and not 0 <= keep_head < h:
        keep_head = None
    checked = _check_reuse(reuse, h, w_k.shape[0], n_q, n_k, dtype)
    # A large layer's products all run on one BLAS thread (so its numbers do not depend on the machine's cores),
    # and its heads and projections share the cores as independent tasks (``parallel``).
    needed = _may_split(n_q, n_k, d_model, d_k, w_v.shape[2], h)
    # overflow is reported by _check_overflow instead
    with np.errstate(over="ignore", invalid="ignore"), one_blas_thread(needed) as held:
        return _compute(
            x_q,
            x_kv,
            w_q,
            w_k,
            w_v,
            w_o,
            biases,
            causal,
            key_padding_mask,
            dtype.type(scale),
            ablate,
            rotary,
            keep_head,
            checked,
            held,
        )


def _check_reuse(
    reuse: tuple[AttentionResult, ArrayLike, ArrayLike] | None, h: int, h_kv: int, n_q: int, n_k: int, dtype: np.dtype
) -> tuple[AttentionResult, np.ndarray, np.ndarray] | None:
    """reuse as (previous, same_q, same_kv) when it can apply to this layer, else None (compute everything)."""
    if reuse is None:
        return None
    previous, same_q, same_kv = reuse
    same_q, same_kv = np.asarray(same_q, dtype=bool), np.asarray(same_kv, dtype=bool)
    if (
        previous.q.shape[:2] != (h, n_q)
        or previous.k.shape[:2] != (h_kv, n_k)
        or previous.q.dtype != dtype
        or same_q.shape != (h,)
        or same_kv.shape != (h_kv,)
    ):
        return None
    return previous, same_q, same_kv


def _head_steps(
    h: int,
    scores: np.ndarray,
    visible: np.ndarray | None,
    scale: np.floating,
    threads: int = 1,
    spare: list[np.ndarray] | None = None,
    pooled: tuple[np.ndarray, int] | None = None,
    check: bool = False,
) -> HeadResult:
    """One head's scores, scaled, masked and weights from its scores q·kᵀ [n_q, n_k] (a whole product: BLAS
    rounds a row differently when it is computed in a smaller block).

    The element-wise steps run a block of query rows at a time (on `threads` threads; each entry's value does not
    depend on the block), the softmax straight into the weights (the same operations as ``softmax``, row for row,
    so the same bits), with no n_q × n_k temporary beside the four arrays kept. out: an [n_q, n_k] buffer to hold
    the weights. pooled=(out, pool): block_max of the weights into out [⌈n_q/pool⌉, ⌈n_k/pool⌉] along the way.
    check: raise NonFiniteError when a scaled score overflows.
    """
    n_q, n_k = scores.shape
    pool = pooled[1] if pooled is not None else 1
    spare = spare if spare is not None else []
    weights = spare.pop(0) if spare else fresh_array(scores.shape, scores.dtype)  # [n_q, n_k]
    scaled = spare.pop(0) if spare else fresh_array(scores.shape, scores.dtype)  # [n_q, n_k]
    masked = (spare.pop(0) if spare else fresh_array(scores.shape, scores.dtype)) if visible is not None else scaled
    hide = scale.dtype.type(-np.inf)

    def block(a: int, b: int) -> Callable[[dict[str, Any]], None]:
        def run(_: dict[str, Any]) -> None:
            np.multiply(scores[a:b], scale, out=scaled[a:b])
            if check:
                _check_overflow("The scaled scores Q·Kᵀ·scale", scaled[a:b])
            rows = visible[a:b] if visible is not None else None
            if rows is not None:  # np.where(rows, scaled, −inf), with no temporary beside the bool block
                np.copyto(masked[a:b], scaled[a:b])
                np.copyto(masked[a:b], hide, where=~rows)
            lo, hi = span = _visible_span(rows) if rows is not None else (0, n_k)
            # the weights from the masked scores just made (the same numbers _softmax_rows makes from the scores)
            w = weights[a:b]
            w[:, :lo] = 0.0
            w[:, hi:] = 0.0
            np.copyto(w[:, lo:hi], masked[a:b, lo:hi])
            if hi > lo:
                _normalize_rows(w, w[:, lo:hi])
            if pooled is not None:
                _pool_rows(pooled[0][a // pool : -(-b // pool)], weights[a:b], span[1], pool)

        return run

    with np.errstate(over="ignore", invalid="ignore"):
        run_tasks([block(a, b) for a, b in _row_blocks(n_q, n_k, pool)], threads)
    _freeze(scores, scaled, masked, weights)
    return HeadResult(head=h, scores=scores, scaled=scaled, masked=masked, weights=weights)


def _blas_may_split(r: AttentionResult) -> bool:
    """Whether some product of r's layer is large enough that BLAS might split it between threads (then every
    product runs on one BLAS thread, so the numbers do not depend on the machine's cores)."""
    n_q, n_k, d_k, d_v = r.q.shape[1], r.k.shape[1], r.q.shape[2], r.v.shape[2]
    return _may_split(n_q, n_k, r.output.shape[1], d_k, d_v, r.q.shape[0])


def _may_split(n_q: int, n_k: int, d_model: int, d_k: int, d_v: int, h: int) -> bool:
    products = (n_q * d_model * d_k, n_k * d_model * max(d_k, d_v), n_q * n_k * max(d_k, d_v), n_q * h * d_v * d_model)
    return max(products) > SPLIT_PRODUCT


def _compute(
    x_q: np.ndarray,
    x_kv: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    w_o: np.ndarray,
    biases: dict[str, np.ndarray | None],
    causal: bool,
    key_padding_mask: ArrayLike | None,
    scale: np.floating,
    ablate: np.ndarray | None,
    rotary: float | None,
    keep_head: int | None,
    reuse: tuple[AttentionResult, np.ndarray, np.ndarray] | None,
    held: bool,
) -> AttentionResult:
    """The math of multi_head_attention on validated inputs (see there for shapes); held: BLAS runs on one
    thread, so the tasks may share the cores (the same bits whichever thread computes what, and as on one thread).

    Q, K, V and the outputs are kept; a head's n_q × n_k steps go through a reused buffer (one per thread), so
    memory grows like n² a few times, not like h·n² four times. The two products of a head run whole, exactly as
    the formulas write them (BLAS rounds a row of a product differently when it is computed in a smaller block);
    the softmax between them runs a block of query rows at a time, so each block stays in cache.
    """
    h, d_v = w_q.shape[0], w_v.shape[2]
    n_q, n_k = x_q.shape[0], x_kv.shape[0]
    dtype = x_q.dtype
    # Projections as products over heads ([h, n, d]): one batched product, or one task per head on several threads
    # (the same per-head products, the same numbers).
    projections: list[Callable[[dict[str, Any]], None]] | None = [] if task_threads(3 * h, held) > 1 else None
    q = _project(x_q, w_q, biases["b_Q"], None if reuse is None else (reuse[0].q, reuse[1]), projections)
    k = _project(x_kv, w_k, biases["b_K"], None if reuse is None else (reuse[0].k, reuse[2]), projections)
    v = _project(x_kv, w_v, biases["b_V"], None if reuse is None else (reuse[0].v, reuse[2]), projections)
    if projections:
        run_tasks(projections, task_threads(len(projections), held))
    # Checked here, not only in the residual: a switched-off head's Q, K, V stay in the result but never reach it.
    _check_overflow("Q = X·W_Q + b_Q", q)
    _check_overflow("K = X_kv·W_K + b_K", k)
    _check_overflow("V = X_kv·W_V + b_V", v)
    # A query head's output can be taken over when its projections and its key/value head's are unchanged.
    kept = np.zeros(h, dtype=bool) if reuse is None else reuse[1] & reuse[2][np.arange(h) * k.shape[0] // h]
    q_angles = k_angles = None
    q_rope, k_rope = q, k
    if rotary is not None:  # RoPE: turn each query and key by its position, after the projection (and bias)
        q_angles = rope_angles(n_q, q.shape[2], rotary)  # [n_q, d_k/2]
        k_angles = q_angles if n_k == n_q else rope_angles(n_k, k.shape[2], rotary)  # [n_k, d_k/2]
        q_rope = rope_rotate(q, q_angles).astype(dtype, copy=False)  # [h, n_q, d_k]
        k_rope = rope_rotate(k, k_angles).astype(dtype, copy=False)  # [h_kv, n_k, d_k]
        _freeze(q_rope, k_rope, q_angles, k_angles)
    if reuse is not None:  # the same mask (the caller vouches): the previous result's, not another n_q × n_k copy
        visible, dead_rows, masked_keys = reuse[0].visible, reuse[0].dead_rows, reuse[0].masked_keys
    else:
        mask = attention_mask(n_q, n_k, causal=causal, key_padding_mask=key_padding_mask)
        masked_keys = mask is not None
        if mask is None:
            visible = np.ones((n_q, n_k), dtype=bool)
            dead_rows = np.zeros(0, dtype=np.intp)
        else:
            visible = np.ascontiguousarray(mask)
            dead_rows = np.flatnonzero(~visible.any(axis=1))
    _freeze(q, k, v, visible, dead_rows)

    pool = max(1, -(-max(n_q, n_k) // OVERVIEW_CELLS))
    blocks = _row_blocks(n_q, n_k, pool)
    spans = [_visible_span(visible[a:b]) for a, b in blocks] if masked_keys else [(0, n_k)] * len(blocks)
    check = _may_overflow(q_rope, k_rope, scale)
    head_outputs = np.empty((h, n_q, d_v), dtype=dtype)  # [h, n_q, d_v]
    weights_pooled = np.empty((h, -(-n_q // pool), -(-n_k // pool)), dtype=dtype)
    for head in np.flatnonzero(kept):  # unchanged: the previous result's numbers are these numbers
        assert reuse is not None  # kept is all False without it
        head_outputs[head] = reuse[0].head_outputs[head]
        weights_pooled[head] = reuse[0].weights_pooled[head]
    # the selected head (keep), unless carried over: its steps are kept, so the window can draw them at once
    keep = keep_head if keep_head is not None and not kept[keep_head] else None
    others = [i for i in range(h) if not kept[i] and i != keep]
    threads = task_threads(len(others) + (keep is not None), held)
    selected: dict[str, np.ndarray] = {}

    def selected_scores(_: dict[str, Any]) -> None:
        assert keep is not None
        kv = keep * k.shape[0] // h
        selected["scores"] = np.matmul(q_rope[keep], k_rope[kv].T, out=fresh_array((n_q, n_k), dtype))  # [n_q, n_k]

    def other_head(head: int) -> Callable[[dict[str, Any]], None]:
        def run(local: dict[str, Any]) -> None:
            kv = head * k.shape[0] // h
            if "w" not in local:  # this thread's buffer: one head's steps at a time, overwritten in place
                local["w"] = fresh_array((n_q, n_k), dtype)
            w = local["w"]
            np.matmul(q_rope[head], k_rope[kv].T, out=w)  # scores [n_q, n_k]
            for (a, b), span in zip(blocks, spans, strict=True):
                _softmax_rows(w[a:b], visible[a:b] if masked_keys else None, span, scale, check)
                _pool_rows(weights_pooled[head, a // pool : -(-b // pool)], w[a:b], span[1], pool)
            np.matmul(w, v[kv], out=head_outputs[head])  # weights·V [n_q, d_v]

        return run

    tasks = ([selected_scores] if keep is not None else []) + [other_head(i) for i in others]
    buffers = [local.pop("w") for local in run_tasks(tasks, threads) if "w" in local]
    steps = None
    if keep is not None:
        # the selected head's steps: its weights and scaled scores take over the threads' buffers (the peak holds
        # scores, scaled, masked and weights, as one head's steps alone, and fresh memory costs page faults)
        del buffers[3:]
        mask = visible if masked_keys else None
        steps = _head_steps(
            keep, selected.pop("scores"), mask, scale, threads, buffers, (weights_pooled[keep], pool), check
        )
        np.matmul(steps.weights, v[keep * k.shape[0] // h], out=head_outputs[keep])  # weights·V [n_q, d_v]
    buffers.clear()
    if ablate is not None:
        head_outputs[ablate] = 0.0  # a switched-off head writes nothing
    # [n_q, h·d_v], an array of its own (not a view of a writeable temporary: the views keep it as it is)
    concat = np.ascontiguousarray(head_outputs.transpose(1, 0, 2)).reshape(n_q, h * d_v)
    output = concat @ w_o  # [n_q, d_model]
    if biases["b_O"] is not None:
        output += biases["b_O"]
    residual = x_q + output  # [n_q, d_model]
    _check_overflow("The residual X + output", residual)

    _freeze(head_outputs, concat, concat.base if concat.base is not None else concat, output, residual, weights_pooled)
    result = AttentionResult(
        q=q,
        k=k,
        v=v,
        head_outputs=head_outputs,
        concat=concat,
        output=output,
        residual=residual,
        visible=visible,
        dead_rows=dead_rows,
        scale=float(scale),
        weights_pooled=weights_pooled,
        pool=pool,
        masked_keys=masked_keys,
        q_rope=q_rope,
        k_rope=k_rope,
        rotary=rotary,
        q_angles=q_angles,
        k_angles=k_angles,
    )
    if steps is not None:
        result._cache.heads[steps.head] = steps
    elif keep_head is not None and kept[keep_head]:  # the selected head is unchanged: its steps carry over too
        assert reuse is not None  # kept is all False without it
        with reuse[0]._cache.lock:
            old = reuse[0]._cache.heads.get(keep_head)
        if old is not None:
            result._cache.heads[keep_head] = old
    return result


def _project(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    reuse: tuple[np.ndarray, np.ndarray] | None,
    tasks: list[Callable[[dict[str, Any]], None]] | None = None,
) -> np.ndarray:
    """x·W (+ b) for every head, [h, n, d]; with reuse = (previous, same): the heads marked same are copied.
    tasks: a list to append one task per head to (the caller runs them), instead of computing here."""
    if reuse is not None and reuse[1].all():
        return reuse[0]  # every head as before: the same (read-only) array, no copy
    h = w.shape[0]
    if reuse is None or not reuse[1].any():
        if tasks is None:
            out = x @ w  # [h, n, d]: x [n, d_model] broadcasts against W [h, d_model, d], no copy of W
            if b is not None:
                out += b[:, None, :]
            return out
        out = np.empty((h, x.shape[0], w.shape[2]), dtype=np.result_type(x, w))
        fresh = np.arange(h)
    else:
        previous, same = reuse  # of the same dtype (_check_reuse)
        out = np.empty((h, x.shape[0], w.shape[2]), dtype=previous.dtype)
        out[same] = previous[same]
        fresh = np.flatnonzero(~same)
    if tasks is not None:
        tasks.extend(partial(_project_head, x, w, b, int(i), out) for i in fresh)
    elif len(fresh):
        part = x @ w[fresh]  # [m, n, d]: the same per-head products as for every head
        if b is not None:
            part += b[fresh][:, None, :]
        out[fresh] = part
    return out


def _project_head(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, i: int, out: np.ndarray, _: object) -> None:
    """out[i] = x·W[i] (+ b[i]): one head's projection, the product the batched one makes for it."""
    np.matmul(x, w[i], out=out[i])
    if b is not None:
        out[i] += b[i]


def _row_blocks(n_q: int, n_k: int, pool: int) -> list[tuple[int, int]]:
    """Query-row blocks [a, b) of about BLOCK_ENTRIES entries each, starting at multiples of pool."""
    rows = max(pool, BLOCK_ENTRIES // max(n_k, 1) // pool * pool)
    return [(a, min(a + rows, n_q)) for a in range(0, n_q, rows)]


def _visible_span(visible: np.ndarray) -> tuple[int, int]:
    """[lo, hi): the columns where any of these rows sees a key (lo = hi when none does)."""
    cols = np.flatnonzero(visible.any(axis=0))
    return (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 0)


def _may_overflow(q: np.ndarray, k: np.ndarray, scale: np.floating) -> bool:
    """False when no scaled score can overflow (|q·k| ≤ ‖q‖·‖k‖), so the blocks need no finiteness check."""
    with np.errstate(over="ignore", invalid="ignore"):
        q_norm = float(np.sqrt(np.max(np.einsum("hnd,hnd->hn", q, q)))) if q.size else 0.0
        k_norm = float(np.sqrt(np.max(np.einsum("hnd,hnd->hn", k, k)))) if k.size else 0.0
        bound = q_norm * k_norm * abs(float(scale))
    return not (np.isfinite(bound) and bound < float(np.finfo(q.dtype).max) / 4)


def _softmax_rows(
    w: np.ndarray, visible: np.ndarray | None, span: tuple[int, int], scale: np.floating, check: bool
) -> None:
    """Scores → weights, in place, for a block of query rows w [rows, n_k] (visible: its rows of the mask).

    The same operations as HeadResult's steps, row for row: times scale, −inf where hidden, the same maximum,
    exp(x − peak), the same pairwise sum over the whole row, the same division; so the same numbers, bit for bit.
    Keys that no row of the block sees (the future, in causal attention) are set to 0 without exp.
    """
    lo, hi = span
    if check:  # every scaled score, hidden ones too (the whole product was computed)
        w *= scale  # scaled
        _check_overflow("The scaled scores Q·Kᵀ·scale", w)
    if visible is not None:
        w[:, :lo] = 0.0
        w[:, hi:] = 0.0
        part = w[:, lo:hi]
        if not check:
            part *= scale  # scaled: only where a row of the block sees a key
        np.copyto(part, -np.inf, where=~visible[:, lo:hi])  # masked
    else:
        part = w
        if not check:
            part *= scale
    if hi > lo:
        _normalize_rows(w, part)


def _normalize_rows(w: np.ndarray, part: np.ndarray) -> None:
    """The softmax of masked scores in place: part [rows, lo:hi] of w holds them, the rest of w is 0."""
    peak = np.max(part, axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)  # all-hidden rows: exp(−inf − 0) = 0
    np.subtract(part, peak, out=part)
    np.exp(part, out=part)
    total = np.sum(w, axis=-1, keepdims=True)  # over the whole row, zeros included: the same sum
    if total.min(initial=1.0) > 0:  # every row sees a key (the same quotients, without the masked loop)
        np.divide(part, total, out=part)
    else:
        np.divide(part, total, out=part, where=total > 0)


def _pool_rows(out: np.ndarray, w: np.ndarray, hi: int, pool: int) -> None:
    """out = block_max(w, pool, pool) for a block of weights whose keys from hi on are all 0 (not looked at)."""
    cols = min(w.shape[1], -(-hi // pool) * pool)
    done = -(-cols // pool)
    if cols:
        out[:, :done] = block_max(w[:, :cols], pool, pool)
    out[:, done:] = 0.0


def block_max(a: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """The maximum over each fy × fx block of a 2-D array, [⌈rows/fy⌉, ⌈cols/fx⌉] (ragged edge blocks too)."""
    if fy == 1 and fx == 1:
        return a
    rows, cols = a.shape
    ry, rx = -(-rows // fy), -(-cols // fx)
    if rows % fy:
        a = np.concatenate([a, np.full((ry * fy - rows, cols), -np.inf, dtype=a.dtype)])
    out = a.reshape(ry, fy, cols).max(axis=1)  # [ry, cols]
    if cols % fx:
        out = np.concatenate([out, np.full((ry, rx * fx - cols), -np.inf, dtype=a.dtype)], axis=1)
    return out.reshape(ry, rx, fx).max(axis=2)
