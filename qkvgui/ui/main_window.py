"""The explorer window: it only assembles the panels and controllers and gives others a place for theirs.

Editors on the left (``panels.editors``) under the settings (``panels.controls``), every step of attention on the
right (``panels.views``), the inspector below them. One walk per edit: an editor asks ``controllers.edits`` for an
undoable edit, the session announces it, the scheduler recomputes, and each view draws its field of the result.

To add a tab: ``window.add_tab(widget, "Title", views={"name": heatmap})``, or ``window.add_tab(factory, "Title",
name="name")`` to build it when it is first shown (``window.tab("name")`` builds and returns it). To add a menu entry:
``window.menus.add("View", "Text", callback, shortcut)`` or ``window.menu("View").addAction(...)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMainWindow, QMenu, QSplitter, QVBoxLayout, QWidget

from qkvgui.core import AttentionResult
from qkvgui.session import Session
from qkvgui.ui.app import favour_the_gui_thread
from qkvgui.ui.controllers.actions import Menus, build_standard_menus
from qkvgui.ui.controllers.document import DocumentController, recovery_folder
from qkvgui.ui.controllers.edits import EditController
from qkvgui.ui.controllers.figures import FigureController
from qkvgui.ui.controllers.inspector import InspectorController, make_inspector
from qkvgui.ui.controllers.keys import install_undo_everywhere
from qkvgui.ui.controllers.layout import LayoutController, build_view_menu
from qkvgui.ui.heatmap import HeatmapView
from qkvgui.ui.matrix_editor import MatrixEditor
from qkvgui.ui.panels.controls import ControlsPanel
from qkvgui.ui.panels.editors import EditorTabs
from qkvgui.ui.panels.views import TabFactory, ViewsPanel
from qkvgui.ui.scheduler import RecomputeScheduler
from qkvgui.ui.text import dead_rows_text, one_line

if TYPE_CHECKING:
    from qkvgui.ui.circuits_panel import CircuitsPanel
    from qkvgui.ui.learn_panel import LearnPanel
    from qkvgui.ui.panels.model import ModelTab

__all__ = ["MainWindow", "recovery_folder"]

#: controls kept as window attributes for scripts and tests (``window.head_spin``), from the panel that owns them
_CONTROL_ALIASES = {
    "controls": (
        "causal_box",
        "scale_combo",
        "scale_spin",
        "head_spin",
        "heads_spin",
        "ablate_box",
        "layer_spin",
        "layers_label",
    ),
    "editor_tabs": (
        "tokens_edit",
        "cross_box",
        "source_edit",
        "padding_list",
        "gen_combo",
        "gen_target",
        "dmodel_spin",
        "dk_spin",
        "dv_spin",
    ),
}


class MainWindow(QMainWindow):
    """The explorer. ``session`` is the document; ``editors`` and ``views`` are keyed by matrix and field name."""

    undo_action: QAction  # Edit ▸ Undo and Redo, made by build_standard_menus
    redo_action: QAction
    #: progressive start-up: every view shown has been drawn with its data (see is_constructed)
    constructed = Signal()

    def __init__(
        self,
        session: Session | None = None,
        path: str | Path | None = None,
        parent=None,
        *,
        progressive: bool = False,
    ):
        """progressive: the window is painted first (menus, editors, controls, every view's frame and title) and
        the heatmaps are drawn in over the next event-loop turns, the first of which imports pyqtgraph (``qkvgui``
        starts so); ``constructed`` is emitted when all are drawn and ``finish_construction()`` draws the rest at
        once. Otherwise (scripts, tests, ``qkvgui.show``) every view shown is drawn when the constructor returns."""
        super().__init__(parent)
        favour_the_gui_thread()  # workers parse and compute while this window stays responsive
        self._fill_after_paint = progressive
        self.session = session if session is not None else Session()
        self.last_message = ""
        self.resize(1280, 800)

        # controllers
        self.edits = EditController(self.session, self)
        self.undo_stack = self.edits.undo_stack
        self.scheduler = RecomputeScheduler(self.session, parent=self)
        self.document = DocumentController(self, self.session, self.edits, path, lambda: self.ask_unsaved())
        #: asks what to do with unsaved changes: returns "save", "discard" or "cancel" (tests replace it)
        self.ask_unsaved = self.document._ask_unsaved

        # panels
        self.controls = ControlsPanel(self.session, self.edits)
        self.editor_tabs = self.tabs = EditorTabs(self.session, self.edits)
        self.editors: dict[str, MatrixEditor] = self.editor_tabs.editors
        self.right_tabs = ViewsPanel(self.session, self.scheduler, hold=progressive)
        self.pipeline = self.right_tabs.pipeline
        self.views: dict[str, HeatmapView] = self.right_tabs.views
        self.inspector = make_inspector()
        self.inspection = InspectorController(self.session, self.right_tabs, self.inspector, self)
        self.figures = FigureController(self, self.right_tabs)
        # tabs built when first shown: the window appears without them
        self.add_tab(self._make_learn, "Learn", name="learn")  # fit W_Q, W_K to a drawn pattern
        self._model_tab: ModelTab | None = None
        self.add_tab(self._make_model_tab, "Model", name="model")  # every layer × head, head scores
        for panel, names in _CONTROL_ALIASES.items():
            for name in names:
                setattr(self, name, getattr(getattr(self, panel), name))
        self._assemble()
        self.layout_control = LayoutController(self)
        # a tab built when first shown has its heatmaps focusable at once (double-click, View ▸ Focus)
        self.right_tabs.tab_built.connect(lambda _tab: self.layout_control.hook_tab_views())
        self.menus = Menus(self)
        build_standard_menus(self, self.menus)
        build_view_menu(self, self.layout_control)
        install_undo_everywhere(self, self.undo_action, self.redo_action)
        self.document.add_matrix_file_actions(self.editors, self.editor_tabs.flush)

        # subscriptions, in one block
        for editor in self.editors.values():
            editor.message.connect(self.show_message)
        for source in (
            self.edits.refused,
            self.document.message,
            self.figures.message,
            self.scheduler.failed,
            self.inspection.message,
        ):
            source.connect(self.show_message)
        self.statusBar().addPermanentWidget(self.inspection.claim_label)  # "⚠ edited away from the preset"
        self.scheduler.busy.connect(lambda on: self.statusBar().showMessage("computing…") if on else None)
        self.scheduler.computed.connect(self._report_computed)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self.document.replaced.connect(self._on_document_replaced)
        self.document.before_save.append(lambda: self.session.set_extra("view", self.right_tabs.shown_tab()))
        self.pipeline.focus_requested.connect(self.focus_view)
        self.pipeline.filled.connect(self.constructed)
        for name, view in self.pipeline.views.items():
            view.cell_hovered.connect(lambda i, j, name=name: self._hovered(name, i, j))
            view.menu_hooks.append(self._view_menu)

        self.scheduler.compute_now()
        self._restore_layout()
        self.document.update_title()
        self._on_document_replaced()

    def _assemble(self) -> None:
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(4, 4, 4, 4)
        left_layout.addWidget(self.controls)
        left_layout.addWidget(self.editor_tabs, 1)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(self.right_tabs)
        self.right_splitter.addWidget(self.inspector)
        self.right_splitter.setStretchFactor(0, 1)
        self.main_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.main_splitter.addWidget(left)
        self.main_splitter.addWidget(self.right_splitter)
        self.main_splitter.setStretchFactor(1, 1)
        self.setCentralWidget(self.main_splitter)

    # ---- progressive start-up --------------------------------------------------------------------------------
    def is_constructed(self) -> bool:
        """Whether every view shown has its heatmap drawn (always, unless made with progressive=True)."""
        return not self.pipeline.filling()

    def finish_construction(self) -> None:
        """Draw every view still waiting to be drawn, now (a progressive window, for a script or a test)."""
        self._fill_after_paint = False
        self.pipeline.finish()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        if self._fill_after_paint:  # the window is on screen: draw the heatmaps in, from the next turn on
            self._fill_after_paint = False
            QTimer.singleShot(0, self.pipeline.fill)

    # ---- the tabs built when first shown ---------------------------------------------------------------------
    def _make_learn(self) -> QWidget:
        from qkvgui.ui.learn_panel import LearnPanel

        learn = LearnPanel(self.session, self.undo_stack)
        self.scheduler.computed.connect(learn.show_results)
        learn.message.connect(self.show_message)
        learn.show_results(self.results)
        return learn

    def _make_model_tab(self) -> QWidget:
        from qkvgui.ui.panels.model import ModelPanel, ModelTab

        panel = ModelPanel()
        self._model_tab = ModelTab(self, panel)
        self._model_tab.message.connect(self.show_message)
        return panel

    @property
    def circuits(self) -> CircuitsPanel:
        """The "QK and OV circuits" tab (built now if it has not been shown yet)."""
        return self.right_tabs.circuits

    @property
    def learn(self) -> LearnPanel:
        """The "Learn" tab: fit W_Q, W_K to a drawn pattern (built now if it has not been shown yet)."""
        return self.tab("learn")  # type: ignore[return-value]

    @property
    def model_tab(self) -> ModelTab:
        """The "Model" tab's controller (its widget is ``model_tab.panel``; built now if it was not)."""
        self.tab("model")
        assert self._model_tab is not None
        return self._model_tab

    # ---- places for everyone's additions -------------------------------------------------------------------
    def add_tab(
        self,
        widget: QWidget | TabFactory,
        title: str,
        views: dict[str, HeatmapView] | None = None,
        name: str | None = None,
    ) -> int:
        """Add a tab beside "Attention, step by step"; its heatmaps join ``views`` (export, focus, scripts), and
        with a ``name`` a session saved while it is shown opens on it again. A widget with ``close_views()`` has it
        called when the window closes. ``widget`` may be a factory, called when the tab is first shown (or
        ``tab(name)`` asks for it), returning the widget or (widget, its heatmaps): what is not shown is not built.
        """
        return self.right_tabs.add_view_tab(widget, title, views, name)

    def tab(self, name: str) -> QWidget:
        """The tab called name ("pipeline", "circuits", "learn", "model" or an added one), built now if needed."""
        return self.right_tabs.page(name)

    def add_editor_tab(self, widget: QWidget, title: str) -> int:
        """Add a tab beside "Tokens & X" and "Weights" on the left."""
        return self.editor_tabs.addTab(widget, title)

    def menu(self, title: str) -> QMenu:
        """The menu called title ("File", "Edit", "View", "Presets", "Help", or a new one, placed before Help)."""
        return self.menus.menu(title)

    # ---- focus and context ---------------------------------------------------------------------------------
    def focus_view(self, name: str | None) -> None:
        """Bring a view into the large pane by name (after ``view.``: "weights", "weights.head3"...) while the rest
        stays as context; None or "" goes back to every step. Also: double-click, View ▸ Focus, Escape."""
        self.layout_control.focus_view(name)

    def _hovered(self, name: str, i: int, j: int) -> None:
        """The status line names the cell under the mouse in full: a view stays readable when labels are thinned."""
        if i >= 0:
            self.layout_control.last_view = name
            self.statusBar().showMessage(f"{name}: {self.views[name].describe_cell(i, j)}", 6000)

    def _view_menu(self, view: HeatmapView, menu: QMenu) -> None:
        name = view.objectName().removeprefix("view.")
        focused = self.pipeline.focused() == name
        menu.addAction(
            "Back to every step  (Esc)" if focused else "Focus this view",
            lambda: self.focus_view(None if focused else name),
        )

    # ---- the document, for scripts and tests ---------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return self.document.path

    @property
    def result(self) -> AttentionResult | None:
        """The selected layer's result."""
        return self.right_tabs.result

    @property
    def results(self) -> list[AttentionResult]:
        """One result per layer."""
        return self.right_tabs.results

    def edit_block(self, name: str, row: int, col: int, block) -> bool:
        return self.edits.edit_block(name, row, col, block)

    def replace_session(self, new: Session, path: Path | None) -> None:
        self.document.replace_session(new, path)

    def new_session(self) -> None:
        self.document.new_session()

    def open_path(self, path: str | Path, ask: bool = True) -> bool:
        opened = self.document.open_path(path, ask, wait=True)  # scripts and tests get the outcome
        self.editor_tabs.flush()  # ... and every editor showing it
        return opened

    def open_preset(self, name: str) -> bool:
        return self.document.open_preset(name)

    def save(self) -> bool:
        return self.document.save()

    def save_to(self, path: str | Path) -> bool:
        return self.document.save_to(path)

    def maybe_keep_changes(self) -> bool:
        return self.document.maybe_keep_changes()

    def autosave(self) -> Path | None:
        return self.document.autosave()

    def show_imported(self, session: Session) -> None:
        self.document.show_imported(session)

    def reset_to_model(self) -> bool:
        return self.document.reset_to_model(wait=True)

    def import_matrix(self, name: str, path: str | Path) -> bool:
        return self.document.import_matrix(name, path, wait=True)

    def export_matrix(self, name: str, path: str | Path) -> bool:
        return self.document.export_matrix(name, path)

    def figure_names(self) -> list[str]:
        return self.figures.figure_names()

    def export_figure(self, name: str, path: str | Path, scale: float = 2.0) -> bool:
        return self.figures.export_figure(name, path, scale)

    def show_editor(self, name: str) -> MatrixEditor:
        """Bring a matrix editor into view (switching to its tab) and return it."""
        return self.editor_tabs.show_editor(name)

    def _generate(self) -> None:  # the Fill button, kept for older scripts
        self.editor_tabs.generate()

    # ---- messages, layout, closing -------------------------------------------------------------------------
    def show_message(self, text: str) -> None:
        text = one_line(text)  # a message quoting a file's content stays one readable line
        self.statusBar().showMessage(text, 8000)
        self.last_message = text

    def _report_computed(self, results: list[AttentionResult]) -> None:
        result = self.result
        if result is None:
            return
        ms = self.scheduler.last_compute_seconds * 1e3
        dead = dead_rows_text(result.dead_rows.tolist(), self.session.tokens)
        self.statusBar().showMessage(f"computed in {ms:.1f} ms{'; ' + dead if dead else ''}", 4000)

    def _on_clean_changed(self, clean: bool) -> None:
        self.setWindowModified(not clean)

    def _on_document_replaced(self) -> None:
        """A new document says what it demonstrates and brings back the tab it was saved with."""
        self.inspection.show_description()
        self.right_tabs.show_tab(self.session.extra.get("view"))

    def _restore_layout(self) -> None:
        self.layout_control.restore()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self.document.maybe_keep_changes():
            event.ignore()
            return
        self.document.closing()
        self.layout_control.save()
        self.scheduler.shutdown()
        self.figures.close_dialogs()
        self.right_tabs.close_views()  # graphics views alive at interpreter exit can crash Python 3.11
        for view in self.findChildren(HeatmapView):  # and any other tab's, closed or not (idempotent)
            view.close_views()
        super().closeEvent(event)
