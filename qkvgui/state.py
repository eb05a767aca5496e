"""What a session holds, as a frozen value: ``SessionState``, its ``Layer`` of weights, and ``validate_state``.

This module sits below both the files (``qkvgui.io`` reads and writes states) and the document
(``qkvgui.session.Session`` holds one state at a time and replaces it on every edit), so that the arrows run one
way: ``cli → ui → session → io → state → core``. A state is immutable: its arrays are read-only float64 (bool for
flags), its sequences are tuples, so a snapshot can be shared with a worker thread or an undo command for free.
``extra`` is a plain dict (it is saved as JSON): treat it as read-only; the document copies it on the way in and out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qkvgui.core import AttentionResult, SessionError, multi_head_attention
from qkvgui.core.checks import LIMITS, MAX_MATRIX_BYTES, byte_text, check_json_plain, matrix_bytes
from qkvgui.core.checks import check_finite as _core_check_finite
from qkvgui.core.format import format_shape
from qkvgui.core.models import Stack, run_blocks
from qkvgui.core.parallel import one_blas_thread
from qkvgui.core.weights import LayerWeights

__all__ = [
    "BIASES",
    "GENERATORS",
    "LIMITS",
    "MATRICES",
    "PER_HEAD",
    "SCALE_MODES",
    "Layer",
    "SessionState",
    "compute_model",
    "compute_state",
    "few_blas_threads",
    "layer_cost",
    "scale_of",
    "validate_state",
    "check_extra",
    "state_bytes",
]

#: every editable matrix, by the name the UI and the files use
MATRICES = ("X", "X_kv", "W_Q", "W_K", "W_V", "W_O")
#: the matrices stored per head, [h, d_model, d]
PER_HEAD = ("W_Q", "W_K", "W_V")
#: ways to fill X or X_kv
GENERATORS = ("one-hot", "sinusoidal", "random", "zeros")
#: how the scores are scaled: by 1/√d_k, not at all, or by a custom factor
SCALE_MODES = ("sqrt", "none", "custom")
#: the biases, added after each product: b_Q, b_K [h, d_k]; b_V [h, d_v]; b_O [d_model]
BIASES = {"b_Q": "b_q", "b_K": "b_k", "b_V": "b_v", "b_O": "b_o"}
#: the session's own arrays and each layer's, by the name the UI and the files use → the attribute
STATE_ARRAYS = {"X": "x", "X_kv": "x_kv"}
LAYER_ARRAYS = {"W_Q": "w_q", "W_K": "w_k", "W_V": "w_v", "W_O": "w_o"}
ARRAY_FIELDS = {**STATE_ARRAYS, **LAYER_ARRAYS, **BIASES}


def frozen_array(a: Any, dtype: type = np.float64) -> Any:
    """A read-only array of dtype holding a's values, shared when a already is one (no copy on every edit).

    Anything that is not an array of numbers (or flags) is returned as it is, for ``validate_state`` to refuse
    with a message."""
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiub":
        return a
    if a.dtype == dtype and not a.flags.writeable and a.flags.owndata:
        return a
    out: np.ndarray = np.array(a, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


def _number_array(a: Any) -> Any:
    # flags are not numbers: keep a bool array as it is, so that the validator names it
    return a if isinstance(a, np.ndarray) and a.dtype.kind == "b" else frozen_array(a)


@dataclass(frozen=True, eq=False)
class Layer(LayerWeights):
    """One attention layer's weights and biases (``LayerWeights``), and which heads are switched off. Biases
    default to zeros and ablation flags to all heads on (see ``filled``)."""

    ablated: np.ndarray | None = None  # [h] bool: True = the head is switched off

    def __post_init__(self) -> None:
        for name in ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _number_array(value))
        if self.ablated is not None:
            object.__setattr__(self, "ablated", frozen_array(self.ablated, bool))

    def filled(self) -> Layer:
        """This layer with every optional field present (zeros, all heads on)."""
        h, d_model, d_k = self.w_q.shape
        d_v = self.w_v.shape[2] if np.ndim(self.w_v) == 3 else 0
        h_kv = self.w_k.shape[0] if np.ndim(self.w_k) == 3 else h

        def given(a: np.ndarray | None, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
            return np.zeros(shape, dtype) if a is None else a

        return Layer(
            self.w_q,
            self.w_k,
            self.w_v,
            self.w_o,
            given(self.b_q, (h, d_k)),
            given(self.b_k, (h_kv, d_k)),
            given(self.b_v, (h_kv, d_v)),
            given(self.b_o, (d_model,)),
            given(self.ablated, (h,), bool),
        )


@dataclass(frozen=True, eq=False)
class SessionState:
    """Everything a session holds, frozen. ``head`` and ``layer`` are the selection it was saved with.

    Build one directly, or take ``Session.state()``; change one with ``dataclasses.replace``. Lists given for
    the sequences become tuples and arrays become read-only float64 (bool for flags); nothing else is checked
    until ``validate_state``.
    """

    tokens: tuple[str, ...]
    source_tokens: tuple[str, ...]
    x: np.ndarray  # [n, d_model]
    x_kv: np.ndarray  # [m, d_model]
    layers: tuple[Layer, ...]  # applied in order over one residual stream
    padding: np.ndarray  # [n] bool: which tokens are padding (keys hidden in self-attention)
    source_padding: np.ndarray  # [m] bool: which source tokens are padding (keys hidden in cross-attention)
    cross: bool = False
    causal: bool = False
    scale_mode: str = "sqrt"
    custom_scale: float = 1.0
    head: int = 0  # the selected head
    layer: int = 0  # the selected layer, which the editors and views show
    title: str = ""
    description: str = ""
    features: tuple[str, ...] = ()  # names of X's columns (empty: d0, d1, …)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the residual stream entering the first layer when X is a normalised copy of it (a pre-LayerNorm model's
    #: layer, imported from a checkpoint); None: X itself
    x_residual: np.ndarray | None = None
    #: a whole real model: its own blocks (norms, MLPs) between the attention layers, read-only; None: none
    model: Stack | None = None
    #: rotary positions (RoPE, the LLaMA family): Q and K turned by their position before the scores
    rotary: bool = False
    rope_theta: float = 10000.0  # the base θ of the rotation frequencies

    def __post_init__(self) -> None:
        for name in ("tokens", "source_tokens", "features", "layers"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("x", "x_kv", "x_residual"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _number_array(value))
        for name in ("padding", "source_padding"):
            object.__setattr__(self, name, frozen_array(getattr(self, name), bool))

    def replace(self, **changes: Any) -> SessionState:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def filled(self) -> SessionState:
        """This state with every layer's optional arrays present (zeros, all heads on)."""
        return self.replace(layers=tuple(L.filled() for L in self.layers))


# ---- the validator -----------------------------------------------------------------------------------------------
def validate_state(s: SessionState) -> None:
    """Every field present, of the right kind, within LIMITS and fitting together; raises SessionError saying what
    and where otherwise. A state that passes computes, saves and loads."""
    if not isinstance(s, SessionState):
        raise SessionError(f"A session state is needed, not {type(s).__name__}.")
    for what in ("tokens", "source_tokens", "features"):
        value = getattr(s, what)
        if not isinstance(value, tuple | list) or not all(isinstance(t, str) for t in value):
            raise SessionError(f"The {what.replace('_', ' ')} must be a list of strings.")
    n, m = len(s.tokens), len(s.source_tokens)
    if n == 0 or m == 0:
        raise SessionError("A session needs at least one token and one source token.")
    if max(n, m) > LIMITS["tokens"]:
        raise SessionError(f"{max(n, m)} tokens is more than the {LIMITS['tokens']} qkvgui handles.")
    for what, kind in (
        ("cross", bool),
        ("causal", bool),
        ("head", int),
        ("layer", int),
        ("custom_scale", (int, float)),
        ("title", str),
        ("description", str),
        ("extra", dict),
        ("layers", tuple),
        ("rotary", bool),
        ("rope_theta", (int, float)),
    ):
        value = getattr(s, what)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SessionError(f"The session's {what.replace('_', ' ')} has the wrong type ({type(value).__name__}).")
    if not 1 <= len(s.layers) <= LIMITS["layers"]:
        raise SessionError(f"A session has 1 to {LIMITS['layers']} layers, not {len(s.layers)}.")
    if not all(isinstance(L, Layer) for L in s.layers):
        raise SessionError("Every layer must be a Layer of weights.")
    for name, a in (("X", s.x), ("X_kv", s.x_kv)):
        _numbers(name, a)
    first = s.layers[0]
    _numbers("W_Q", first.w_q)
    if first.w_q.ndim != 3:
        raise SessionError(f"W_Q must be (heads × d_model × d_k), not {format_shape(first.w_q.shape)}.")
    h, dm, dk = first.w_q.shape
    _numbers("W_V", first.w_v)
    dv = first.w_v.shape[2] if first.w_v.ndim == 3 else 0
    check_sizes(heads=h, d_model=dm, d_k=dk, d_v=dv)
    _numbers("W_K", first.w_k)
    h_kv = first.w_k.shape[0] if first.w_k.ndim == 3 else 0
    if not 1 <= h_kv <= h or h % h_kv:
        raise SessionError(
            f"W_K has {h_kv} key/value heads but W_Q has {h} query heads: the key/value heads must divide the query "
            f"heads into equal groups ({h} for one each, 1 for all to share one)."
        )
    check_sizes(
        heads=h,
        d_model=dm,
        d_k=dk,
        d_v=dv,
        tokens=n,
        source_tokens=m,
        layers=len(s.layers),
        residual=s.x_residual is not None,
        kv_heads=h_kv,
        model_bytes=_model_bytes(s.model),
    )
    check_extra(s.extra)
    if s.rotary and dk % 2:
        raise SessionError(f"Rotary positions turn pairs of coordinates, so d_k must be even; it is {dk}.")
    if not (math.isfinite(s.rope_theta) and s.rope_theta > 1):
        raise SessionError(f"The rotary base θ must be a finite number above 1 (LLaMA uses 10000), not {s.rope_theta}.")
    expected = {"X": (s.x, (n, dm)), "X_kv": (s.x_kv, (m, dm))}
    if s.x_residual is not None:
        _numbers("the residual stream entering the layer", s.x_residual)
        expected["the residual stream entering the layer"] = (s.x_residual, (n, dm))
    for name, (a, shape) in expected.items():
        if a.shape != shape:
            raise SessionError(
                f"{name} is {format_shape(a.shape)} but it must be {format_shape(shape)} to fit the other matrices."
            )
    layer_shapes = {
        "W_Q": (h, dm, dk),
        "W_K": (h_kv, dm, dk),
        "W_V": (h_kv, dm, dv),
        "W_O": (h * dv, dm),
        "b_Q": (h, dk),
        "b_K": (h_kv, dk),
        "b_V": (h_kv, dv),
        "b_O": (dm,),
    }
    for index, L in enumerate(s.layers):
        where = f" of layer {index + 1}" if len(s.layers) > 1 else ""
        for name, shape in layer_shapes.items():
            a = getattr(L, ARRAY_FIELDS[name])
            if a is None and name in BIASES:
                continue
            _numbers(name + where, a)
            if a.shape != shape:
                raise SessionError(
                    f"{name}{where} is {format_shape(a.shape)} but it must be {format_shape(shape)} "
                    "to fit the other matrices."
                )
        if L.ablated is not None and np.shape(L.ablated) != (h,):
            raise SessionError(f"The switched-off heads{where} need one flag per head ({h}).")
    for name, pad, length in (("padding", s.padding, n), ("source padding", s.source_padding, m)):
        if np.shape(pad) != (length,):
            raise SessionError(f"The {name} needs one flag per token ({length}), not {np.shape(pad)}.")
    if s.scale_mode not in SCALE_MODES:
        raise SessionError(f"Unknown scale '{s.scale_mode}': choose one of {', '.join(SCALE_MODES)}.")
    if not math.isfinite(s.custom_scale):
        raise SessionError(f"The custom scale must be finite, not {s.custom_scale}.")
    if not 0 <= s.head < h:
        raise SessionError(f"The selected head {s.head + 1} does not exist: there are {h} heads.")
    if not 0 <= s.layer < len(s.layers):
        raise SessionError(f"The selected layer {s.layer + 1} does not exist: there are {len(s.layers)}.")
    if s.model is not None:
        if not isinstance(s.model, Stack):
            raise SessionError("The model's blocks must be a qkvgui.core.models.Stack.")
        problem = s.model.check(len(s.layers), dm)
        if problem:
            raise SessionError(f"The session's model does not fit: {problem}.")
        if s.cross:
            raise SessionError("A whole model's layers read their own tokens: it cannot be cross-attention.")


def check_sizes(
    *,
    heads: int,
    d_model: int,
    d_k: int,
    d_v: int,
    tokens: int = 1,
    source_tokens: int = 1,
    layers: int = 1,
    residual: bool = False,
    kv_heads: int | None = None,
    model_bytes: int = 0,
) -> None:
    """Each dimension between 1 and its LIMIT, and all matrices together (with ``model_bytes`` of a whole model's
    own blocks) within MAX_MATRIX_BYTES (what a session file holds); raises SessionError naming the first limit
    passed, before anything is allocated."""
    for what, value, limit in (
        ("heads", heads, LIMITS["heads"]),
        ("d_model", d_model, LIMITS["d_model"]),
        ("d_k", d_k, LIMITS["d_head"]),
        ("d_v", d_v, LIMITS["d_head"]),
    ):
        if not 1 <= value <= limit:
            raise SessionError(f"{what} must be between 1 and {limit}, not {value}.")
    total = matrix_bytes(
        tokens=tokens,
        source_tokens=source_tokens,
        d_model=d_model,
        heads=heads,
        d_k=d_k,
        d_v=d_v,
        layers=layers,
        residual=residual,
        kv_heads=kv_heads,
    )
    if total > MAX_MATRIX_BYTES:
        raise SessionError(
            f"{heads} heads × d_model {d_model} × d_k {d_k} × d_v {d_v} over {layers} layer{'s' * (layers > 1)} and "
            f"{max(tokens, source_tokens)} tokens would take {byte_text(total)} of matrices; a session holds at most "
            f"{byte_text(MAX_MATRIX_BYTES)} (what a session file can save and load). Nothing was changed."
        )
    if model_bytes and total + model_bytes > MAX_MATRIX_BYTES:
        raise SessionError(
            f"The model's layers take {byte_text(total)} and its own blocks (norms, MLPs) {byte_text(model_bytes)}: "
            f"more than the {byte_text(MAX_MATRIX_BYTES)} a session holds (what a session file can save and load)."
        )


def _model_bytes(model: object) -> int:
    """Bytes of a whole model's own blocks as float64 (0 without one)."""
    if not isinstance(model, Stack):
        return 0
    try:
        return 8 * sum(int(np.size(a)) for a in model.to_plain()[1].values())
    except (AttributeError, TypeError):  # malformed blocks: Stack.check says what is wrong
        return 0


def check_extra(extra: object) -> None:
    """The free-form extra data is plain JSON of bounded depth and size (raises SessionError otherwise)."""
    if not isinstance(extra, dict):
        raise SessionError(f"The session's extra data must be a dict, not {type(extra).__name__}.")
    check_json_plain(extra, "The session's extra data", SessionError)


def state_bytes(s: SessionState) -> int:
    """Bytes of every matrix of a state, as float64 (from the shapes: nothing is touched)."""
    total = s.x.size + s.x_kv.size + (0 if s.x_residual is None else s.x_residual.size)
    for L in s.layers:
        total += sum(
            int(np.size(getattr(L, a)))
            for a in ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o")
            if getattr(L, a) is not None
        )
    return 8 * total


def check_finite(name: str, a: np.ndarray) -> None:
    """Raises SessionError naming the first NaN or infinity of a, and where it is."""
    _core_check_finite(name, a, SessionError)


def _numbers(name: str, a: Any) -> None:
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
        raise SessionError(f"{name} must be an array of numbers.")
    check_finite(name, a)


# ---- computing ---------------------------------------------------------------------------------------------------
def scale_of(s: SessionState) -> float:
    """The factor the scores are multiplied by."""
    if s.scale_mode == "sqrt":
        return 1.0 / math.sqrt(s.layers[0].w_q.shape[2])
    if s.scale_mode == "none":
        return 1.0
    return float(s.custom_scale)


def compute_state(
    s: SessionState, previous: tuple[SessionState, list[AttentionResult]] | None = None
) -> list[AttentionResult]:
    """One result per layer for a state (safe on a worker thread: a state never changes).

    Layer ℓ reads the residual stream after layer ℓ − 1 (X for the first) and adds its output to it; in
    cross-attention every layer's keys and values come from X_kv. The selected layer's selected head keeps its
    n × n steps (result.head(head) is at hand). With previous = (an earlier state, its results), heads whose
    inputs and weights did not change are taken from those results (the same numbers): an edit of one head's
    W_Q recomputes one head.
    """
    if s.model is not None:
        return [r for r, _, _ in compute_model(s, previous)]
    pad = s.source_padding if s.cross else s.padding
    x_in = s.x  # what the first layer's attention reads
    stream = s.x if s.x_residual is None else s.x_residual  # the residual stream it writes into
    results: list[AttentionResult] = []
    same_setting = previous is not None and _same_setting(s, previous[0]) and len(previous[1]) == len(s.layers)
    for index, L in enumerate(s.layers):
        L = L.filled()
        reuse = None
        if same_setting and previous is not None:
            p_state, p_results = previous
            p_in = p_state.x if index == 0 else p_results[index - 1].residual
            if _same(x_in, p_in):
                reuse = _reusable_heads(L, p_state.layers[index].filled(), p_results[index])
        r = multi_head_attention(
            x_in,
            L.w_q,
            L.w_k,
            L.w_v,
            L.w_o,
            x_kv=s.x_kv if s.cross else None,
            b_q=L.b_q,
            b_k=L.b_k,
            b_v=L.b_v,
            b_o=L.b_o,
            causal=s.causal,
            key_padding_mask=pad if pad.any() else None,
            scale=scale_of(s),
            ablate=L.ablated,
            rotary=float(s.rope_theta) if s.rotary else None,
            keep_head=s.head if index == s.layer else None,
            reuse=reuse,
        )
        if stream is not x_in:  # X was a normalised copy: the layer writes into the real stream
            residual = stream + r.output
            residual.flags.writeable = False
            r = dataclasses.replace(r, residual=residual)
        results.append(r)
        stream = x_in = r.residual
    return results


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is b:
        return True
    return a is not None and b is not None and a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def _same_setting(s: SessionState, p: SessionState) -> bool:
    """Whether everything but the layers' weights (and X, checked per layer) is the same in both states."""
    return _same_inputs(s, p) and p.model is None


def _same_inputs(s: SessionState, p: SessionState) -> bool:
    """Whether the settings and inputs other than X and the layers are the same in both states."""
    return (
        s.cross == p.cross
        and s.causal == p.causal
        and scale_of(s) == scale_of(p)
        and _same(s.padding, p.padding)
        and _same(s.source_padding, p.source_padding)
        and (not s.cross or _same(s.x_kv, p.x_kv))
        and _same(s.x_residual, p.x_residual)
        and len(s.layers) == len(p.layers)
        and s.rotary == p.rotary
        and (not s.rotary or s.rope_theta == p.rope_theta)
    )


def _reusable_heads(L: Layer, P: Layer, r: AttentionResult) -> tuple[AttentionResult, np.ndarray, np.ndarray] | None:
    """(r, same_q [h], same_kv [h_kv]): which heads of filled layer L have the weights they had in P."""
    if L.w_q.shape != P.w_q.shape or L.w_k.shape != P.w_k.shape or L.w_v.shape != P.w_v.shape:
        return None

    def per_head(*pairs: tuple[np.ndarray | None, np.ndarray | None]) -> np.ndarray:  # filled: never None
        arrays = [(np.asarray(a), np.asarray(b)) for a, b in pairs]
        n = len(arrays[0][0])
        return np.array([all(_same(a[i], b[i]) for a, b in arrays) for i in range(n)], dtype=bool)

    same_q = per_head((L.w_q, P.w_q), (L.b_q, P.b_q), (L.ablated, P.ablated))
    same_kv = per_head((L.w_k, P.w_k), (L.w_v, P.w_v), (L.b_k, P.b_k), (L.b_v, P.b_v))
    return (r, same_q, same_kv) if same_q.any() and same_kv.any() else None


def compute_model(
    s: SessionState, previous: tuple[SessionState, list[AttentionResult]] | None = None
) -> list[tuple[AttentionResult, np.ndarray, np.ndarray]]:
    """A whole-model state: per layer (result, stream entering the layer, stream after the model's own block).

    Layer ℓ's attention uses the session's (editable) weights; between layers the model's blocks run, so an edit
    to layer ℓ reaches every later layer as it would in the model. Layer ℓ's scale is the session's times the
    model's factor for it (GPT-2's scale_attn_by_inverse_layer_idx). Each result carries the block's numbers:
    ``after`` (the stream after the block) and ``next_x`` (what the next layer's attention reads; ``after`` for
    the last layer). With previous = (an earlier state of the same model, its results), the layers before the
    first edited one are taken from those results (the same numbers): an edit in layer ℓ runs layers ℓ … L only.
    """
    if s.model is None:
        raise SessionError("This session is not a whole imported model: it has no blocks between layers.")
    model = s.model
    pad = s.source_padding if s.cross else s.padding
    stream = s.x if s.x_residual is None else s.x_residual
    base = scale_of(s)
    unchanged = _unchanged_layers(s, previous)
    start = unchanged or 0
    kept: list[AttentionResult] = [] if previous is None else previous[1][:start]
    xs: dict[int, np.ndarray] = {}

    def attend(index: int, x: np.ndarray) -> AttentionResult:
        xs[index] = x
        L = s.layers[index].filled()
        reuse = None
        if index == start and unchanged is not None and previous is not None:
            reuse = _reusable_heads(L, previous[0].layers[index].filled(), previous[1][index])  # the same X
        return multi_head_attention(
            x,
            L.w_q,
            L.w_k,
            L.w_v,
            L.w_o,
            b_q=L.b_q,
            b_k=L.b_k,
            b_v=L.b_v,
            b_o=L.b_o,
            causal=s.causal,
            key_padding_mask=pad if pad.any() else None,
            scale=base * model.scale_factors[index],
            ablate=L.ablated,
            rotary=float(s.rope_theta) if s.rotary else None,
            reuse=reuse,
        )

    out = [(r, _stream_before(kept, i, stream), _after(r)) for i, r in enumerate(kept)]
    x = s.x
    if start > 0:
        stream = _after(kept[-1])
        assert kept[-1].next_x is not None  # _unchanged_layers keeps only results that carry the next layer's input
        x = kept[-1].next_x
    with few_blas_threads(len(s.tokens)):
        ran = run_blocks(model.blocks, x, stream, attend, start=start)
    for index, (result, before, after) in enumerate(ran, start=start):
        if before is not xs[index]:  # pre-norm: the layer reads a normalised copy and writes into the stream itself
            residual = before + result.output
            residual.flags.writeable = False
            result = dataclasses.replace(result, residual=residual)
        after.flags.writeable = False
        next_x = xs.get(index + 1, after)
        result = dataclasses.replace(result, after=after, next_x=next_x)
        out.append((result, before, after))
    return out


def _after(r: AttentionResult) -> np.ndarray:
    assert r.after is not None  # results of compute_model carry the stream after their block
    return r.after


def _stream_before(results: list[AttentionResult], index: int, first: np.ndarray) -> np.ndarray:
    return first if index == 0 else _after(results[index - 1])


def _unchanged_layers(s: SessionState, previous: tuple[SessionState, list[AttentionResult]] | None) -> int | None:
    """How many leading layers of whole-model state s have the inputs and weights they had in previous (at most
    all but the last), or None when previous is of another model, X or setting."""
    if previous is None:
        return None
    p, results = previous
    if (
        p.model is not s.model
        or len(results) != len(s.layers)
        or not _same_inputs(s, p)
        or not _same(s.x, p.x)
        or any(r.after is None or r.next_x is None for r in results)
    ):
        return None
    count = 0
    for L, P in zip(s.layers, p.layers, strict=True):
        if L is not P and not all(_same(getattr(L, f), getattr(P, f)) for f in LAYER_FIELDS):
            break
        count += 1
    return min(count, len(s.layers) - 1)  # nothing edited: recompute the last layer anyway (cheap, always fresh)


#: the fields of a Layer (weights, biases, ablation flags)
LAYER_FIELDS = tuple(f.name for f in dataclasses.fields(Layer))
#: at most this many tokens, a whole model runs with one BLAS thread: its products are small (64 × 384 · 384 ×
#: 1536 takes ~3 ms), and on a busy 2-core machine two contending BLAS threads made them up to 30× slower
ONE_BLAS_THREAD_TOKENS = 256


@contextlib.contextmanager
def few_blas_threads(n_tokens: int) -> Iterator[None]:
    """A context in which NumPy's BLAS uses one thread when the products are small (threadpoolctl, if installed).
    The limit is process-wide and shared with the core's own (``core.parallel.one_blas_thread``): it is set by the
    first thread to enter and lifted by the last to leave, so threads overlapping in it never leave BLAS limited
    afterwards."""
    with one_blas_thread(n_tokens <= ONE_BLAS_THREAD_TOKENS):
        yield


def layer_cost(s: SessionState) -> float:
    """Multiply-adds of one computation of the state, to decide whether it leaves the GUI thread."""
    n = len(s.tokens)
    m = len(s.source_tokens) if s.cross else n
    h, d_model, d_k = s.layers[0].w_q.shape
    d_v = s.layers[0].w_v.shape[2]
    h_kv = s.layers[0].w_k.shape[0]
    per_layer = (
        h * d_model * n * d_k + h_kv * d_model * m * (d_k + d_v) + h * n * m * (d_k + d_v) + n * h * d_v * d_model
    )
    return float(per_layer * len(s.layers))
