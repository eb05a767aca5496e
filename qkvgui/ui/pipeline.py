"""The views of every step of attention, in the order of the computation, each bound to one result field by name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

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
    ViewSpec(
        "q_rope",
        "Q_rope = rotate(Q, position)",
        True,
        "query",
        "d",
        tip="Row i: token i's query turned by its position i (each coordinate pair by its own angle).",
    ),
    ViewSpec(
        "k_rope",
        "K_rope = rotate(K, position)",
        True,
        "key",
        "d",
        tip="Row j: token j's key turned by its position j; q_i·k_j then depends on i − j only through the rotation.",
    ),
    ViewSpec(
        "angles",
        "angle = position · θ^(−2i/d_k)",
        False,
        "query",
        "pair",
        tip="Cell (p, i): the angle (radians, wrapped to ±π) by which pair i = (d_i, d_{i+d_k/2}) of position "
        "p's query and key turns. Pair 0 turns one radian per position, the last pair almost not at all.",
    ),
    ViewSpec(
        "scores",
        "scores = Q·Kᵀ",
        True,
        "query",
        "key",
        tip="Cell (i, j): how strongly token i's query matches token j's key, q_i·k_j.",
    ),
    ViewSpec(
        "scaled",
        "scaled = scores × scale",
        True,
        "query",
        "key",
        tip="The scores times the scale (1/√d_k by default), so softmax does not saturate.",
    ),
    ViewSpec(
        "masked",
        "masked = mask(scaled)",
        True,
        "query",
        "key",
        tip="Hidden keys (causal: later tokens; padding) get −∞, so softmax gives them weight 0.",
    ),
    ViewSpec(
        "weights",
        "weights = softmax(masked)",
        True,
        "query",
        "key",
        kind="weights",
        tip="Row i: how much token i takes from each token; every row sums to 1.",
    ),
    ViewSpec(
        "head_outputs",
        "head output = weights·V",
        True,
        "query",
        "d",
        tip="Row i: the weighted sum of the value rows, with row i of the weights as the weights.",
    ),
    ViewSpec(
        "concat",
        "concat = [h1 | h2 | …]",
        False,
        "query",
        "concat",
        tip="Every head's output side by side, head 1 first.",
    ),
    ViewSpec(
        "output",
        "output = concat·W_O",
        False,
        "query",
        "d_model",
        tip="W_O mixes the heads and maps them back to the residual stream's width.",
    ),
    ViewSpec(
        "residual",
        "residual = X + output",
        False,
        "query",
        "d_model",
        tip="What the layer leaves in the residual stream: the input plus what attention wrote.",
    ),
    ViewSpec(
        "block",
        "model block → next layer's input",
        False,
        "query",
        "d_model",
        tip="Whole models only: the model's own block after this attention (LayerNorm, MLP), run read-only. "
        "Row i: what the next layer's attention reads for token i (for the last layer, the stream the model "
        "hands on). An edit above reaches it, and through it every later layer.",
    ),
)
SPECS = {s.name: s for s in VIEW_SPECS}
#: the views whose cell (i, j) is one query and one key
SCORE_VIEWS = ("scores", "scaled", "masked", "weights")
#: the views of the rotary step, shown only when positions are rotated (RoPE)
ROTARY_VIEWS = ("q_rope", "k_rope", "angles")
#: the model's own block after the attention, shown only for a whole imported model
MODEL_VIEWS = ("block",)
#: the views of key/value heads: with shared heads they show the selected query head's key/value head
KV_VIEWS = ("k", "v", "k_rope")
#: one colour per group of query heads sharing a key/value head (Okabe–Ito, readable by colour-blind users)
GROUP_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
#: results with more attention weights than this are drawn one view per event-loop turn
PROGRESSIVE_CELLS = 200_000
#: ... and so are results of a new shape (a new document, another size) with more than this: no edit waits for
#: them, and all eleven views drawn and painted at once stalled the window (a 64-token, 12-head model: 0.2-0.5 s)
NEW_SHAPE_PROGRESSIVE_CELLS = 16_384
QWIDGETSIZE_MAX = (1 << 24) - 1


def dim_labels(n: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def concat_labels(h: int, d_v: int) -> list[str]:
    return [f"h{head + 1}.d{i}" for head in range(h) for i in range(d_v)]


class PipelineView(QWidget):
    """Every step of attention as a heatmap, and the weights of every head as small multiples in their own strip.

    Overview: the eleven steps in a grid (Q, K, V on top; scores to weights; head output to residual), the strip
    of head thumbnails (and, with several layers, the residual stream after each) scrolling on the right, so it
    never squeezes the main views. Focus (``focus(name)``): one view fills the large pane, the others stay live and
    clickable in a scrolling context column beside it. ``head_clicked(h)`` (0-based) when a thumbnail is clicked,
    ``focus_requested(name)`` when a view is double-clicked (``""``: back to the overview).
    """

    head_clicked = Signal(int)
    focus_requested = Signal(str)
    #: every view shown has its figure built and drawn (see fill)
    filled = Signal()

    #: the overview grid: 12 columns, so Q, K and V take a third each and the other rows a quarter each
    GRID = {
        "q": (0, 0, 4),
        "k": (0, 4, 4),
        "v": (0, 8, 4),
        "q_rope": (1, 0, 4),
        "k_rope": (1, 4, 4),
        "angles": (1, 8, 4),  # the rotary row (RoPE sessions only)
        "scores": (2, 0, 3),
        "scaled": (2, 3, 3),
        "masked": (2, 6, 3),
        "weights": (2, 9, 3),
        "head_outputs": (3, 0, 3),
        "concat": (3, 3, 3),
        "output": (3, 6, 3),
        "residual": (3, 9, 3),
        "block": (4, 0, 12),  # the model's block (whole models only)
    }
    THUMB = QSize(84, 92)  # a head thumbnail: picture and its one-line title
    CONTEXT = QSize(184, 150)  # a view in the context column while another is focused

    def __init__(self, parent=None, *, hold: bool = False):
        """hold: the views' figures are not built until fill() (or finish()) is called, so the window can be painted
        first; otherwise each view's figure is built as soon as the view is laid out shown. Either way a view that
        does not apply (the rotary and block rows) is built only when it is first shown."""
        super().__init__(parent)
        #: "held" (nothing built until fill), "filling" (one view per turn) or "live" (built once laid out shown)
        self._stage = "held" if hold else "live"
        self.views: dict[str, HeatmapView] = {}
        self._focused: str | None = None
        self._rotary = False  # whether the rotary row is laid out (RoPE sessions)
        self._shown_shape: tuple = ()  # the shape of the result last drawn (a new one is drawn view by view)
        self._model = False  # whether the model's block row is laid out (whole imported models)
        for spec in VIEW_SPECS:
            view = HeatmapView(spec.kind, lazy=True)
            view.setObjectName(f"view.{spec.name}")
            view.setToolTip(f"{spec.formula}\n{spec.tip}\n\nDouble-click to focus; wheel to zoom, drag to pan.")
            view.double_clicked.connect(lambda name=spec.name: self._toggle_focus(name))
            self.views[spec.name] = view
        # the overview grid, and the focus pane with its context column: the views move between them
        self.grid_box = QWidget()
        self.grid = QGridLayout(self.grid_box)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(4)
        self.focus_box = QWidget()
        focus_layout = QVBoxLayout(self.focus_box)
        focus_layout.setContentsMargins(0, 0, 0, 0)
        self.focus_slot = QVBoxLayout()
        focus_layout.addLayout(self.focus_slot, 1)
        self.context_box = QWidget()
        self.context_layout = QGridLayout(self.context_box)
        self.context_layout.setContentsMargins(0, 0, 0, 0)
        self.context_layout.setSpacing(4)

        # the strip: head thumbnails, then the residual stream after each layer; its own scroll area
        strip = QWidget()
        strip_layout = QVBoxLayout(strip)
        strip_layout.setContentsMargins(0, 0, 0, 0)
        strip_layout.addWidget(self.context_box)
        caption = QLabel("weights of every head")
        caption.setWordWrap(True)
        caption.setToolTip("The weights of every head; click one to select that head.")
        strip_layout.addWidget(caption)
        self.heads_box = QWidget()
        self.heads_layout = QGridLayout(self.heads_box)
        self.heads_layout.setContentsMargins(0, 0, 0, 0)
        self.heads_layout.setSpacing(2)
        self.heads_layout.setAlignment(Qt.AlignmentFlag.AlignTop)  # thumbnails from the top of the reserved room
        self.head_views: list[HeatmapView] = []
        strip_layout.addWidget(self.heads_box)
        # With several layers: the residual stream after each of them.
        self.residuals_caption = QLabel("residual after each layer")
        self.residuals_caption.setWordWrap(True)
        self.residuals_box = QWidget()
        self.residuals_layout = QGridLayout(self.residuals_box)
        self.residuals_layout.setContentsMargins(0, 0, 0, 0)
        self.residuals_layout.setSpacing(2)
        self.residuals_layout.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.residual_views: list[HeatmapView] = []
        strip_layout.addWidget(self.residuals_caption)
        strip_layout.addWidget(self.residuals_box)
        strip_layout.addStretch(1)
        # A thumbnail added at the end grows these boxes: only the new part is painted, not every thumbnail again
        # (a new document's twelve heads repainted all the earlier ones each turn, 10-15 ms more per turn).
        for box in (strip, self.heads_box, self.residuals_box):
            box.setAttribute(Qt.WidgetAttribute.WA_StaticContents)
        self.residuals_caption.hide()
        self.residuals_box.hide()
        self.strip = QScrollArea()
        self.strip.setObjectName("pipeline.strip")
        self.strip.setWidget(strip)
        self.strip.setWidgetResizable(True)
        self.strip.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.strip.setFrameShape(QFrame.Shape.NoFrame)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.grid_box, 1)
        layout.addWidget(self.focus_box, 1)
        layout.addWidget(self.strip)
        self._layout_overview()
        self._pending: list = []
        #: views laid out anew whose painting waits for a turn of its own (see _defer)
        self._deferred: list[HeatmapView] = []
        # One timer for every piece of drawing left (a deferred repaint, a figure to build, a step to draw): one
        # piece per event-loop turn in all (three timers each fired in the same turn, 50-70 ms together).
        self._step_timer = QTimer(self, singleShot=True, interval=0)
        self._step_timer.timeout.connect(self._next_step)

    # ---- building the views' figures ------------------------------------------------------------------------
    def shown_views(self) -> list[HeatmapView]:
        """The views a user sees in the current layout (grid or focus, the head and layer strips), in reading
        order."""
        if self._focused is None:
            names = [n for n in self.GRID if n not in self._hidden()]
        else:
            names = [self._focused] + [n for n in self.GRID if n != self._focused and n not in self._hidden()]
        strip = [*self.head_views, *(self.residual_views if self.residuals_box.isVisibleTo(self) else [])]
        return [self.views[n] for n in names] + strip

    def unbuilt(self) -> list[HeatmapView]:
        """The views shown whose figures are not built yet (only while the window is being filled in)."""
        return [view for view in self.shown_views() if not view.built() and not view.is_closed()]

    def fill(self) -> None:
        """Build the figures of the views shown, one per event-loop turn in reading order (the window stays
        responsive and each view appears drawn with its data); filled is emitted after the last one."""
        if self._stage == "held":
            self._stage = "filling"
            self._step_timer.start()

    def finish(self) -> None:
        """Build every shown view's figure now (scripts and tests that read pixels at once)."""
        was, self._stage = self._stage, "live"
        for view in self.unbuilt():
            view.build()
        while self._deferred:
            self._deferred.pop(0).graphics_widget().show()
        if was != "live":
            self.filled.emit()

    def filling(self) -> bool:
        """True until every view shown is built (held for the window's first paint, or being filled in)."""
        return self._stage != "live"

    def _build_shown(self) -> None:
        """Build the figure of every view shown that has none yet (a row that now applies, a new head's thumbnail)
        in turns of its own (see _next_step), not before the fill: a full view's build took 25-40 ms, and a whole
        model's block row built in the turn that lays it out stalled the window."""
        if self._stage == "held" or not self.unbuilt():
            return
        if not hasattr(self, "_step_timer"):  # being made, live: built now, as a script expects
            for view in self.unbuilt():
                view.build()
            return
        self._step_timer.start()

    # ---- focus and context ---------------------------------------------------------------------------------
    def focused(self) -> str | None:
        """The name of the focused view, or None in the overview."""
        return self._focused

    def focus(self, name: str | None) -> None:
        """Bring view ``name`` (a key of ``views``) into the large pane, or go back to the overview (None)."""
        if name is not None and name not in self.views:
            raise KeyError(f"There is no view called {name!r}: use one of {', '.join(self.views)}.")
        if name == self._focused:
            return
        self._focused = name
        if name is None:
            self._layout_overview()
        else:
            self._layout_focus(name)

    def _toggle_focus(self, name: str) -> None:
        self.focus_requested.emit("" if self._focused == name else name)

    def _take_views(self) -> None:
        for view in self.views.values():
            for layout in (self.grid, self.context_layout, self.focus_slot):
                layout.removeWidget(view)
            view.set_context(False)
            view.setMinimumSize(view.minimumSizeHint())
            view.setMaximumSize(QWIDGETSIZE_MAX, QWIDGETSIZE_MAX)

    def _layout_overview(self) -> None:
        self._take_views()
        for name, (row, col, span) in self.GRID.items():
            self.grid.addWidget(self.views[name], row, col, 1, span)
            # the rotary and block rows stay in the grid (parented, findable) but hidden unless they apply
            self.views[name].setVisible(name not in self._hidden())
        for c in range(12):
            self.grid.setColumnStretch(c, 1)
        for r in range(5):  # the rotary row (1) and the block row (4) take no room when hidden
            hidden = (r == 1 and not self._rotary) or (r == 4 and not self._model)
            self.grid.setRowStretch(r, 0 if hidden else 1)
        self.focus_box.hide()
        self.grid_box.show()
        self.context_box.hide()
        self._fit_strip()
        self._build_shown()

    def _layout_focus(self, name: str) -> None:
        self._take_views()
        self.focus_slot.addWidget(self.views[name])
        self.views[name].show()
        others = [n for n in self.GRID if n != name and n not in self._hidden()]
        for hidden in self._hidden():
            if hidden != name:
                self.context_layout.addWidget(self.views[hidden], len(self.GRID), 0)  # kept parented, hidden
                self.views[hidden].hide()
        for k, other in enumerate(others):
            view = self.views[other]
            view.setFixedSize(self.CONTEXT)
            view.set_context(True)
            self.context_layout.addWidget(view, k, 0)
            view.show()
        self.grid_box.hide()
        self.focus_box.show()
        self.context_box.show()
        self._fit_strip()
        self._build_shown()

    def _hidden(self) -> tuple[str, ...]:
        """The views that do not apply to the session shown (the rotary row, the model's block)."""
        return (() if self._rotary else ROTARY_VIEWS) + (() if self._model else MODEL_VIEWS)

    def _fit_strip(self) -> None:
        """The strip is as wide as a thumbnail (or a context view) and its scroll bar, and no wider."""
        bar = self.strip.verticalScrollBar().sizeHint().width()
        inner = max(self.THUMB.width(), self.CONTEXT.width() if self._focused else 0)
        self.strip.setFixedWidth(inner + bar + 4)

    # ---- drawing -------------------------------------------------------------------------------------------
    def show_result(
        self,
        r: AttentionResult,
        head: int,
        q_tokens,
        k_tokens,
        cross: bool = False,
        features=None,
        layer: int | None = None,
        ablated=None,
        block: str | None = None,
    ) -> None:
        """Draw every view of the result for the selected head (ablated: which heads are switched off; block: the
        title of the model's own block after this layer, with its formula, for a whole imported model).

        A teaching-size result is drawn at once, so every view shows an edit in the same frame. A big one is
        drawn one view per event-loop turn, so the GUI thread is never blocked for long; a newer result replaces
        the steps still pending. A head thumbnail that does not exist yet (a new document with more heads) is made
        in a turn of its own either way: making one takes tens of milliseconds.
        """
        steps = self._draw_steps(r, head, list(q_tokens), list(k_tokens), cross, features, layer, ablated, block)
        self._pending = []
        cells = r.n_heads * r.n_q * r.n_k
        shape = (r.n_heads, r.n_q, r.n_k, r.q.shape[2], r.v.shape[2], r.output.shape[1])
        new_shape, self._shown_shape = shape != self._shown_shape, shape
        if cells <= PROGRESSIVE_CELLS and not (new_shape and cells > NEW_SHAPE_PROGRESSIVE_CELLS):
            # every existing view at once; a head thumbnail still to be made (tens of ms each) in a later turn
            later = []
            for step in steps:
                if getattr(step, "makes_view", False):
                    later.append(step)
                else:
                    step()
            steps = later
        self._pending = steps
        if steps:
            self._step_timer.start()

    def _next_step(self) -> None:
        """One piece of drawing: a deferred view's repaint first, then a figure to build (in reading order), then
        a step of the result; the timer comes back for the next one in the next turn. Filling ends (filled) once
        every view shown is built and painted, and the first result drawn (its head thumbnails made)."""
        todo = [] if self._stage == "held" else self.unbuilt()
        if self._deferred:
            self._deferred.pop(0).graphics_widget().show()  # resized and painted in this turn
        elif todo:
            view = todo[0]
            view.build()
            if view.isVisible():  # its first layout and paint in the next turn: together they took 30-45 ms
                view.graphics_widget().hide()
                self._deferred.append(view)
        elif self._pending:
            self._pending.pop(0)()
        building = self._stage != "held" and bool(self.unbuilt())
        if self._stage == "filling" and not (building or self._deferred or self._pending):
            self._stage = "live"
            self.filled.emit()
        if self._deferred or self._pending or building:
            self._step_timer.start()

    def drawing(self) -> bool:
        """True while a big result is still being drawn view by view."""
        if self._pending or self._deferred or (self._stage != "held" and self.unbuilt()):
            return True
        return any(view.preparing() for view in self.all_views())

    def _defer(self, views: list[HeatmapView]) -> None:
        """Let views that are about to be laid out anew be resized and painted one per event-loop turn, not all in
        the turn that lays them out (the eleven views of a whole model's new row took 60-120 ms at once): until its
        turn, a view's figure is hidden and its place shows the window's plain background."""
        for view in views:
            if view.isVisible() and view.built() and view not in self._deferred:  # (an unbuilt one paints when built)
                view.graphics_widget().hide()
                self._deferred.append(view)
        if self._deferred:
            self._step_timer.start()

    def _show_rows(self, rotary: bool, model: bool) -> None:
        """The rotary row is laid out only when positions are rotated, the block row only for a whole model, so
        nothing else is squeezed otherwise."""
        if (rotary, model) == (self._rotary, self._model):
            return
        self._rotary, self._model = rotary, model
        self._defer([self.views[name] for name in self.GRID])  # every view moves: each repaints in its own turn
        if self._focused is None:
            self._layout_overview()
        else:
            self._layout_focus(self._focused)

    def _draw_steps(
        self,
        r: AttentionResult,
        head: int,
        q_tokens: list,
        k_tokens: list,
        cross: bool,
        features,
        layer: int | None,
        ablated=None,
        block: str | None = None,
    ) -> list:
        h = r.q.shape[0]
        d_v = r.v.shape[2]
        d_model = r.output.shape[1]
        off = [bool(a) for a in ablated] if ablated is not None else [False] * h
        cols = {"key": k_tokens, "concat": concat_labels(h, d_v), "d_model": list(features or dim_labels(d_model))}
        steps = []
        one = r.head(head)  # the selected head's n_q × n_k steps (computed on the worker when big)
        rotary = r.rotary is not None
        model = r.next_x is not None
        self._show_rows(rotary, model)
        kv = r.kv_head(head)
        shared = r.n_kv_heads < r.n_heads
        group = r.n_heads // r.n_kv_heads
        d_half = r.q.shape[2] // 2
        cols["pair"] = [f"d{i}/d{i + d_half}" for i in range(d_half)]
        for spec in sorted(VIEW_SPECS, key=lambda spec: spec.name != "weights"):  # the weights first
            if (spec.name in ROTARY_VIEWS and not rotary) or (spec.name in MODEL_VIEWS and not model):
                continue
            if spec.name in SCORE_VIEWS:
                data = getattr(one, spec.name)
            elif spec.name == "block":
                data = r.next_x
            elif spec.name == "angles":
                data = np.angle(np.exp(1j * np.asarray(r.q_angles)))  # [n_q, d_k/2] wrapped to (−π, π]
            else:
                data = getattr(r, spec.name)
                if spec.per_head:  # K and V of grouped-query heads are shared: head reads its group's row
                    data = data[kv if spec.name in KV_VIEWS else head]
            rows = q_tokens if spec.rows == "query" else k_tokens
            formula = f"scaled = scores × {r.scale:.4g}" if spec.name == "scaled" else spec.formula
            if rotary and spec.name == "scores":
                formula = "scores = Q_rope·K_ropeᵀ"
            if spec.name == "angles":
                formula = f"angle = position · {r.rotary:g}^(−2i/{r.q.shape[2]})"
            if not cross:
                formula = formula.replace("X_kv", "X")
            who = f"head {head + 1}{' (off)' if head < len(off) and off[head] else ''} · " if spec.per_head else ""
            if shared and spec.name in KV_VIEWS:  # say which query heads read this key/value head
                who = f"kv head {kv + 1} (heads {kv * group + 1}–{kv * group + group}) · "
            if spec.name == "block":  # the model's own step: what it is, where it leads, and that it is read-only
                formula = block or spec.formula
                who = "read-only · "
            where = (f"layer {layer + 1} · " if layer is not None else "") + who
            title = f"{formula}\n{where}{data.shape[0]} × {data.shape[1]}"
            steps.append(partial(self._draw, self.views[spec.name], data, rows, cols.get(spec.cols), title))
        self._ensure_head_views(min(h, len(self.head_views)))  # fewer heads: drop the extra views now (cheap)
        self._reserve(self.heads_box, self.heads_layout, h)
        # Every head at a glance: the weights max-pooled (exact up to 256 tokens), so no head's n × n is built.
        # A missing head view is made in its own step: making one is the costliest thing drawn (a new document of
        # 12 heads once stalled the window 0.9 s making them all at once).
        pooled_q, pooled_k = q_tokens[:: r.pool], k_tokens[:: r.pool]
        for i in range(h):
            title = (
                ("▶ " if i == head else "")
                + f"head {i + 1}"
                + (f" · kv {r.kv_head(i) + 1}" if shared else "")
                + (" · off" if i < len(off) and off[i] else "")
            )
            flags = (i == head, i < len(off) and off[i], r.kv_head(i) if shared else None)
            step = partial(self._draw_head, i, r.weights_pooled[i], pooled_q, pooled_k, title, flags)
            step.makes_view = i >= len(self.head_views)  # type: ignore[attr-defined]  # a partial has a __dict__
            steps.append(step)
        return steps

    def _reserve(self, box: QWidget, layout: QGridLayout, count: int) -> None:
        """Make a strip box as tall as count thumbnails at once: the strip is laid out once for a new document,
        and each thumbnail then made in its own turn moves nothing (before, each one grew the strip, which
        relaid and repainted every thumbnail in view, 10-20 ms more per turn)."""
        box.setMinimumHeight(count * self.THUMB.height() + max(0, count - 1) * layout.spacing())

    def _draw_head(self, i: int, data, rows, cols, title: str, flags: tuple) -> None:
        """Draw head i's thumbnail, making it (and any before it) first when it does not exist yet."""
        if i >= len(self.head_views):
            self._ensure_head_views(i + 1)
        view = self.head_views[i]
        selected, ablated, group = flags
        view.setProperty("selected", selected)
        view.setProperty("ablated", ablated)
        _mark_group(view, group)
        self._draw(view, data, rows, cols, title)

    @staticmethod
    def _draw(view: HeatmapView, data, rows, cols, title: str) -> None:
        view.set_data(data, rows, cols or dim_labels(data.shape[1]))
        view.set_title(title)

    def _ensure_head_views(self, h: int) -> None:
        before = len(self.head_views)
        _fit_count(
            self.head_views,
            h,
            self.heads_layout,
            lambda i: _small_view(
                "weights",
                f"view.weights.head{i + 1}",
                f"The weights of head {i + 1}: row i is how much token i takes from each token. Click to select "
                "this head.",
                self.THUMB,
            ),
            per_row=1,
        )
        for i in range(before, len(self.head_views)):
            self.head_views[i].clicked.connect(lambda i=i: self.head_clicked.emit(i))
        self._build_shown()

    def show_residuals(self, results: list[AttentionResult], tokens, features) -> None:
        """With several layers, the residual stream after each one as a small heatmap (hidden for one layer). A
        view that does not exist yet is made and drawn in a later event-loop turn, one per turn (see show_result)."""
        many = len(results) > 1
        self.residuals_caption.setVisible(many)
        self.residuals_box.setVisible(many)
        if not many:
            return
        self._build_shown()
        if len(self.residual_views) > len(results):
            self._ensure_residual_views(len(results))
        self._reserve(self.residuals_box, self.residuals_layout, len(results))
        later = []
        for i, r in enumerate(results):
            step = partial(self._draw_residual, i, r.residual, list(tokens), list(features))
            if i < len(self.residual_views):
                step()
            else:
                later.append(step)
        if later:
            self._pending.extend(later)
            self._step_timer.start()

    def _ensure_residual_views(self, count: int) -> None:
        _fit_count(
            self.residual_views,
            count,
            self.residuals_layout,
            lambda i: _small_view(
                "diverging",
                f"view.residual.layer{i + 1}",
                "The residual stream after this layer: what the next layer reads.",
                self.THUMB,
            ),
            per_row=1,
        )
        self._build_shown()

    def _draw_residual(self, i: int, data, tokens: list, features: list) -> None:
        if i >= len(self.residual_views):
            self._ensure_residual_views(i + 1)
        view = self.residual_views[i]
        view.set_data(data, tokens, features)
        view.set_title(f"after layer {i + 1}")

    def all_views(self) -> list[HeatmapView]:
        return [*self.views.values(), *self.head_views, *self.residual_views]

    def close_views(self) -> None:
        self._step_timer.stop()
        while self._deferred:
            self._deferred.pop().graphics_widget().show()
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
    view.set_background(base if colour is not None else None)
    if view.property("group_colour") != colour:
        view.setProperty("group_colour", colour)
        tip = view.toolTip().split("\n")[0]
        view.setToolTip(
            tip
            + (
                f"\nReads key/value head {kv_head + 1}, shared with the heads of the same colour."
                if kv_head is not None
                else ""
            )
        )


def _small_view(kind: str, name: str, tip: str, size: QSize) -> HeatmapView:
    """One of the small multiples: a compact heatmap (no colour bar, no ticks) of a fixed size."""
    view = HeatmapView(kind, compact=True, lazy=True)  # built by its pipeline (see PipelineView.fill)
    view.setObjectName(name)
    view.setFixedSize(size)
    view.setToolTip(tip)
    view.setCursor(Qt.CursorShape.PointingHandCursor)
    return view


def _fit_count(views: list[HeatmapView], count: int, layout: QGridLayout, make, per_row: int | None = None) -> None:
    """Grow or shrink a list of small multiples to count views (made by make(index)), laid out in a grid of
    per_row columns (near-square by default), the first top left."""
    if len(views) == count:
        return
    old = len(views)
    while len(views) < count:
        views.append(make(len(views)))
    if per_row is not None and len(views) > old:  # a fixed grid grown: the new views go after the others
        for i in range(old, len(views)):
            layout.addWidget(views[i], i // per_row, i % per_row)
        return
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
