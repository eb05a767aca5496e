"""The document's life: new, open, save, save as, recent files, autosave and recovery, imported model layers,
and single matrices read from and written to files.

Every file boundary goes through here the same way: the work (reading a session, a matrix, a model) runs on a
worker (``ui.jobs``) with a progress bar and Cancel in the status bar, any failure comes back as one message naming
the file and what was wrong, and the window keeps what it had until a result is complete. Unsaved work is kept per
document and per process (``io.recovery``): a crash loses at most AUTOSAVE_SECONDS, and no running qkvgui ever
offers or deletes another one's work.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, QStandardPaths, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMenu, QMessageBox

from qkvgui.core import QkvError, SessionFileError
from qkvgui.io.atomic import clean_stale_temporaries
from qkvgui.io.matrix_file import read_matrix, write_matrix
from qkvgui.io.recovery import Orphan, RecoveryStore, document_key
from qkvgui.io.session import write_state
from qkvgui.session import PER_HEAD, Session
from qkvgui.ui.controllers.actions import bind
from qkvgui.ui.controllers.edits import EditController
from qkvgui.ui.import_dialog import ImportLayerDialog
from qkvgui.ui.jobs import JobRunner
from qkvgui.ui.matrix_editor import MatrixEditor
from qkvgui.ui.text import one_line

SESSION_FILTER = "qkvgui sessions (*.qkv)"
MAX_RECENT = 8
AUTOSAVE_SECONDS = 30


def recovery_folder() -> Path:
    """Where the unsaved work of running windows is kept, for recovery after a crash."""
    folder = (
        os.environ.get("QKVGUI_AUTOSAVE_DIR")
        or QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
        or str(Path.home() / ".qkvgui")
    )
    return Path(folder) / "recovery"


_STORES: dict[Path, RecoveryStore] = {}  # one per folder and process: its lock lives as long as the process
_UNTITLED = itertools.count(1)


def recovery_store() -> RecoveryStore | None:
    """This process's recovery store (claimed on first use); None when the folder cannot be used."""
    folder = recovery_folder()
    if folder not in _STORES:
        try:
            _STORES[folder] = RecoveryStore(folder)
        except OSError:
            return None
    return _STORES[folder]


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
        self._edit_count = 0  # every push, undo and redo: tells a background save whether the document moved on
        self.undo_stack.indexChanged.connect(self._count_edit)
        self.path: Path | None = Path(path) if path else None
        #: asks what to do with unsaved changes: returns "save", "discard" or "cancel"
        self.ask_unsaved: Callable[[], str] = ask_unsaved or self._ask_unsaved
        self.before_save: list[Callable[[], None]] = []
        #: asks what to do with a crashed run's work: "recover", "discard" or "later" (tests replace it)
        self.ask_recover: Callable[[Orphan], str] = self._ask_recover
        self.jobs = JobRunner(window.statusBar(), self)
        self.jobs.started.connect(lambda title: self.message.emit(title + "…"))
        self._untitled = f"untitled-{next(_UNTITLED)}"
        self._autosaved_key: str | None = None  # the recovery data this document last wrote
        self._autosave = QTimer(self, interval=AUTOSAVE_SECONDS * 1000)
        self._autosave.timeout.connect(lambda: self.autosave(background=True))
        self._autosave.start()
        # the timer's autosave writes on its own thread (a 25 MB document took 75 ms and more to write)
        self._autosave_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qkvgui-autosave")
        self._autosaving: Future | None = None
        self._autosave_poll = QTimer(self, interval=100)
        self._autosave_poll.timeout.connect(self._poll_autosave)

    def _count_edit(self, _index: int) -> None:
        self._edit_count += 1

    @property
    def key(self) -> str:
        """The name of this document's recovery data: from its file, or its untitled number."""
        return document_key(self.path, self._untitled)

    def update_title(self) -> None:
        name = self.path.name if self.path else "untitled"
        self.window.setWindowTitle(f"{name}[*] — qkvgui")
        self.window.setWindowModified(not self.undo_stack.isClean())

    # ---- replacing the document ----------------------------------------------------------------------------
    def replace_session(self, new: Session, path: Path | None) -> None:
        """Show another session in this window (New, Open): a fresh undo history, nothing modified."""
        self.session.set_state(new.state())
        self._forget_autosave()  # the previous document was saved or its changes discarded
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

    def run_job(
        self,
        title: str,
        work: Callable,
        done: Callable[[Any], object],
        failed: Callable[[str], None],
        wait: bool = False,
    ) -> bool:
        """Run work(progress) on the worker, then done(result) or failed(message) on the GUI thread. Returns whether
        it started, or with ``wait`` (scripts, tests) whether it succeeded (done did not return False)."""
        outcome: list[bool] = []

        def finished(result: Any) -> None:
            outcome.append(done(result) is not False)

        def refused(message: str) -> None:
            outcome.append(False)
            failed(message)

        if not self.jobs.run(title, work, finished, refused):
            return False
        if wait:
            self.jobs.wait()
            return bool(outcome and outcome[0])
        return True

    def open_path(self, path: str | Path, ask: bool = True, wait: bool = False) -> bool:
        """Load a session file into the window on a worker (progress and Cancel in the status bar); a bad file is
        refused with a message naming it, and the window keeps what it had. Returns whether the load started (with
        ``wait``: whether it succeeded)."""
        if ask and not self.maybe_keep_changes():
            return False
        path = Path(path)

        def opened(new: Session) -> None:
            self.replace_session(new, path)
            self.remember_recent(path)
            self.message.emit(f"opened {path}")

        def refused(message: str) -> None:
            self.message.emit(message)
            if self.window.isVisible() and not quiet():
                QMessageBox.warning(self.window, "Cannot open session", message)

        return self.run_job(
            f"Opening {path.name}", lambda progress: Session.load(path, progress), opened, refused, wait
        )

    def open_preset(self, name: str) -> bool:
        if not self.maybe_keep_changes():
            return False
        self.replace_session(Session.from_preset(name), None)
        return True

    def recover(
        self,
        recovered: Path,
        source: Path | None = None,
        ended: Callable[[bool], None] | None = None,
        wait: bool = False,
    ) -> bool:
        """Show autosaved work from a crashed run as unsaved work (``source``: the file it was the work on). It is
        read, and kept as this process's own recovery data, on the worker (progress and Cancel in the status bar);
        ``ended(ok)`` follows. Returns whether the reading started (with ``wait``: whether the work was recovered)."""
        store = recovery_store()
        key = document_key(source, self._untitled)

        def work(progress: Any) -> Session:
            new = Session.load(recovered, progress)
            if store is not None:  # this process's copy exists before the crashed run's is deleted
                store.autosave(key, partial(write_state, new.state()), source=source, title=new.title)
            return new

        def done(new: Session) -> None:
            self.replace_session(new, source)
            self.undo_stack.resetClean()
            self.window.setWindowModified(True)
            self._autosaved_key = key if store is not None else None
            if ended is not None:
                ended(True)

        def failed(message: str) -> None:
            self.message.emit(one_line(f"The recovered work could not be read: {message}"))
            if ended is not None:
                ended(False)

        return self.run_job("Recovering unsaved work", work, done, failed, wait)

    def offer_recovery(self) -> int:
        """Offer the work of crashed runs (their process is gone), the one on this window's file first; one can be
        recovered into this window, the rest are kept for later unless discarded. Returns how many were offered."""
        store = recovery_store()
        if store is None:
            return 0
        orphans = store.orphans()
        orphans.sort(key=lambda o: not o.matches(self.path))  # stable: the newest first otherwise
        offered, recovered = 0, False
        for orphan in orphans:
            if recovered:
                store.release(orphan)
                continue
            offered += 1
            answer = self.ask_recover(orphan)
            if answer == "recover" and self.undo_stack.isClean():
                source = Path(orphan.source) if orphan.source else None
                if self.recover(orphan.data, source, partial(self._recovered, store, orphan)):
                    recovered = True  # read on the worker: _recovered forgets or keeps it
                    continue
            if answer == "discard":
                store.forget(orphan)
            else:
                store.release(orphan)
        return offered

    def _recovered(self, store: RecoveryStore, orphan: Orphan, ok: bool) -> None:
        if ok:
            store.forget(orphan)
            self.message.emit(f"Recovered the unsaved work on {orphan.label}.")
        else:
            store.release(orphan)  # offered again at the next start

    def clean_up_at_start(self) -> list[Path]:
        """Remove the temporary files that killed saves left beside this document and the recent files."""
        folders = {Path(p).parent for p in self.recent()} | ({self.path.parent} if self.path else set())
        return [p for folder in folders for p in clean_stale_temporaries(folder)]

    def _ask_recover(self, orphan: Orphan) -> str:
        if quiet():  # tests and headless runs: never block, never delete
            return "later"
        box = QMessageBox(self.window)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Recover unsaved work?")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(orphan.saved_at))
        box.setText(f"qkvgui did not close cleanly. It kept the unsaved work on {orphan.label} from {when}.")
        box.setInformativeText("Recover it into this window, discard it, or decide at the next start?")
        recover = box.addButton("Recover", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(recover)
        box.exec()
        clicked = box.clickedButton()
        return "recover" if clicked is recover else "discard" if clicked is discard else "later"

    # ---- saving --------------------------------------------------------------------------------------------
    def save(self, background: bool = False) -> bool:
        """Save to the document's file (Save As without one). ``background`` (the menu's Save): written on the
        worker from a snapshot, with progress in the status bar; returns whether the writing started."""
        if self.path is None:
            return self.save_as(background)
        return self.save_to(self.path, background)

    def save_as(self, background: bool = False) -> bool:
        start = str(self.path) if self.path else "untitled.qkv"
        path, _ = QFileDialog.getSaveFileName(self.window, "Save session", start, SESSION_FILTER)
        if not path:
            return False
        if not path.endswith(".qkv"):
            path += ".qkv"
        return self.save_to(Path(path), background)

    def save_to(self, path: str | Path, background: bool = False) -> bool:
        """Write the session (atomically); on failure the old file is intact and the user is told why.

        ``background``: a snapshot of the document is written on the worker (a GPT-2-size layer took 75 ms and more
        on the GUI thread); edits made meanwhile stay unsaved (the window stays modified). Returns whether the
        writing started; otherwise (scripts, closing) whether the file was written."""
        for hook in self.before_save:
            hook()
        path = Path(path)
        if background:
            state, edits = self.session.state(), self._edit_count

            def saved(_: object) -> None:
                self._saved(path, clean=self._edit_count == edits)

            def refused(message: str) -> None:
                self.message.emit(one_line(f"Could not save {path}: {message}"))

            def write(progress: Any) -> Path:
                try:
                    return write_state(state, path)
                except OSError as e:  # a full disk, a missing folder: one line, as the GUI thread's save says it
                    raise SessionFileError(f"{e.strerror or e}.") from None

            return self.run_job(f"Saving {path.name}", write, saved, refused)
        try:
            self.session.save(path)
        except (QkvError, OSError) as e:  # a read-only file, a full disk: the old file is intact
            self.message.emit(one_line(f"Could not save {path}: {e}"))
            return False
        self._saved(path, clean=True)
        return True

    def _saved(self, path: Path, clean: bool) -> None:
        if clean:  # nothing was edited while it was written
            self._forget_autosave()
            self.undo_stack.setClean()
        self.path = path
        self.update_title()
        self.remember_recent(path)
        self.message.emit(f"saved {path}")

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
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save,
        )
        return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
            button, "cancel"
        )

    def autosave(self, background: bool = False) -> Path | None:
        """Keep unsaved work where a crashed run can be recovered from: this document's own recovery data, guarded
        by this process's lock. Returns where it goes (None when there is nothing unsaved, or when an earlier
        background write is still running: the next tick writes the newest). ``background``: the file is written
        on a thread from a snapshot of the document (the window never waits for the disk); otherwise at once."""
        if self.undo_stack.isClean():
            return None
        store = recovery_store()
        if store is None:
            self.message.emit(f"Autosave is off: {recovery_folder()} cannot be used.")
            return None
        if background and self._autosaving is not None and not self._autosaving.done():
            return None
        self._autosave_written()  # an earlier background write lands first, never after this one
        key = self.key
        if self._autosaved_key not in (None, key):
            store.discard(self._autosaved_key)  # saved under another name since: one file per document
        state, source, title = self.session.state(), self.path, self.session.title  # a snapshot: cheap, immutable
        self._autosaved_key = key
        if background:
            self._autosaving = self._autosave_pool.submit(
                store.autosave, key, partial(write_state, state), source=source, title=title
            )
            self._autosave_poll.start()
            return store.paths(key)[0]
        try:
            return store.autosave(key, partial(write_state, state), source=source, title=title)
        except (QkvError, OSError) as e:
            self.message.emit(one_line(f"Autosave failed: {e}"))
            return None

    def _poll_autosave(self) -> None:
        if self._autosaving is None or self._autosaving.done():
            self._autosave_written()

    def _autosave_written(self) -> None:
        """Wait for (usually: notice) the background autosave's end, and report a failure in the status bar."""
        future, self._autosaving = self._autosaving, None
        self._autosave_poll.stop()
        if future is None:
            return
        try:
            future.result()
        except (QkvError, OSError) as e:
            self.message.emit(one_line(f"Autosave failed: {e}"))

    def _forget_autosave(self) -> None:
        self._autosave_written()  # a write still running would bring the data back after it is removed
        store = recovery_store() if self._autosaved_key is not None else None
        if store is not None and self._autosaved_key is not None:
            store.discard(self._autosaved_key)
        self._autosaved_key = None

    def closing(self) -> None:
        """The window closes with nothing left to recover: saved, clean or discarded."""
        self._autosave.stop()
        self._forget_autosave()
        self._autosave_pool.shutdown(wait=True)
        self.jobs.shutdown()

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
            menu.addAction(path, bind(self.open_path, path))
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

    def reset_to_model(self, wait: bool = False) -> bool:
        """Bring the imported layer's matrices back to the checkpoint's (one undo step), read on a worker."""
        source = self.session.extra.get("checkpoint")
        if not source:
            self.message.emit("This session was not imported from a model: there are no model weights to reset to.")
            return False

        def load(progress) -> Session:
            try:
                return Session.from_checkpoint(
                    source["path"], source.get("layer"), source["text"], ids=source.get("ids")
                )
            except ImportError as e:
                raise QkvError(f"Could not reload the model: {e}") from None

        def loaded(fresh: Session) -> bool:
            return self.edits.change("reset to model weights", self.session.set_state, fresh.state())

        return self.run_job("Reading the model's weights", load, loaded, self.message.emit, wait)

    # ---- single matrices in and out ------------------------------------------------------------------------
    def add_matrix_file_actions(
        self, editors: dict[str, MatrixEditor], flush: Callable[[], None] | None = None
    ) -> None:
        """Each editor's context menu imports and exports its matrix (``flush`` brings every editor up to date: a
        large new document is shown editor by editor)."""
        self._flush_editors = flush or (lambda: None)
        for name, editor in editors.items():
            editor.background = self.jobs.run  # a large paste is parsed on the worker
            editor.menu.addSeparator()
            editor.menu.addAction("Import matrix from file…", bind(self.import_matrix_dialog, name))
            editor.menu.addAction("Export matrix to file…", bind(self.export_matrix_dialog, name))
        self._editors = editors

    def import_matrix(self, name: str, path: str | Path, wait: bool = False) -> bool:
        """Replace the matrix shown in an editor (one head's slice for W_Q, W_K, W_V) with a file's, undoably. The
        file is read on a worker; one of another shape is refused before its numbers are read. Returns whether the
        reading started (with ``wait``: whether the matrix was imported)."""
        path = Path(path)
        self._flush_editors()
        shape = self._editors[name].model.matrix().shape
        head = self.session.head
        where = f"{name} (head {head + 1})" if name in PER_HEAD else name

        def read(progress) -> object:
            try:
                return read_matrix(path, shape=shape, cancel=progress)
            except QkvError as e:
                if "are needed" in str(e):
                    raise QkvError(f"{path.name}: {where} is {shape[0]} × {shape[1]}; {e}") from None
                raise

        def loaded(block) -> bool:
            if self._editors[name].model.matrix().shape != shape or self.session.head != head:
                self.message.emit(f"{where} changed while {path.name} was read: nothing was imported.")
                return False
            if not self.edits.edit_block(name, 0, 0, block):
                return False
            self.message.emit(f"imported {path.name} into {where}")
            return True

        return self.run_job(f"Reading {path.name}", read, loaded, self.message.emit, wait)

    def export_matrix(self, name: str, path: str | Path) -> bool:
        self._flush_editors()
        try:
            write_matrix(path, self._editors[name].model.matrix())
        except (QkvError, OSError) as e:
            self.message.emit(one_line(f"Could not write {path}: {e}"))
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
