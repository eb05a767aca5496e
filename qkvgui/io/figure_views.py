"""What a figure can show: every step of attention and every circuit as named matrices, taken from a session.

No Qt here: a `FigureData` is a snapshot of one layer of a session (its result, weights and labels) that the
renderer (qkvgui.io.figure_paint) lays out and paints. Titles use a tiny markup for real subscripts and superscripts:
``W_Q``, ``W_{QK}``, ``K^T`` (see `rich_runs`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qkvgui.core import composition_scores, ov_circuit, qk_circuit
from qkvgui.core.errors import FigureError
from qkvgui.core.format import readable_tokens

__all__ = [
    "CIRCUIT_VIEWS",
    "FIGURE_VIEWS",
    "PIPELINE_STEPS",
    "FigureData",
    "Matrix",
    "ViewInfo",
    "figure_data",
    "rich_runs",
    "view_names",
]


@dataclass(frozen=True)
class ViewInfo:
    """One figure view: its short name (CLI, settings), a readable name, its formula in title markup, whether it
    has one matrix per head, and its colour map kind ("diverging": signed, centred on 0; "weights": 0 to 1)."""

    name: str
    label: str
    formula: str
    per_head: bool
    kind: str = "diverging"


FIGURE_VIEWS: tuple[ViewInfo, ...] = (
    ViewInfo("x", "input", "X", False),
    ViewInfo("w_q", "query weights", "W_Q", True),
    ViewInfo("w_k", "key weights", "W_K", True),
    ViewInfo("w_v", "value weights", "W_V", True),
    ViewInfo("q", "queries", "Q = X·W_Q", True),
    ViewInfo("k", "keys", "K = X·W_K", True),
    ViewInfo("v", "values", "V = X·W_V", True),
    ViewInfo("q_rope", "rotated queries", "Q_{rope} = rotate(Q, position)", True),
    ViewInfo("k_rope", "rotated keys", "K_{rope} = rotate(K, position)", True),
    ViewInfo("angles", "rotation angles", "angle = position · θ^{−2i/d_k}", False),
    ViewInfo("scores", "attention scores", "Q·K^T", True),
    ViewInfo("scaled", "scaled scores", "scores × scale", True),
    ViewInfo("masked", "masked scores", "mask(scaled)", True),
    ViewInfo("weights", "attention weights", "softmax(masked)", True, "weights"),
    ViewInfo("head_outputs", "head outputs", "weights·V", True),
    ViewInfo("concat", "heads concatenated", "[head 1 | head 2 | …]", False),
    ViewInfo("w_o", "output weights", "W_O", False),
    ViewInfo("output", "attention output", "concat·W_O", False),
    ViewInfo("residual", "residual stream", "X + output", False),
    ViewInfo("block", "model block", "the model's block → the next layer's input", False),
    ViewInfo("qk_circuit", "QK circuit", "W_{QK} = W_Q·W_K^T", True),
    ViewInfo("ov_circuit", "OV circuit", "W_{OV} = W_V·W_O", True),
    ViewInfo("token_qk", "QK circuit on the tokens", "X·W_{QK}·X^T", True),
    ViewInfo("circuit_scores", "scores, for comparison", "Q·K^T", True),
    ViewInfo("composition", "Q/K/V-composition", "later heads × earlier heads", False, "weights"),
)
VIEWS = {v.name: v for v in FIGURE_VIEWS}
#: the steps of the computation in order, as the pipeline figure and the animation show them
PIPELINE_STEPS = (
    "x",
    "q",
    "k",
    "v",
    "scores",
    "scaled",
    "masked",
    "weights",
    "head_outputs",
    "concat",
    "output",
    "residual",
)
CIRCUIT_VIEWS = ("qk_circuit", "ov_circuit", "token_qk", "circuit_scores", "composition")
#: the names a figure may be asked for: the whole pipeline, all circuits, or one view
GROUPS = {"pipeline": PIPELINE_STEPS, "circuits": CIRCUIT_VIEWS}


#: the (n_q × n_k) steps of a head, computed per head on demand by the core (result.head(h))
HEAD_STEPS = ("scores", "scaled", "masked", "weights")


def head_step(result, name: str, head: int) -> np.ndarray:
    """One head's scores, scaled, masked or weights [n_q, n_k], without computing every head's."""
    if hasattr(result, "head"):
        return getattr(result.head(head), name)
    return getattr(result, name)[head]


def view_names() -> list[str]:
    """Everything `qkvgui export --views` accepts: 'pipeline', 'circuits', then each view."""
    return [*GROUPS, *(v.name for v in FIGURE_VIEWS)]


def rich_runs(text: str) -> list[tuple[str, int]]:
    """Title markup as runs of (text, level): level 0 normal, −1 subscript, +1 superscript.

    ``W_Q`` → W, Q₋₁; ``W_{QK}`` → W, QK₋₁; ``K^T`` → K, T₊₁. A backslash escapes the next character.
    """
    runs: list[tuple[str, int]] = []
    plain: list[str] = []
    i = 0

    def flush() -> None:
        if plain:
            runs.append(("".join(plain), 0))
            plain.clear()

    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            plain.append(text[i + 1])
            i += 2
            continue
        if c in "_^" and i + 1 < len(text):
            level = -1 if c == "_" else 1
            if text[i + 1] == "{":
                end = text.find("}", i + 2)
                end = len(text) if end < 0 else end
                script, i = text[i + 2 : end], end + 1
            else:
                script, i = text[i + 1], i + 2
            flush()
            if script:
                runs.append((script, level))
            continue
        plain.append(c)
        i += 1
    flush()
    return runs


def plain_text(text: str) -> str:
    """Title markup as plain text for metadata and file names (W_Q → W_Q, K^T → Kᵀ)."""
    out = []
    for run, level in rich_runs(text):
        out.append(("ᵀ" if run == "T" else "^" + run) if level > 0 else ("_" + run if level < 0 else run))
    return "".join(out)


@dataclass(frozen=True)
class Matrix:
    """One heatmap: values [rows, cols] (−inf = masked), their labels, what the rows and columns are ("token" axes
    get position-tagged when thinned), and the colour levels (lo, hi) it shares with its siblings."""

    values: np.ndarray
    row_labels: Sequence[str]
    col_labels: Sequence[str]
    levels: tuple[float, float]
    caption: str = ""  # e.g. "head 3" in a small multiple
    row_tokens: bool = True
    col_tokens: bool = False


@dataclass(frozen=True)
class ViewFigure:
    """A view ready to paint: its title (label and formula, in markup), its subtitle (plain) and one matrix per
    head shown (or one for a view without heads), all on the same colour levels."""

    info: ViewInfo
    title: str
    subtitle: str
    matrices: list[Matrix]
    kind: str
    label: str = ""
    formula: str = ""


#: mantissas of round colour-bar ends
NICE_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def nice_ceiling(m: float) -> float:
    """The smallest round number ≥ m (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k); 0 for 0 or non-finite."""
    if not m > 0 or not math.isfinite(m):
        return 0.0
    scale = 10.0 ** math.floor(math.log10(m))
    for step in NICE_STEPS:
        if step * scale >= m * (1 - 1e-12):
            return step * scale
    return 10.0 * scale


def shape_text(a: np.ndarray) -> str:
    return " × ".join(str(d) for d in a.shape)


@dataclass
class FigureData:
    """One layer of a session, frozen for drawing: tokens, features, the weights, the result, the selected head."""

    tokens: list[str]
    key_tokens: list[str]
    features: list[str]
    w_q: np.ndarray  # [h, d_model, d_k]
    w_k: np.ndarray
    w_v: np.ndarray  # [h, d_model, d_v]
    w_o: np.ndarray  # [h·d_v, d_model]
    x: np.ndarray  # [n, d_model] what the layer reads
    x_kv: np.ndarray  # [m, d_model]
    result: Any  # the core's AttentionResult
    head: int
    layer: int
    n_layers: int
    cross: bool
    causal: bool
    title: str = ""
    composition: dict | None = None  # {"Q","K","V": [h_later, h_earlier]} with the layer pair, or None
    composition_layers: tuple[int, int] = (0, 0)
    block: str | None = None  # a whole imported model's block after this layer: where it leads, its formula
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_heads(self) -> int:
        return int(self.w_q.shape[0])

    def heads(self, which: str | int) -> list[int]:
        """The heads to draw: 'current', 'all', or a 0-based head number."""
        if which == "all":
            return list(range(self.n_heads))
        if which == "current":
            return [self.head]
        h = int(which)
        if not 0 <= h < self.n_heads:
            raise FigureError(f"There is no head {h + 1}: this layer has heads 1 to {self.n_heads}.")
        return [h]

    def array(self, name: str, head: int | None = None) -> np.ndarray:
        head = self.head if head is None else head
        """The values of a view (for one head if it has heads)."""
        r = self.result
        if name == "x":
            return self.x
        if name in ("w_q", "w_k", "w_v"):
            return getattr(self, name)[head]
        if name == "w_o":
            return self.w_o
        if name in ("qk_circuit", "ov_circuit", "token_qk"):
            key = (name, head)
            if key not in self._cache:
                kv = head * self.w_k.shape[0] // self.n_heads  # the key/value head this query head reads
                qk = qk_circuit(self.w_q[head : head + 1], self.w_k[kv : kv + 1])[0]  # [d_model, d_model]
                if name == "qk_circuit":
                    value = qk
                elif name == "token_qk":
                    value = self.x @ qk @ self.x_kv.T  # [n_q, n_k]
                else:
                    d_v = self.w_v.shape[2]
                    value = ov_circuit(self.w_v[kv : kv + 1], self.w_o[head * d_v : (head + 1) * d_v])[0]
                self._cache[key] = value
            return self._cache[key]
        if name == "circuit_scores":
            name = "scores"
        if name == "composition":
            if self.composition is None:
                raise FigureError("Composition needs two or more layers: this session has one.")
            c = self.composition
            return np.concatenate([c["Q"], c["K"], c["V"]])  # [3·h_later, h_earlier]
        if name in HEAD_STEPS:
            return head_step(r, name, head)
        if name == "block":
            if getattr(r, "next_x", None) is None:
                raise FigureError(
                    "The model's block exists only in a whole imported model: import every layer of a checkpoint."
                )
            return r.next_x
        if name in ("q_rope", "k_rope", "angles") and getattr(r, "rotary", None) is None:
            raise FigureError(f"The {VIEWS[name].label} exist only with rotary positions: switch RoPE on first.")
        if name == "angles":
            return np.angle(np.exp(1j * r.q_angles))  # [n_q, d_k/2], wrapped to (−π, π]
        if name in ("k", "v", "k_rope"):  # heads may share keys and values (grouped-query attention)
            return getattr(r, name)[r.kv_head(head) if hasattr(r, "kv_head") else head]
        value = getattr(r, name)
        return value[head] if VIEWS[name].per_head else value

    def labels(self, name: str, values: np.ndarray) -> tuple[list[str], list[str], bool, bool]:
        """Row and column labels of a view, and whether each axis is tokens."""
        n_rows, n_cols = values.shape
        dims = [f"d{i}" for i in range(n_cols)]
        if name == "composition":
            later, earlier = self.composition_layers
            h = self.n_heads
            rows = [f"{kind}: L{later + 1}h{i + 1}" for kind in "QKV" for i in range(h)]
            return rows, [f"L{earlier + 1}h{j + 1}" for j in range(h)], False, False
        if name in ("w_q", "w_k", "w_v", "qk_circuit", "ov_circuit"):
            cols = self.features if name in ("qk_circuit", "ov_circuit") else dims
            return list(self.features), list(cols), False, False
        if name == "w_o":
            d_v = self.w_v.shape[2]
            rows = [f"h{k // d_v + 1}.d{k % d_v}" for k in range(n_rows)]
            return rows, list(self.features), False, False
        rows = list(self.key_tokens if name in ("k", "v", "k_rope") else self.tokens)
        if name == "angles":
            half = n_cols
            return rows, [f"d{i}/d{i + half}" for i in range(half)], True, False
        if name in ("scores", "scaled", "masked", "weights", "token_qk", "circuit_scores"):
            return rows, list(self.key_tokens), True, True
        if name == "concat":
            d_v = self.w_v.shape[2]
            return rows, [f"h{k // d_v + 1}.d{k % d_v}" for k in range(n_cols)], True, False
        if name in ("x", "output", "residual", "block"):
            return rows, list(self.features), True, False
        return rows, dims, True, False

    def formula(self, info: ViewInfo) -> str:
        kv = "X_{kv}" if self.cross else "X"
        f = info.formula
        if info.name in ("k", "v"):
            f = f.replace("= X·", f"= {kv}·")
        elif info.name == "scores" and getattr(self.result, "rotary", None) is not None:
            f = "Q_{rope}·K_{rope}^T"
        elif info.name == "angles":
            f = f"angle = position · {self.result.rotary:g}^{{−2i/{self.w_q.shape[2]}}}"
        elif info.name == "token_qk":
            f = f"X·W_{{QK}}·{kv}^T"
        elif info.name == "scaled":
            s = float(self.result.scale)
            d_k = self.w_q.shape[2]
            f = "scores × 1/√d_k" if math.isclose(s, 1 / math.sqrt(d_k)) else f"scores × {s:.4g}"
        elif info.name == "masked":
            f = "mask(scaled)"
        elif info.name == "concat":
            f = (
                "[head 1 | … | head " + str(self.n_heads) + "]"
                if self.n_heads > 2
                else "[head 1 | head 2]"
                if self.n_heads == 2
                else "head 1"
            )
        elif info.name == "block" and self.block:
            f = self.block
        elif info.name == "composition":
            later, earlier = self.composition_layers
            f = f"layer {later + 1} heads × layer {earlier + 1} heads"
        return f

    def view(self, name: str, heads: str | int = "current") -> ViewFigure:
        """A view ready to paint, for the current head, all heads, or one head (0-based)."""
        if name not in VIEWS:
            raise FigureError(f"There is no view {name!r}: choose from {', '.join(view_names())}.")
        info = VIEWS[name]
        shown: list[int | None] = list(self.heads(heads)) if info.per_head else [None]
        arrays = [np.asarray(self.array(name, h), dtype=np.float64) for h in shown]
        if info.kind == "weights":
            levels = (0.0, 1.0)
        else:
            m = 0.0
            for a in arrays:
                finite = a[np.isfinite(a)]
                if finite.size:
                    m = max(m, float(np.abs(finite).max()))
            m = nice_ceiling(m)
            levels = (-m, m) if m > 0 else (-1.0, 1.0)
        matrices = []
        for h, a in zip(shown, arrays, strict=True):
            rows, cols, row_tok, col_tok = self.labels(name, a)
            caption = f"head {h + 1}" if h is not None and len(shown) > 1 else ""
            matrices.append(Matrix(a, rows, cols, levels, caption, row_tok, col_tok))
        parts = []
        if info.per_head and len(shown) == 1 and shown[0] is not None:
            parts.append(f"head {shown[0] + 1}")
        elif info.per_head:
            parts.append(f"{len(shown)} heads")
        if self.n_layers > 1 and name != "composition":
            parts.append(f"layer {self.layer + 1}")
        parts.append(shape_text(arrays[0]))
        if name == "scaled":
            parts.append(f"scale {float(self.result.scale):.4g}")
        if name in ("masked", "weights") and self.causal:
            parts.append("causal: grey = hidden key (−∞)" if name == "masked" else "causal")
        formula = self.formula(info)
        return ViewFigure(info, f"{info.label}: {formula}", " · ".join(parts), matrices, info.kind, info.label, formula)


def figure_data(session, layer: int | None = None, results: list | None = None) -> FigureData:
    """Snapshot one layer of a session (default: the selected one) for figures; `results` reuses a computation."""
    results = session.compute_layers() if results is None else results
    layer = session.layer if layer is None else int(layer)
    if not 0 <= layer < len(results):
        raise FigureError(f"There is no layer {layer + 1}: the session has layers 1 to {len(results)}.")
    x = session.matrix("X") if layer == 0 else results[layer - 1].residual
    x_kv = session.matrix("X_kv") if session.cross else x
    w = {n: session.matrix(n, layer=layer) for n in ("W_Q", "W_K", "W_V", "W_O")}
    composition, pair = None, (0, 0)
    if session.n_layers > 1:
        later = max(layer, 1)
        q1, k1, v1, o1 = (session.matrix(n, layer=later) for n in ("W_Q", "W_K", "W_V", "W_O"))
        composition = composition_scores(
            q1,
            k1,
            v1,
            o1,
            session.matrix("W_V", layer=later - 1),
            session.matrix("W_O", layer=later - 1),
        )
        pair = (later, later - 1)
    return FigureData(
        tokens=readable_tokens(session.tokens),  # "␣the" for a byte-level BPE model's "Ġthe", as the window shows
        key_tokens=readable_tokens(session.key_tokens),
        features=list(session.features),
        w_q=w["W_Q"],
        w_k=w["W_K"],
        w_v=w["W_V"],
        w_o=w["W_O"],
        x=x,
        x_kv=x_kv,
        result=results[layer],
        head=session.head,
        layer=layer,
        n_layers=session.n_layers,
        cross=session.cross,
        causal=session.causal,
        title=session.title,
        composition=composition,
        composition_layers=pair,
        block=session.block_formula(layer),
    )
