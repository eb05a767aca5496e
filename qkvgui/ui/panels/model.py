"""The "Model" tab: every layer × head weights pattern at a glance, and the heads sorted by score.

The grid draws all patterns as one mosaic image (one QImage, one drawImage: 72 heads cost a few ms, where 72
plot widgets would cost seconds); rows are layers, columns heads. Clicking a thumbnail opens that layer and head
in the step-by-step view; hovering shows the head's scores. The table beside it lists every head with its scores
(``qkvgui.core.heads``), sortable by any column; double-clicking a row opens the head too.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, QPoint, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from qkvgui.core import QkvError
from qkvgui.core.heads import SCORES, result_scores
from qkvgui.ui.heatmap import HeatmapView
from qkvgui.ui.worker import Worker

__all__ = ["HeadGrid", "ModelPanel", "ModelTab", "Overview", "install_model_tab", "model_overview", "mosaic"]

#: the largest thumbnail side in pixels of the mosaic (longer sentences are max-pooled down to it)
THUMB = 48
GAP = 2
BACKGROUND = (40, 40, 40)


def _viridis() -> np.ndarray:
    import pyqtgraph as pg

    return np.asarray(pg.colormap.get("viridis").getLookupTable(nPts=256, alpha=False), dtype=np.uint8)


def _pool(w: np.ndarray, t: int) -> np.ndarray:
    """[..., n, m] -> [..., ≤t, ≤t]: the maximum over blocks, so a sharp pattern stays visible when shrunk."""
    for axis in (-1, -2):
        n = w.shape[axis]
        if n > t:
            edges = np.linspace(0, n, t + 1).astype(int)[:-1]
            w = np.maximum.reduceat(w, edges, axis=axis)
    return w


def mosaic(weights: np.ndarray, lut: np.ndarray, thumb: int = THUMB, gap: int = GAP) -> tuple[np.ndarray, int, int]:
    """weights [L, h, n_q, n_k] in [0, 1] -> (RGB image [L·(tq+gap), h·(tk+gap), 3] uint8, tq, tk)."""
    w = _pool(np.asarray(weights, dtype=np.float32), thumb)  # [L, h, tq, tk]
    n_layers, h, tq, tk = w.shape
    idx = np.clip(w * 255.0 + 0.5, 0, 255).astype(np.uint8)
    tiles = np.empty((n_layers, h, tq + gap, tk + gap, 3), dtype=np.uint8)
    tiles[...] = BACKGROUND
    tiles[:, :, :tq, :tk] = lut[idx]
    image = tiles.transpose(0, 2, 1, 3, 4).reshape(n_layers * (tq + gap), h * (tk + gap), 3)
    return np.ascontiguousarray(image), tq, tk


@dataclass(frozen=True, eq=False)
class Overview:
    """What the Model tab draws, computed off the GUI thread: the thumbnails as one RGB mosaic and every score."""

    image: np.ndarray  # [L·(tq+gap), h·(tk+gap), 3] uint8
    tq: int  # a thumbnail's rows and columns in image pixels
    tk: int
    n_layers: int
    n_heads: int
    n_q: int  # the tokens (queries) the patterns are over
    scores: dict[str, np.ndarray]  # {name: [L, h]}


def model_overview(results: list, tokens: list[str], cross: bool, lut: np.ndarray) -> Overview:
    """The Model tab's numbers and picture for one AttentionResult per layer (NumPy only: runs on the worker).
    The thumbnails come from each result's ``weights_pooled`` (no layer's h × n × n weights are built); the scores
    read one head's weights at a time (``qkvgui.core.heads.result_scores``)."""
    pooled = np.stack([r.weights_pooled for r in results])  # [L, h, ≤256, ≤256]
    image, tq, tk = mosaic(pooled, lut)
    scores = result_scores(results, tokens, cross)
    return Overview(image, tq, tk, len(results), results[0].n_heads, results[0].n_q, scores)


class HeadGrid(QWidget):
    """Layers × heads thumbnails of the attention weights; emits ``chosen(layer, head)`` on click."""

    chosen = Signal(int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setMinimumSize(200, 150)
        self._lut = _viridis()
        self._image: QImage | None = None
        self._buffer: np.ndarray | None = None
        self._shape = (0, 0)  # layers, heads
        self._tile = (1, 1)  # tq + gap, tk + gap in image pixels
        self._selected = (0, 0)
        self._tooltip_text = ""  # what the tooltip shows now (the head under the mouse)
        self.tooltip = lambda layer, head: f"layer {layer + 1}, head {head + 1}"
        self.margin_left, self.margin_top = 34, 18

    def set_weights(self, weights: np.ndarray) -> None:
        """weights [L, h, n_q, n_k]: redraw every thumbnail."""
        image, tq, tk = mosaic(weights, self._lut)
        self.set_mosaic(image, tq, tk, weights.shape[0], weights.shape[1])

    def set_mosaic(self, image: np.ndarray, tq: int, tk: int, n_layers: int, n_heads: int) -> None:
        """Show a mosaic made by ``mosaic`` (on a worker): one image, one QImage, no per-thumbnail work here."""
        self._buffer = image  # QImage does not own the bytes: keep them alive
        height, width, _ = image.shape
        self._image = QImage(image.data, width, height, 3 * width, QImage.Format.Format_RGB888)
        self._shape = (n_layers, n_heads)
        self._tile = (tq + GAP, tk + GAP)
        self.update()

    def set_selected(self, layer: int, head: int) -> None:
        self._selected = (layer, head)
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(560, 420)

    def _target(self) -> QRect:
        """Where the mosaic is drawn: the largest rectangle of its aspect that fits beside the labels."""
        if self._image is None:
            return QRect()
        room_w = max(1, self.width() - self.margin_left - 4)
        room_h = max(1, self.height() - self.margin_top - 4)
        scale = min(room_w / self._image.width(), room_h / self._image.height())
        return QRect(
            self.margin_left, self.margin_top, int(self._image.width() * scale), int(self._image.height() * scale)
        )

    def cell_at(self, pos: QPoint) -> tuple[int, int] | None:
        """(layer, head) under a widget position, or None."""
        target = self._target()
        if self._image is None or not target.contains(pos):
            return None
        x = (pos.x() - target.x()) / target.width() * self._image.width()
        y = (pos.y() - target.y()) / target.height() * self._image.height()
        layer, head = int(y // self._tile[0]), int(x // self._tile[1])
        if 0 <= layer < self._shape[0] and 0 <= head < self._shape[1]:
            return layer, head
        return None

    def cell_rect(self, layer: int, head: int) -> QRect:
        target = self._target()
        assert self._image is not None  # a cell exists only once the image is drawn
        sx = target.width() / self._image.width()
        sy = target.height() / self._image.height()
        return QRect(
            int(target.x() + head * self._tile[1] * sx),
            int(target.y() + layer * self._tile[0] * sy),
            int((self._tile[1] - GAP) * sx),
            int((self._tile[0] - GAP) * sy),
        )

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window())
        if self._image is None:
            painter.end()
            return
        target = self._target()
        painter.drawImage(target, self._image)  # nearest-neighbour: cells stay crisp
        painter.setPen(self.palette().windowText().color())
        layers, heads = self._shape
        step_l = max(1, layers // 16)
        step_h = max(1, heads // 16)
        for layer in range(0, layers, step_l):
            r = self.cell_rect(layer, 0)
            painter.drawText(
                QRect(0, r.y(), self.margin_left - 4, r.height()),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                f"L{layer + 1}",
            )
        for head in range(0, heads, step_h):
            r = self.cell_rect(0, head)
            painter.drawText(QRect(r.x(), 0, r.width(), self.margin_top), Qt.AlignmentFlag.AlignCenter, f"H{head + 1}")
        if self._selected[0] < layers and self._selected[1] < heads:
            painter.setPen(QPen(QColor(255, 80, 80), 2))
            painter.drawRect(self.cell_rect(*self._selected).adjusted(-1, -1, 1, 1))
        painter.end()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        cell = self.cell_at(event.position().toPoint())
        if cell is None:
            self._tooltip_text = ""
            QToolTip.hideText()
            return
        self._tooltip_text = self.tooltip(*cell)
        QToolTip.showText(event.globalPosition().toPoint(), self._tooltip_text, self)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        cell = self.cell_at(event.position().toPoint())
        if cell is not None and event.button() == Qt.MouseButton.LeftButton:
            self.set_selected(*cell)
            self.chosen.emit(*cell)


class _Number(QTableWidgetItem):
    """A table cell that sorts by its number (NaN last) and shows it rounded."""

    def __init__(self, value: float, digits: int = 3):
        super().__init__("–" if np.isnan(value) else f"{value:.{digits}f}")
        self.value = float(value)
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a = self.value if not np.isnan(self.value) else -np.inf
        b = getattr(other, "value", 0.0)
        return a < (b if not np.isnan(b) else -np.inf)


class ModelPanel(QWidget):
    """The Model tab. ``show_results(results, tokens)`` redraws it; ``head_chosen(layer, head)`` asks the window
    to open a head; ``repeat_requested()`` asks for a repeated random token sequence."""

    head_chosen = Signal(int, int)
    repeat_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scores: dict[str, np.ndarray] = {}
        self._block: str | None = None
        self.grid = HeadGrid()
        self.grid.tooltip = self._tooltip
        self.grid.chosen.connect(self.head_chosen)
        self.table = QTableWidget(0, 2 + len(SCORES))
        self.table.setHorizontalHeaderLabels(["layer", "head", *(name.replace("-", "-\n") for name in SCORES)])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setDefaultSectionSize(74)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        for column, width in enumerate([44, 40] + [70] * len(SCORES)):
            self.table.setColumnWidth(column, width)
        self.table.setSortingEnabled(True)
        self.table.cellDoubleClicked.connect(self._row_chosen)
        self.table.setToolTip(
            "Head scores (qkvgui.core.heads): previous-token = mean weight on key i − 1; "
            "first-token = mean weight on key 1; duplicate-token = weight on earlier copies of the "
            "query's token; induction = weight on the key after an earlier copy; entropy of each "
            "row in nats, averaged. Click a column to sort; double-click a head to open it."
        )
        self.repeat_button = QPushButton("Repeat random tokens")
        self.repeat_button.setToolTip(
            "Replace the sentence by random tokens said twice (TransformerLens's induction "
            "test): induction heads light up on the second half."
        )
        self.repeat_button.clicked.connect(self.repeat_requested)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.block_label = QLabel()
        self.block_label.setWordWrap(True)
        self.block_view = HeatmapView("diverging", compact=True)
        self.block_view.setObjectName("view.model_block")  # View ▸ Focus view, double-click: focused
        self.block_view.setMinimumHeight(150)
        self.block_box = QWidget()
        box = QVBoxLayout(self.block_box)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.block_label)
        box.addWidget(self.block_view, 1)
        self.block_box.hide()  # shown for a whole imported model only

        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.repeat_button)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.grid)
        split.addWidget(self.table)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([520, 470])  # the whole table (7 columns) beside a grid of square-ish thumbnails
        outer = QSplitter(Qt.Orientation.Vertical)
        outer.addWidget(split)
        outer.addWidget(self.block_box)
        outer.setStretchFactor(0, 3)
        outer.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(outer, 1)

    def show_results(self, results, tokens: list[str], cross: bool = False, block: str | None = None) -> None:
        """Redraw for a list of per-layer AttentionResults over `tokens` (self-attention unless cross), here and now
        (scripts, benchmarks; the window computes ``model_overview`` on its worker and calls ``show_overview``)."""
        self.show_overview(model_overview(results, tokens, cross, self.grid._lut), block)

    def show_overview(self, overview: Overview, block: str | None = None) -> None:
        """Draw an overview computed by ``model_overview``: the mosaic, the score table, the summary."""
        ov = overview
        self.grid.set_mosaic(ov.image, ov.tq, ov.tk, ov.n_layers, ov.n_heads)
        self.scores = ov.scores
        self._fill_table()
        self.summary.setText(
            f"{ov.n_layers} layer{'s' if ov.n_layers > 1 else ''} × {ov.n_heads} head{'s' if ov.n_heads > 1 else ''}, "
            f"{ov.n_q} tokens. Rows are layers, columns heads; click one to open it."
        )
        self.block_box.setVisible(bool(block))
        self._block = block

    def select(self, layer: int, head: int) -> None:
        self.grid.set_selected(layer, head)

    def show_block(
        self,
        after: np.ndarray,
        layer: int,
        n_layers: int,
        tokens: list[str],
        features: list[str],
        formula: str | None = None,
    ) -> None:
        """The residual stream after layer `layer`'s own block [n, d_model]: the step between this layer and the
        next, which the model runs and the session shows read-only (formula: the block's, from its residual r)."""
        nxt = f"what layer {layer + 2} reads from" if layer + 1 < n_layers else "the model's output stream"
        self.block_label.setText(
            f"After layer {layer + 1}: the model's own block, read-only ({formula or self._block}). The residual "
            f"stream it hands on, {nxt}:  {after.shape[0]} × {after.shape[1]}"
        )
        self.block_view.set_data(after, list(tokens), list(features))

    def _tooltip(self, layer: int, head: int) -> str:
        lines = [f"layer {layer + 1}, head {head + 1}"]
        for name in SCORES:
            if name in self.scores:
                v = float(self.scores[name][layer, head])
                lines.append(f"{name}: {'–' if np.isnan(v) else f'{v:.3f}'}")
        return "\n".join(lines)

    def _fill_table(self) -> None:
        s = self.scores
        n_layers, h = s[SCORES[0]].shape
        sort_column = self.table.horizontalHeader().sortIndicatorSection()
        order = self.table.horizontalHeader().sortIndicatorOrder()
        self.table.setSortingEnabled(False)
        self.table.setRowCount(n_layers * h)
        row = 0
        for layer in range(n_layers):
            for head in range(h):
                self.table.setItem(row, 0, _Number(layer + 1, 0))
                self.table.setItem(row, 1, _Number(head + 1, 0))
                for c, name in enumerate(SCORES):
                    self.table.setItem(row, 2 + c, _Number(s[name][layer, head]))
                row += 1
        self.table.setSortingEnabled(True)
        self.table.sortItems(sort_column, order)

    def _row_chosen(self, row: int, _column: int) -> None:
        layer = int(self.table.item(row, 0).value) - 1
        head = int(self.table.item(row, 1).value) - 1
        self.grid.set_selected(layer, head)
        self.head_chosen.emit(layer, head)

    def sort_by(self, name: str) -> list[tuple[int, int]]:
        """Sort the table by a score, best first, and return its (layer, head) rows in order (0-based)."""
        self.table.sortItems(2 + SCORES.index(name), Qt.SortOrder.DescendingOrder)
        return [
            (int(self.table.item(r, 0).value) - 1, int(self.table.item(r, 1).value) - 1)
            for r in range(self.table.rowCount())
        ]


class ModelTab(QObject):
    """Binds a ModelPanel to a window: redraws on every computation while shown, opens the chosen head in the
    step-by-step view, and runs "Repeat random tokens" (re-reading the checkpoint off the GUI thread for an
    imported model; one undoable step either way)."""

    message = Signal(str)

    def __init__(self, window, panel: ModelPanel):
        super().__init__(window)
        self.window, self.panel = window, panel
        self.results: list | None = None
        self._stale = True
        self._worker = Worker("qkvgui-repeat", parent=self)
        self._job: Future | None = None
        self._seed = 0
        self._lut = panel.grid._lut
        # subscriptions, in one block
        window.scheduler.computed.connect(self._on_computed)
        window.right_tabs.currentChanged.connect(lambda _i: self._refresh())
        events = window.session.events
        events.layer.connect(self._on_selection)
        events.head.connect(self._on_selection)
        events.replaced.connect(self._on_selection)
        panel.head_chosen.connect(self.open_head)
        panel.repeat_requested.connect(self.repeat_random_tokens)
        if getattr(window, "results", None):  # built after the window computed (a tab built when first shown)
            self.results = window.results
            QTimer.singleShot(0, self._refresh)  # once the panel is in its tab

    @property
    def session(self):
        return self.window.session

    def _change(self, text: str, setter, *args) -> bool:
        """One undoable step through the window's edit controller (``window.edits``, or ``_change`` before it)."""
        edits = getattr(self.window, "edits", None)
        return edits.change(text, setter, *args) if edits is not None else self.window._change(text, setter, *args)

    def _shown(self) -> bool:
        return self.window.right_tabs.currentWidget() is self.panel

    def _on_computed(self, results) -> None:
        self.results = results
        self._stale = True
        self._refresh()

    def _on_selection(self, *_args) -> None:
        self.panel.select(self.session.layer, self.session.head)
        self._show_block()

    @property
    def afters(self) -> list | None:
        """The stream after each layer's own block (whole models: the results carry it), or None."""
        if not self.results or any(r.after is None for r in self.results):
            return None
        return [r.after for r in self.results]

    def _show_block(self) -> None:
        s = self.session
        afters = self.afters
        if afters is None or s.model is None or len(afters) != s.n_layers or not self._shown():
            return
        after = afters[s.layer]
        if after.shape != (len(s.tokens), s.d_model):
            return
        formula = s.model.blocks[s.layer].formula()  # "s′ = …": the stream after the block, r the residual
        self.panel.show_block(after, s.layer, s.n_layers, s.tokens, s.features, formula)

    def _refresh(self) -> None:
        """While the tab is shown, new results are turned into thumbnails and scores on the scheduler's worker
        (the newest only); the GUI thread only draws the finished overview."""
        if not self._shown() or not self._stale or not self.results:
            return
        s = self.session
        results = self.results
        if results[0].n_heads != s.n_heads or len(results) != s.n_layers:
            return  # results of an older shape: the next computation brings the right ones
        self._stale = False
        model = s.model
        block = model.blocks[0].describe() if model else None
        self.window.scheduler.submit(
            "model-overview",
            lambda args: model_overview(*args),
            (results, list(s.tokens), s.cross, self._lut),
            lambda overview: self._overview_ready(overview, results, block),
        )

    def _overview_ready(self, overview: Overview, results: list, block: str | None) -> None:
        if results is not self.results:
            return  # newer results are on their way
        s = self.session
        self.panel.show_overview(overview, block)
        self.panel.select(s.layer, s.head)
        self.panel.repeat_button.setEnabled(not s.cross)
        self._show_block()

    def busy(self) -> bool:
        """True while the overview is being computed (tests, scripts)."""
        return self.window.scheduler.side_busy() or self._stale and self._shown() and bool(self.results)

    def open_head(self, layer: int, head: int) -> None:
        """Select the layer and head and show them in the step-by-step view."""
        s = self.session
        if layer != s.layer:
            s.set_layer(layer)
        if head != s.head:
            s.set_head(head)
        self.window.right_tabs.setCurrentIndex(0)

    def repeat_random_tokens(self) -> None:
        self._seed += 1
        source = self.session.extra.get("checkpoint")
        if not source:
            self._change("repeat random tokens", self.session.repeat_random_tokens, self._seed)
            return
        if self._job is not None:
            return
        self.panel.repeat_button.setEnabled(False)
        self.message.emit("Reading the model on random tokens said twice…")
        self._job = self._worker.submit(_reimport_repeated, dict(source), self._seed, done=self._collect)

    def _collect(self, job: Future) -> None:
        if job is not self._job:
            return
        fresh, error = job.result()
        self._job = None
        self.panel.repeat_button.setEnabled(True)
        if error:
            self.message.emit(error)
            return
        self._change("repeat random tokens", self.session.set_state, fresh.state())

    def shutdown(self) -> None:
        self._worker.shutdown(wait=False)


def _reimport_repeated(source: dict, seed: int):
    """(session, None) or (None, message): the checkpoint re-read on a repeated random token sequence."""
    from qkvgui.io.checkpoints import repeated_random_ids
    from qkvgui.session import Session

    try:
        ids = repeated_random_ids(source["path"], source["text"], 20, seed)
        return Session.from_checkpoint(source["path"], source.get("layer"), source["text"], ids=ids), None
    except QkvError as e:
        return None, str(e)
    except ImportError as e:
        return None, f"Reading the model needs the 'models' extra: pip install 'qkvgui[models]' ({e})."


def install_model_tab(window) -> ModelTab:
    """Add the "Model" tab to a window (beside "Attention, step by step") and bind it; returns its controller."""
    panel = ModelPanel()
    if hasattr(window, "add_tab"):
        window.add_tab(panel, "Model")
    else:
        window.right_tabs.addTab(panel, "Model")
    tab = ModelTab(window, panel)
    tab.message.connect(window.show_message)
    return tab
