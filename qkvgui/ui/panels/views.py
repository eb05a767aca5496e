"""The right-hand tabs: every step of attention, the circuits, and whatever tab a colleague adds; all follow the
scheduler's results for the selected head and layer."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QMainWindow, QTabWidget, QWidget

from qkvgui.core import AttentionResult
from qkvgui.session import Session
from qkvgui.ui.circuits_panel import CIRCUITS_THRESHOLD, CircuitsPanel, compute_circuits, gather_circuits
from qkvgui.ui.heatmap import HeatmapView
from qkvgui.ui.pipeline import PipelineView
from qkvgui.ui.scheduler import RecomputeScheduler


class ViewsPanel(QTabWidget):
    """``views[name]`` is every heatmap by name (objectName ``view.<name>``); ``redrawn`` follows each redraw."""

    redrawn = Signal()

    def __init__(self, session: Session, scheduler: RecomputeScheduler, parent: QWidget | None = None):
        super().__init__(parent)
        self.session, self.scheduler = session, scheduler
        self.result: AttentionResult | None = None  # the selected layer's result
        self.results: list[AttentionResult] = []  # one per layer
        self.pipeline = PipelineView()
        self.circuits = CircuitsPanel()
        self.views: dict[str, HeatmapView] = dict(self.pipeline.views)
        self.views.update(self.circuits.views)
        self.addTab(self.pipeline, "Attention, step by step")
        self.addTab(self.circuits, "QK and OV circuits")
        self._tab_names: dict[str, QWidget] = {"pipeline": self.pipeline, "circuits": self.circuits}

        # subscriptions, in one block
        self.currentChanged.connect(lambda _: self.redraw_circuits())
        self.pipeline.head_clicked.connect(self._head_clicked)
        scheduler.computed.connect(self._on_computed)
        session.events.head.connect(self._on_selection_changed)
        session.events.layer.connect(self._on_selection_changed)

    def add_view_tab(
        self, widget: QWidget, title: str, views: dict[str, HeatmapView] | None = None, name: str | None = None
    ) -> int:
        """Add a tab; its heatmaps join ``views`` (for export, focus and scripts); ``name`` is what a saved
        session remembers when the tab is shown."""
        self.views.update(views or {})
        if name:
            self._tab_names[name] = widget
        return self.addTab(widget, title)

    def _head_clicked(self, head: int) -> None:
        if head != self.session.head and 0 <= head < self.session.n_heads:
            self.session.set_head(head)

    def _on_selection_changed(self, _index: int) -> None:
        # a selection changes what is shown, never the result: pick the selected layer's from the last computation
        self._pick_result()
        self.redraw()

    def _on_computed(self, results: list[AttentionResult]) -> None:
        self.results = results
        self._pick_result()
        self.redraw()

    def _pick_result(self) -> None:
        """The selected layer's result, when the results on hand are for this many layers."""
        layer = self.session.layer
        self.result = self.results[layer] if layer < len(self.results) else None

    def redraw(self) -> None:
        if self.result is None or self.result.n_heads != self.session.n_heads:
            return
        s = self.session
        if not self.scheduler.prepare_head(self.results, s.layer, s.head):
            window = self.window()
            if isinstance(window, QMainWindow):
                window.statusBar().showMessage(f"computing head {s.head + 1}…")
            return  # drawn when the worker has it (computed is emitted again)
        self.pipeline.show_result(
            self.result,
            s.head,
            s.tokens,
            s.key_tokens,
            s.cross,
            s.features,
            layer=s.layer if s.n_layers > 1 else None,
            ablated=s.ablated(),
            block=block_title(s),
        )
        self.pipeline.show_residuals(self.results, s.tokens, s.features)
        self.redraw_circuits()
        self.redrawn.emit()

    def redraw_circuits(self) -> None:
        """The circuits tab follows every edit, but only while it is shown."""
        if self.currentWidget() is self.circuits and self.result is not None:
            layer = self.session.layer
            x_in = self.results[layer - 1].residual if 0 < layer <= len(self.results) else None
            inp = gather_circuits(self.session, self.result, x_in)
            if inp.cost() <= CIRCUITS_THRESHOLD:
                self.circuits.show_circuits(compute_circuits(inp))  # small: in the same frame as the edit
            else:  # big (SVDs of 384 × 384, composition of 12 × 12 heads): on the worker, the newest only
                self.circuits.show_busy()
                self.scheduler.submit("circuits", compute_circuits, inp, self.circuits.show_circuits)

    def shown_tab(self) -> str:
        """The name of the tab shown ("pipeline", "circuits", or an added tab's name)."""
        current = self.currentWidget()
        return next((n for n, w in self._tab_names.items() if w is current), "pipeline")

    def show_tab(self, saved: str | None) -> None:
        self.setCurrentWidget(self._tab_names.get(saved or "", self.pipeline))

    def close_views(self) -> None:
        """Graphics views alive at interpreter exit can crash Python 3.11."""
        self.pipeline.close_views()
        self.circuits.close_views()
        for i in range(self.count()):
            close = getattr(self.widget(i), "close_views", None)
            if close is not None and self.widget(i) not in (self.pipeline, self.circuits):
                close()


def block_title(s: Session) -> str | None:
    """The title of the model's own block after the selected layer (whole imported models; None otherwise): where
    it leads and its formula, e.g. "model block → layer 3's input X:  X′ = LN(h + MLP[gelu](h)), h = LN(r)"."""
    model = s.model
    if model is None or not 0 <= s.layer < len(model.blocks):
        return None
    last = s.layer + 1 == len(model.blocks)
    formula = model.blocks[s.layer].formula(None if last else model.blocks[s.layer + 1])
    goes = "the stream the model hands on" if last else f"layer {s.layer + 2}'s input X"
    return f"model block → {goes}:  {formula}"
