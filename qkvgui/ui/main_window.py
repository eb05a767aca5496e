"""The explorer window: matrix editors on the left, every step of attention on the right, an inspector below.

One walk per edit: an editor requests an edit, an undo command applies it to the session, the session announces
it, the scheduler recomputes, and each view draws its field of the result.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QSizeF, QStandardPaths, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from qkvgui.core import AttentionResult, QkvError
from qkvgui.core.presets import make_preset, preset_names
from qkvgui.io.figures import figure_to_image
from qkvgui.io.matrix_file import read_matrix, write_matrix
from qkvgui.session import GENERATORS, MATRICES, PER_HEAD, Session
from qkvgui.ui.circuits_panel import CircuitsPanel
from qkvgui.ui.commands import BlockEdit, StateChange
from qkvgui.ui.explain import explain_cell, explain_output_row, explain_score, view_formula
from qkvgui.ui.figure_export import copy_view_to_clipboard, export_pipeline, export_view, pipeline_panels
from qkvgui.ui.import_dialog import ImportLayerDialog
from qkvgui.ui.learn_panel import LearnPanel
from qkvgui.ui.matrix_editor import MatrixEditor
from qkvgui.ui.model_panel import install_model_tab
from qkvgui.ui.pipeline import SCORE_VIEWS, SPECS, PipelineView, concat_labels, dim_labels
from qkvgui.ui.scheduler import RecomputeScheduler

SCALE_CHOICES = (("1/√d_k", "sqrt"), ("none (1)", "none"), ("custom", "custom"))
EDITOR_TIPS = {
    "X": "X: one row per token, the residual stream the layer reads. Queries (and keys, in self-attention) come "
         "from here.",
    "X_kv": "X_kv: the source sequence of cross-attention; keys and values come from here.",
    "W_Q": "W_Q (selected head): maps a token's row of X to its query, what it is looking for.",
    "W_K": "W_K (selected head): maps a token's row to its key, what it can be found by.",
    "W_V": "W_V (selected head): maps a token's row to its value, what it hands over when attended to.",
    "W_O": "W_O: maps the concatenated head outputs back to the residual stream (one block of rows per head).",
}


SESSION_FILTER = "qkvgui sessions (*.qkv)"
MAX_RECENT = 8
AUTOSAVE_SECONDS = 30


def autosave_path() -> Path:
    """Where the unsaved work of a running window is kept, for recovery after a crash."""
    folder = os.environ.get("QKVGUI_AUTOSAVE_DIR") or QStandardPaths.writableLocation(
        QStandardPaths.StandardLocation.AppDataLocation) or str(Path.home() / ".qkvgui")
    return Path(folder) / "autosave.qkv"


def _quiet() -> bool:
    """Tests and headless runs set QKVGUI_NO_SETTINGS: no settings file, no modal dialogs."""
    return bool(os.environ.get("QKVGUI_NO_SETTINGS"))


def _settings() -> QSettings | None:
    if _quiet():
        return None
    return QSettings("qkvgui", "qkvgui")


class MainWindow(QMainWindow):
    """The explorer. ``session`` is the document; ``editors`` and ``views`` are keyed by matrix and field name."""

    def __init__(self, session: Session | None = None, path: str | Path | None = None, parent=None):
        super().__init__(parent)
        self.session = session if session is not None else Session()
        self.path: Path | None = Path(path) if path else None
        #: asks what to do with unsaved changes: returns "save", "discard" or "cancel" (tests replace it)
        self.ask_unsaved = self._ask_unsaved
        self.undo_stack = QUndoStack(self)
        self.result: AttentionResult | None = None  # the selected layer's result
        self.results: list[AttentionResult] = []  # one per layer
        self._pinned: tuple[str, int, int] | None = None
        self.last_message = ""
        self._updating = False  # True while controls are set from the session, so they do not echo back
        self.setWindowTitle("qkvgui")
        self.resize(1280, 800)

        self.editors: dict[str, MatrixEditor] = {}
        for name in MATRICES:
            editor = MatrixEditor(name)
            editor.setObjectName(f"editor.{name}")
            editor.setToolTip(EDITOR_TIPS[name])
            editor.edit_requested.connect(lambda r, c, block, name=name: self.edit_block(name, r, c, block))
            editor.message.connect(self.show_message)
            editor.menu.addSeparator()
            editor.menu.addAction("Import matrix from file…", lambda name=name: self.import_matrix_dialog(name))
            editor.menu.addAction("Export matrix to file…", lambda name=name: self.export_matrix_dialog(name))
            self.editors[name] = editor

        self.pipeline = PipelineView()
        self.views = self.pipeline.views
        self.inspector = QTextBrowser()
        self.inspector.setObjectName("inspector")
        self.inspector.setPlaceholderText("Hover a cell of scores, scaled, masked or weights to see how it was "
                                          "made; hover a head output row to see its weighted sum of V rows.")

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(4, 4, 4, 4)
        left_layout.addWidget(self._build_controls())
        tabs = QTabWidget()
        tabs.addTab(self._build_input_tab(), "Tokens && X")
        tabs.addTab(self._build_weights_tab(), "Weights")
        self.tabs = tabs
        left_layout.addWidget(tabs, 1)

        self.circuits = CircuitsPanel()
        self.views.update(self.circuits.views)
        self.right_tabs = QTabWidget()
        self.right_tabs.addTab(self.pipeline, "Attention, step by step")
        self.right_tabs.addTab(self.circuits, "QK and OV circuits")
        self.learn = LearnPanel(self.session, self.undo_stack)  # the Learn tab: fit W_Q, W_K to a drawn pattern
        self.right_tabs.addTab(self.learn, "Learn")
        self.right_tabs.currentChanged.connect(lambda _: self._redraw_circuits())
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.right_tabs)
        right.addWidget(self.inspector)
        right.setStretchFactor(0, 1)
        right.setSizes([600, 170])  # room for a score's whole explanation
        self.main_splitter = QSplitter(Qt.Horizontal)
        self.main_splitter.addWidget(left)
        self.main_splitter.addWidget(right)
        self.main_splitter.setStretchFactor(1, 1)
        self.main_splitter.setSizes([420, 860])
        self.right_splitter = right
        self.setCentralWidget(self.main_splitter)
        self._build_menus()

        self.scheduler = RecomputeScheduler(self.session, parent=self)
        # subscriptions, in one block
        events = self.session.events
        events.matrix.connect(self._on_matrix_changed)
        for signal in (events.head, events.layer):
            signal.connect(self._on_selection_changed)
        for signal in (events.tokens, events.source_tokens, events.shape, events.settings, events.layers,
                       events.replaced):
            signal.connect(self._refresh_all)
        self.scheduler.computed.connect(self._on_computed)
        self.scheduler.computed.connect(self.learn.show_results)
        self.learn.message.connect(self.show_message)
        self.scheduler.failed.connect(self.show_message)
        self.scheduler.busy.connect(lambda on: self.statusBar().showMessage("computing…") if on else None)
        for name in SCORE_VIEWS:
            self.views[name].cell_hovered.connect(lambda i, j, name=name: self._inspect_cell(name, i, j, False))
            self.views[name].cell_clicked.connect(lambda i, j, name=name: self._inspect_cell(name, i, j, True))
        self.views["head_outputs"].cell_hovered.connect(lambda i, j: self._inspect_row(i))
        self.views["head_outputs"].cell_clicked.connect(lambda i, j: self._inspect_row(i, pin=True))
        for name in ("q", "k", "v", "concat", "output", "residual"):
            self.views[name].cell_hovered.connect(lambda i, j, name=name: self._inspect_value(name, i, j))
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)

        self._autosave = QTimer(self, interval=AUTOSAVE_SECONDS * 1000)
        self._autosave.timeout.connect(self.autosave)
        self._autosave.start()

        self.model_tab = install_model_tab(self)  # the "Model" tab: every layer × head, head scores
        self._refresh_all()
        self.scheduler.compute_now()
        self._restore_geometry()
        self._update_title()
        self._show_description()
        self._show_saved_view()

    # ---- building ----------------------------------------------------------------------------------------
    def _build_controls(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        form.setContentsMargins(0, 0, 0, 0)
        self.causal_box = QCheckBox("causal mask (a token sees only itself and earlier tokens)")
        self.causal_box.setObjectName("control.causal")
        self.causal_box.toggled.connect(lambda on: self._change(f"causal {'on' if on else 'off'}",
                                                                self.session.set_causal, on))
        form.addRow(self.causal_box)
        scale_row = QHBoxLayout()
        self.scale_combo = QComboBox()
        self.scale_combo.setObjectName("control.scale")
        for text, mode in SCALE_CHOICES:
            self.scale_combo.addItem(text, mode)
        self.scale_spin = QDoubleSpinBox(decimals=4, minimum=-1e6, maximum=1e6, singleStep=0.05)
        self.scale_spin.setObjectName("control.custom_scale")
        self.scale_spin.setKeyboardTracking(False)
        self.scale_combo.currentIndexChanged.connect(self._scale_edited)
        self.scale_spin.valueChanged.connect(self._scale_edited)
        scale_row.addWidget(self.scale_combo)
        scale_row.addWidget(self.scale_spin)
        form.addRow("scale scores by", scale_row)
        head_row = QHBoxLayout()
        self.head_spin = QSpinBox(minimum=1)
        self.head_spin.setObjectName("control.head")
        self.head_spin.setToolTip("The head shown in the per-head editors and views.")
        self.head_spin.valueChanged.connect(self._head_selected)
        head_row.addWidget(self.head_spin)
        head_row.addWidget(QLabel("of"))
        self.heads_spin = QSpinBox(minimum=1, maximum=64)
        self.heads_spin.setObjectName("control.heads")
        self.heads_spin.setKeyboardTracking(False)
        self.heads_spin.valueChanged.connect(lambda v: self._resize("number of heads", n_heads=v))
        head_row.addWidget(self.heads_spin)
        self.ablate_box = QCheckBox("switch this head off")
        self.ablate_box.setObjectName("control.ablate")
        self.ablate_box.setToolTip("Ablate the selected head: its output is set to zero, so it writes nothing into "
                                   "the residual stream. The pattern stays visible.")
        self.ablate_box.toggled.connect(self._ablate_toggled)
        head_row.addWidget(self.ablate_box)
        head_row.addStretch(1)
        form.addRow("head", head_row)
        layer_row = QHBoxLayout()
        self.layer_spin = QSpinBox(minimum=1)
        self.layer_spin.setObjectName("control.layer")
        self.layer_spin.setToolTip("The layer shown in the editors and views. Layer ℓ reads the residual stream "
                                   "after layer ℓ − 1.")
        self.layer_spin.valueChanged.connect(self._layer_selected)
        self.layers_label = QLabel()
        add_layer = QPushButton("Add layer")
        add_layer.setObjectName("control.add_layer")
        add_layer.clicked.connect(lambda: self._change("add a layer", self.session.add_layer,
                                                       seed=self.undo_stack.index() + 1))
        remove_layer = QPushButton("Remove layer")
        remove_layer.setObjectName("control.remove_layer")
        remove_layer.clicked.connect(lambda: self._change("remove a layer", self.session.remove_layer))
        for w in (self.layer_spin, self.layers_label, add_layer, remove_layer):
            layer_row.addWidget(w)
        layer_row.addStretch(1)
        form.addRow("layer", layer_row)
        return box

    def _build_input_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        form = QFormLayout()
        self.tokens_edit = QLineEdit()
        self.tokens_edit.setObjectName("control.tokens")
        self.tokens_edit.setToolTip("The tokens, separated by spaces. Press Enter to apply; X gains or loses rows.")
        self.tokens_edit.editingFinished.connect(lambda: self._tokens_edited(False))
        form.addRow("tokens", self.tokens_edit)
        self.cross_box = QCheckBox("cross-attention: keys and values from a source sequence")
        self.cross_box.setObjectName("control.cross")
        self.cross_box.toggled.connect(lambda on: self._change(f"cross-attention {'on' if on else 'off'}",
                                                               self.session.set_cross, on))
        form.addRow(self.cross_box)
        self.source_edit = QLineEdit()
        self.source_edit.setObjectName("control.source_tokens")
        self.source_edit.setToolTip("The source tokens of cross-attention, separated by spaces; Enter applies.")
        self.source_edit.editingFinished.connect(lambda: self._tokens_edited(True))
        form.addRow("source", self.source_edit)
        self.padding_list = QListWidget()
        self.padding_list.setObjectName("control.padding")
        self.padding_list.setFlow(QListWidget.LeftToRight)
        self.padding_list.setWrapping(True)
        self.padding_list.setMaximumHeight(52)
        self.padding_list.setToolTip("Tick a key token to mark it as padding: no query may attend to it.")
        self.padding_list.itemChanged.connect(self._padding_edited)
        form.addRow("padding", self.padding_list)
        gen_row = QHBoxLayout()
        self.gen_combo = QComboBox()
        self.gen_combo.addItems(GENERATORS)
        self.gen_combo.setObjectName("control.generator")
        self.gen_target = QComboBox()
        self.gen_target.addItems(["X", "X_kv"])
        gen_button = QPushButton("Fill")
        gen_button.setObjectName("control.generate")
        gen_button.setToolTip("Fill X (or X_kv) with one-hot token and position features, sinusoidal positions, "
                              "seeded random numbers or zeros.")
        gen_button.clicked.connect(self._generate)
        self.dmodel_spin = QSpinBox(minimum=1, maximum=4096)
        self.dmodel_spin.setObjectName("control.d_model")
        self.dmodel_spin.setKeyboardTracking(False)
        self.dmodel_spin.valueChanged.connect(lambda v: self._resize("d_model", d_model=v))
        gen_row.addWidget(self.gen_target)
        gen_row.addWidget(self.gen_combo)
        gen_row.addWidget(gen_button)
        gen_row.addStretch(1)
        gen_row.addWidget(QLabel("d_model"))
        gen_row.addWidget(self.dmodel_spin)
        form.addRow("fill", gen_row)
        layout.addLayout(form)
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.editors["X"])
        split.addWidget(self.editors["X_kv"])
        layout.addWidget(split, 1)
        return tab

    def _build_weights_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        dims = QHBoxLayout()
        self.dk_spin = QSpinBox(minimum=1, maximum=1024)
        self.dk_spin.setObjectName("control.d_k")
        self.dk_spin.setKeyboardTracking(False)
        self.dk_spin.valueChanged.connect(lambda v: self._resize("d_k", d_k=v))
        self.dv_spin = QSpinBox(minimum=1, maximum=1024)
        self.dv_spin.setObjectName("control.d_v")
        self.dv_spin.setKeyboardTracking(False)
        self.dv_spin.valueChanged.connect(lambda v: self._resize("d_v", d_v=v))
        dims.addWidget(QLabel("d_k"))
        dims.addWidget(self.dk_spin)
        dims.addWidget(QLabel("d_v"))
        dims.addWidget(self.dv_spin)
        randomize = QPushButton("Randomize all weights")
        randomize.setObjectName("control.randomize")
        randomize.clicked.connect(self._randomize)
        dims.addStretch(1)
        dims.addWidget(randomize)
        layout.addLayout(dims)
        split = QSplitter(Qt.Vertical)
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            split.addWidget(self.editors[name])
        layout.addWidget(split, 1)
        return tab

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(QAction("&New", self, shortcut=QKeySequence.New, triggered=self.new_session))
        file_menu.addAction(QAction("&Open…", self, shortcut=QKeySequence.Open, triggered=self.open_dialog))
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file_menu.addAction(QAction("&Save", self, shortcut=QKeySequence.Save, triggered=self.save))
        file_menu.addAction(QAction("Save &As…", self, shortcut=QKeySequence.SaveAs, triggered=self.save_as))
        file_menu.addSeparator()
        file_menu.addAction(QAction("&Import model…", self, shortcut=QKeySequence("Ctrl+I"),
                                    triggered=self.import_layer_dialog))
        self.reset_action = QAction("Reset to &model weights", self, triggered=self.reset_to_model)
        self.reset_action.setObjectName("action.reset_to_model")
        file_menu.addAction(self.reset_action)
        file_menu.addSeparator()
        file_menu.addAction(QAction("&Export figure…", self, shortcut=QKeySequence("Ctrl+E"),
                                    triggered=self.export_figure_dialog))
        file_menu.addAction(QAction("&Copy figure to clipboard…", self, shortcut=QKeySequence("Ctrl+Shift+C"),
                                    triggered=self.copy_figure_dialog))
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.Quit, triggered=self.close)
        file_menu.addAction(quit_action)
        edit_menu = self.menuBar().addMenu("&Edit")
        undo = self.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcuts([QKeySequence.Undo])
        redo = self.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence.Redo])
        edit_menu.addAction(undo)
        edit_menu.addAction(redo)
        self.undo_action, self.redo_action = undo, redo
        presets_menu = self.menuBar().addMenu("&Presets")
        for name in preset_names():
            preset = make_preset(name)
            action = presets_menu.addAction(f"{preset.title}  ({name})", lambda n=name: self.open_preset(n))
            action.setToolTip(preset.description)
        presets_menu.setToolTipsVisible(True)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(QAction("&About qkvgui", self, triggered=self._about))

    # ---- edits (each one undoable) -----------------------------------------------------------------------
    def edit_block(self, name: str, row: int, col: int, block) -> bool:
        """Write a block into a matrix (the selected head's slice for W_Q, W_K, W_V) as one undoable edit."""
        head = self.session.head if name in PER_HEAD else None
        try:
            old = self.session.set_block(name, row, col, block, head=head)
        except QkvError as e:
            self.show_message(str(e))
            return False
        r, c = block.shape
        where = f" (head {head + 1})" if head is not None else ""
        text = f"edit {name}{where} [{row}, {col}]" if r * c == 1 else f"edit {r} × {c} cells of {name}{where}"
        self.undo_stack.push(BlockEdit(self.session, name, head, row, col, block, old, text))
        return True

    def _change(self, text: str, setter, *args, **kwargs) -> bool:
        """Apply a session change as one undoable step; a refused change shows why and leaves all as it was."""
        if self._updating:
            return False
        before = self.session.state()
        try:
            setter(*args, **kwargs)
        except QkvError as e:
            self.show_message(str(e))
            self._refresh_controls()
            return False
        self.undo_stack.push(StateChange(self.session, before, self.session.state(), text))
        return True

    def _resize(self, what: str, **sizes) -> None:
        self._change(f"change {what}", self.session.resize, **sizes)

    def _tokens_edited(self, source: bool) -> None:
        edit = self.source_edit if source else self.tokens_edit
        tokens = edit.text().split()
        current = self.session.source_tokens if source else self.session.tokens
        if tokens != current:
            self._change("edit source tokens" if source else "edit tokens", self.session.set_tokens, tokens,
                         source=source)

    def _padding_edited(self, _item=None) -> None:
        if self._updating:
            return
        mask = [self.padding_list.item(i).checkState() == Qt.Checked for i in range(self.padding_list.count())]
        self._change("change padding", self.session.set_padding, mask)

    def _scale_edited(self, *_):
        mode = self.scale_combo.currentData()
        self.scale_spin.setEnabled(mode == "custom")
        value = self.scale_spin.value() if mode == "custom" else None
        if mode != self.session.scale_mode or (value is not None and value != self.session.custom_scale):
            self._change("change scale", self.session.set_scale, mode, value)

    def _generate(self) -> None:
        target, kind = self.gen_target.currentText(), self.gen_combo.currentText()
        seed = self.undo_stack.index() + 1
        self._change(f"fill {target} with {kind}", self.session.generate, target, kind, seed=seed)

    def _randomize(self) -> None:
        self._change("randomize weights", self.session.randomize_weights, seed=self.undo_stack.index() + 1)

    def _ablate_toggled(self, off: bool) -> None:
        head = self.session.head
        self._change(f"switch head {head + 1} {'off' if off else 'on'}", self.session.set_ablated, head, off)

    def _layer_selected(self, value: int) -> None:
        if not self._updating and value - 1 != self.session.layer:
            self.session.set_layer(value - 1)

    def _head_selected(self, value: int) -> None:
        if not self._updating and value - 1 != self.session.head:
            self.session.set_head(value - 1)

    # ---- real model layers -------------------------------------------------------------------------------
    def import_layer_dialog(self) -> None:
        if not self.maybe_keep_changes():
            return
        source = self.session.extra.get("checkpoint") or {}
        dialog = ImportLayerDialog(self, source.get("path", ""), source.get("text", ""), source.get("layer"))
        dialog.imported.connect(self.show_imported)
        dialog.exec()

    def show_imported(self, session: Session) -> None:
        """Open an imported model layer as a fresh, unsaved session."""
        self.replace_session(session, None)
        self.undo_stack.resetClean()  # an import is new work, not a saved file
        self.setWindowModified(True)

    def reset_to_model(self) -> bool:
        """Bring the imported layer's matrices back to the checkpoint's (one undo step)."""
        source = self.session.extra.get("checkpoint")
        if not source:
            self.show_message("This session was not imported from a model: there are no model weights to reset to.")
            return False
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            fresh = Session.from_checkpoint(source["path"], source.get("layer"), source["text"], ids=source.get("ids"))
        except (QkvError, ImportError) as e:
            self.show_message(f"Could not reload the model: {e}")
            return False
        finally:
            QApplication.restoreOverrideCursor()
        return self._change("reset to model weights", self.session.set_state, fresh.state())

    # ---- figures -------------------------------------------------------------------------------------------
    def figure_names(self) -> list[str]:
        """What can be exported: the whole pipeline, then every view by its name."""
        return ["pipeline", *self.views]

    def export_figure(self, name: str, path: str | Path, scale: float = 2.0) -> bool:
        """Write a view (or 'pipeline', the whole figure) as PNG, SVG or PDF, chosen by the file's suffix."""
        try:
            if name == "pipeline":
                written = export_pipeline(self.pipeline, path, None, scale)
            else:
                written = export_view(self.views[name], path, None, scale)
        except (ValueError, OSError) as e:
            self.show_message(f"Could not export {name}: {e}")
            return False
        self.show_message(f"wrote {written}")
        return True

    def _pick_figure(self, verb: str) -> str | None:
        name, ok = QInputDialog.getItem(self, f"{verb} figure", "Which figure?", self.figure_names(), 0, False)
        return name if ok else None

    def export_figure_dialog(self) -> None:
        name = self._pick_figure("Export")
        if name is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, f"Export {name}", f"{name}.png",
                                              "PNG image (*.png);;SVG vector (*.svg);;PDF document (*.pdf)")
        if path:
            self.export_figure(name, path)

    def copy_figure_dialog(self) -> None:
        name = self._pick_figure("Copy")
        if name is None:
            return
        if name == "pipeline":
            QApplication.clipboard().setImage(figure_to_image(pipeline_panels(self.pipeline),
                                                              QSizeF(self.pipeline.size()), 2.0))
        else:
            copy_view_to_clipboard(self.views[name])
        self.show_message(f"copied the {name} figure")

    # ---- single matrices in and out -----------------------------------------------------------------------
    def import_matrix(self, name: str, path: str | Path) -> bool:
        """Replace the matrix shown in an editor (one head's slice for W_Q, W_K, W_V) with a file's, undoably."""
        target = self.editors[name].model.matrix()
        try:
            block = read_matrix(path)
        except QkvError as e:
            self.show_message(str(e))
            return False
        if block.shape != target.shape:
            where = f"{name} (head {self.session.head + 1})" if name in PER_HEAD else name
            self.show_message(f"{Path(path).name} holds {block.shape[0]} × {block.shape[1]} numbers but {where} is "
                              f"{target.shape[0]} × {target.shape[1]}: resize one of them first.")
            return False
        return self.edit_block(name, 0, 0, block)

    def export_matrix(self, name: str, path: str | Path) -> bool:
        try:
            write_matrix(path, self.editors[name].model.matrix())
        except (QkvError, OSError) as e:
            self.show_message(f"Could not write {path}: {e}")
            return False
        self.show_message(f"wrote {path}")
        return True

    def import_matrix_dialog(self, name: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Import {name}", "", "Matrices (*.npy *.csv)")
        if path:
            self.import_matrix(name, path)

    def export_matrix_dialog(self, name: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {name}", f"{name}.npy", "Matrices (*.npy *.csv)")
        if path:
            self.export_matrix(name, path)

    # ---- following the session ---------------------------------------------------------------------------
    def _on_matrix_changed(self, name: str) -> None:
        if name in self.editors:
            self._refresh_editor(name)
        else:  # a bias: no editor of its own
            self._refresh_all()

    def _on_selection_changed(self, _index: int) -> None:
        # a selection changes what is shown, never the result: pick the selected layer's from the last computation
        for name in (*PER_HEAD, "W_O"):
            self._refresh_editor(name)
        self._refresh_controls()
        self._pick_result()
        self._redraw()

    def _refresh_all(self) -> None:
        for name in MATRICES:
            self._refresh_editor(name)
        self._refresh_controls()

    def _refresh_editor(self, name: str) -> None:
        s = self.session
        m = s.matrix(name)
        editor = self.editors[name]
        features = s.features  # the residual stream's columns: d0, d1, … or a preset's feature names
        if name == "X":
            editor.set_matrix(m, s.tokens, features)
        elif name == "X_kv":
            editor.set_matrix(m, s.source_tokens, features)
            editor.setVisible(s.cross)
        elif name == "W_O":
            editor.set_matrix(m, concat_labels(s.n_heads, s.d_v), features)
            editor.set_title(f"W_O (layer {s.layer + 1})" if s.n_layers > 1 else "W_O")
        else:
            editor.set_matrix(m[s.head], features, dim_labels(m.shape[2]))
            layer = f"layer {s.layer + 1}, " if s.n_layers > 1 else ""
            editor.set_title(f"{name} ({layer}head {s.head + 1})")

    def _refresh_controls(self) -> None:
        s = self.session
        self._updating = True
        try:
            self.causal_box.setChecked(s.causal)
            self.cross_box.setChecked(s.cross)
            self.scale_combo.setCurrentIndex([m for _, m in SCALE_CHOICES].index(s.scale_mode))
            self.scale_spin.setValue(s.custom_scale)
            self.scale_spin.setEnabled(s.scale_mode == "custom")
            self.heads_spin.setValue(s.n_heads)
            self.head_spin.setMaximum(s.n_heads)
            self.head_spin.setValue(s.head + 1)
            self.ablate_box.setChecked(bool(s.ablated()[s.head]))
            self.layer_spin.setMaximum(s.n_layers)
            self.layer_spin.setValue(s.layer + 1)
            self.layers_label.setText(f"of {s.n_layers}")
            self.dmodel_spin.setValue(s.d_model)
            self.dk_spin.setValue(s.d_k)
            self.dv_spin.setValue(s.d_v)
            self.tokens_edit.setText(" ".join(s.tokens))
            self.source_edit.setText(" ".join(s.source_tokens))
            self.source_edit.setEnabled(s.cross)
            self.editors["X_kv"].setVisible(s.cross)
            self.padding_list.clear()
            for token, pad in zip(s.key_tokens, s.key_padding, strict=True):
                item = QListWidgetItem(token)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if pad else Qt.Unchecked)
                self.padding_list.addItem(item)
        finally:
            self._updating = False

    def _on_computed(self, results: list[AttentionResult]) -> None:
        self.results = results
        self._pick_result()
        self._redraw()
        result = self.result
        ms = self.scheduler.last_compute_seconds * 1e3
        dead = f"; query rows {list(result.dead_rows)} see no key and take nothing" if len(result.dead_rows) else ""
        self.statusBar().showMessage(f"computed in {ms:.1f} ms{dead}", 4000)

    def _pick_result(self) -> None:
        """The selected layer's result, when the results on hand are for this many layers."""
        layer = self.session.layer
        self.result = self.results[layer] if layer < len(self.results) else None

    def _redraw(self) -> None:
        if self.result is None or self.result.n_heads != self.session.n_heads:
            return
        s = self.session
        if not self.scheduler.prepare_head(self.results, s.layer, s.head):
            self.statusBar().showMessage(f"computing head {s.head + 1}…")
            return  # drawn when the worker has it (computed is emitted again)
        self.pipeline.show_result(self.result, s.head, s.tokens, s.key_tokens, s.cross, s.features,
                                  layer=s.layer if s.n_layers > 1 else None)
        self.pipeline.show_residuals(self.results, s.tokens, s.features)
        self._redraw_circuits()
        if self._pinned is not None:
            kind, i, j = self._pinned
            if kind == "row":
                self._inspect_row(i)
            else:
                self._inspect_cell(kind, i, j, False)

    def _redraw_circuits(self) -> None:
        """The circuits tab follows every edit, but only while it is shown."""
        if self.right_tabs.currentWidget() is self.circuits and self.result is not None:
            layer = self.session.layer
            x_in = self.results[layer - 1].residual if 0 < layer <= len(self.results) else None
            self.circuits.show_session(self.session, self.result, x_in)

    # ---- linked inspection -------------------------------------------------------------------------------
    def _inspect_cell(self, view: str, i: int, j: int, pin: bool) -> None:
        r = self.result
        if pin:
            self._pinned = (view, i, j) if i >= 0 else None
        if i < 0 or r is None or i >= r.n_q or j >= r.n_k or not r.head_ready(self.session.head):
            if self._pinned is not None and not pin:
                kind, pi, pj = self._pinned
                if kind != "row":
                    self._inspect_cell(kind, pi, pj, False)
                return
            self._clear_highlights()
            return
        head = self.session.head
        for name in SCORE_VIEWS:
            self.views[name].highlight(cell=(i, j))
        self.views["q"].highlight(rows=[i])
        self.views["k"].highlight(rows=[j])
        self.views["v"].highlight()
        self.views["head_outputs"].highlight()
        header = f"<b>{view_formula(view, r)}</b><br>{SPECS[view].tip}<br>"
        self.inspector.setHtml(header + explain_score(r, head, i, j, self.session.tokens, self.session.key_tokens))

    def _inspect_row(self, i: int, pin: bool = False) -> None:
        r = self.result
        if pin:
            self._pinned = ("row", i, -1) if i >= 0 else None
        if i < 0 or r is None or i >= r.n_q or not r.head_ready(self.session.head):
            return
        head = self.session.head
        visible_keys = [int(j) for j in (r.head(head).weights[i] > 0).nonzero()[0]]
        self.views["weights"].highlight(rows=[i])
        self.views["head_outputs"].highlight(rows=[i])
        self.views["v"].highlight(rows=visible_keys)
        self.inspector.setHtml(explain_output_row(r, head, i, self.session.tokens, self.session.key_tokens))

    def _inspect_value(self, name: str, i: int, j: int) -> None:
        """Hovering Q, K, V, concat, output or residual: the formula with shapes, what a row means, the value."""
        view = self.views[name]
        if i < 0 or self.result is None:
            return
        data = view.data()
        if i >= data.shape[0] or j >= data.shape[1]:
            return
        rows, cols = view.row_labels(), view.col_labels()
        self.inspector.setHtml(explain_cell(name, SPECS[name].tip, self.result, data[i, j], i, j, rows[i], cols[j]))

    def _clear_highlights(self) -> None:
        for view in self.views.values():
            view.highlight()

    def _on_clean_changed(self, clean: bool) -> None:
        self.setWindowModified(not clean)

    # ---- files -------------------------------------------------------------------------------------------
    def _update_title(self) -> None:
        name = self.path.name if self.path else "untitled"
        self.setWindowTitle(f"{name}[*] — qkvgui")
        self.setWindowModified(not self.undo_stack.isClean())

    def replace_session(self, new: Session, path: Path | None) -> None:
        """Show another session in this window (New, Open): a fresh undo history, nothing modified."""
        self.session.set_state(new.state())
        self.path = path
        self.undo_stack.clear()
        self.undo_stack.setClean()
        self._update_title()
        self._show_description()
        self._show_saved_view()

    def _show_saved_view(self) -> None:
        """Bring back the tab (step-by-step views or circuits) the session was saved with."""
        saved = self.session.extra.get("view")
        tab = {"circuits": self.circuits, "learn": self.learn}.get(saved, self.pipeline)
        self.right_tabs.setCurrentWidget(tab)

    def _show_description(self) -> None:
        """A preset (or a session with a title) says what it demonstrates when it is opened."""
        if self.session.title:
            self.inspector.setHtml(f"<h3>{escape(self.session.title)}</h3><p>{escape(self.session.description)}</p>")

    def new_session(self) -> None:
        if self.maybe_keep_changes():
            self.replace_session(Session(), None)

    def open_dialog(self) -> None:
        if not self.maybe_keep_changes():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open session", str(self.path.parent if self.path else ""),
                                              SESSION_FILTER)
        if path:
            self.open_path(path, ask=False)

    def open_path(self, path: str | Path, ask: bool = True) -> bool:
        """Load a session file into the window; a bad file is refused with a message and changes nothing."""
        if ask and not self.maybe_keep_changes():
            return False
        try:
            new = Session.load(path)
        except QkvError as e:
            self.show_message(str(e))
            if self.isVisible() and not _quiet():
                QMessageBox.warning(self, "Cannot open session", str(e))
            return False
        self.replace_session(new, Path(path))
        self._remember_recent(Path(path))
        self.show_message(f"opened {path}")
        return True

    def open_preset(self, name: str) -> bool:
        if not self.maybe_keep_changes():
            return False
        self.replace_session(Session.from_preset(name), None)
        return True

    def save(self) -> bool:
        if self.path is None:
            return self.save_as()
        return self.save_to(self.path)

    def save_as(self) -> bool:
        start = str(self.path) if self.path else "untitled.qkv"
        path, _ = QFileDialog.getSaveFileName(self, "Save session", start, SESSION_FILTER)
        if not path:
            return False
        if not path.endswith(".qkv"):
            path += ".qkv"
        return self.save_to(Path(path))

    def save_to(self, path: Path) -> bool:
        """Write the session (atomically); on failure the old file is intact and the user is told why."""
        current = self.right_tabs.currentWidget()
        view = {id(self.circuits): "circuits", id(self.learn): "learn"}.get(id(current), "pipeline")
        self.session.set_extra("view", view)
        try:
            self.session.save(path)
        except (QkvError, OSError) as e:
            self.show_message(f"Could not save {path}: {e}")
            return False
        self.path = Path(path)
        self.undo_stack.setClean()
        self._update_title()
        self._remember_recent(self.path)
        autosave_path().unlink(missing_ok=True)
        self.show_message(f"saved {path}")
        return True

    def maybe_keep_changes(self) -> bool:
        """True when it is fine to replace or close the session: nothing unsaved, saved now, or discarded."""
        if self.undo_stack.isClean():
            return True
        answer = self.ask_unsaved()
        if answer == "save":
            return self.save()
        return answer == "discard"

    def _ask_unsaved(self) -> str:
        if _quiet():  # tests and headless runs: never block on a dialog
            return "discard"
        name = self.path.name if self.path else "this session"
        button = QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {name} before closing it?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(button, "cancel")

    def autosave(self) -> Path | None:
        """Keep unsaved work where a crashed run can be recovered from (see qkvgui.ui.app)."""
        if self.undo_stack.isClean():
            return None
        target = autosave_path()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.session.save(target)
        except (QkvError, OSError) as e:
            self.show_message(f"Autosave failed: {e}")
            return None
        return target

    def _remember_recent(self, path: Path) -> None:
        settings = _settings()
        if settings is None:
            return
        recent = [str(path.resolve())] + [p for p in self._recent() if p != str(path.resolve())]
        settings.setValue("recent", recent[:MAX_RECENT])

    def _recent(self) -> list[str]:
        settings = _settings()
        value = settings.value("recent") if settings is not None else None
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self._recent():
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))
        if not self.recent_menu.actions():
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    def show_editor(self, name: str) -> MatrixEditor:
        """Bring a matrix editor into view (switching to its tab) and return it."""
        editor = self.editors[name]
        for i in range(self.tabs.count()):
            if self.tabs.widget(i).isAncestorOf(editor):
                self.tabs.setCurrentIndex(i)
        return editor

    # ---- messages, geometry, closing ---------------------------------------------------------------------
    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)
        self.last_message = text

    def _about(self) -> None:
        QMessageBox.about(self, "About qkvgui", "qkvgui: edit Q, K, V and O and watch every step of attention.")

    def _restore_geometry(self) -> None:
        settings = _settings()
        if settings is None:
            return
        geometry = settings.value("geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        for key, splitter in (("main_splitter", self.main_splitter), ("right_splitter", self.right_splitter)):
            state = settings.value(key)
            if isinstance(state, QByteArray):
                splitter.restoreState(state)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self.maybe_keep_changes():
            event.ignore()
            return
        autosave_path().unlink(missing_ok=True)  # saved, clean or discarded: nothing left to recover
        self._autosave.stop()
        settings = _settings()
        if settings is not None:
            settings.setValue("geometry", self.saveGeometry())
            settings.setValue("main_splitter", self.main_splitter.saveState())
            settings.setValue("right_splitter", self.right_splitter.saveState())
        self.scheduler.shutdown()
        self.pipeline.close_views()  # graphics views alive at interpreter exit can crash Python 3.11
        self.circuits.close_views()
        self.learn.close_views()
        super().closeEvent(event)
