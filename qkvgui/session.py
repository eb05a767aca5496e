"""The document a user edits: one ``SessionState`` at a time, validated, announcing every change with typed events.

``Session`` is the only document class (``qkvgui.Session``). It holds a frozen ``SessionState`` (``qkvgui.state``)
and replaces it on every edit; each setter validates first and changes nothing when it refuses. Files are plain
functions of ``qkvgui.io`` that read and write states; the document calls them (``Session.load``, ``save``,
``from_checkpoint``), so the arrows run ``cli → ui → session → io → state → core``.

Changes are announced on ``session.events`` (a psygnal ``SignalGroup``), one signal per kind of change. Content
signals mean the computation must run again; selection signals (``head``, ``layer``, ``view``) only change what
is shown, so a view subscribes to them and the recompute scheduler does not. Qt-free: tested with a ``Mock``.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal, SignalGroup

from qkvgui.core import AttentionResult, SessionError, ShapeError
from qkvgui.core.cancel import CancelToken
from qkvgui.core.embeddings import one_hot_features, seeded_random, sinusoidal_positions
from qkvgui.core.format import format_shape
from qkvgui.core.heads import repeated_random_tokens, result_scores
from qkvgui.core.models import Stack
from qkvgui.core.presets import FREE_MATRICES, PRESETS, TOKEN_PRESETS, Preset, make_preset, preset_sizes
from qkvgui.state import (
    ARRAY_FIELDS,
    BIASES,
    GENERATORS,
    LIMITS,
    MATRICES,
    PER_HEAD,
    SCALE_MODES,
    STATE_ARRAYS,
    Layer,
    SessionState,
    check_extra,
    check_finite,
    check_sizes,
    compute_model,
    compute_state,
    frozen_array,
    layer_cost,
    scale_of,
    validate_state,
)

__all__ = [
    "BIASES",
    "CONTENT_EVENTS",
    "GENERATORS",
    "LIMITS",
    "MATRICES",
    "PER_HEAD",
    "SCALE_MODES",
    "SELECTION_EVENTS",
    "Layer",
    "Selection",
    "Session",
    "SessionError",
    "SessionEvents",
    "SessionState",
    "compute_state",
    "layer_cost",
    "validate_state",
]

#: the views a window can show (the selection remembers which)
VIEWS = ("pipeline", "circuits", "learn")

# Kept for code written against qkvgui 0.1 (the private state class); use SessionState.
_State = SessionState


class SessionEvents(SignalGroup):
    """One signal per kind of change. Content first (the result must be computed again), then the selection."""

    matrix = Signal(str)  # the values of one matrix changed: "X", "X_kv", "W_Q", ..., "b_O" (shapes kept)
    tokens = Signal()  # the token strings (and so the rows of X and the padding) changed
    source_tokens = Signal()  # the source tokens (rows of X_kv and the source padding) changed
    shape = Signal()  # dimensions or the number of heads changed: every matrix may have a new shape
    settings = Signal()  # mask, scale, cross-attention, padding or switched-off heads changed
    layers = Signal()  # layers were added, removed or re-rolled
    replaced = Signal()  # a whole new state (undo of a big change, a file, a checkpoint): anything may differ
    head = Signal(int)  # the selected head (0-based)
    layer = Signal(int)  # the selected layer (0-based)
    view = Signal(str)  # the selected view ("pipeline" or "circuits")


#: the signals after which the result must be computed again, and those that only change what is shown
CONTENT_EVENTS = ("matrix", "tokens", "source_tokens", "shape", "settings", "layers", "replaced")
SELECTION_EVENTS = ("head", "layer", "view")


@dataclass(frozen=True)
class Selection:
    """What is shown, apart from what is computed: the head and layer (0-based) and the view."""

    head: int
    layer: int
    view: str


class Session:
    """An attention stack and its inputs, as a user edits them.

    ``session.events`` announces every change (see ``SessionEvents``). ``session.changed`` (a string per change)
    is the announcement of qkvgui 0.1, kept for older scripts: new code connects to ``events``.
    """

    changed = Signal(str)  # deprecated: the old string tags, emitted alongside events

    def __init__(self, state: SessionState | None = None):
        state = state if state is not None else _default_state()
        validate_state(state)
        self.events = SessionEvents()
        # the session owns its state: nothing the caller keeps can change it later
        self._s = state.replace(extra=copy.deepcopy(state.extra)).filled()
        #: (what preset_changes compared, the state it compared, what it found): asked after every redraw
        self._preset_cache: tuple[tuple[Any, ...], SessionState, list[str]] | None = None

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
        """The selected head (0-based)."""
        return self._s.head

    @property
    def layer(self) -> int:
        """The selected layer (0-based)."""
        return self._s.layer

    @property
    def view(self) -> str:
        """The selected view: "pipeline" (step by step), "circuits" or "learn"."""
        view = self._s.extra.get("view")
        return view if view in VIEWS else VIEWS[0]

    @property
    def selection(self) -> Selection:
        return Selection(self.head, self.layer, self.view)

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
        return int(self._s.layers[0].w_q.shape[0])

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads: n_heads (each query head its own), fewer when groups share one (GQA), 1 (multi-query)."""
        return int(self._s.layers[0].w_k.shape[0])

    def kv_head(self, head: int | None = None) -> int:
        """The key/value head that query head `head` (the selected one by default) reads: head // group size."""
        head = self.head if head is None else head
        return int(head) * self.n_kv_heads // self.n_heads

    @property
    def rotary(self) -> bool:
        """True when Q and K are turned by their position before the scores (RoPE)."""
        return self._s.rotary

    @property
    def rope_theta(self) -> float:
        """The base θ of the rotary frequencies θ^(−2i/d_k)."""
        return float(self._s.rope_theta)

    @property
    def d_model(self) -> int:
        return int(self._s.x.shape[1])

    @property
    def d_k(self) -> int:
        return int(self._s.layers[0].w_q.shape[2])

    @property
    def d_v(self) -> int:
        return int(self._s.layers[0].w_v.shape[2])

    @property
    def n_layers(self) -> int:
        return len(self._s.layers)

    def matrix(self, name: str, layer: int | None = None) -> np.ndarray:
        """The read-only array of a matrix: X [n, d_model], X_kv [m, d_model], and of the selected (or given)
        layer W_Q/W_K [h, d_model, d_k], W_V [h, d_model, d_v], W_O [h·d_v, d_model], b_Q/b_K [h, d_k],
        b_V [h, d_v], b_O [d_model]."""
        _known(name)
        if name in STATE_ARRAYS:
            return getattr(self._s, STATE_ARRAYS[name])  # type: ignore[no-any-return, unused-ignore]
        return getattr(self._layer(layer), ARRAY_FIELDS[name])  # type: ignore[no-any-return, unused-ignore]

    def ablated(self, layer: int | None = None) -> np.ndarray:
        """[h] bool: the heads of a layer that are switched off."""
        flags = self._layer(layer).ablated
        assert flags is not None  # the session's layers are always filled
        return flags

    def scale(self) -> float:
        """The factor the scores are multiplied by."""
        return scale_of(self._s)

    def compute(self) -> AttentionResult | list[AttentionResult]:
        """The core's result for this session: one AttentionResult for one layer, a list (in order) for a stack."""
        results = compute_state(self._s)
        return results[0] if len(results) == 1 else results

    def compute_layers(self) -> list[AttentionResult]:
        """One result per layer, in order, whatever the number of layers."""
        return compute_state(self._s)

    @property
    def model(self) -> Stack | None:
        """A whole imported model's own blocks between the attention layers (read-only), or None."""
        return self._s.model

    def block_formula(self, layer: int | None = None) -> str | None:
        """Where the model's own block after ``layer`` (0-based; default: the selected one) leads and its formula,
        for a whole imported model; None otherwise. E.g. "layer 3's input X:  X′ = LN(h + MLP[gelu](h)), h = LN(r)"."""
        model = self._s.model
        layer = self.layer if layer is None else int(layer)
        if model is None or not 0 <= layer < len(model.blocks):
            return None
        last = layer + 1 == len(model.blocks)
        formula = model.blocks[layer].formula(None if last else model.blocks[layer + 1])
        goes = "the stream the model hands on" if last else f"layer {layer + 2}'s input X"
        return f"{goes}:  {formula}"

    def block_title(self, layer: int | None = None) -> str | None:
        """The title of the model's block step (as the window shows it): "model block → " and block_formula."""
        formula = self.block_formula(layer)
        return None if formula is None else f"model block → {formula}"

    def compute_model(self) -> list[tuple[AttentionResult, np.ndarray, np.ndarray]]:
        """For a whole imported model, per layer: (result, stream entering it, stream after the model's block)."""
        return compute_model(self._s)

    def head_scores(self) -> dict[str, np.ndarray]:
        """Every head's scores (see ``qkvgui.core.heads``): {"previous-token", "first-token", "duplicate-token",
        "induction", "entropy"} -> [n_layers, n_heads]. In cross-attention the keys are another sequence, so only
        "first-token" and "entropy" are defined (the others are NaN)."""
        return result_scores(self.compute_layers(), self._s.tokens, self._s.cross)

    def repeat_random_tokens(self, seed: int = 0, length: int | None = None) -> None:
        """Replace the tokens by the first token and then a random sequence (seeded, drawn from the session's own
        tokens) said twice, so that induction heads light up on the second half. Each row of X follows its token:
        one-hot X is rebuilt, otherwise a token's row is the row of its first occurrence. (An imported model does
        this by reading its checkpoint again: ``Session.from_checkpoint(..., ids=...)``.)"""
        s = self._s
        if s.model is not None or s.cross:
            raise SessionError(
                "Repeating random tokens rewrites X from the tokens: an imported model does that by "
                "re-reading its checkpoint, and cross-attention has two sequences."
            )
        old = list(s.tokens)
        vocabulary = list(dict.fromkeys(old[1:] or old))
        k = length if length is not None else max(1, (len(old) - 1) // 2)
        tokens = [old[0], *repeated_random_tokens(vocabulary, k, seed)]
        if len(tokens) > LIMITS["tokens"]:
            raise SessionError(f"{len(tokens)} tokens is more than the {LIMITS['tokens']} qkvgui handles.")
        if self._rebuild_preset(tokens):
            return  # a preset (induction, say) built again over the repeated tokens: its claim still holds
        try:
            one_hot = bool(np.array_equal(s.x, one_hot_features(old, self.d_model)))
            x = one_hot_features(tokens, self.d_model) if one_hot else None
        except ShapeError:
            x = None
        first = {t: i for i, t in reversed(list(enumerate(old)))}
        rows = np.array([first[t] for t in tokens])
        new_x = x if x is not None else s.x[rows]
        title = s.title if "repeated" in s.title else f"{s.title} (random tokens, repeated)"
        self.set_state(
            s.replace(
                tokens=tuple(tokens),
                source_tokens=tuple(tokens),
                x=new_x,
                x_kv=new_x,
                x_residual=None if s.x_residual is None else s.x_residual[rows],
                padding=s.padding[rows],
                source_padding=s.padding[rows],
                title=title,
                extra=copy.deepcopy(s.extra),
            )
        )

    def cost(self) -> float:
        """Multiply-adds of one computation (``layer_cost`` of the state)."""
        return layer_cost(self._s)

    @property
    def extra(self) -> dict[str, Any]:
        """Free-form, JSON-plain data kept with the session (e.g. which view the window showed)."""
        return copy.deepcopy(self._s.extra)

    def set_extra(self, key: str, value: Any) -> None:
        """Keep a JSON-plain value with the session; it is saved and loaded with it (no change is announced).
        A value that is not plain JSON, or nested too deeply to copy, is refused with a SessionError."""
        extra = {**self._s.extra, str(key): value}
        check_extra(extra)  # before copying: deepcopy of 500 nested lists overflowed the stack
        self._s = self._s.replace(extra={**self._s.extra, str(key): copy.deepcopy(value)})

    @property
    def features(self) -> list[str]:
        """A name for each column of X (d0, d1, … unless a preset named them)."""
        f = self._s.features
        return list(f) if len(f) == self.d_model else [f"d{i}" for i in range(self.d_model)]

    # ---- the preset a session was built from ----------------------------------------------------------------
    @property
    def preset(self) -> str | None:
        """The name of the preset this session was built from (kept in its file), or None."""
        name = self._s.extra.get("preset")
        return name if isinstance(name, str) and name in PRESETS else None

    def preset_changes(self) -> list[str]:
        """What differs from the preset this session was built from, as a reader names it ("W_Q", "the causal
        mask", "the tokens"...): [] while it still is that preset (and for a session built from none). A preset
        built over any sentence is compared with itself built over the session's tokens, so a new sentence alone
        changes nothing; the matrices a learner is meant to train (the Learn preset's W_Q, W_K) are not compared."""
        name = self.preset
        if name is None:
            return []
        s = self._s
        key: tuple[Any, ...] = (
            name,
            s.tokens,
            s.source_tokens,
            id(s.x),
            id(s.x_kv),
            tuple(id(L) for L in s.layers),
            id(s.padding),
        )
        key += (id(s.source_padding), s.cross, s.causal, s.scale_mode, s.custom_scale, s.rotary, s.rope_theta)
        cached = self._preset_cache
        if cached is not None and cached[0] == key:
            return list(cached[2])
        changes = self._compare_with_preset(name)
        self._preset_cache = (key, s, changes)  # the state keeps the ids in the key alive
        return list(changes)

    def preset_note(self) -> str:
        """One sentence for the description when the session was edited away from its preset's claim, else ""."""
        changes = self.preset_changes()
        if not changes:
            return ""
        return (
            f"Edited since the '{self.preset}' preset built it ({', '.join(changes)} changed): what this "
            "description says may no longer hold. Undo, or open the preset again (Presets menu), to get it back."
        )

    def _reference(self, name: str, tokens: Sequence[str] | None) -> SessionState | None:
        """The preset built over `tokens` (None: its own), or None when its sizes would pass the limits."""
        d_k = self.d_k if name in FREE_MATRICES else None
        if tokens is not None:
            try:
                sizes = preset_sizes(name, tokens, d_k or 1)
                check_sizes(
                    heads=sizes["heads"],
                    d_model=sizes["d_model"],
                    d_k=sizes["d_k"],
                    d_v=sizes["d_v"],
                    layers=sizes["layers"],
                    tokens=len(tokens),
                    kv_heads=sizes["heads"],
                )
            except SessionError:
                return None
        return _preset_state(make_preset(name, tokens, d_k))

    def _compare_with_preset(self, name: str) -> list[str]:
        s = self._s
        reference = self._reference(name, s.tokens if name in TOKEN_PRESETS else None)
        if reference is None:
            return ["the tokens"]
        return _differences(s, reference, FREE_MATRICES.get(name, ()))

    def _rebuild_preset(self, tokens: list[str]) -> bool:
        """New tokens for a session that still is a preset built over any sentence: the preset built over them
        (features, their names and the weights that read them), selection and extra data kept. False when the
        session is not such a preset, or was edited away from it (then the tokens are set as for any session)."""
        name = self.preset
        s = self._s
        if name not in TOKEN_PRESETS or s.model is not None or s.cross or self.preset_changes():
            return False
        d_k = self.d_k if name in FREE_MATRICES else 1
        sizes = preset_sizes(name, tokens, d_k)
        self._check_sizes(**sizes, tokens=len(tokens), source_tokens=len(tokens), kv_heads=sizes["heads"])
        reference = self._reference(name, tokens)
        assert reference is not None  # the sizes were checked above
        state = reference.replace(
            head=min(s.head, sizes["heads"] - 1),
            layer=min(s.layer, sizes["layers"] - 1),
            title=s.title,
            description=s.description,
            extra=copy.deepcopy(s.extra),
        )
        validate_state(state)
        self._s = state.filled()
        self._emit("replaced")
        return True

    # ---- making sessions ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], cancel: CancelToken | None = None) -> Session:
        """Read a session file (.qkv); anything wrong with it raises SessionFileError saying what and where.
        ``cancel`` (on a worker): a cancelled read stops between pieces of the matrices with ``Cancelled``."""
        from qkvgui.io.session import read_state

        return cls(read_state(path, cancel))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the session atomically: the previous file survives any failure half-way."""
        from qkvgui.io.session import write_state

        return write_state(self.state(), path)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        layer: int | None = None,
        text: str = "",
        ids: Sequence[int] | None = None,
        progress: Callable[[int, int], object] | None = None,
    ) -> Session:
        """A local BERT, GPT-2 or LLaMA-family model folder (config.json, model.safetensors, tokenizer.json), or a
        LLaMA-family .gguf file (or a folder holding one), reading `text`.

        layer (0-based): that one attention layer, X what it reads. None: every layer as a stack over the real
        residual stream, the model's own blocks (norms, MLPs) running read-only between the layers, so that each
        layer's weights are the model's own and an edit reaches every later layer. The tokens are the model's own;
        given `ids`, the model reads those token ids instead of the text. Needs the `models` extra; anything wrong
        with the folder raises CheckpointError. ``progress(done, total)`` is told before each layer the model runs;
        whatever it raises stops the forward pass there and comes out of this call (the window's Cancel)."""
        from qkvgui.io.checkpoints import read_checkpoint
        from qkvgui.io.checkpoints.llama import is_llama, read_llama

        # LLaMA family (a .gguf file or folder, or model_type llama): causal, rotary, shared key/value heads
        read = read_llama if is_llama(path) else read_checkpoint
        c = read(path, layer, text, ids, progress)
        first = c.runs[0] if layer is None else c.runs[layer]
        w = c.model.attention[0 if layer is None else layer]
        session = cls.from_arrays(
            first.x,
            w.w_q,
            w.w_k,
            w.w_v,
            w.w_o,
            b_q=w.b_q,
            b_k=w.b_k,
            b_v=w.b_v,
            b_o=w.b_o,
            tokens=c.tokens,
            causal=c.model.causal,
            title=c.title,
            description=c.description,
            scale=w.scale,
            x_residual=None if first.stream is first.x else first.stream,
            rotary=w.rotary,
        )
        if layer is None:
            # the session's scale is layer 1's; the model's blocks carry each layer's factor relative to it
            scales = [1.0 / math.sqrt(a.w_q.shape[2]) if a.scale is None else a.scale for a in c.model.attention]
            state = session._s.replace(
                layers=tuple(
                    Layer(a.w_q, a.w_k, a.w_v, a.w_o, a.b_q, a.b_k, a.b_v, a.b_o).filled() for a in c.model.attention
                ),
                model=Stack(c.model.family, tuple(c.model.blocks), tuple(f / scales[0] for f in scales)),
            )
            validate_state(state)
            session._s = state
        session.set_extra("checkpoint", c.source)
        return session

    @classmethod
    def from_preset(cls, name: str) -> Session:
        """One of the classic constructions (see ``qkvgui presets``); an unknown name raises PresetError.

        The session remembers its preset (``Session.preset``): a preset built over any sentence rebuilds its
        features and weights for new tokens while the session is still that preset, and ``preset_changes`` says
        what an edit changed since (the preset's description may then no longer hold)."""
        p = make_preset(name)
        session = cls(_preset_state(p))
        session._s = session._s.replace(extra={**session._s.extra, "preset": name})
        return session

    @classmethod
    def from_arrays(
        cls,
        x_q: Any,
        w_q: Any,
        w_k: Any,
        w_v: Any,
        w_o: Any,
        *,
        x_kv: Any = None,
        b_q: Any = None,
        b_k: Any = None,
        b_v: Any = None,
        b_o: Any = None,
        tokens: Sequence[object] | None = None,
        source_tokens: Sequence[object] | None = None,
        causal: bool = False,
        key_padding_mask: Any = None,
        source_padding: Any = None,
        scale: float | None = None,
        title: str = "",
        description: str = "",
        x_residual: Any = None,
        rotary: float | None = None,
    ) -> Session:
        """A session from the core's arguments (same names and shapes) plus token strings.

        x_q [n, d_model]; w_q, w_k [h, d_model, d_k]; w_v [h, d_model, d_v]; w_o [h·d_v, d_model]; biases
        b_q, b_k [h, d_k], b_v [h, d_v], b_o [d_model]; x_residual [n, d_model]: the residual stream the layer
        writes into when X is a normalised copy of it (pre-LayerNorm models);
        x_kv [m, d_model] makes it cross-attention; key_padding_mask [n_k] marks padded keys;
        w_k, w_v (b_k, b_v) may hold fewer heads than w_q (shared key/value heads); rotary=θ turns on RoPE.
        """

        def arr(name: str, a: Any) -> np.ndarray:
            try:
                return np.asarray(a, dtype=np.float64)
            except (TypeError, ValueError):
                raise SessionError(f"{name} must be an array of numbers.") from None

        def optional(name: str, a: Any) -> np.ndarray | None:
            return None if a is None else arr(name, a)

        x = arr("X", x_q)
        if x.ndim != 2:
            raise SessionError(f"X must be 2-D (tokens × d_model), not {format_shape(x.shape)}.")
        n = x.shape[0]
        cross = x_kv is not None
        kv = arr("X_kv", x_kv) if cross else x.copy()
        token_list = [str(t) for t in tokens] if tokens is not None else [f"t{i}" for i in range(n)]
        if len(token_list) != n:
            raise SessionError(f"There are {len(token_list)} tokens but X has {n} rows: give one token per row.")
        m = kv.shape[0] if kv.ndim == 2 else 0
        if source_tokens is None:
            source_list = list(token_list) if not cross else [f"s{i}" for i in range(m)]
        else:
            source_list = [str(t) for t in source_tokens]
        if cross and len(source_list) != m:
            raise SessionError(f"There are {len(source_list)} source tokens but X_kv has {m} rows.")
        pad = np.zeros(n, bool)
        src_pad = np.zeros(len(source_list), bool)
        for mask in (key_padding_mask, source_padding):
            if mask is not None:
                mask = np.asarray(mask, dtype=bool)
                target = src_pad if cross else pad
                if mask.shape != target.shape:
                    raise SessionError(
                        f"The padding mask needs one flag per key ({target.shape[0]}), not {mask.shape}."
                    )
                target |= mask
        scale_mode, custom = ("sqrt", 1.0) if scale is None else ("custom", float(scale))
        layer = Layer(
            arr("W_Q", w_q),
            arr("W_K", w_k),
            arr("W_V", w_v),
            arr("W_O", w_o),
            optional("b_Q", b_q),
            optional("b_K", b_k),
            optional("b_V", b_v),
            optional("b_O", b_o),
        )
        state = SessionState(
            tokens=tuple(token_list),
            source_tokens=tuple(source_list),
            x=x,
            x_kv=kv,
            layers=(layer,),
            padding=pad,
            source_padding=src_pad,
            cross=cross,
            causal=bool(causal),
            scale_mode=scale_mode,
            custom_scale=custom,
            title=title,
            description=description,
            x_residual=optional("the residual stream", x_residual),
            rotary=rotary is not None,
            rope_theta=10000.0 if rotary is None else float(rotary),
        )
        return cls(state)

    # ---- whole states (undo, files) ----------------------------------------------------------------------
    def state(self) -> SessionState:
        """A snapshot of everything; its arrays are read-only and shared, so a snapshot is cheap."""
        return self._s.replace(extra=copy.deepcopy(self._s.extra))

    def set_state(self, state: SessionState) -> None:
        """Replace everything at once (validated first)."""
        validate_state(state)
        self._s = state.replace(extra=copy.deepcopy(state.extra)).filled()
        self._emit("replaced")

    # ---- announcing --------------------------------------------------------------------------------------
    def _emit(self, kind: str, *args: Any) -> None:
        getattr(self.events, kind).emit(*args)
        # the 0.1 tags, for scripts that still listen to `changed`
        tag = {"matrix": args[0] if args else "", "replaced": "all", "layers": "all"}.get(kind, kind)
        self.changed.emit(tag)

    def _set(self, **changes: Any) -> None:
        self._s = self._s.replace(**changes)

    def _layer(self, layer: int | None) -> Layer:
        index = self._s.layer if layer is None else layer
        if not 0 <= index < len(self._s.layers):
            raise SessionError(f"There are {len(self._s.layers)} layers; there is no layer {index + 1}.")
        return self._s.layers[index]

    def _set_layer_fields(self, layer: int | None, **changes: Any) -> None:
        index = self._s.layer if layer is None else layer
        self._layer(index)
        layers = list(self._s.layers)
        layers[index] = Layer(**{**layers[index].__dict__, **changes})
        self._set(layers=tuple(layers))

    def _put(self, name: str, value: np.ndarray, layer: int | None = None) -> None:
        if name in STATE_ARRAYS:
            self._set(**{STATE_ARRAYS[name]: value})
        else:
            self._set_layer_fields(layer, **{ARRAY_FIELDS[name]: value})

    # ---- editing -----------------------------------------------------------------------------------------
    def set_matrix(self, name: str, value: Any) -> None:
        """Replace a whole matrix with one of the same shape."""
        old = self.matrix(name)
        value = np.asarray(value, dtype=np.float64)
        if value.shape != old.shape:
            raise SessionError(
                f"{name} is {format_shape(old.shape)} but the new matrix is {format_shape(value.shape)}: it must keep "
                "its shape (change the sizes first)."
            )
        check_finite(name, value)
        self._put(name, frozen_array(value))
        self._emit("matrix", name)

    def set_block(self, name: str, row: int, col: int, block: Any, head: int | None = None) -> np.ndarray:
        """Write a 2-D block at (row, col) of a matrix (of one head for W_Q, W_K, W_V); returns the old block."""
        old = self.matrix(name)
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != 2:
            raise SessionError(f"A block written into {name} must be 2-D, not {format_shape(block.shape)}.")
        target = old
        where = name
        if name in PER_HEAD:
            if head is None:
                head = self.head if name == "W_Q" else self.kv_head()
            if not 0 <= head < old.shape[0]:
                raise SessionError(f"{name} has {old.shape[0]} heads; there is no head {head + 1}.")
            target = old[head]
            where = f"{name} (head {head + 1})"
        r, c = block.shape
        if row < 0 or col < 0 or row + r > target.shape[0] or col + c > target.shape[1]:
            raise SessionError(
                f"A {r} × {c} block at row {row}, column {col} does not fit in {where}, which is "
                f"{format_shape(target.shape)}."
            )
        check_finite(where, block)
        new = np.array(old)
        region = new[head] if name in PER_HEAD else new
        previous: np.ndarray = region[row : row + r, col : col + c].copy()
        region[row : row + r, col : col + c] = block
        new.flags.writeable = False
        self._put(name, new)
        self._emit("matrix", name)
        return previous

    def set_causal(self, on: bool) -> None:
        self._set(causal=bool(on))
        self._emit("settings")

    def set_scale(self, mode: str, value: float | None = None) -> None:
        """mode "sqrt" (1/√d_k), "none" (1) or "custom" (value)."""
        if mode not in SCALE_MODES:
            raise SessionError(f"Unknown scale '{mode}': choose one of {', '.join(SCALE_MODES)}.")
        custom = self._s.custom_scale
        if value is not None:
            custom = float(value)
            if not math.isfinite(custom):
                raise SessionError(f"The scale must be a finite number, not {custom}.")
        self._set(scale_mode=mode, custom_scale=custom)
        self._emit("settings")

    def set_rotary(self, on: bool, theta: float | None = None) -> None:
        """Switch rotary positions (RoPE) on or off, optionally with a new base θ (a finite number above 1)."""
        value = self._s.rope_theta if theta is None else theta
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise SessionError(f"The rotary base θ must be a number, not {value!r}.") from None
        if not (math.isfinite(value) and value > 1):
            raise SessionError(f"The rotary base θ must be a finite number above 1 (LLaMA uses 10000), not {value}.")
        if on and self.d_k % 2:
            raise SessionError(f"Rotary positions turn pairs of coordinates: make d_k even first (it is {self.d_k}).")
        self._set(rotary=bool(on), rope_theta=value)
        self._emit("settings")

    def set_rope_theta(self, theta: float) -> None:
        """A new base θ for the rotary frequencies (rotary on or off unchanged)."""
        self.set_rotary(self._s.rotary, theta)

    def set_n_kv_heads(self, n_kv: int) -> None:
        """Share key/value heads between groups of query heads: n_kv must divide n_heads (n_heads: ordinary
        multi-head attention; 1: multi-query). Splitting keeps every result: a new key/value head starts as a copy
        of the one its query heads read before. Merging keeps, per new group, the key/value head its first query
        head read."""
        h, old = self.n_heads, self.n_kv_heads
        n_kv = int(n_kv)
        if not 1 <= n_kv <= h or h % n_kv:
            divisors = ", ".join(str(d) for d in range(1, h + 1) if h % d == 0)
            raise SessionError(
                f"{n_kv} key/value heads cannot be shared evenly by {h} query heads: choose one of {divisors}."
            )
        if n_kv == old:
            return
        # New kv head g serves query heads g·(h/n_kv) …; it takes the old kv head that its first query head read.
        source = [(g * (h // n_kv)) * old // h for g in range(n_kv)]
        layers = []
        for L in self._s.layers:
            L = L.filled()
            assert L.b_k is not None and L.b_v is not None
            layers.append(
                Layer(
                    **{
                        **L.__dict__,
                        "w_k": L.w_k[source],
                        "w_v": L.w_v[source],
                        "b_k": L.b_k[source],
                        "b_v": L.b_v[source],
                    }
                )
            )
        self._set(layers=tuple(layers))
        self._emit("shape")

    def set_cross(self, on: bool) -> None:
        if on and self._s.model is not None:
            raise SessionError("A whole model's layers read their own tokens: it cannot be cross-attention.")
        self._set(cross=bool(on))
        self._emit("settings")

    def set_padding(self, mask: Any, source: bool | None = None) -> None:
        """Mark tokens as padding: of the source sequence (source=True), of the tokens (False), or of the keys."""
        source = self._s.cross if source is None else source
        current = self._s.source_padding if source else self._s.padding
        flags = np.asarray(mask, dtype=bool)
        if flags.shape != current.shape:
            raise SessionError(f"The padding needs one flag per token ({current.shape[0]}), not {flags.shape}.")
        self._set(**{"source_padding" if source else "padding": frozen_array(flags, bool)})
        self._emit("settings")

    def set_tokens(self, tokens: Sequence[object], source: bool = False) -> None:
        """Change the token strings; rows of X (or X_kv) follow their tokens, new tokens get new random rows."""
        new_tokens = [str(t) for t in tokens]
        if self._s.model is not None and new_tokens != list(self._s.source_tokens if source else self._s.tokens):
            raise SessionError(
                "A whole imported model reads the tokens its tokenizer made: to change the sentence, "
                "import the model again (File ▸ Import model), or use Repeat random tokens."
            )
        if not new_tokens:
            raise SessionError("A sequence needs at least one token.")
        if len(new_tokens) > LIMITS["tokens"]:
            raise SessionError(f"{len(new_tokens)} tokens is more than the {LIMITS['tokens']} qkvgui handles.")
        if not source and self._rebuild_preset(new_tokens):
            return  # a preset's features and weights made for the new sentence: its claim still holds
        self._check_sizes(**{"source_tokens" if source else "tokens": len(new_tokens)})
        s = self._s
        old_tokens = list(s.source_tokens if source else s.tokens)
        x = s.x_kv if source else s.x
        pad = s.source_padding if source else s.padding
        new_x = seeded_random((len(new_tokens), x.shape[1]), seed=len(new_tokens) + 7 * len(old_tokens), std=0.5)
        new_pad = np.zeros(len(new_tokens), dtype=bool)
        # Tokens that survive the edit keep their rows (and padding flags): match old to new by content.
        matcher = difflib.SequenceMatcher(a=old_tokens, b=new_tokens, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):  # a rename keeps the row
                new_x[j1:j2] = x[i1:i2]
                new_pad[j1:j2] = pad[i1:i2]
        if source:
            self._set(source_tokens=tuple(new_tokens), x_kv=new_x, source_padding=new_pad)
            self._emit("source_tokens")
        else:
            changes: dict[str, Any] = dict(tokens=tuple(new_tokens), x=new_x, padding=new_pad)
            if s.x_residual is not None and len(new_tokens) != len(old_tokens):
                changes["x_residual"] = None  # a model's stream no longer matches the tokens: X is the stream
            self._set(**changes)
            self._emit("tokens")

    def generate(self, name: str, kind: str, seed: int = 0) -> None:
        """Fill X or X_kv with a generator: "one-hot" (token block then position block), "sinusoidal",
        "random" (seeded) or "zeros"."""
        if name not in ("X", "X_kv"):
            raise SessionError(f"Generators fill X or X_kv, not {name}.")
        tokens = list(self._s.source_tokens if name == "X_kv" else self._s.tokens)
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
        changes = {
            attr: seeded_random(getattr(layer, attr).shape, seed * 4 + i)
            for i, attr in enumerate(("w_q", "w_k", "w_v", "w_o"))
        }
        self._set_layer_fields(None, **changes)
        self._emit("layers")

    def resize(
        self, *, d_model: int | None = None, n_heads: int | None = None, d_k: int | None = None, d_v: int | None = None
    ) -> None:
        """Change the dimensions; every existing value that still has a place keeps it, new entries are 0."""
        s = self._s
        h0, dm0, dk0, dv0 = self.n_heads, self.d_model, self.d_k, self.d_v
        h = h0 if n_heads is None else int(n_heads)
        dm = dm0 if d_model is None else int(d_model)
        dk = dk0 if d_k is None else int(d_k)
        dv = dv0 if d_v is None else int(d_v)
        kv0 = self.n_kv_heads
        kv = h if kv0 == h0 else math.gcd(h, kv0)  # ordinary multi-head stays so; shared heads keep dividing h
        self._check_sizes(heads=h, d_model=dm, d_k=dk, d_v=dv, kv_heads=kv)  # before allocating anything
        if s.model is not None and dm != dm0:
            raise SessionError(
                f"The model's own blocks (norms, MLPs) are {dm0} wide: d_model of a whole imported model cannot change."
            )
        if s.rotary and dk % 2:
            raise SessionError(f"Rotary positions turn pairs of coordinates, so d_k must stay even (not {dk}).")
        layers = []
        for L in s.layers:
            assert L.b_q is not None and L.b_k is not None and L.b_v is not None and L.b_o is not None
            assert L.ablated is not None
            w_o_blocks = _fit(L.w_o.reshape(h0, dv0, dm0), (h, dv, dm))  # W_O resizes block by block
            layers.append(
                Layer(
                    _fit(L.w_q, (h, dm, dk)),
                    _fit(L.w_k, (kv, dm, dk)),
                    _fit(L.w_v, (kv, dm, dv)),
                    w_o_blocks.reshape(h * dv, dm),
                    _fit(L.b_q, (h, dk)),
                    _fit(L.b_k, (kv, dk)),
                    _fit(L.b_v, (kv, dv)),
                    _fit(L.b_o, (dm,)),
                    _fit(L.ablated, (h,)).astype(bool),
                )
            )
        self._set(
            x=_fit(s.x, (len(s.tokens), dm)),
            x_kv=_fit(s.x_kv, (len(s.source_tokens), dm)),
            x_residual=None if s.x_residual is None else _fit(s.x_residual, (len(s.tokens), dm)),
            layers=tuple(layers),
            head=min(s.head, h - 1),
        )
        self._emit("shape")

    def _check_sizes(self, **changes: int) -> None:
        """The session's sizes with ``changes`` applied are within LIMITS and MAX_MATRIX_BYTES (SessionError naming
        the limit otherwise): checked before an edit allocates its new arrays."""
        s = self._s
        sizes = dict(
            heads=self.n_heads,
            d_model=self.d_model,
            d_k=self.d_k,
            d_v=self.d_v,
            tokens=len(s.tokens),
            source_tokens=len(s.source_tokens),
            layers=len(s.layers),
            kv_heads=self.n_kv_heads,
        )
        sizes.update(changes)
        check_sizes(**sizes, residual=s.x_residual is not None)

    # ---- layers and heads --------------------------------------------------------------------------------
    def set_head(self, head: int) -> None:
        """Select the head the editors show (a selection: nothing is computed again)."""
        if not 0 <= head < self.n_heads:
            raise SessionError(f"There are {self.n_heads} heads; there is no head {head + 1}.")
        self._set(head=int(head))
        self._emit("head", int(head))

    def set_layer(self, layer: int) -> None:
        """Select the layer the editors and views show (a selection: nothing is computed again)."""
        self._layer(layer)
        self._set(layer=int(layer))
        self._emit("layer", int(layer))

    def set_view(self, view: str) -> None:
        """Select the view the window shows: "pipeline" (step by step), "circuits" or "learn"; saved with the file."""
        if view not in VIEWS:
            raise SessionError(f"Unknown view '{view}': choose one of {', '.join(VIEWS)}.")
        self.set_extra("view", view)
        self._emit("view", view)

    def add_layer(self, seed: int = 0) -> None:
        """Append a layer of seeded random weights with the same sizes, and select it."""
        if self._s.model is not None:
            raise SessionError("A whole imported model has its own layers: layers cannot be added to it.")
        self._check_sizes(layers=len(self._s.layers) + 1)
        first = self._s.layers[0]
        shapes = [getattr(first, a).shape for a in ("w_q", "w_k", "w_v", "w_o")]
        weights = [seeded_random(shape, seed * 4 + i) for i, shape in enumerate(shapes)]
        if len(self._s.layers) >= LIMITS["layers"]:
            raise SessionError(f"A session has at most {LIMITS['layers']} layers.")
        self._set(layers=(*self._s.layers, Layer(*weights).filled()), layer=len(self._s.layers))
        self._emit("layers")

    def remove_layer(self, layer: int | None = None) -> None:
        """Remove a layer (the selected one by default); the last layer cannot go."""
        index = self._s.layer if layer is None else layer
        self._layer(index)
        if len(self._s.layers) == 1:
            raise SessionError("A session needs at least one layer.")
        if self._s.model is not None:
            raise SessionError("A whole imported model has its own layers: switch a layer's heads off instead.")
        layers = self._s.layers[:index] + self._s.layers[index + 1 :]
        self._set(layers=layers, layer=min(self._s.layer, len(layers) - 1))
        self._emit("layers")

    def set_ablated(self, head: int, off: bool, layer: int | None = None) -> None:
        """Switch a head off (its output is zero, so it writes nothing) or back on."""
        flags = np.array(self.ablated(layer))
        if not 0 <= head < len(flags):
            raise SessionError(f"There are {len(flags)} heads; there is no head {head + 1}.")
        flags[head] = bool(off)
        self._set_layer_fields(layer, ablated=flags)
        self._emit("settings")

    # ---- kept for code written against qkvgui 0.1 ----------------------------------------------------------
    @staticmethod
    def _check(state: SessionState) -> None:
        """Deprecated: use ``qkvgui.state.validate_state``."""
        warnings.warn("Session._check is deprecated: use qkvgui.state.validate_state", DeprecationWarning, stacklevel=2)
        validate_state(state)


def _known(name: str) -> str:
    if name not in ARRAY_FIELDS:
        raise SessionError(f"There is no matrix called {name!r}; the matrices are {', '.join(MATRICES)}.")
    return name


def _preset_state(p: Preset) -> SessionState:
    """A preset as a session state (validated), as ``Session.from_preset`` opens it."""
    state = Session.from_arrays(
        p.x,
        p.w_q,
        p.w_k,
        p.w_v,
        p.w_o,
        x_kv=p.x_kv,
        tokens=p.tokens,
        source_tokens=p.source_tokens,
        causal=p.causal,
        scale=p.scale,
        source_padding=p.source_padding,
        title=p.title,
        description=p.description,
        rotary=p.rotary,
    )._s
    more = tuple(Layer(w_q, w_k, w_v, w_o).filled() for w_q, w_k, w_v, w_o in p.more_layers)
    state = state.replace(
        features=tuple(p.features), layers=state.layers + more, extra={**state.extra, **copy.deepcopy(p.extra)}
    )
    validate_state(state)
    return state.filled()


def _differences(s: SessionState, ref: SessionState, free: Sequence[str] = ()) -> list[str]:
    """What a reader would name as changed between a session and the preset it came from, in reading order."""
    out: list[str] = []

    def same(a: Any, b: Any) -> bool:
        return a is b or bool(np.array_equal(a, b))

    if s.tokens != ref.tokens:
        out.append("the tokens")
    if s.cross != ref.cross:
        out.append("cross-attention")
    elif ref.cross and s.source_tokens != ref.source_tokens:
        out.append("the source tokens")
    if not same(s.x, ref.x):
        out.append("X")
    if ref.cross and s.cross and not same(s.x_kv, ref.x_kv):
        out.append("X_kv")
    if not same(s.padding, ref.padding) or (ref.cross and not same(s.source_padding, ref.source_padding)):
        out.append("the padding")
    if s.causal != ref.causal:
        out.append("the causal mask")
    if (s.scale_mode, s.custom_scale if s.scale_mode == "custom" else 0) != (
        ref.scale_mode,
        ref.custom_scale if ref.scale_mode == "custom" else 0,
    ):
        out.append("the scale")
    if (s.rotary, s.rope_theta if s.rotary else 0) != (ref.rotary, ref.rope_theta if ref.rotary else 0):
        out.append("the rotary positions")
    if len(s.layers) != len(ref.layers):
        out.append("the layers")
        return out
    many = len(s.layers) > 1
    for i, (a, b) in enumerate(zip(s.layers, ref.layers, strict=True)):
        where = f" (layer {i + 1})" if many else ""
        for name, attr in ARRAY_FIELDS.items():
            if name in STATE_ARRAYS or name in free:
                continue
            if not same(getattr(a, attr), getattr(b, attr)):
                out.append(name + where)
        if not same(a.ablated, b.ablated):
            out.append("heads switched off" + where)
    return out


def _fit(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """a cropped or zero-padded to shape, every kept entry in its place."""
    out = np.zeros(shape, dtype=a.dtype)
    common = tuple(slice(0, min(x, y)) for x, y in zip(a.shape, shape, strict=True))
    out[common] = a[common]
    return out


def _default_state() -> SessionState:
    """A short sentence over one-hot token and position features, 2 heads, seeded weights, causal."""
    tokens = ("the", "cat", "sat", "on", "the", "mat")
    source = ("le", "chat", "s'est", "assis", "<pad>")
    d_model, h, d_k = 12, 2, 3
    x = one_hot_features(list(tokens), d_model)
    x_kv = seeded_random((len(source), d_model), seed=11, std=1.0)
    return SessionState(
        tokens=tokens,
        source_tokens=source,
        x=x,
        x_kv=x_kv,
        layers=(
            Layer(
                w_q=seeded_random((h, d_model, d_k), seed=1) * 2,
                w_k=seeded_random((h, d_model, d_k), seed=2) * 2,
                w_v=seeded_random((h, d_model, d_k), seed=3) * 2,
                w_o=seeded_random((h * d_k, d_model), seed=4),
            ),
        ),
        padding=np.zeros(len(tokens), bool),
        source_padding=np.array([False, False, False, False, True]),
        causal=True,
        title="the cat sat on the mat",
        description="Six tokens over one-hot token and position features, two heads with seeded random weights.",
    )
