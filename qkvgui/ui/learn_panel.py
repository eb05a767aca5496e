"""The Learn tab: paint the attention pattern you want and watch gradient descent find W_Q and W_K for it.

The fit runs on a worker thread in short bursts (core.PatternFitter); after each burst the GUI thread writes the
head's W_Q and W_K into the session, so every view of the window redraws as the head learns. A fit, however many
bursts it takes, is one undo step; each paint stroke on the target is one more.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future
from html import escape

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QPalette, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from qkvgui.core import (
    TARGET_PRESETS,
    AttentionResult,
    Floor,
    PatternFitter,
    QkvError,
    attention_mask,
    loss_floor,
    normalize_target,
    qk_singular_values,
    target_preset,
)
from qkvgui.core.embeddings import seeded_random
from qkvgui.session import Session
from qkvgui.ui.commands import StateChange
from qkvgui.ui.heatmap import HeatmapView
from qkvgui.ui.worker import Worker

#: how long one burst of steps may run on the worker before the window redraws (seconds)
BURST_SECONDS = 0.015
#: at most this many singular values are drawn as curves
MAX_SV_CURVES = 12
#: the singular-value curves' colours (Tableau 10: readable on light and dark backgrounds)
SV_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
#: the floor's arguments are skipped above this many target cells (they would take longer than a redraw)
FLOOR_CELLS = 250_000


class TargetEdit(QUndoCommand):
    """One paint stroke (or preset) on the target: undo puts the previous marks back."""

    def __init__(self, panel: LearnPanel, before: np.ndarray, after: np.ndarray, text: str):
        super().__init__(text)
        self.panel, self.before, self.after = panel, before, after
        self._first = True

    def undo(self) -> None:
        self.panel.set_marks(self.before)

    def redo(self) -> None:
        if self._first:  # applied before it was pushed
            self._first = False
            return
        self.panel.set_marks(self.after)


class _Painter(QObject):
    """Turns mouse presses and drags on a heatmap into cell paints: left button marks, right button (or Ctrl) erases."""

    def __init__(self, view: HeatmapView, panel: LearnPanel):
        super().__init__(view)
        self.view, self.panel = view, panel
        self._mode: bool | None = None  # True: marking, False: erasing, None: not painting

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        kind = event.type()
        if kind == QEvent.Type.MouseButtonPress:
            erase = event.button() == Qt.MouseButton.RightButton or bool(
                event.modifiers() & Qt.KeyboardModifier.ControlModifier
            )
            if event.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
                return False
            self._mode = not erase
            self.panel.begin_stroke()
            self._paint(event)
            return True
        if kind == QEvent.Type.MouseMove and self._mode is not None:
            self._paint(event)
            return True
        if kind == QEvent.Type.MouseButtonRelease and self._mode is not None:
            self._mode = None
            self.panel.end_stroke()
            return True
        return False

    def _paint(self, event) -> None:
        gv = self.view.graphics_widget()
        cell = self.view.cell_at(gv.mapToScene(event.position().toPoint()))
        if cell is not None and self._mode is not None:
            self.panel.paint_cell(*cell, self._mode)


class LearnPanel(QWidget):
    """Target pattern, current pattern, controls, loss curve, singular values of W_Q·W_Kᵀ and the lesson about rank.

    ``session`` is the document, ``undo_stack`` the window's; ``computed`` results (from the window's scheduler)
    are given to ``show_results``.
    """

    message = Signal(str)
    #: emitted after each burst is written into the session (for benchmarks and tests)
    burst_written = Signal()

    def __init__(self, session: Session, undo_stack: QUndoStack, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.undo_stack = undo_stack
        self.fitter: PatternFitter | None = None
        self.running = False
        self.max_steps = 3000  # a Start runs this many steps at most (or until the fit has converged)
        self._marks = np.zeros((0, 0))  # [n_q, n_k] what the user painted (rows renormalised on use)
        self._stroke_before: np.ndarray | None = None
        self._writing = False  # True while this panel writes into the session (its own echo is not a change)
        self._command: StateChange | None = None
        self._generation = 0
        self._job: Future | None = None
        self._run_start = 0  # steps_taken when Start was pressed
        self._losses: list[float] = []
        self._steps: list[int] = []
        self._svs: list[np.ndarray] = []
        self._sv_steps: list[int] = []
        self._floor: Floor | None = None
        self._results: list[AttentionResult] = []
        self._reset_seed = 0
        self._explained_at = 0.0
        self._closed = False
        self._worker = Worker("qkvgui-learn", parent=self)

        # ---- controls
        self.preset_box = QComboBox()
        self.preset_box.setObjectName("learn.preset")
        self.preset_box.addItem("Target preset…", "")
        for name, what in TARGET_PRESETS.items():
            self.preset_box.addItem(name, name)
            self.preset_box.setItemData(self.preset_box.count() - 1, what, Qt.ItemDataRole.ToolTipRole)
        self.preset_box.setToolTip("Fill the target with a classic pattern (one undo step)")
        self.start_button = QPushButton("&Start")
        self.start_button.setObjectName("learn.start")
        self.start_button.setToolTip("Run gradient descent on W_Q and W_K of the selected head (Pause stops it)")
        self.step_button = QPushButton("S&tep")
        self.step_button.setObjectName("learn.step")
        self.step_button.setToolTip("Take one gradient step")
        self.reset_button = QPushButton("&Reset")
        self.reset_button.setObjectName("learn.reset")
        self.reset_button.setToolTip("Start over: small random W_Q and W_K for this head, and a new loss curve")
        self.lr_box = QDoubleSpinBox()
        self.lr_box.setObjectName("learn.lr")
        self.lr_box.setDecimals(4)
        self.lr_box.setRange(0.0001, 5.0)
        self.lr_box.setSingleStep(0.01)
        self.lr_box.setValue(0.05)
        self.lr_box.setToolTip("Adam's learning rate: how far each step moves every entry of W_Q and W_K")
        self.d_k_box = QSpinBox()
        self.d_k_box.setObjectName("learn.d_k")
        self.d_k_box.setRange(1, 4096)
        self.d_k_box.setToolTip("d_k: the rank the bilinear form W_Q·W_Kᵀ can have (changes every head)")
        self.fit_x_box = QCheckBox("also learn X")
        self.fit_x_box.setObjectName("learn.fit_x")
        self.fit_x_box.setToolTip("Let gradient descent move the token embeddings X too (first layer, self-attention)")
        self.fit_ov_box = QCheckBox("also learn W_V, W_O to copy")
        self.fit_ov_box.setObjectName("learn.fit_ov")
        self.fit_ov_box.setToolTip(
            "Also fit W_V and this head's block of W_O so that the head's output row i is "
            "Σ_j target_ij·x_j: the head copies what the target attends to"
        )
        self.status = QLabel("")
        self.status.setObjectName("learn.status")
        # its text changes on every burst: a fixed share of the row, so the views below are never re-laid out
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status.setMinimumWidth(160)
        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        for w in (self.preset_box, self.start_button, self.step_button, self.reset_button):
            controls.addWidget(w)
        controls.addSpacing(8)
        controls.addWidget(QLabel("learning rate"))
        controls.addWidget(self.lr_box)
        controls.addWidget(QLabel("d_k"))
        controls.addWidget(self.d_k_box)
        controls.addWidget(self.status, 1)
        options = QHBoxLayout()
        options.setContentsMargins(0, 0, 0, 0)
        options.addWidget(self.fit_x_box)
        options.addWidget(self.fit_ov_box)
        options.addStretch(1)

        # ---- views
        self.target_view = HeatmapView("weights")
        self.target_view.setObjectName("view.learn_target")
        self.target_view.setToolTip(
            "The target: click or drag to mark cells (right button or Ctrl erases); "
            "each row is renormalised to sum to 1"
        )
        self.current_view = HeatmapView("weights")
        self.current_view.setObjectName("view.learn_weights")
        self.current_view.setToolTip("The head's attention weights now, softmax(X·W_Q·W_Kᵀ·X_kvᵀ·scale)")
        self._painter = _Painter(self.target_view, self)
        self.target_view.graphics_widget().viewport().installEventFilter(self._painter)
        self.views = {"learn_target": self.target_view, "learn_weights": self.current_view}

        self.loss_plot = pg.PlotWidget()
        self.loss_plot.setObjectName("view.learn_loss")
        self.loss_plot.setTitle("loss (cross-entropy)")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setLogMode(y=True)
        self.loss_plot.showGrid(x=True, y=True, alpha=0.2)
        self.loss_plot.setMouseEnabled(x=False, y=False)
        self.loss_plot.disableAutoRange()
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2))
        self.loss_curve.setClipToView(True)
        self.loss_curve.setDownsampling(auto=True, method="peak")
        self.floor_line = pg.InfiniteLine(
            angle=0, movable=False, pen=pg.mkPen("#d62728", width=1.5, style=Qt.PenStyle.DashLine)
        )
        self.floor_line.setVisible(False)
        self.loss_plot.addItem(self.floor_line)
        self.sv_plot = pg.PlotWidget()
        self.sv_plot.setObjectName("view.learn_singular")
        self.sv_plot.setTitle("σ of W_Q·W_Kᵀ")
        self.sv_plot.setLabel("bottom", "step")
        self.sv_plot.showGrid(x=True, y=True, alpha=0.2)
        self.sv_plot.setMouseEnabled(x=False, y=False)
        self.sv_plot.disableAutoRange()
        for plot in (self.loss_plot, self.sv_plot):
            for side in ("left", "bottom"):
                # the axes only change when a range grows (see _grow): cache their pictures between bursts
                plot.getAxis(side).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._ranges = {"loss": (0.0, 0.0, 0.0), "sv": (0.0, 0.0, 0.0)}
        self.sv_curves: list[pg.PlotDataItem] = []
        self.explain = QTextBrowser()
        self.explain.setObjectName("learn.explain")
        self.explain.setOpenExternalLinks(False)

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.target_view)
        top.addWidget(self.current_view)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.loss_plot)
        bottom.addWidget(self.sv_plot)
        bottom.addWidget(self.explain)
        bottom.setSizes([260, 260, 340])
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(top)
        body.addWidget(bottom)
        body.setStretchFactor(0, 3)
        body.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(controls)
        layout.addLayout(options)
        layout.addWidget(body, 1)

        # subscriptions, in one block
        self.preset_box.activated.connect(self._preset_chosen)
        self.start_button.clicked.connect(self.toggle)
        self.step_button.clicked.connect(self.step)
        self.reset_button.clicked.connect(self.reset)
        self.lr_box.valueChanged.connect(self._lr_changed)
        self.fit_x_box.toggled.connect(lambda _on: self._invalidate(keep_running=True))
        self.fit_ov_box.toggled.connect(lambda _on: self._invalidate(keep_running=True))
        self.d_k_box.editingFinished.connect(self._d_k_edited)
        ev = session.events
        for name in ("matrix", "tokens", "source_tokens", "shape", "settings", "layers", "head", "layer"):
            getattr(ev, name).connect(lambda *_, name=name: self._on_session_changed(name))
        ev.replaced.connect(lambda: self._on_session_changed("all"))

        self._apply_palette()
        self._sync_from_session(new_document=True)

    # ---- the target --------------------------------------------------------------------------------------
    def _shape(self) -> tuple[int, int]:
        return len(self.session.tokens), len(self.session.key_tokens)

    def visible(self) -> np.ndarray:
        """Which keys each query may see [n_q, n_k] (mask and padding), as the head's attention has it."""
        n_q, n_k = self._shape()
        pad = self.session.key_padding
        vis = attention_mask(n_q, n_k, causal=self.session.causal, key_padding_mask=pad if pad.any() else None)
        return np.ones((n_q, n_k), dtype=bool) if vis is None else np.asarray(vis)

    def target(self) -> np.ndarray:
        """The target pattern [n_q, n_k]: the painted marks, hidden keys dropped, each row summing to 1."""
        return normalize_target(self._marks, self.visible())

    def marks(self) -> np.ndarray:
        return self._marks.copy()

    def set_marks(self, marks: np.ndarray) -> None:
        """Show these marks as the target (no undo step: the commands call this)."""
        self._marks = np.array(marks, dtype=np.float64)
        self.session.set_extra("learn_target", self._marks.tolist())
        self._target_changed()

    def set_target_preset(self, name: str) -> None:
        """Replace the target with a named preset, as one undo step."""
        n_q, n_k = self._shape()
        try:
            new = target_preset(
                name,
                n_q,
                n_k,
                causal=self.session.causal,
                tokens_q=self.session.tokens,
                tokens_kv=self.session.key_tokens,
            )
        except QkvError as e:
            self.message.emit(str(e))
            return
        self._push_target(self._marks.copy(), new, f"target: {name}")

    def _push_target(self, before: np.ndarray, after: np.ndarray, text: str) -> None:
        if before.shape == after.shape and np.array_equal(before, after):
            return
        self.set_marks(after)
        self.undo_stack.push(TargetEdit(self, before, after.copy(), text))

    def begin_stroke(self) -> None:
        self._stroke_before = self._marks.copy()

    def paint_cell(self, i: int, j: int, mark: bool) -> None:
        """Mark (or erase) cell (i, j) of the target; the row is renormalised when the pattern is used."""
        if not (0 <= i < self._marks.shape[0] and 0 <= j < self._marks.shape[1]):
            return
        if mark and not self.visible()[i, j]:
            self.message.emit(f"Query {i + 1} cannot see key {j + 1}: the mask hides it, so no head can attend there.")
            return
        row = self._marks[i]
        value = (float(row.max()) if row.max() > 0 else 1.0) if mark else 0.0
        if row[j] == value:
            return
        row[j] = value
        self._target_changed()

    def end_stroke(self) -> None:
        before, self._stroke_before = self._stroke_before, None
        if before is not None:
            self._push_target(before, self._marks.copy(), "paint target")
            self.session.set_extra("learn_target", self._marks.tolist())

    def _preset_chosen(self, index: int) -> None:
        name = self.preset_box.itemData(index)
        self.preset_box.setCurrentIndex(0)
        if name:
            self.set_target_preset(name)

    def _target_changed(self) -> None:
        if not self.isVisible():  # n × n work (0.3 s at 2,048 tokens) on every edit: only while the tab is shown
            self._target_stale = True
            self._invalidate(keep_running=True)
            return
        self._target_stale = False
        s = self.session
        self.target_view.set_data(np.where(self.visible(), self.target(), -np.inf), s.tokens, s.key_tokens)
        self.target_view.set_title(f"target (head {s.head + 1})  {self._marks.shape[0]} × {self._marks.shape[1]}")
        self._invalidate(keep_running=True)
        self._update_floor()

    # ---- reading the session -----------------------------------------------------------------------------
    def _sync_from_session(self, new_document: bool = False) -> None:
        s = self.session
        n_q, n_k = self._shape()
        if new_document or self._marks.shape != (n_q, n_k):
            saved = s.extra.get("learn_target")
            marks = None
            if isinstance(saved, list):
                arr = np.array(saved, dtype=np.float64) if saved else np.zeros((0, 0))
                marks = arr if arr.shape == (n_q, n_k) and np.isfinite(arr).all() else None
            elif isinstance(saved, str) and saved in TARGET_PRESETS:
                marks = target_preset(saved, n_q, n_k, causal=s.causal, tokens_q=s.tokens, tokens_kv=s.key_tokens)
            if marks is None:
                marks = target_preset("previous-token", n_q, n_k, causal=s.causal)
            self._marks = np.maximum(marks, 0.0)
        self.d_k_box.blockSignals(True)
        self.d_k_box.setValue(s.d_k)
        self.d_k_box.blockSignals(False)
        self._target_changed()
        self._show_current()

    def _on_session_changed(self, what: str) -> None:
        if self._writing:
            return
        self._invalidate(keep_running=False)  # whatever changed, the fit's inputs (or its start) are stale
        self._clear_curves()
        self._sync_from_session(new_document=what == "all")  # a new state (undo, open) brings its own target

    def show_results(self, results: list[AttentionResult]) -> None:
        """The window's newest results (one per layer): the current pattern view follows them."""
        self._results = list(results)
        self._show_current()

    def _show_current(self) -> None:
        s = self.session
        layer = s.layer
        if layer >= len(self._results):
            return
        r = self._results[layer]
        if s.head >= r.n_heads or r.visible.shape != self._marks.shape or not self.isVisible():
            return
        weights = np.where(r.visible, r.head(s.head).weights, -np.inf)  # one head, not every head's n × n
        self.current_view.set_data(weights, s.tokens, s.key_tokens)
        self.current_view.set_title(f"weights now (head {s.head + 1})")

    def _inputs(self) -> tuple[np.ndarray, np.ndarray | None]:
        """What the selected layer's attention reads: X (or the stream after the layer before) and X_kv."""
        s = self.session
        x = s.matrix("X")
        if s.layer > 0:
            if s.layer > len(self._results):
                raise QkvError("The layers before this one are still being computed; try again in a moment.")
            x = self._results[s.layer - 1].residual
        return np.asarray(x), (np.asarray(s.matrix("X_kv")) if s.cross else None)

    # ---- fitting -----------------------------------------------------------------------------------------
    def _make_fitter(self) -> PatternFitter | None:
        s, h = self.session, self.session.head
        kv = s.kv_head()  # with shared key/value heads (GQA) this head reads W_K of its group
        d_v = s.d_v
        try:
            x, x_kv = self._inputs()
            fit_x = self.fit_x_box.isChecked()
            if fit_x and (s.layer > 0 or s.cross):
                raise QkvError("Learning X needs the first layer and self-attention: X is what that layer reads.")
            ov = {}
            if self.fit_ov_box.isChecked():
                target = self.target()
                ov = dict(
                    w_v=s.matrix("W_V")[kv],
                    w_o=s.matrix("W_O")[h * d_v : (h + 1) * d_v],
                    target_output=target @ (x if x_kv is None else x_kv),  # [n_q, d_model] the attended rows
                )
            return PatternFitter(
                x,
                x_kv,
                self.target(),
                s.matrix("W_Q")[h],
                s.matrix("W_K")[kv],
                scale=s.scale(),
                visible=self.visible(),
                lr=self.lr_box.value(),
                seed=self.undo_stack.index() + 1,
                b_q=s.matrix("b_Q")[h],
                b_k=s.matrix("b_K")[kv],
                rotary=s.rope_theta if s.rotary else None,
                fit_x=fit_x,
                **ov,
            )
        except QkvError as e:
            self.message.emit(str(e))
            return None
        finally:
            both = self.fit_ov_box.isChecked()
            self.loss_plot.setTitle("loss (cross-entropy + output error)" if both else "loss (cross-entropy)")
            self._apply_palette()

    def _invalidate(self, keep_running: bool) -> None:
        """The fitter no longer matches the session (or the target): build a new one before the next step."""
        self.fitter = None
        self._generation += 1  # a burst in flight is dropped when it comes back
        self._worker.forget(self._job)
        self._job = None
        if not keep_running:
            self._set_running(False)
        elif self.running:
            QTimer.singleShot(0, self._submit)  # carry on toward the new target from where the head is now

    def _set_running(self, on: bool) -> None:
        self.running = on
        self.start_button.setText("&Pause" if on else "&Start")

    def toggle(self) -> None:
        """Start, or Pause a running fit."""
        if self.running:
            self.pause()
        else:
            self.start()

    def start(self) -> None:
        if self.running:
            return
        self._set_running(True)
        self._run_start = self.fitter.steps_taken if self.fitter is not None else 0
        self._submit()

    def pause(self) -> None:
        self._set_running(False)

    def step(self) -> None:
        """One gradient step (when no fit is running)."""
        if self.running or self._job is not None:
            return
        self._submit(steps=1)

    def _submit(self, steps: int | None = None) -> None:
        if self._job is not None:
            return
        if self.fitter is None:
            self.fitter = self._make_fitter()
            self._run_start = 0
            if self.fitter is None:
                self._set_running(False)
                return
        fitter = self.fitter
        if steps is None:
            steps = max(1, self.max_steps - (fitter.steps_taken - self._run_start))
        self._job = self._worker.submit(
            _burst, fitter, steps, BURST_SECONDS, done=functools.partial(self._collect, generation=self._generation)
        )

    def _collect(self, job: Future, generation: int) -> None:
        if job is not self._job:  # forgotten: the fitter was replaced
            return
        self._job = None
        try:
            burst = job.result()
        except QkvError as e:
            self._set_running(False)
            self.fitter = None
            self.message.emit(str(e))
            return
        if generation != self._generation:
            return
        fitter = self.fitter
        done = fitter is None or fitter.steps_taken - self._run_start >= self.max_steps or burst["converged"]
        if self.running and not done:
            self._submit()  # the worker computes the next burst while this one is drawn
        elif self.running:
            self._set_running(False)
            self.message.emit(f"fit finished: loss {burst['loss']:.4g} after {burst['steps']} steps")
        self._write(burst)

    def _write(self, burst: dict) -> None:
        """Put the burst's W_Q and W_K into the session (one undo step per fit) and extend the curves."""
        s, h = self.session, self.session.head
        top = self.undo_stack.command(self.undo_stack.index() - 1) if self.undo_stack.index() > 0 else None
        if self._command is None or top is not self._command or self.undo_stack.canRedo():
            before = s.state()
            self._command = StateChange(s, before, before, f"learn W_Q, W_K (head {h + 1})")
            self.undo_stack.push(self._command)
        self._writing = True
        try:
            s.set_block("W_Q", 0, 0, burst["w_q"], head=h)
            s.set_block("W_K", 0, 0, burst["w_k"], head=s.kv_head(h))
            if burst["w_v"] is not None:
                s.set_block("W_V", 0, 0, burst["w_v"], head=s.kv_head(h))
                s.set_block("W_O", h * s.d_v, 0, burst["w_o"])
            if burst["x"] is not None:
                s.set_matrix("X", burst["x"])
        finally:
            self._writing = False
        self._command.after = s.state()
        self._steps.extend(burst["step_numbers"])
        self._losses.extend(burst["losses"])
        self._svs.append(burst["sv"])
        self._draw_curves(burst["steps"])
        self.status.setText(f"step {burst['steps']}   loss {burst['loss']:.4g}")
        now = time.perf_counter()
        if now - self._explained_at > 0.25 or not self.running:  # text relayout is slow; 4 times a second will do
            self._explained_at = now
            self._update_explanation(burst["loss"])
        self.burst_written.emit()

    # ---- Reset, learning rate, d_k -------------------------------------------------------------------------
    def reset(self) -> None:
        """Small seeded random W_Q and W_K for the selected head (one undo step) and a fresh loss curve."""
        self.pause()
        s, h = self.session, self.session.head
        self._reset_seed += 1
        shape = s.matrix("W_Q")[h].shape
        before = s.state()
        self._writing = True
        try:
            s.set_block("W_Q", 0, 0, seeded_random(shape, 2 * self._reset_seed, std=0.3), head=h)
            s.set_block("W_K", 0, 0, seeded_random(shape, 2 * self._reset_seed + 1, std=0.3), head=s.kv_head(h))
        finally:
            self._writing = False
        self.undo_stack.push(StateChange(s, before, s.state(), f"reset W_Q, W_K (head {h + 1})"))
        self._invalidate(keep_running=False)
        self._clear_curves()
        self.status.setText("reset: small random W_Q and W_K")

    def _lr_changed(self, value: float) -> None:
        if self.fitter is not None:
            self.fitter.lr = float(value)  # read by the next burst

    def _d_k_edited(self) -> None:
        value = self.d_k_box.value()
        s = self.session
        if value == s.d_k:
            return
        before = s.state()
        try:
            s.resize(d_k=value)
        except QkvError as e:
            self.message.emit(str(e))
            self.d_k_box.setValue(s.d_k)
            return
        self.undo_stack.push(StateChange(s, before, s.state(), f"d_k = {value}"))

    # ---- curves and the lesson -------------------------------------------------------------------------
    def _clear_curves(self) -> None:
        self._steps, self._losses, self._svs, self._sv_steps = [], [], [], []
        self.loss_curve.setData([], [])
        for c in self.sv_curves:
            self.sv_plot.removeItem(c)
        self.sv_curves = []
        self._ranges = {"loss": (0.0, 0.0, 0.0), "sv": (0.0, 0.0, 0.0)}

    def _grow(self, which: str, plot: pg.PlotWidget, x_max: float, y_lo: float, y_hi: float) -> None:
        """Widen a plot's range only when the data leaves it (x doubles, y by a margin): steady axes are cheap."""
        x0, lo0, hi0 = self._ranges[which]
        if x_max <= x0 and y_lo >= lo0 and y_hi <= hi0:
            return
        x1 = x0 if x_max <= x0 else max(float(self.max_steps) if self.max_steps < 10**6 else 0.0, 2.0 * x_max, 100.0)
        lo1 = lo0 if y_lo >= lo0 and x0 else y_lo - 0.1 * (abs(y_lo) + 1.0)
        hi1 = hi0 if y_hi <= hi0 and x0 else y_hi + 0.5 * (abs(y_hi) + 0.1)
        self._ranges[which] = (x1, lo1, hi1)
        plot.setRange(xRange=(0.0, x1), yRange=(lo1, hi1), padding=0.0)

    def _draw_curves(self, step: int) -> None:
        losses = np.maximum(np.asarray(self._losses), 1e-12)  # log axis
        self.loss_curve.setData(np.asarray(self._steps, dtype=np.float64), losses)
        log_losses = np.log10(losses)
        floor = self._floor.loss if self._floor is not None and self._floor.loss > 0 else None
        lo = float(log_losses.min()) if floor is None else min(float(log_losses.min()), float(np.log10(floor)))
        self._grow("loss", self.loss_plot, float(step), lo, float(log_losses.max()))
        self._sv_steps.append(step)
        sv = np.array([v[:MAX_SV_CURVES] for v in self._svs[-len(self._sv_steps) :]])  # [bursts, k]
        k = sv.shape[1] if sv.ndim == 2 else 0
        while len(self.sv_curves) < k:
            i = len(self.sv_curves)
            pen = pg.mkPen(SV_COLOURS[i % len(SV_COLOURS)], width=2)
            self.sv_curves.append(self.sv_plot.plot([], [], pen=pen, name=f"σ{i + 1}"))
        for i in range(k):
            self.sv_curves[i].setData(np.asarray(self._sv_steps, dtype=np.float64), sv[:, i])
        if k:
            self._grow("sv", self.sv_plot, float(step), 0.0, float(sv.max()))

    def _update_floor(self) -> None:
        s = self.session
        n_q, n_k = self._shape()
        self._floor = None
        if n_q * n_k <= FLOOR_CELLS:
            try:
                x, x_kv = self._inputs()
                self._floor = loss_floor(
                    self.target(), s.d_k, x_q=x, x_kv=x_kv, visible=self.visible(), rotary=s.rotary
                )
            except QkvError:
                self._floor = None
        f = self._floor
        if f is not None and f.loss > 0:
            self.floor_line.setPos(np.log10(f.loss))
            self.floor_line.setVisible(True)
        else:
            self.floor_line.setVisible(False)
        self._update_explanation(self._losses[-1] if self._losses else None)

    def _update_explanation(self, loss: float | None) -> None:
        self.explain.setHtml(lesson_html(self.session.d_k, self._floor, loss, self.session.causal))

    def _apply_palette(self) -> None:
        """Plots follow the application's palette (light or dark), like the heatmaps, not pyqtgraph's black."""
        palette = self.palette()
        fg = palette.color(QPalette.ColorRole.WindowText)
        for plot in (self.loss_plot, self.sv_plot):
            plot.setBackground(palette.color(QPalette.ColorRole.Window))
            plot.getPlotItem().titleLabel.setText(plot.getPlotItem().titleLabel.text, color=fg)
            for side in ("left", "bottom"):
                plot.getAxis(side).setPen(fg)
                plot.getAxis(side).setTextPen(fg)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and not self._closed:
            self._apply_palette()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if getattr(self, "_target_stale", False):
            self._target_changed()
        self._show_current()  # the current pattern is only drawn while the tab is shown

    # ---- shutting down -----------------------------------------------------------------------------------
    def close_views(self) -> None:
        """Stop the worker and release the graphics scenes (before the application exits). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._generation += 1
        self._set_running(False)
        self._worker.shutdown(wait=True)
        for view in self.views.values():
            view.close_views()
        self.loss_plot.close()
        self.sv_plot.close()


def _burst(fitter: PatternFitter, max_steps: int, seconds: float) -> dict:
    """Steps on the worker for up to ``seconds``; returns copies for the GUI thread to draw."""
    t0 = time.perf_counter()
    first = fitter.steps_taken
    losses: list[np.ndarray] = []
    taken = 0
    while taken < max_steps:
        n = min(4, max_steps - taken)
        losses.append(fitter.step(n))
        taken += n
        # Small NumPy calls keep the GIL: hand it over now and then, or the GUI thread waits a whole switch
        # interval (5 ms) for every call into Qt while it redraws.
        time.sleep(0)
        if time.perf_counter() - t0 >= seconds:
            break
    all_losses = np.concatenate(losses)
    converged = len(all_losses) > 1 and abs(all_losses[0] - fitter.loss) <= 1e-10 * max(1.0, abs(fitter.loss))
    return {
        "w_q": fitter.w_q.copy(),
        "w_k": fitter.w_k.copy(),
        "w_v": None if fitter.w_v is None else fitter.w_v.copy(),
        "w_o": None if fitter.w_o is None else fitter.w_o.copy(),
        "x": None if fitter.x is None else fitter.x.copy(),
        "losses": np.append(all_losses[1:], fitter.loss),  # the loss after each step
        "step_numbers": np.arange(first + 1, fitter.steps_taken + 1),
        "steps": fitter.steps_taken,
        "loss": fitter.loss,
        "sv": qk_singular_values(fitter.w_q, fitter.w_k),
        "converged": converged,
    }


def lesson_html(d_k: int, floor: Floor | None, loss: float | None, causal: bool) -> str:
    """The explanation beside the curves: the bilinear form, its rank, and what that means for this target."""
    parts = [
        "<p>The score of query <i>i</i> for key <i>j</i> is x<sub>i</sub>·W<sub>Q</sub>·W<sub>K</sub>ᵀ·"
        "x<sub>j</sub>ᵀ = x<sub>i</sub>·W·x<sub>j</sub>ᵀ: a <b>bilinear form</b> whose matrix "
        f"W = W<sub>Q</sub>·W<sub>K</sub>ᵀ has rank at most <b>d_k = {d_k}</b>. The curves below are W's singular "
        f"values: at most {d_k} of them can grow, so the head can only draw patterns that a rank-{d_k} form can.</p>"
    ]
    if floor is not None:
        best = f"<p><b>Best reachable loss with d_k = {d_k}:</b> "
        if floor.upper is not None and floor.upper <= floor.loss + 1e-12:
            parts.append(best + f"{floor.loss:.4g}, a perfect match (the target's own entropy")
            parts.append("; a one-hot target is approached as the weights grow).</p>")
        else:
            parts.append(best + f"at least {floor.loss:.4g}")
            if floor.upper is not None:
                parts.append(f" and at most {floor.upper:.4g}")
            parts.append(f" (a perfect match would be {floor.entropy:.4g}, the target's own entropy).</p>")
        if floor.kind != "entropy":
            parts.append(f"<p><b>Why it cannot be matched</b> ({escape(floor.kind)}): {escape(floor.reason)}</p>")
        elif floor.upper is not None:
            parts.append(f"<p><b>It can be matched:</b> {escape(floor.upper_reason)}</p>")
        if floor.kind == "entropy" and floor.upper is None and d_k == 1 and causal:
            parts.append(
                "<p>With d_k = 1 each score is a product a<sub>i</sub>·b<sub>j</sub>, so query <i>i</i>'s favourite "
                "is the key with the largest or the smallest b<sub>j</sub> <i>among the keys it can see</i>. The "
                "causal mask changes that set from row to row, so a zigzag such as b = 0, −1, 1, −2, 2, … can make "
                "each previous token a new record: such a head exists, but gradient descent rarely finds it. "
                "Switch the mask off and the two-favourites limit bites: raise d_k to 2 to lift it.</p>"
            )
        elif floor.kind == "entropy" and floor.upper is None:
            parts.append("<p>No obstruction is known for this target at this d_k; the fit will tell.</p>")
    if loss is not None:
        gap = "" if floor is None else f" ({loss - floor.loss:+.3g} above the floor)"
        parts.append(f"<p>Now: loss {loss:.4g}{gap}.</p>")
    return "".join(parts)


def run_learn_bench(seconds: float = 3.0) -> int:
    """Print how often the window redraws while the Learn tab fits (the 6-token guided example and a
    30-token, 12-head layer)."""
    from PySide6.QtWidgets import QApplication

    from qkvgui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    for label, session in (
        ("learn-previous-token preset (6 tokens, d_k 2)", _bench_preset()),
        ("30 tokens, 12 heads, d_model 64, d_k 16", _bench_big()),
    ):
        window = MainWindow(session)
        window.show()
        panel = window.learn
        assert window.right_tabs.currentWidget() is panel, "the benchmark measures with the Learn tab shown"
        panel.max_steps = 10**9
        redraws = _Counter()
        window.scheduler.computed.connect(redraws.count)
        app.processEvents()
        panel.start()
        t0 = time.perf_counter()
        redraws.n = 0
        while time.perf_counter() - t0 < seconds:
            app.processEvents()
        elapsed = time.perf_counter() - t0
        steps = panel.fitter.steps_taken if panel.fitter is not None else 0
        panel.pause()
        print(
            f"learn: window redraws while fitting, {label}: {redraws.n / elapsed:.1f} per second "
            f"(target >= 20), {steps / elapsed:.0f} steps per second"
        )
        window.undo_stack.clear()
        window.undo_stack.setClean()
        window.close()
        app.processEvents()
    return 0


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def count(self, *_args: object) -> None:
        self.n += 1


def _bench_preset() -> Session:
    s = Session.from_preset("learn-previous-token")
    s.resize(d_k=2)
    return s


def _bench_big() -> Session:
    rng = np.random.default_rng(0)
    n, h, d_model, d_k = 30, 12, 64, 16
    tokens = [f"t{i}" for i in range(n)]
    s = Session.from_arrays(
        rng.standard_normal((n, d_model)),
        rng.standard_normal((h, d_model, d_k)) * 0.2,
        rng.standard_normal((h, d_model, d_k)) * 0.2,
        rng.standard_normal((h, d_model, d_k)),
        rng.standard_normal((h * d_k, d_model)) / 8,
        tokens=tokens,
        causal=True,
    )
    s.set_extra("learn_target", "previous-token")
    s.set_extra("view", "learn")  # the window opens on the Learn tab, as for the guided example
    return s
