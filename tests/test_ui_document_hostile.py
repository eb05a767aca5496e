"""The window against hostile files and clicks (issue 11): opening, importing and pasting run on a worker with
progress and Cancel, any failure is one message naming the file and the window keeps what it had, work is
recovered per document and per process, and what the window shows is written for people."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction

import qkvgui.ui.jobs as jobs
import qkvgui.ui.matrix_editor as matrix_editor
from qkvgui import Session
from qkvgui.bench_hostile import _deep_extra, _huge_title
from qkvgui.ui.controllers.document import recovery_folder, recovery_store
from qkvgui.ui.text import MAX_DISPLAY_CHARS, format_tokens


def settle(qtbot, window):
    qtbot.waitUntil(lambda: not window.scheduler.busy_now(), timeout=10000)


def big_session(path: Path) -> Path:
    """A GPT-2-size layer (X 512 × 768, 12 heads of 64): 25 MB, long enough to watch it load."""
    rng = np.random.default_rng(0)
    n, d, h, k = 512, 768, 12, 64
    Session.from_arrays(
        rng.standard_normal((n, d)),
        rng.standard_normal((h, d, k)),
        rng.standard_normal((h, d, k)),
        rng.standard_normal((h, d, k)),
        rng.standard_normal((h * k, d)),
        title="big",
    ).save(path)
    return path


# ---- items 9 and the file boundary: on a worker, with Cancel; the window keeps what it had ------------------------
def test_opening_runs_on_a_worker_and_cancel_keeps_the_document(qtbot, window, tmp_path):
    path = big_session(tmp_path / "big.qkv")
    window.edit_block("X", 0, 0, np.array([[7.0]]))
    before = window.session.state()
    doc = window.document
    assert doc.open_path(path, ask=False)  # returns at once: the file is read on the worker
    assert doc.jobs.busy() and doc.jobs.widget.isVisible()
    assert "Opening big.qkv" in doc.jobs.widget.label.text()
    qtbot.mouseClick(doc.jobs.widget.cancel_button, Qt.MouseButton.LeftButton)
    assert not doc.jobs.busy() and not doc.jobs.widget.isVisible()
    assert "cancelled; nothing was changed" in window.last_message
    qtbot.wait(300)  # the late result, whenever it comes, is dropped
    assert window.session.state().x is before.x and window.undo_stack.count() == 1
    assert doc.open_path(path, ask=False)
    assert doc.jobs.wait(60)
    assert window.session.title == "big" and window.session.d_model == 768 and doc.path == path


def test_cancel_stops_the_read_itself_and_the_window_keeps_its_document(qtbot, window, tmp_path, monkeypatch):
    """Cancel does not only stop waiting: the worker stops reading at its next piece (asserted on how much of the
    file was read, not on time). The read is held at its first piece until Cancel has been pressed."""
    path = big_session(tmp_path / "big.qkv")
    before = window.session.state()
    reached, release, reports = threading.Event(), threading.Event(), []
    report = jobs.Progress.report

    def held(progress, done, total, text=None):
        report(progress, done, total, text)
        reports.append((done, total))
        if done > 0 and not reached.is_set():
            reached.set()
            release.wait(20)

    monkeypatch.setattr(jobs.Progress, "report", held)
    doc = window.document
    assert doc.open_path(path, ask=False)
    progress = doc.jobs._progress
    qtbot.waitUntil(reached.is_set, timeout=20000)  # the worker has read its first piece
    qtbot.mouseClick(doc.jobs.widget.cancel_button, Qt.MouseButton.LeftButton)
    release.set()
    assert progress.ended.wait(20)  # the worker has returned ...
    done, total = reports[-1]
    assert 0 < done < total / 4 and total >= 25_000_000  # ... after a few MB of a 25 MB file, not all of it
    qtbot.wait(100)
    assert window.session.state().x is before.x and window.document.path is None
    assert "cancelled; nothing was changed" in window.last_message


def test_a_large_opened_document_is_shown_piece_by_piece_and_completely(qtbot, window, tmp_path, monkeypatch):
    """Showing a GPT-2-size document once stalled the window 0.4-0.9 s: all six editors reset and ten head
    thumbnails made in one event-loop turn. Now each turn does one piece (asserted on what each turn does, not on
    time), and in the end every editor and thumbnail shows the new document."""
    path = big_session(tmp_path / "big.qkv")
    pipeline, tabs = window.pipeline, window.editor_tabs
    made_per_turn = []
    next_step = type(pipeline)._next_step

    repainted = []  # thumbnails painted again while a later one was made: the strip was laid out and repainted

    class Paints(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                painted.add(obj)
            return False

    painted: set = set()
    paints = Paints()

    watched: list = []

    def counted(self):
        # the earlier thumbnails painted between the turn that made a thumbnail and this one
        repainted.extend(v for v in watched if v.graphics_widget().viewport() in painted)
        for view in watched:
            view.graphics_widget().viewport().removeEventFilter(paints)
        watched.clear()
        before = len(self.head_views) + len(self.residual_views)
        earlier = list(self.head_views)
        next_step(self)
        made_per_turn.append(len(self.head_views) + len(self.residual_views) - before)
        if len(self.head_views) > len(earlier):  # a thumbnail was made: are the earlier ones painted again?
            painted.clear()
            watched.extend(earlier[:-1])  # the one made last turn may still be painting its first picture
            for view in watched:
                view.graphics_widget().viewport().installEventFilter(paints)

    monkeypatch.setattr(type(pipeline), "_next_step", counted)
    doc = window.document
    applied = []  # what the turn that applies the document has done
    doc.replaced.connect(lambda: applied.append((tabs.pending(), len(pipeline.head_views))))
    assert doc.open_path(path, ask=False)
    qtbot.waitUntil(lambda: doc.path == path, timeout=30000)
    assert applied[0][0] and applied[0][1] < 12  # editors and thumbnails are left to later turns
    qtbot.waitUntil(lambda: not (tabs.pending() or window.scheduler.busy_now() or pipeline.drawing()), timeout=60000)
    assert max(made_per_turn) == 1 and len(pipeline.head_views) == 12  # one thumbnail made per turn, all made
    assert repainted == []  # room for all twelve was made at once: a new thumbnail repaints none of the others
    r = window.result
    for i, view in enumerate(pipeline.head_views):
        np.testing.assert_array_equal(view.data(), r.weights_pooled[i])
    s = window.session
    np.testing.assert_array_equal(window.editors["X"].model.matrix(), s.matrix("X"))
    np.testing.assert_array_equal(window.editors["W_O"].model.matrix(), s.matrix("W_O"))
    np.testing.assert_array_equal(window.editors["W_V"].model.matrix(), s.matrix("W_V")[s.head])


@pytest.mark.parametrize("hostile", ["deep-extra", "fifo", "dev-zero", "folder", "garbage"])
def test_a_hostile_file_is_one_message_naming_it_and_nothing_changes(qtbot, window, tmp_path, hostile):
    path = tmp_path / f"{hostile}.qkv"
    if hostile == "deep-extra":
        _deep_extra(path)
    elif hostile == "fifo":
        os.mkfifo(path)
    elif hostile == "dev-zero":
        path.symlink_to("/dev/zero")
    elif hostile == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"PK\x05\x06" + os.urandom(200))
    window.edit_block("X", 0, 0, np.array([[7.0]]))
    assert not window.open_path(path, ask=False)
    assert path.name in window.last_message and "\n" not in window.last_message
    assert window.session.matrix("X")[0, 0] == 7.0 and window.undo_stack.count() == 1
    assert not window.document.jobs.busy()


def test_importing_a_matrix_from_a_fifo_or_of_the_wrong_shape(qtbot, window, tmp_path):
    """Item 13: a .csv that is a FIFO hung the window forever."""
    os.mkfifo(tmp_path / "pipe.csv")
    before = window.session.matrix("W_V").copy()
    assert not window.import_matrix("W_V", tmp_path / "pipe.csv")
    assert "pipe.csv" in window.last_message and "pipe" in window.last_message
    (tmp_path / "wide.csv").write_text("1,2,3,4\n" * 12)
    assert not window.import_matrix("W_V", tmp_path / "wide.csv")
    assert "wide.csv" in window.last_message and "12 × 4" in window.last_message
    np.testing.assert_array_equal(window.session.matrix("W_V"), before)


def test_a_large_paste_is_parsed_on_the_worker_and_is_one_undo_step(qtbot, window, monkeypatch):
    monkeypatch.setattr(matrix_editor, "BACKGROUND_PASTE_CHARS", 100)  # this 6 × 12 block counts as large
    editor = window.show_editor("X")
    editor.table.setCurrentIndex(editor.model.index(0, 0))
    block = np.arange(72.0).reshape(6, 12) / 8
    text = "\n".join("\t".join(repr(v) for v in row) for row in block.tolist())
    assert editor.paste_text(text)
    assert window.document.jobs.busy()  # on the worker
    assert window.document.jobs.wait(30)
    np.testing.assert_array_equal(window.session.matrix("X"), block)
    window.undo_stack.undo()
    assert window.session.matrix("X")[0, 1] != block[0, 1]
    # Cancel: nothing is pasted
    assert editor.paste_text(text)
    window.document.jobs.cancel()
    qtbot.wait(200)
    assert window.session.matrix("X")[0, 1] != block[0, 1]
    assert "cancelled" in window.last_message


# ---- item 8: the window never builds a document it cannot save ---------------------------------------------------
def test_sizes_within_the_spin_boxes_but_beyond_a_file_are_refused_with_the_limit(qtbot, window):
    window.heads_spin.setValue(64)
    window.dmodel_spin.setValue(4096)
    settle(qtbot, window)
    window.dk_spin.setValue(1024)
    assert "a session holds at most 1.0 GiB" in window.last_message
    assert window.session.d_k == 3 and window.dk_spin.value() == 3  # the control shows the size kept


# ---- items 10 and 11: recovery per document and per process ------------------------------------------------------
CRASHING = """
import os, sys
import numpy as np
from qkvgui import Session
from qkvgui.ui.main_window import MainWindow
from PySide6.QtWidgets import QApplication
app = QApplication([])
path = sys.argv[1]
w = MainWindow(Session.load(path), path)
w.edit_block("X", 0, 0, np.array([[42.0]]))
print(w.autosave(), flush=True)
if sys.argv[2] == "crash":
    os._exit(3)  # no cleanup at all, as in a crash
input()  # stay alive until told
"""


def other_qkvgui(path: Path, how: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING, str(path), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.endswith(".qkv") and Path(line).parent == recovery_folder(), line
    return proc


def test_after_a_crash_opening_the_file_offers_its_work(qtbot, tmp_path):
    """Relaunching as `qkvgui file.qkv` after a crash offered nothing, and closing deleted the autosave."""
    from qkvgui.ui.main_window import MainWindow

    path = tmp_path / "file.qkv"
    Session.from_preset("induction").save(path)
    proc = other_qkvgui(path, "crash")
    assert proc.wait(30) == 3
    w = MainWindow(Session.load(path), path)  # launched on the file, as `qkvgui file.qkv` does
    qtbot.addWidget(w)
    asked = []
    w.document.ask_recover = lambda orphan: asked.append(orphan) or "recover"
    assert w.document.offer_recovery() >= 1
    assert w.document.jobs.wait(30)  # read on the worker
    assert asked[0].matches(path)
    assert w.session.matrix("X")[0, 0] == 42.0 and w.document.path == path and w.isWindowModified()
    assert not asked[0].data.exists()  # the crashed run's copy is gone...
    assert w.document._autosaved_key is not None  # ...after this process kept its own
    w.document.ask_unsaved = lambda: "discard"
    w.close()


def test_the_timers_autosave_writes_a_snapshot_on_its_own_thread(qtbot, window, monkeypatch):
    """Autosave wrote the whole document on the GUI thread every 30 s (75 ms and more for a GPT-2-size layer): now
    the timer's write runs on a thread from a snapshot, and an edit made meanwhile is not mixed into it."""
    import qkvgui.ui.controllers.document as document

    threads = []
    write_state = document.write_state

    def recorded(state, path):
        threads.append(threading.current_thread())
        return write_state(state, path)

    monkeypatch.setattr(document, "write_state", recorded)
    doc = window.document
    window.edit_block("X", 0, 0, np.array([[5.0]]))
    path = doc.autosave(background=True)
    window.edit_block("X", 0, 0, np.array([[6.0]]))  # while (or before) it is written
    qtbot.waitUntil(lambda: doc._autosaving is None, timeout=10000)
    assert threads and threads[0] is not threading.main_thread()
    assert Session.load(path).matrix("X")[0, 0] == 5.0  # the snapshot, not the later edit
    assert doc.autosave() == path and Session.load(path).matrix("X")[0, 0] == 6.0
    doc.closing()  # a clean close removes it, after any write still running
    assert not path.exists()


def test_the_menus_save_writes_a_snapshot_on_the_worker(qtbot, window, tmp_path):
    """File ▸ Save wrote on the GUI thread (75 ms and more for a GPT-2-size layer): now the menu's save writes a
    snapshot on the worker; the file is what was there when Save was chosen, and an edit made meanwhile keeps the
    window modified. A save with nothing edited meanwhile leaves it clean."""
    path = tmp_path / "saved.qkv"
    window.edit_block("X", 0, 0, np.array([[5.0]]))
    doc = window.document
    doc.path = path  # as after an earlier Save As
    action = window.findChild(QAction, "action.save")
    action.trigger()
    assert doc.jobs.busy()  # on the worker
    window.edit_block("X", 0, 0, np.array([[6.0]]))
    assert doc.jobs.wait(30)
    assert Session.load(path).matrix("X")[0, 0] == 5.0 and window.isWindowModified()
    action.trigger()
    assert doc.jobs.wait(30)
    assert Session.load(path).matrix("X")[0, 0] == 6.0 and not window.isWindowModified()
    assert window.undo_stack.isClean() and "saved" in window.last_message
    window.edit_block("X", 0, 0, np.array([[7.0]]))
    doc.path = tmp_path / "gone" / "saved.qkv"  # its folder was removed
    action.trigger()
    assert doc.jobs.wait(30)
    assert window.last_message == f"Could not save {doc.path}: No such file or directory."
    assert window.isWindowModified() and Session.load(path).matrix("X")[0, 0] == 6.0


def test_a_live_instances_work_is_never_offered_nor_deleted(qtbot, tmp_path):
    from qkvgui.ui.main_window import MainWindow

    path = tmp_path / "shared.qkv"
    Session.from_preset("induction").save(path)
    proc = other_qkvgui(path, "stay")
    try:
        theirs = [p for p in recovery_folder().glob("*.qkv") if f"{proc.pid}-" in p.name]
        assert len(theirs) == 1
        w = MainWindow(Session.load(path), path)
        qtbot.addWidget(w)
        w.document.ask_recover = lambda orphan: "discard" if f"{proc.pid}-" in orphan.data.name else "later"
        w.document.offer_recovery()
        w.edit_block("X", 0, 0, np.array([[1.5]]))
        w.document.autosave()
        w.document.ask_unsaved = lambda: "discard"
        w.close()  # a clean close removes this window's data, not the other instance's
        assert theirs[0].exists()
    finally:
        proc.kill()
        proc.wait()
    store = recovery_store()
    orphans = [o for o in store.orphans() if f"{proc.pid}-" in o.data.name]
    assert len(orphans) == 1  # gone now: offered on the next start
    store.forget(orphans[0])


def test_saving_over_a_read_only_file_is_refused_and_the_work_stays_unsaved(qtbot, window, tmp_path):
    """Item 12, from the window: the file is left alone and the document stays modified."""
    path = tmp_path / "kept.qkv"
    Session.from_preset("induction").save(path)
    before = path.read_bytes()
    path.chmod(0o444)
    window.edit_block("X", 0, 0, np.array([[5.0]]))
    assert not window.save_to(path)
    assert "kept.qkv is read-only" in window.last_message
    assert path.read_bytes() == before and not window.undo_stack.isClean()


# ---- items 6, 14 and 15: what the window shows ------------------------------------------------------------------
def test_a_15_mib_one_word_description_is_shown_capped(qtbot, window, tmp_path):
    path = _huge_title(tmp_path / "huge.qkv")
    assert window.open_path(path, ask=False)
    text = window.inspector.toPlainText()
    assert len(text) < MAX_DISPLAY_CHARS + 1200 and "more characters" in text


def test_enter_in_an_unchanged_token_field_changes_nothing(qtbot, window, tmp_path):
    """Item 14: "new york" loaded from a file became two tokens with random rows."""
    s = Session.from_arrays(np.eye(3), *(np.ones((1, 3, 2)),) * 3, np.ones((2, 3)), tokens=["new york", "is", "big"])
    s.save(tmp_path / "ny.qkv")
    assert window.open_path(tmp_path / "ny.qkv", ask=False)
    edit = window.tokens_edit
    assert edit.text() == '"new york" is big'
    edit.setFocus()
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert window.session.tokens == ["new york", "is", "big"] and window.undo_stack.count() == 0
    edit.selectAll()
    qtbot.keyClicks(edit, '"new york" is "very big"')
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert window.session.tokens == ["new york", "is", "very big"]
    np.testing.assert_array_equal(window.session.matrix("X")[:2], np.eye(3)[:2])  # kept tokens keep their rows


def test_the_token_field_never_truncates(qtbot, window):
    """Item 14: the field cut text at 32,767 characters without a word."""
    tokens = [f"token{i:04d}" for i in range(4000)]  # 40,000 characters
    window.edits.change("long", window.session.set_tokens, tokens)
    assert window.tokens_edit.text() == format_tokens(tokens) and len(window.tokens_edit.text()) > 32767
    edit = window.tokens_edit
    edit.setMaxLength(50)  # a paste beyond the cap is refused, not cut
    edit.setText("a b")
    edit.setCursorPosition(3)
    edit.insert(" c" * 100)
    qtbot.waitUntil(lambda: edit.text() == "a b", timeout=2000)
    assert "longer than the 50 characters a token field holds: nothing was pasted" in window.last_message


def test_the_status_bar_names_dead_rows_for_people(qtbot, window):
    """Item 15: the status bar printed "query rows [np.int64(0), …]"."""
    window.causal_box.setChecked(False)
    window.edits.change("pad", window.session.set_padding, [True] * 6)
    settle(qtbot, window)
    qtbot.waitUntil(lambda: "see no key" in window.statusBar().currentMessage(), timeout=5000)
    message = window.statusBar().currentMessage()
    assert "np.int64" not in message and "query rows 1 ('the'), 2 ('cat')" in message
