"""The document's life: new, open, save, save as, recent files, autosave and recovery, imported model layers,
and single matrices read from and written to files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QStandardPaths, Qt, QTimer, Signal
from PySide6.QtWidgets import QApplication, QFileDialog, QMainWindow, QMenu, QMessageBox

from qkvgui.core import QkvError
from qkvgui.io.matrix_file import read_matrix, write_matrix
from qkvgui.session import PER_HEAD, Session
from qkvgui.ui.controllers.edits import EditController
from qkvgui.ui.import_dialog import ImportLayerDialog
from qkvgui.ui.matrix_editor import MatrixEditor

SESSION_FILTER = "qkvgui sessions (*.qkv)"
MAX_RECENT = 8
AUTOSAVE_SECONDS = 30


def autosave_path() -> Path:
    """Where the unsaved work of a running window is kept, for recovery after a crash."""
    folder = (
        os.environ.get("QKVGUI_AUTOSAVE_DIR")
        or QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
        or str(Path.home() / ".qkvgui")
    )
    return Path(folder) / "autosave.qkv"


def quiet() -> bool:
    """Tests and headless runs set QKVGUI_NO_SETTINGS: no settings file, no modal dialogs."""
    return bool(os.environ.get("QKVGUI_NO_SETTINGS"))


def settings() -> QSettings | None:
    if quiet():
        return None
    return QSettings("qkvgui", "qkvgui")


class DocumentController(QObject):
    """Files in and out of the window's session. ``replaced`` follows New, Open, Import (a new document shown);
    ``message(text)`` is for the status bar; ``before_save`` lets the window record its view state first."""

    replaced = Signal()
    message = Signal(str)

    def __init__(
        self,
        window: QMainWindow,
        session: Session,
        edits: EditController,
        path: str | Path | None = None,
        ask_unsaved: Callable[[], str] | None = None,
    ):
        super().__init__(window)
        self.window, self.session, self.edits = window, session, edits
        self.undo_stack = edits.undo_stack
        self.path: Path | None = Path(path) if path else None
        #: asks what to do with unsaved changes: returns "save", "discard" or "cancel"
        self.ask_unsaved: Callable[[], str] = ask_unsaved or self._ask_unsaved
        self.before_save: list[Callable[[], None]] = []
        self._autosave = QTimer(self, interval=AUTOSAVE_SECONDS * 1000)
        self._autosave.timeout.connect(self.autosave)
        self._autosave.start()

    def update_title(self) -> None:
        name = self.path.name if self.path else "untitled"
        self.window.setWindowTitle(f"{name}[*] — qkvgui")
        self.window.setWindowModified(not self.undo_stack.isClean())

    # ---- replacing the document ----------------------------------------------------------------------------
    def replace_session(self, new: Session, path: Path | None) -> None:
        """Show another session in this window (New, Open): a fresh undo history, nothing modified."""
        self.session.set_state(new.state())
        self.path = path
        self.undo_stack.clear()
        self.undo_stack.setClean()
        self.update_title()
        self.replaced.emit()

    def new_session(self) -> None:
        if self.maybe_keep_changes():
            self.replace_session(Session(), None)

    def open_dialog(self) -> None:
        if not self.maybe_keep_changes():
            return
        path, _ = QFileDialog.getOpenFileName(
            self.window, "Open session", str(self.path.parent if self.path else ""), SESSION_FILTER
        )
        if path:
            self.open_path(path, ask=False)

    def open_path(self, path: str | Path, ask: bool = True) -> bool:
        """Load a session file into the window; a bad file is refused with a message and changes nothing."""
        if ask and not self.maybe_keep_changes():
            return False
        try:
            new = Session.load(path)
        except QkvError as e:
            self.message.emit(str(e))
            if self.window.isVisible() and not quiet():
                QMessageBox.warning(self.window, "Cannot open session", str(e))
            return False
        self.replace_session(new, Path(path))
        self.remember_recent(Path(path))
        self.message.emit(f"opened {path}")
        return True

    def open_preset(self, name: str) -> bool:
        if not self.maybe_keep_changes():
            return False
        self.replace_session(Session.from_preset(name), None)
        return True

    def recover(self, recovered: Path) -> None:
        """Show autosaved work from a crashed run as unsaved work."""
        try:
            self.replace_session(Session.load(recovered), None)
        except QkvError as e:
            self.message.emit(f"The autosaved session could not be read: {e}")
            return
        self.undo_stack.resetClean()
        self.window.setWindowModified(True)

    # ---- saving --------------------------------------------------------------------------------------------
    def save(self) -> bool:
        if self.path is None:
            return self.save_as()
        return self.save_to(self.path)

    def save_as(self) -> bool:
        start = str(self.path) if self.path else "untitled.qkv"
        path, _ = QFileDialog.getSaveFileName(self.window, "Save session", start, SESSION_FILTER)
        if not path:
            return False
        if not path.endswith(".qkv"):
            path += ".qkv"
        return self.save_to(Path(path))

    def save_to(self, path: str | Path) -> bool:
        """Write the session (atomically); on failure the old file is intact and the user is told why."""
        for hook in self.before_save:
            hook()
        try:
            self.session.save(path)
        except (QkvError, OSError) as e:
            self.message.emit(f"Could not save {path}: {e}")
            return False
        self.path = Path(path)
        self.undo_stack.setClean()
        self.update_title()
        self.remember_recent(self.path)
        autosave_path().unlink(missing_ok=True)
        self.message.emit(f"saved {path}")
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
        if quiet():  # tests and headless runs: never block on a dialog
            return "discard"
        name = self.path.name if self.path else "this session"
        button = QMessageBox.question(
            self.window,
            "Unsaved changes",
            f"Save the changes to {name} before closing it?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel,
            QMessageBox.Save,
        )
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
            self.message.emit(f"Autosave failed: {e}")
            return None
        return target

    def closing(self) -> None:
        """The window closes with nothing left to recover: saved, clean or discarded."""
        autosave_path().unlink(missing_ok=True)
        self._autosave.stop()

    # ---- recent files --------------------------------------------------------------------------------------
    def remember_recent(self, path: Path) -> None:
        store = settings()
        if store is None:
            return
        recent = [str(path.resolve())] + [p for p in self.recent() if p != str(path.resolve())]
        store.setValue("recent", recent[:MAX_RECENT])

    def recent(self) -> list[str]:
        store = settings()
        value = store.value("recent") if store is not None else None
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def fill_recent(self, menu: QMenu) -> None:
        menu.clear()
        for path in self.recent():
            menu.addAction(path, lambda p=path: self.open_path(p))
        if not menu.actions():
            menu.addAction("(none yet)").setEnabled(False)

    # ---- real model layers ---------------------------------------------------------------------------------
    def import_layer_dialog(self) -> None:
        if not self.maybe_keep_changes():
            return
        source = self.session.extra.get("checkpoint") or {}
        dialog = ImportLayerDialog(self.window, source.get("path", ""), source.get("text", ""), source.get("layer"))
        dialog.imported.connect(self.show_imported)
        dialog.exec()

    def show_imported(self, session: Session) -> None:
        """Open an imported model layer as a fresh, unsaved session."""
        self.replace_session(session, None)
        self.undo_stack.resetClean()  # an import is new work, not a saved file
        self.window.setWindowModified(True)

    def reset_to_model(self) -> bool:
        """Bring the imported layer's matrices back to the checkpoint's (one undo step)."""
        source = self.session.extra.get("checkpoint")
        if not source:
            self.message.emit("This session was not imported from a model: there are no model weights to reset to.")
            return False
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            fresh = Session.from_checkpoint(source["path"], source.get("layer"), source["text"], ids=source.get("ids"))
        except (QkvError, ImportError) as e:
            self.message.emit(f"Could not reload the model: {e}")
            return False
        finally:
            QApplication.restoreOverrideCursor()
        return self.edits.change("reset to model weights", self.session.set_state, fresh.state())

    # ---- single matrices in and out ------------------------------------------------------------------------
    def add_matrix_file_actions(self, editors: dict[str, MatrixEditor]) -> None:
        """Each editor's context menu imports and exports its matrix."""
        for name, editor in editors.items():
            editor.menu.addSeparator()
            editor.menu.addAction("Import matrix from file…", lambda name=name: self.import_matrix_dialog(name))
            editor.menu.addAction("Export matrix to file…", lambda name=name: self.export_matrix_dialog(name))
        self._editors = editors

    def import_matrix(self, name: str, path: str | Path) -> bool:
        """Replace the matrix shown in an editor (one head's slice for W_Q, W_K, W_V) with a file's, undoably."""
        target = self._editors[name].model.matrix()
        try:
            block = read_matrix(path)
        except QkvError as e:
            self.message.emit(str(e))
            return False
        if block.shape != target.shape:
            where = f"{name} (head {self.session.head + 1})" if name in PER_HEAD else name
            self.message.emit(
                f"{Path(path).name} holds {block.shape[0]} × {block.shape[1]} numbers but {where} is "
                f"{target.shape[0]} × {target.shape[1]}: resize one of them first."
            )
            return False
        return self.edits.edit_block(name, 0, 0, block)

    def export_matrix(self, name: str, path: str | Path) -> bool:
        try:
            write_matrix(path, self._editors[name].model.matrix())
        except (QkvError, OSError) as e:
            self.message.emit(f"Could not write {path}: {e}")
            return False
        self.message.emit(f"wrote {path}")
        return True

    def import_matrix_dialog(self, name: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, f"Import {name}", "", "Matrices (*.npy *.csv)")
        if path:
            self.import_matrix(name, path)

    def export_matrix_dialog(self, name: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self.window, f"Export {name}", f"{name}.npy", "Matrices (*.npy *.csv)")
        if path:
            self.export_matrix(name, path)
