"""The right-hand tabs: every step of attention, the circuits, and whatever tab a colleague adds; all follow the
scheduler's results for the selected head and layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QMainWindow, QTabWidget, QWidget

from qkvgui.core import AttentionResult
from qkvgui.session import Session
from qkvgui.ui.heatmap import HeatmapView
from qkvgui.ui.pipeline import PipelineView
from qkvgui.ui.scheduler import RecomputeScheduler

if TYPE_CHECKING:
    from qkvgui.ui.circuits_panel import CircuitsPanel

#: what builds a tab on first show: its widget, or (widget, its heatmaps by name)
TabFactory = Callable[[], QWidget | tuple[QWidget, dict[str, HeatmapView] | None]]


class ViewsPanel(QTabWidget):
    """``views[name]`` is every heatmap by name (objectName ``view.<name>``); ``redrawn`` follows each redraw.

    A tab added with a factory (``add_view_tab(factory, ...)``) is built when it is first shown, or when a
    script asks for it (``page(name)``): the window appears without building what is not visible.
    """

    redrawn = Signal()
    #: a tab given as a factory has just been built (its widget): for whoever hooks into its heatmaps
    tab_built = Signal(QWidget)

    def __init__(
        self, session: Session, scheduler: RecomputeScheduler, parent: QWidget | None = None, *, hold: bool = False
    ):
        """hold: the pipeline's heatmaps are built by ``pipeline.fill()`` (after the window's first paint)."""
        super().__init__(parent)
        self.session, self.scheduler = session, scheduler
        self.result: AttentionResult | None = None  # the selected layer's result
        self.results: list[AttentionResult] = []  # one per layer
        self._lazy: dict[QWidget, tuple[TabFactory, str, str | None]] = {}  # placeholder: how to build it
        self.currentChanged.connect(self._build_shown)  # first: a tab is built before anyone looks at it
        self.pipeline = PipelineView(hold=hold)
        self.views: dict[str, HeatmapView] = dict(self.pipeline.views)
        self.addTab(self.pipeline, "Attention, step by step")
        self._tab_names: dict[str, QWidget] = {"pipeline": self.pipeline}
        self.add_view_tab(_make_circuits, "QK and OV circuits", name="circuits")

        # subscriptions, in one block
        self.currentChanged.connect(lambda _: self.redraw_circuits())
        self.pipeline.head_clicked.connect(self._head_clicked)
        scheduler.computed.connect(self._on_computed)
        session.events.head.connect(self._on_selection_changed)
        session.events.layer.connect(self._on_selection_changed)

    def add_view_tab(
        self,
        widget: QWidget | TabFactory,
        title: str,
        views: dict[str, HeatmapView] | None = None,
        name: str | None = None,
    ) -> int:
        """Add a tab; its heatmaps join ``views`` (for export, focus and scripts); ``name`` is what a saved
        session remembers when the tab is shown. ``widget`` may be a factory instead, called when the tab is
        first shown (or ``page(name)`` asks for it), returning the widget or (widget, its heatmaps)."""
        if not isinstance(widget, QWidget):
            placeholder = QWidget()
            placeholder.setObjectName(f"tab.{name or title}.unbuilt")
            self._lazy[placeholder] = (widget, title, name)
            if name:
                self._tab_names[name] = placeholder
            return self.addTab(placeholder, title)
        self.views.update(views or {})
        if name:
            self._tab_names[name] = widget
        return self.addTab(widget, title)

    def page(self, name: str) -> QWidget:
        """The widget of the tab called name ("pipeline", "circuits", "learn"...), built now if it was not."""
        widget = self._tab_names[name]
        return self._build(widget) if widget in self._lazy else widget

    def build_all(self) -> bool:
        """Build every tab not built yet (a script asks for a view by name); True if there was one."""
        lazy = list(self._lazy)
        for placeholder in lazy:
            self._build(placeholder)
        return bool(lazy)

    def built(self, name: str) -> QWidget | None:
        """The widget of the tab called name if it has been built, else None (nothing is built)."""
        widget = self._tab_names.get(name)
        return None if widget is None or widget in self._lazy else widget

    @property
    def circuits(self) -> CircuitsPanel:
        return self.page("circuits")  # type: ignore[return-value]

    def _build_shown(self, _index: int) -> None:
        if self.currentWidget() in self._lazy:
            self._build(self.currentWidget())

    def _build(self, placeholder: QWidget) -> QWidget:
        """Build a lazy tab in its placeholder's place (same index, title and current tab)."""
        factory, title, name = self._lazy.pop(placeholder)
        made = factory()
        widget, views = made if isinstance(made, tuple) else (made, None)
        self.views.update(views or {})
        if name:
            self._tab_names[name] = widget
        index = self.indexOf(placeholder)
        shown = self.currentWidget()
        blocked = self.blockSignals(True)  # the same tab stays shown: no change to announce
        try:
            self.removeTab(index)
            self.insertTab(index, widget, title)
            self.setCurrentWidget(widget if shown is placeholder else shown)
        finally:
            self.blockSignals(blocked)
        placeholder.deleteLater()
        self.tab_built.emit(widget)
        return widget

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
            block=s.block_title(),
        )
        self.pipeline.show_residuals(self.results, s.tokens, s.features)
        self.redraw_circuits()
        self.redrawn.emit()

    def redraw_circuits(self) -> None:
        """The circuits tab follows every edit, but only while it is shown."""
        shown = self.built("circuits")
        if shown is not None and self.currentWidget() is shown and self.result is not None:
            from qkvgui.ui.circuits_panel import CIRCUITS_THRESHOLD, CircuitsPanel, compute_circuits, gather_circuits

            assert isinstance(shown, CircuitsPanel)
            circuits = shown

            layer = self.session.layer
            x_in = self.results[layer - 1].residual if 0 < layer <= len(self.results) else None
            inp = gather_circuits(self.session, self.result, x_in)
            if inp.cost() <= CIRCUITS_THRESHOLD:
                circuits.show_circuits(compute_circuits(inp))  # small: in the same frame as the edit
            else:  # big (SVDs of 384 × 384, composition of 12 × 12 heads): on the worker, the newest only
                circuits.show_busy()
                self.scheduler.submit("circuits", compute_circuits, inp, circuits.show_circuits)

    def shown_tab(self) -> str:
        """The name of the tab shown ("pipeline", "circuits", or an added tab's name)."""
        current = self.currentWidget()
        return next((n for n, w in self._tab_names.items() if w is current), "pipeline")

    def show_tab(self, saved: str | None) -> None:
        self.setCurrentWidget(self._tab_names.get(saved or "", self.pipeline))

    def close_views(self) -> None:
        """Graphics views alive at interpreter exit can crash Python 3.11 (tabs never built have none)."""
        for i in range(self.count()):
            close = getattr(self.widget(i), "close_views", None)
            if close is not None:
                close()


def _make_circuits() -> tuple[QWidget, dict[str, HeatmapView]]:
    from qkvgui.ui.circuits_panel import CircuitsPanel

    panel = CircuitsPanel()
    return panel, panel.views
