"""The document a user edits: sequences, matrices and settings, validated, announcing every change.

Qt-free: changes are announced with psygnal, so the session is tested with plain callbacks and the UI's undo
stack holds commands that call the setters below. Each setter validates first and changes nothing when it refuses.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from dataclasses import dataclass, field

import numpy as np
from psygnal import Signal

from qkvgui.core import AttentionResult, QkvError, ShapeError, multi_head_attention
from qkvgui.core.embeddings import one_hot_features, seeded_random, sinusoidal_positions
from qkvgui.core.presets import make_preset

__all__ = ["Session", "SessionError", "Layer", "compute_state", "layer_cost", "MATRICES", "PER_HEAD",
           "GENERATORS", "SCALE_MODES", "BIASES"]

#: every editable matrix, by the name the UI and the files use
MATRICES = ("X", "X_kv", "W_Q", "W_K", "W_V", "W_O")
#: the matrices stored per head, [h, d_model, d]
PER_HEAD = ("W_Q", "W_K", "W_V")
#: ways to fill X or X_kv
GENERATORS = ("one-hot", "sinusoidal", "random", "zeros")
#: how the scores are scaled: by 1/√d_k, not at all, or by a custom factor
SCALE_MODES = ("sqrt", "none", "custom")

#: the largest sizes a session may have; files and resizes beyond them are refused before allocating
LIMITS = {"tokens": 4096, "d_model": 8192, "heads": 256, "d_head": 4096, "layers": 64}


class SessionError(QkvError):
    """A session (or a change to one) that cannot be accepted; the message says what and where."""


@dataclass
class Layer:
    """One attention layer's weights. Biases default to zeros and ablation flags to all heads on."""

    w_q: np.ndarray  # [h, d_model, d_k]
    w_k: np.ndarray  # [h, d_model, d_k]
    w_v: np.ndarray  # [h, d_model, d_v]
    w_o: np.ndarray  # [h·d_v, d_model]
    b_q: np.ndarray | None = None  # [h, d_k]
    b_k: np.ndarray | None = None  # [h, d_k]
    b_v: np.ndarray | None = None  # [h, d_v]
    b_o: np.ndarray | None = None  # [d_model]
    ablated: np.ndarray | None = None  # [h] bool: True = the head is switched off

    def filled(self) -> Layer:
        """A copy with every optional field present (zeros, all heads on)."""
        h, d_model, d_k = self.w_q.shape
        d_v = self.w_v.shape[2] if np.ndim(self.w_v) == 3 else 0

        def given(a, shape, dtype=np.float64):
            return np.zeros(shape, dtype) if a is None else a

        return Layer(self.w_q, self.w_k, self.w_v, self.w_o, given(self.b_q, (h, d_k)), given(self.b_k, (h, d_k)),
                     given(self.b_v, (h, d_v)), given(self.b_o, (d_model,)), given(self.ablated, (h,), bool))


@dataclass
class _State:
    """Everything a session holds; arrays are owned by the session and never handed out writable."""

    tokens: list[str]
    source_tokens: list[str]
    x: np.ndarray  # [n, d_model]
    x_kv: np.ndarray  # [m, d_model]
    layers: list[Layer]  # applied in order over one residual stream
    padding: np.ndarray  # [n] bool: which tokens are padding (keys hidden in self-attention)
    source_padding: np.ndarray  # [m] bool: which source tokens are padding (keys hidden in cross-attention)
    cross: bool = False
    causal: bool = False
    scale_mode: str = "sqrt"
    custom_scale: float = 1.0
    head: int = 0
    layer: int = 0  # the selected layer, which the editors and views show
    title: str = ""
    description: str = ""
    features: list[str] = field(default_factory=list)  # names of X's columns (empty: d0, d1, …)
    extra: dict = field(default_factory=dict)
    #: the residual stream entering the first layer when X is a normalised copy of it (a pre-LayerNorm model's
    #: layer, imported from a checkpoint); None: X itself
    x_residual: np.ndarray | None = None


_STATE_ARRAYS = {"X": "x", "X_kv": "x_kv"}
_LAYER_ARRAYS = {"W_Q": "w_q", "W_K": "w_k", "W_V": "w_v", "W_O": "w_o"}
#: the biases, added after each product: b_Q, b_K [h, d_k]; b_V [h, d_v]; b_O [d_model]
BIASES = {"b_Q": "b_q", "b_K": "b_k", "b_V": "b_v", "b_O": "b_o"}
_ARRAY_FIELDS = {**_STATE_ARRAYS, **_LAYER_ARRAYS, **BIASES}


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64 if a.dtype.kind != "b" else bool, copy=True)
    a.flags.writeable = False
    return a


def _finite(name: str, a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise SessionError(f"{name} holds {a[idx]} at {list(idx)}: every entry must be a finite number.")


class Session:
    """One attention layer and its inputs, as a user edits them.

    Signals: ``changed(str)`` with what changed: a matrix name (``"X"``, ``"W_Q"``...), ``"tokens"``,
    ``"source_tokens"``, ``"shape"`` (dimensions or heads), ``"settings"`` (mask, scale, cross),
    ``"head"`` (the selected head) or ``"all"`` (a whole new state).
    """

    changed = Signal(str)

    def __init__(self, state: _State | None = None):
        state = state if state is not None else _default_state()
        self._check(state)
        self._s = _copy_state(state)  # the session owns its state: later changes to the caller's do not leak in
        self._freeze_all()

    # ---- reading ------------------------------------------------------------------------------------------
    @property
    def tokens(self) -> list[str]:
        return list(self._s.tokens)

    @property
    def source_tokens(self) -> list[str]:
        return list(self._s.source_tokens)

    @property
    def key_tokens(self) -> list[str]:
        """The tokens the keys and values come from: the source in cross-attention, the tokens otherwise."""
        return self.source_tokens if self._s.cross else self.tokens

    @property
    def cross(self) -> bool:
        return self._s.cross

    @property
    def causal(self) -> bool:
        return self._s.causal

    @property
    def scale_mode(self) -> str:
        return self._s.scale_mode

    @property
    def custom_scale(self) -> float:
        return self._s.custom_scale

    @property
    def head(self) -> int:
        return self._s.head

    @property
    def title(self) -> str:
        return self._s.title

    @property
    def description(self) -> str:
        return self._s.description

    @property
    def padding(self) -> np.ndarray:
        return self._s.padding

    @property
    def source_padding(self) -> np.ndarray:
        return self._s.source_padding

    @property
    def key_padding(self) -> np.ndarray:
        return self._s.source_padding if self._s.cross else self._s.padding

    @property
    def n_heads(self) -> int:
        return self._s.layers[0].w_q.shape[0]

    @property
    def d_model(self) -> int:
        return self._s.x.shape[1]

    @property
    def d_k(self) -> int:
        return self._s.layers[0].w_q.shape[2]

    @property
    def d_v(self) -> int:
        return self._s.layers[0].w_v.shape[2]

    def matrix(self, name: str, layer: int | None = None) -> np.ndarray:
        """The read-only array of a matrix: X [n, d_model], X_kv [m, d_model], and of the selected (or given)
        layer W_Q/W_K [h, d_model, d_k], W_V [h, d_model, d_v], W_O [h·d_v, d_model], b_Q/b_K [h, d_k],
        b_V [h, d_v], b_O [d_model]."""
        _known(name)
        if name in _STATE_ARRAYS:
            return getattr(self._s, _STATE_ARRAYS[name])
        return getattr(self._layer(layer), _ARRAY_FIELDS[name])

    def _layer(self, layer: int | None) -> Layer:
        layer = self._s.layer if layer is None else layer
        if not 0 <= layer < len(self._s.layers):
            raise SessionError(f"There are {len(self._s.layers)} layers; there is no layer {layer + 1}.")
        return self._s.layers[layer]

    def _put(self, name: str, value: np.ndarray, layer: int | None = None) -> None:
        if name in _STATE_ARRAYS:
            setattr(self._s, _STATE_ARRAYS[name], value)
        else:
            setattr(self._layer(layer), _ARRAY_FIELDS[name], value)

    @property
    def n_layers(self) -> int:
        return len(self._s.layers)

    @property
    def layer(self) -> int:
        """The selected layer (0-based)."""
        return self._s.layer

    def ablated(self, layer: int | None = None) -> np.ndarray:
        """[h] bool: the heads of a layer that are switched off."""
        return self._layer(layer).ablated

    def scale(self) -> float:
        """The factor the scores are multiplied by."""
        return _scale(self._s)

    def compute(self) -> AttentionResult | list[AttentionResult]:
        """The core's result for this session: one AttentionResult for one layer, a list (in order) for a stack."""
        results = compute_state(self._s)
        return results[0] if len(results) == 1 else results

    def compute_layers(self) -> list[AttentionResult]:
        """One result per layer, in order, whatever the number of layers."""
        return compute_state(self._s)

    @property
    def extra(self) -> dict:
        """Free-form, JSON-plain data kept with the session (e.g. which view the window showed)."""
        return copy.deepcopy(self._s.extra)

    def set_extra(self, key: str, value) -> None:
        """Keep a JSON-plain value with the session; it is saved and loaded with it (no change is announced)."""
        self._s.extra[str(key)] = copy.deepcopy(value)

    @property
    def features(self) -> list[str]:
        """A name for each column of X (d0, d1, … unless a preset named them)."""
        f = self._s.features
        return list(f) if len(f) == self.d_model else [f"d{i}" for i in range(self.d_model)]

    # ---- making sessions ---------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str) -> Session:
        """One of the classic constructions (see ``qkvgui presets``) as a session."""
        try:
            p = make_preset(name)
        except KeyError as e:
            raise SessionError(e.args[0]) from None
        session = cls.from_arrays(p.x, p.w_q, p.w_k, p.w_v, p.w_o, x_kv=p.x_kv, tokens=p.tokens,
                                  source_tokens=p.source_tokens, causal=p.causal, scale=p.scale,
                                  source_padding=p.source_padding, title=p.title, description=p.description)
        session._s.features = list(p.features)
        for w_q, w_k, w_v, w_o in p.more_layers:
            session._s.layers.append(_frozen_layer(Layer(w_q, w_k, w_v, w_o).filled()))
        cls._check(session._s)
        return session

    @classmethod
    def from_arrays(cls, x_q, w_q, w_k, w_v, w_o, *, x_kv=None, b_q=None, b_k=None, b_v=None, b_o=None,
                    tokens=None, source_tokens=None, causal=False, key_padding_mask=None, source_padding=None,
                    scale=None, title="", description="", x_residual=None) -> Session:
        """A session from the core's arguments (same names and shapes) plus token strings.

        x_q [n, d_model]; w_q, w_k [h, d_model, d_k]; w_v [h, d_model, d_v]; w_o [h·d_v, d_model]; biases
        b_q, b_k [h, d_k], b_v [h, d_v], b_o [d_model]; x_residual [n, d_model]: the residual stream the layer
        writes into when X is a normalised copy of it (pre-LayerNorm models);
        x_kv [m, d_model] makes it cross-attention; key_padding_mask [n_k] marks padded keys.
        """
        def arr(name, a):
            try:
                return np.asarray(a, dtype=np.float64)
            except (TypeError, ValueError):
                raise SessionError(f"{name} must be an array of numbers.") from None

        x = arr("X", x_q)
        if x.ndim != 2:
            raise SessionError(f"X must be 2-D (tokens × d_model), not {_shape(x.shape)}.")
        n = x.shape[0]
        cross = x_kv is not None
        kv = arr("X_kv", x_kv) if cross else x.copy()
        tokens = [str(t) for t in tokens] if tokens is not None else [f"t{i}" for i in range(n)]
        if len(tokens) != n:
            raise SessionError(f"There are {len(tokens)} tokens but X has {n} rows: give one token per row.")
        m = kv.shape[0] if kv.ndim == 2 else 0
        if source_tokens is None:
            source_tokens = list(tokens) if not cross else [f"s{i}" for i in range(m)]
        source_tokens = [str(t) for t in source_tokens]
        if cross and len(source_tokens) != m:
            raise SessionError(f"There are {len(source_tokens)} source tokens but X_kv has {m} rows.")
        pad = np.zeros(n, bool)
        src_pad = np.zeros(len(source_tokens), bool)
        for mask in (key_padding_mask, source_padding):
            if mask is not None:
                mask = np.asarray(mask, dtype=bool)
                target = src_pad if cross else pad
                if mask.shape != target.shape:
                    raise SessionError(f"The padding mask needs one flag per key ({target.shape[0]}), not "
                                       f"{mask.shape}.")
                target |= mask
        scale_mode, custom = ("sqrt", 1.0) if scale is None else ("custom", float(scale))
        def optional(name, a):
            return None if a is None else arr(name, a)

        layer = Layer(arr("W_Q", w_q), arr("W_K", w_k), arr("W_V", w_v), arr("W_O", w_o), optional("b_Q", b_q),
                      optional("b_K", b_k), optional("b_V", b_v), optional("b_O", b_o))
        state = _State(tokens=tokens, source_tokens=source_tokens, x=x, x_kv=kv, layers=[layer], padding=pad,
                       source_padding=src_pad, cross=cross, causal=bool(causal), scale_mode=scale_mode,
                       custom_scale=custom, title=title, description=description,
                       x_residual=optional("the residual stream", x_residual))
        return cls(state)

    # ---- whole states (undo, files) ----------------------------------------------------------------------
    def state(self) -> _State:
        """A snapshot of everything; its arrays are read-only and shared, so a snapshot is cheap."""
        return _copy_state(self._s)

    def set_state(self, state: _State) -> None:
        """Replace everything at once (validated first)."""
        self._check(state)
        self._s = _copy_state(state)
        self._freeze_all()
        self.changed.emit("all")

    # ---- editing -----------------------------------------------------------------------------------------
    def set_matrix(self, name: str, value) -> None:
        """Replace a whole matrix with one of the same shape."""
        old = self.matrix(name)
        value = np.asarray(value, dtype=np.float64)
        if value.shape != old.shape:
            raise SessionError(
                f"{name} is {_shape(old.shape)} but the new matrix is {_shape(value.shape)}: it must keep its shape "
                "(change the sizes first)."
            )
        _finite(name, value)
        self._put(name, _frozen(value))
        self.changed.emit(name)

    def set_block(self, name: str, row: int, col: int, block, head: int | None = None) -> np.ndarray:
        """Write a 2-D block at (row, col) of a matrix (of one head for W_Q, W_K, W_V); returns the old block."""
        old = self.matrix(name)
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != 2:
            raise SessionError(f"A block written into {name} must be 2-D, not {_shape(block.shape)}.")
        target = old
        where = name
        if name in PER_HEAD:
            head = self.head if head is None else head
            if not 0 <= head < old.shape[0]:
                raise SessionError(f"{name} has {old.shape[0]} heads; there is no head {head + 1}.")
            target = old[head]
            where = f"{name} (head {head + 1})"
        r, c = block.shape
        if row < 0 or col < 0 or row + r > target.shape[0] or col + c > target.shape[1]:
            raise SessionError(
                f"A {r} × {c} block at row {row}, column {col} does not fit in {where}, which is "
                f"{_shape(target.shape)}."
            )
        _finite(where, block)
        new = np.array(old)
        region = new[head] if name in PER_HEAD else new
        previous = region[row:row + r, col:col + c].copy()
        region[row:row + r, col:col + c] = block
        new.flags.writeable = False
        self._put(name, new)
        self.changed.emit(name)
        return previous

    def set_causal(self, on: bool) -> None:
        self._s.causal = bool(on)
        self.changed.emit("settings")

    def set_scale(self, mode: str, value: float | None = None) -> None:
        """mode "sqrt" (1/√d_k), "none" (1) or "custom" (value)."""
        if mode not in SCALE_MODES:
            raise SessionError(f"Unknown scale '{mode}': choose one of {', '.join(SCALE_MODES)}.")
        if value is not None:
            value = float(value)
            if not math.isfinite(value):
                raise SessionError(f"The scale must be a finite number, not {value}.")
            self._s.custom_scale = value
        self._s.scale_mode = mode
        self.changed.emit("settings")

    def set_cross(self, on: bool) -> None:
        self._s.cross = bool(on)
        self.changed.emit("settings")

    def set_padding(self, mask, source: bool | None = None) -> None:
        """Mark tokens as padding: of the source sequence (source=True), of the tokens (False), or of the keys."""
        source = self._s.cross if source is None else source
        current = self._s.source_padding if source else self._s.padding
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != current.shape:
            raise SessionError(f"The padding needs one flag per token ({current.shape[0]}), not {mask.shape}.")
        setattr(self._s, "source_padding" if source else "padding", _frozen(mask))
        self.changed.emit("settings")

    def set_head(self, head: int) -> None:
        if not 0 <= head < self.n_heads:
            raise SessionError(f"There are {self.n_heads} heads; there is no head {head + 1}.")
        self._s.head = int(head)
        self.changed.emit("head")

    def set_tokens(self, tokens: list[str], source: bool = False) -> None:
        """Change the token strings; rows of X (or X_kv) follow their tokens, new tokens get new random rows."""
        tokens = [str(t) for t in tokens]
        if not tokens:
            raise SessionError("A sequence needs at least one token.")
        if len(tokens) > LIMITS["tokens"]:
            raise SessionError(f"{len(tokens)} tokens is more than the {LIMITS['tokens']} qkvgui handles.")
        s = self._s
        old_tokens = s.source_tokens if source else s.tokens
        x = s.x_kv if source else s.x
        pad = s.source_padding if source else s.padding
        new_x = seeded_random((len(tokens), x.shape[1]), seed=len(tokens) + 7 * len(old_tokens), std=0.5)
        new_pad = np.zeros(len(tokens), dtype=bool)
        # Tokens that survive the edit keep their rows (and padding flags): match old to new by content.
        matcher = difflib.SequenceMatcher(a=old_tokens, b=tokens, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):  # a rename keeps the row
                new_x[j1:j2] = x[i1:i2]
                new_pad[j1:j2] = pad[i1:i2]
        if source:
            s.source_tokens, s.x_kv, s.source_padding = tokens, _frozen(new_x), _frozen(new_pad)
        else:
            s.tokens, s.x, s.padding = tokens, _frozen(new_x), _frozen(new_pad)
        self.changed.emit("source_tokens" if source else "tokens")

    def generate(self, name: str, kind: str, seed: int = 0) -> None:
        """Fill X or X_kv with a generator: "one-hot" (token block then position block), "sinusoidal",
        "random" (seeded) or "zeros"."""
        if name not in ("X", "X_kv"):
            raise SessionError(f"Generators fill X or X_kv, not {name}.")
        tokens = self._s.source_tokens if name == "X_kv" else self._s.tokens
        n, d = len(tokens), self.d_model
        if kind == "one-hot":
            try:
                value = one_hot_features(tokens, d)
            except ShapeError as e:
                raise SessionError(str(e)) from None
        elif kind == "sinusoidal":
            value = sinusoidal_positions(n, d)
        elif kind == "random":
            value = seeded_random((n, d), seed, std=1.0)
        elif kind == "zeros":
            value = np.zeros((n, d))
        else:
            raise SessionError(f"Unknown generator '{kind}': choose one of {', '.join(GENERATORS)}.")
        self.set_matrix(name, value)

    def randomize_weights(self, seed: int = 0) -> None:
        """Seeded random W_Q, W_K, W_V, W_O (std 1/√rows), all at once."""
        layer = self._layer(None)
        for i, attr in enumerate(("w_q", "w_k", "w_v", "w_o")):
            setattr(layer, attr, _frozen(seeded_random(getattr(layer, attr).shape, seed * 4 + i)))
        self.changed.emit("all")

    def resize(self, *, d_model: int | None = None, n_heads: int | None = None, d_k: int | None = None,
               d_v: int | None = None) -> None:
        """Change the dimensions; every existing value that still has a place keeps it, new entries are 0."""
        s = self._s
        h0, dm0, dk0, dv0 = self.n_heads, self.d_model, self.d_k, self.d_v
        h = h0 if n_heads is None else int(n_heads)
        dm = dm0 if d_model is None else int(d_model)
        dk = dk0 if d_k is None else int(d_k)
        dv = dv0 if d_v is None else int(d_v)
        for what, value, limit in (("heads", h, LIMITS["heads"]), ("d_model", dm, LIMITS["d_model"]),
                                   ("d_k", dk, LIMITS["d_head"]), ("d_v", dv, LIMITS["d_head"])):
            if not 1 <= value <= limit:
                raise SessionError(f"{what} must be between 1 and {limit}, not {value}.")
        s.x = _frozen(_fit(s.x, (len(s.tokens), dm)))
        s.x_kv = _frozen(_fit(s.x_kv, (len(s.source_tokens), dm)))
        if s.x_residual is not None:
            s.x_residual = _frozen(_fit(s.x_residual, (len(s.tokens), dm)))
        for L in s.layers:
            w_o_blocks = _fit(L.w_o.reshape(h0, dv0, dm0), (h, dv, dm))  # W_O resizes block by block
            L.w_q = _frozen(_fit(L.w_q, (h, dm, dk)))
            L.w_k = _frozen(_fit(L.w_k, (h, dm, dk)))
            L.w_v = _frozen(_fit(L.w_v, (h, dm, dv)))
            L.w_o = _frozen(w_o_blocks.reshape(h * dv, dm))
            L.b_q, L.b_k = _frozen(_fit(L.b_q, (h, dk))), _frozen(_fit(L.b_k, (h, dk)))
            L.b_v, L.b_o = _frozen(_fit(L.b_v, (h, dv))), _frozen(_fit(L.b_o, (dm,)))
            L.ablated = _frozen(_fit(L.ablated, (h,)).astype(bool))
        s.head = min(s.head, h - 1)
        self.changed.emit("shape")

    # ---- layers and heads --------------------------------------------------------------------------------
    def set_layer(self, layer: int) -> None:
        """Select the layer the editors and views show."""
        self._layer(layer)
        self._s.layer = int(layer)
        self.changed.emit("layer")

    def add_layer(self, seed: int = 0) -> None:
        """Append a layer of seeded random weights with the same sizes, and select it."""
        first = self._s.layers[0]
        shapes = [getattr(first, a).shape for a in ("w_q", "w_k", "w_v", "w_o")]
        weights = [_frozen(seeded_random(shape, seed * 4 + i)) for i, shape in enumerate(shapes)]
        self._s.layers.append(_frozen_layer(Layer(*weights).filled()))
        self._s.layer = len(self._s.layers) - 1
        self.changed.emit("all")

    def remove_layer(self, layer: int | None = None) -> None:
        """Remove a layer (the selected one by default); the last layer cannot go."""
        layer = self._s.layer if layer is None else layer
        self._layer(layer)
        if len(self._s.layers) == 1:
            raise SessionError("A session needs at least one layer.")
        del self._s.layers[layer]
        self._s.layer = min(self._s.layer, len(self._s.layers) - 1)
        self.changed.emit("all")

    def set_ablated(self, head: int, off: bool, layer: int | None = None) -> None:
        """Switch a head off (its output is zero, so it writes nothing) or back on."""
        target = self._layer(layer)
        if not 0 <= head < len(target.ablated):
            raise SessionError(f"There are {len(target.ablated)} heads; there is no head {head + 1}.")
        flags = np.array(target.ablated)
        flags[head] = bool(off)
        target.ablated = _frozen(flags)
        self.changed.emit("settings")

    # ---- checks ------------------------------------------------------------------------------------------
    def _freeze_all(self) -> None:
        s = self._s
        for attr in ("x", "x_kv", "padding", "source_padding"):
            setattr(s, attr, _frozen(getattr(s, attr)))
        if s.x_residual is not None:
            s.x_residual = _frozen(s.x_residual)
        s.layers = [_frozen_layer(L.filled()) for L in s.layers]

    @staticmethod
    def _check(s: _State) -> None:
        """Every field present, of the right kind, and fitting together; raises SessionError otherwise."""
        for what in ("tokens", "source_tokens", "features"):
            value = getattr(s, what)
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise SessionError(f"The {what.replace('_', ' ')} must be a list of strings.")
        n, m = len(s.tokens), len(s.source_tokens)
        if n == 0 or m == 0:
            raise SessionError("A session needs at least one token and one source token.")
        if max(n, m) > LIMITS["tokens"]:
            raise SessionError(f"{max(n, m)} tokens is more than the {LIMITS['tokens']} qkvgui handles.")
        for what, kind in (("cross", bool), ("causal", bool), ("head", int), ("layer", int),
                           ("custom_scale", (int, float)), ("title", str), ("description", str), ("extra", dict),
                           ("layers", list)):
            value = getattr(s, what)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise SessionError(f"The session's {what.replace('_', ' ')} has the wrong type "
                                   f"({type(value).__name__}).")
        if not 1 <= len(s.layers) <= LIMITS["layers"]:
            raise SessionError(f"A session has 1 to {LIMITS['layers']} layers, not {len(s.layers)}.")
        if not all(isinstance(L, Layer) for L in s.layers):
            raise SessionError("Every layer must be a Layer of weights.")
        for name, a in (("X", s.x), ("X_kv", s.x_kv)):
            _numbers(name, a)
        first = s.layers[0]
        _numbers("W_Q", first.w_q)
        if first.w_q.ndim != 3:
            raise SessionError(f"W_Q must be (heads × d_model × d_k), not {_shape(first.w_q.shape)}.")
        h, dm, dk = first.w_q.shape
        _numbers("W_V", first.w_v)
        dv = first.w_v.shape[2] if first.w_v.ndim == 3 else 0
        for what, value, limit in (("heads", h, LIMITS["heads"]), ("d_model", dm, LIMITS["d_model"]),
                                   ("d_k", dk, LIMITS["d_head"]), ("d_v", dv, LIMITS["d_head"])):
            if not 1 <= value <= limit:
                raise SessionError(f"{what} must be between 1 and {limit}, not {value}.")
        expected = {"X": (n, dm), "X_kv": (m, dm)}
        if s.x_residual is not None:
            _numbers("the residual stream entering the layer", s.x_residual)
            expected["the residual stream entering the layer"] = (n, dm)
        for name, shape in expected.items():
            got = {"X": s.x, "X_kv": s.x_kv}.get(name, s.x_residual).shape
            if got != shape:
                raise SessionError(f"{name} is {_shape(got)} but it must be {_shape(shape)} to fit the other matrices.")
        layer_shapes = {"W_Q": (h, dm, dk), "W_K": (h, dm, dk), "W_V": (h, dm, dv), "W_O": (h * dv, dm),
                        "b_Q": (h, dk), "b_K": (h, dk), "b_V": (h, dv), "b_O": (dm,)}
        for index, L in enumerate(s.layers):
            where = f" of layer {index + 1}" if len(s.layers) > 1 else ""
            for name, shape in layer_shapes.items():
                a = getattr(L, _ARRAY_FIELDS[name])
                if a is None and name in BIASES:
                    continue
                _numbers(name + where, a)
                if a.shape != shape:
                    raise SessionError(f"{name}{where} is {_shape(a.shape)} but it must be {_shape(shape)} to fit the "
                                       "other matrices.")
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


def _numbers(name: str, a) -> None:
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
        raise SessionError(f"{name} must be an array of numbers.")
    _finite(name, a)


def _frozen_layer(L: Layer) -> Layer:
    return Layer(*(_frozen(getattr(L, f)) for f in ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o",
                                                     "ablated")))


def _copy_state(s: _State) -> _State:
    """A copy sharing the (read-only) arrays but none of the lists, dicts or layer objects."""
    return _State(**{**s.__dict__, "tokens": list(s.tokens), "source_tokens": list(s.source_tokens),
                     "features": list(s.features), "extra": copy.deepcopy(s.extra),
                     "layers": [Layer(**L.__dict__) for L in s.layers]})


def _scale(s: _State) -> float:
    if s.scale_mode == "sqrt":
        return 1.0 / math.sqrt(s.layers[0].w_q.shape[2])
    if s.scale_mode == "none":
        return 1.0
    return s.custom_scale


def compute_state(s: _State) -> list[AttentionResult]:
    """One result per layer for a state snapshot (safe on a worker thread: a snapshot's arrays never change).

    Layer ℓ reads the residual stream after layer ℓ − 1 (X for the first) and adds its output to it; in
    cross-attention every layer's keys and values come from X_kv.
    """
    pad = s.source_padding if s.cross else s.padding
    x_in = s.x  # what the first layer's attention reads
    stream = s.x if s.x_residual is None else s.x_residual  # the residual stream it writes into
    results = []
    for L in s.layers:
        L = L.filled()
        r = multi_head_attention(
            x_in, L.w_q, L.w_k, L.w_v, L.w_o, x_kv=s.x_kv if s.cross else None,
            b_q=L.b_q, b_k=L.b_k, b_v=L.b_v, b_o=L.b_o, causal=s.causal,
            key_padding_mask=pad if pad.any() else None, scale=_scale(s), ablate=L.ablated,
        )
        if stream is not x_in:  # X was a normalised copy: the layer writes into the real stream
            residual = stream + r.output
            residual.flags.writeable = False
            r = dataclasses.replace(r, residual=residual)
        results.append(r)
        stream = x_in = r.residual
    return results


def layer_cost(s: _State) -> float:
    """Multiply-adds of one computation of the state, to decide whether it leaves the GUI thread."""
    n = len(s.tokens)
    m = len(s.source_tokens) if s.cross else n
    h, d_model, d_k = s.layers[0].w_q.shape
    d_v = s.layers[0].w_v.shape[2]
    per_layer = h * (d_model * (n * d_k + m * (d_k + d_v)) + n * m * (d_k + d_v)) + n * h * d_v * d_model
    return float(per_layer * len(s.layers))


def _known(name: str) -> str:
    if name not in _ARRAY_FIELDS:
        raise SessionError(f"There is no matrix called {name!r}; the matrices are {', '.join(MATRICES)}.")
    return name


def _shape(shape) -> str:
    return " × ".join(str(d) for d in shape)


def _fit(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """a cropped or zero-padded to shape, every kept entry in its place."""
    out = np.zeros(shape)
    common = tuple(slice(0, min(x, y)) for x, y in zip(a.shape, shape, strict=True))
    out[common] = a[common]
    return out


def _default_state() -> _State:
    """A short sentence over one-hot token and position features, 2 heads, seeded weights, causal."""
    tokens = ["the", "cat", "sat", "on", "the", "mat"]
    source = ["le", "chat", "s'est", "assis", "<pad>"]
    d_model, h, d_k = 12, 2, 3
    x = one_hot_features(tokens, d_model)
    x_kv = seeded_random((len(source), d_model), seed=11, std=1.0)
    return _State(
        tokens=tokens,
        source_tokens=source,
        x=x,
        x_kv=x_kv,
        layers=[Layer(w_q=seeded_random((h, d_model, d_k), seed=1) * 2,
                      w_k=seeded_random((h, d_model, d_k), seed=2) * 2,
                      w_v=seeded_random((h, d_model, d_k), seed=3) * 2,
                      w_o=seeded_random((h * d_k, d_model), seed=4))],
        padding=np.zeros(len(tokens), bool),
        source_padding=np.array([False, False, False, False, True]),
        causal=True,
        title="the cat sat on the mat",
        description="Six tokens over one-hot token and position features, two heads with seeded random weights.",
    )
