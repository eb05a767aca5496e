"""The views of every step of attention, in the order of the computation, each bound to one result field by name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from qkvgui.core import AttentionResult
from qkvgui.ui.heatmap import HeatmapView


@dataclass(frozen=True)
class ViewSpec:
    """One view: which result field it shows, how to label it, and what a row or cell means."""

    name: str  # the result field, and the view's objectName "view.<name>"
    formula: str
    per_head: bool
    rows: str  # "query" or "key": whose tokens label the rows
    cols: str  # "key", "d" (d0…), "concat" (head.dim) or "d_model"
    kind: str = "diverging"
    tip: str = ""


VIEW_SPECS = (
    ViewSpec("q", "Q = X·W_Q", True, "query", "d", tip="Row i: what token i is looking for (its query)."),
    ViewSpec("k", "K = X_kv·W_K", True, "key", "d", tip="Row j: what token j offers to be found by (its key)."),
    ViewSpec("v", "V = X_kv·W_V", True, "key", "d", tip="Row j: what token j hands over when it is attended to."),
    ViewSpec("q_rope", "Q_rope = rotate(Q, position)", True, "query", "d",
             tip="Row i: token i's query turned by its position i (each coordinate pair by its own angle)."),
    ViewSpec("k_rope", "K_rope = rotate(K, position)", True, "key", "d",
             tip="Row j: token j's key turned by its position j; q_i·k_j then depends on i − j only through "
                 "the rotation."),
    ViewSpec("angles", "angle = position · θ^(−2i/d_k)", False, "query", "pair",
             tip="Cell (p, i): the angle (radians, wrapped to ±π) by which pair i = (d_i, d_{i+d_k/2}) of position "
                 "p's query and key turns. Pair 0 turns one radian per position, the last pair almost not at all."),
    ViewSpec("scores", "scores = Q·Kᵀ", True, "query", "key",
             tip="Cell (i, j): how strongly token i's query matches token j's key, q_i·k_j."),
    ViewSpec("scaled", "scaled = scores × scale", True, "query", "key",
             tip="The scores times the scale (1/√d_k by default), so softmax does not saturate."),
    ViewSpec("masked", "masked = mask(scaled)", True, "query", "key",
             tip="Hidden keys (causal: later tokens; padding) get −∞, so softmax gives them weight 0."),
    ViewSpec("weights", "weights = softmax(masked)", True, "query", "key", kind="weights",
             tip="Row i: how much token i takes from each token; every row sums to 1."),
    ViewSpec("head_outputs", "head output = weights·V", True, "query", "d",
             tip="Row i: the weighted sum of the value rows, with row i of the weights as the weights."),
    ViewSpec("concat", "concat = [h1 | h2 | …]", False, "query", "concat",
             tip="Every head's output side by side, head 1 first."),
    ViewSpec("output", "output = concat·W_O", False, "query", "d_model",
             tip="W_O mixes the heads and maps them back to the residual stream's width."),
    ViewSpec("residual", "residual = X + output", False, "query", "d_model",
             tip="What the layer leaves in the residual stream: the input plus what attention wrote."),
)
SPECS = {s.name: s for s in VIEW_SPECS}
#: the views whose cell (i, j) is one query and one key
SCORE_VIEWS = ("scores", "scaled", "masked", "weights")
#: the views of the rotary step, shown only when positions are rotated (RoPE)
ROTARY_VIEWS = ("q_rope", "k_rope", "angles")
#: the views of key/value heads: with shared heads they show the selected query head's key/value head
KV_VIEWS = ("k", "v", "k_rope")
#: one colour per group of query heads sharing a key/value head (Okabe–Ito, readable by colour-blind users)
GROUP_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
#: results with more attention weights than this are drawn one view per event-loop turn
PROGRESSIVE_CELLS = 200_000


def dim_labels(n: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def concat_labels(h: int, d_v: int) -> list[str]:
    return [f"h{head + 1}.d{i}" for head in range(h) for i in range(d_v)]


class PipelineView(QWidget):
    """A grid of heatmaps, one per step, and the weights of every head side by side as small multiples."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.views: dict[str, HeatmapView] = {}
        grid = QGridLayout()
        grid.setSpacing(4)
        # Row 1 is the rotary step (Q and K turned by position), shown only for rotary sessions.
        positions = {"q": (0, 0), "k": (0, 1), "v": (0, 2), "q_rope": (1, 0), "k_rope": (1, 1), "angles": (1, 2),
                     "scores": (2, 0), "scaled": (2, 1), "masked": (2, 2), "weights": (2, 3), "head_outputs": (3, 0),
                     "concat": (3, 1), "output": (3, 2), "residual": (3, 3)}
        for spec in VIEW_SPECS:
            view = HeatmapView(spec.kind)
            view.setObjectName(f"view.{spec.name}")
            view.setToolTip(f"{spec.formula}\n{spec.tip}")
            self.views[spec.name] = view
            grid.addWidget(view, *positions[spec.name])
        self.heads_box = QWidget()
        self.heads_layout = QGridLayout(self.heads_box)
        self.heads_layout.setContentsMargins(0, 0, 0, 0)
        self.head_views: list[HeatmapView] = []
        caption = QLabel("weights of every head")
        caption.setWordWrap(True)
        small = QVBoxLayout()
        small.addWidget(caption)
        small.addWidget(self.heads_box, 1)
        # With several layers: the residual stream after each of them, side by side.
        self.residuals_caption = QLabel("residual stream after each layer")
        self.residuals_box = QWidget()
        self.residuals_layout = QGridLayout(self.residuals_box)
        self.residuals_layout.setContentsMargins(0, 0, 0, 0)
        self.residual_views: list[HeatmapView] = []
        small.addWidget(self.residuals_caption)
        small.addWidget(self.residuals_box, 1)
        self.residuals_caption.hide()
        self.residuals_box.hide()
        grid.addLayout(small, 0, 3)
        for c in range(4):
            grid.setColumnStretch(c, 1)
        for r in range(4):
            grid.setRowStretch(r, 1)
        self.setLayout(grid)
        self._grid = grid
        self._show_rotary(False)
        self._pending: list = []
        self._step_timer = QTimer(self, singleShot=True, interval=0)
        self._step_timer.timeout.connect(self._next_step)

    def show_result(self, r: AttentionResult, head: int, q_tokens, k_tokens, cross: bool = False,
                    features=None, layer: int | None = None) -> None:
        """Draw every view of the result for the selected head.

        A teaching-size result is drawn at once, so every view shows an edit in the same frame. A big one is
        drawn one view per event-loop turn, so the GUI thread is never blocked for long; a newer result replaces
        the steps still pending.
        """
        steps = self._draw_steps(r, head, list(q_tokens), list(k_tokens), cross, features, layer)
        self._pending = []
        if r.n_heads * r.n_q * r.n_k <= PROGRESSIVE_CELLS:
            for step in steps:
                step()
            return
        self._pending = steps
        self._step_timer.start()

    def _show_rotary(self, on: bool) -> None:
        """The rotary row is there only when positions are rotated (its stretch 0 when hidden, so nothing squeezes)."""
        for name in ROTARY_VIEWS:
            self.views[name].setVisible(on)
        self._grid.setRowStretch(1, 1 if on else 0)

    def _next_step(self) -> None:
        if self._pending:
            self._pending.pop(0)()
        if self._pending:
            self._step_timer.start()

    def drawing(self) -> bool:
        """True while a big result is still being drawn view by view."""
        return bool(self._pending) or any(view.preparing() for view in self.all_views())

    def _draw_steps(self, r: AttentionResult, head: int, q_tokens: list, k_tokens: list, cross: bool,
                    features, layer: int | None) -> list:
        h = r.q.shape[0]
        d_v = r.v.shape[2]
        d_model = r.output.shape[1]
        cols = {"key": k_tokens, "concat": concat_labels(h, d_v), "d_model": list(features or dim_labels(d_model))}
        steps = []
        one = r.head(head)  # the selected head's n_q × n_k steps (computed on the worker when big)
        rotary = r.rotary is not None
        self._show_rotary(rotary)
        kv = r.kv_head(head)
        shared = r.n_kv_heads < r.n_heads
        group = r.n_heads // r.n_kv_heads
        d_half = r.q.shape[2] // 2
        cols["pair"] = [f"d{i}/d{i + d_half}" for i in range(d_half)]
        for spec in sorted(VIEW_SPECS, key=lambda spec: spec.name != "weights"):  # the weights first
            if spec.name in ROTARY_VIEWS and not rotary:
                continue
            if spec.name in SCORE_VIEWS:
                data = getattr(one, spec.name)
            elif spec.name == "angles":
                data = np.angle(np.exp(1j * np.asarray(r.q_angles)))  # [n_q, d_k/2] wrapped to (−π, π]
            else:
                data = getattr(r, spec.name)
                if spec.per_head:
                    data = data[kv if spec.name in KV_VIEWS else head]
            rows = q_tokens if spec.rows == "query" else k_tokens
            formula = f"scaled = scores × {r.scale:.4g}" if spec.name == "scaled" else spec.formula
            if rotary and spec.name == "scores":
                formula = "scores = Q_rope·K_ropeᵀ"
            if spec.name == "angles":
                formula = f"angle = position · {r.rotary:g}^(−2i/{r.q.shape[2]})"
            if not cross:
                formula = formula.replace("X_kv", "X")
            who = f"head {head + 1} · " if spec.per_head else ""
            if shared and spec.name in KV_VIEWS:  # say which query heads read this key/value head
                who = f"kv head {kv + 1} (heads {kv * group + 1}–{kv * group + group}) · "
            where = (f"layer {layer + 1} · " if layer is not None else "") + who
            title = f"{formula}\n{where}{data.shape[0]} × {data.shape[1]}"
            steps.append(partial(self._draw, self.views[spec.name], data, rows, cols.get(spec.cols), title))
        self._ensure_head_views(h)
        # Every head at a glance: the weights max-pooled (exact up to 256 tokens), so no head's n × n is built.
        pooled_q, pooled_k = q_tokens[:: r.pool], k_tokens[:: r.pool]
        for i, view in enumerate(self.head_views):
            label = f"head {i + 1} · kv {r.kv_head(i) + 1}" if shared else f"head {i + 1}"
            steps.append(partial(self._draw, view, r.weights_pooled[i], pooled_q, pooled_k, label))
            _mark_group(view, r.kv_head(i) if shared else None)
        return steps

    @staticmethod
    def _draw(view: HeatmapView, data, rows, cols, title: str) -> None:
        view.set_data(data, rows, cols or dim_labels(data.shape[1]))
        view.set_title(title)

    def _ensure_head_views(self, h: int) -> None:
        _fit_count(self.head_views, h, self.heads_layout, lambda i: _small_view(
            "weights", f"view.weights.head{i + 1}",
            "The weights of one head: row i is how much token i takes from each token."))

    def show_residuals(self, results: list[AttentionResult], tokens, features) -> None:
        """With several layers, the residual stream after each one as a small heatmap (hidden for one layer)."""
        many = len(results) > 1
        self.residuals_caption.setVisible(many)
        self.residuals_box.setVisible(many)
        if not many:
            return
        _fit_count(self.residual_views, len(results), self.residuals_layout, lambda i: _small_view(
            "diverging", f"view.residual.layer{i + 1}", "The residual stream after this layer: what the next layer "
            "reads."), per_row=len(results))
        for i, (view, r) in enumerate(zip(self.residual_views, results, strict=True)):
            view.set_data(r.residual, list(tokens), list(features))
            view.set_title(f"after layer {i + 1}")

    def all_views(self) -> list[HeatmapView]:
        return [*self.views.values(), *self.head_views, *self.residual_views]

    def close_views(self) -> None:
        self._step_timer.stop()
        self._pending = []
        for view in self.all_views():
            view.close_views()


def group_colour(kv_head: int) -> str:
    """The colour of the group of query heads that read key/value head kv_head."""
    return GROUP_COLOURS[kv_head % len(GROUP_COLOURS)]


def _mark_group(view: HeatmapView, kv_head: int | None) -> None:
    """Tint a head thumbnail in its group's colour (the palette's own background without shared key/value heads)."""
    colour = None if kv_head is None else group_colour(kv_head)
    base = view.palette().color(QPalette.ColorRole.Window)
    if colour is not None:
        tint = QColor(colour)
        base = QColor(
            round(0.6 * base.red() + 0.4 * tint.red()),
            round(0.6 * base.green() + 0.4 * tint.green()),
            round(0.6 * base.blue() + 0.4 * tint.blue()),
        )
    view.graphics_widget().setBackground(base)
    if view.property("group_colour") != colour:
        view.setProperty("group_colour", colour)
        tip = view.toolTip().split("\n")[0]
        view.setToolTip(tip + (f"\nReads key/value head {kv_head + 1}, shared with the heads of the same colour."
                               if kv_head is not None else ""))


def _small_view(kind: str, name: str, tip: str) -> HeatmapView:
    """One of the small multiples: a compact heatmap (no colour bar, no ticks)."""
    view = HeatmapView(kind, compact=True)
    view.setObjectName(name)
    view.setMinimumSize(60, 60)
    view.setToolTip(tip)
    return view


def _fit_count(views: list[HeatmapView], count: int, layout: QGridLayout, make, per_row: int | None = None) -> None:
    """Grow or shrink a list of small multiples to count views (made by make(index)), laid out in a grid of
    per_row columns (near-square by default), the first top left."""
    if len(views) == count:
        return
    while len(views) < count:
        views.append(make(len(views)))
    while len(views) > count:
        view = views.pop()
        view.close_views()
        view.setParent(None)
        view.deleteLater()
    per_row = per_row or math.ceil(math.sqrt(len(views)))
    for view in views:
        layout.removeWidget(view)
    for i, view in enumerate(views):
        layout.addWidget(view, i // per_row, i % per_row)

