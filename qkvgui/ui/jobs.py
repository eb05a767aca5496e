"""Long work off the GUI thread, with a progress bar and Cancel in the status bar: opening a session, importing a
matrix or a model layer, parsing a large paste.

The pattern is the recompute scheduler's, and so is the code (``ui.worker.Worker``): a thread pool does the work, a
timer on the GUI thread polls for the result (no signal crosses threads), and the GUI thread only ever applies a
finished result. The work
function gets a ``Progress``, which is the ``core.cancel.CancelToken`` io and core check: the work reports how far it
is and stops at its next check once Cancel is pressed. Cancel returns control at once (the result, should one still
come, is dropped), so the window keeps what it had.

    jobs = JobRunner(status_bar, parent)
    jobs.run("Opening big.qkv", lambda progress: Session.load(path, progress), done=show, failed=report)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QStatusBar, QWidget

from qkvgui.core import QkvError
from qkvgui.core.cancel import Cancelled, CancelToken
from qkvgui.ui.worker import Worker

__all__ = ["Cancelled", "JobRunner", "Progress"]

#: how often the GUI thread looks for a finished job (ms): well under one frame of a 50 ms budget
POLL_MS = 15


class Progress(CancelToken):
    """What a job tells the window, and the job's cancel token (thread-safe: plain attribute writes, read by the
    GUI thread's poll). Work in io and core takes it as their ``core.cancel.CancelToken``."""

    def __init__(self) -> None:
        super().__init__()
        self.done = 0
        self.total = 0  # 0: no known total (a busy bar)
        self.text = ""
        #: set once the work has returned or raised (a cancelled job's worker may still be finishing its step)
        self.ended = threading.Event()

    def __call__(self, done: int, total: int, text: str | None = None) -> bool:
        """Report progress; returns False once cancelled (for loops that prefer a flag to an exception)."""
        self.report(done, total, text)
        return not self.cancelled

    def report(self, done: int, total: int, text: str | None = None) -> None:
        self.done, self.total = int(done), int(total)
        if text is not None:
            self.text = text


class _Bar(QWidget):
    """The status bar's part: what is running, a progress bar, and Cancel (Esc works too while it is shown)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("jobs.bar")
        self.label = QLabel()
        self.bar = QProgressBar()
        self.bar.setObjectName("jobs.progress")
        self.bar.setMaximumWidth(180)
        self.bar.setMaximumHeight(16)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("jobs.cancel")
        self.cancel_button.setToolTip("Stop this and keep everything as it was (Esc)")
        self.cancel_button.setShortcut(Qt.Key.Key_Escape)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel_button)


class JobRunner(QObject):
    """Runs one job at a time on a worker thread and reports it in ``status_bar`` (or in its own bar widget).

    ``started(title)``, ``finished(title)``; ``done(result)`` and ``failed(message)`` callbacks run on the GUI
    thread. Any exception in the job becomes a message (a ``QkvError`` as it is, anything else named as what
    failed), never an exception out of a slot.
    """

    started = Signal(str)
    finished = Signal(str)

    def __init__(self, status_bar: QStatusBar | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.widget = _Bar()
        self.widget.hide()
        if status_bar is not None:
            status_bar.addPermanentWidget(self.widget)
        self.widget.cancel_button.clicked.connect(self.cancel)
        # several threads: a cancelled job may still be finishing while the next one starts
        self._worker = Worker("qkvgui-job", threads=2, interval_ms=POLL_MS, parent=self)
        self._worker.polled.connect(self._show_progress)
        self._job: Future | None = None
        self._progress: Progress | None = None
        self._title = ""
        self._callbacks: tuple[Callable[[Any], None], Callable[[str], None]] | None = None
        self._started_at = 0.0
        self.last_message = ""

    def busy(self) -> bool:
        return self._job is not None

    def run(
        self, title: str, work: Callable[[Progress], Any], done: Callable[[Any], None], failed: Callable[[str], None]
    ) -> bool:
        """Start ``work(progress)`` on the worker; False (and ``failed``) when another job is still running."""
        if self._job is not None:
            failed(f"{self._title} is still running: wait for it or cancel it first.")
            return False
        progress = Progress()
        self._progress, self._title, self._callbacks = progress, title, (done, failed)
        self._started_at = time.perf_counter()
        self._job = self._worker.submit(_guarded, work, progress, title, done=self._finished)
        self.widget.label.setText(title + "…")
        self.widget.bar.setRange(0, 0)
        self.widget.show()
        self.started.emit(title)
        return True

    def cancel(self) -> None:
        """Stop waiting for the running job: it is told to stop, its result will be dropped, the window keeps what
        it had."""
        if self._job is None or self._progress is None:
            return
        self._progress.cancel()
        callbacks, title = self._callbacks, self._title
        self._end()
        if callbacks is not None:
            callbacks[1](f"{title}: cancelled; nothing was changed.")

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until the running job has finished and its callback has run (tests, scripts); True if it did."""
        from PySide6.QtCore import QCoreApplication

        deadline = time.monotonic() + timeout
        while self._job is not None and time.monotonic() < deadline:
            QCoreApplication.processEvents()
            time.sleep(0.002)
        return self._job is None

    def _show_progress(self) -> None:
        progress = self._progress
        if self._job is None or progress is None:
            return
        bar = self.widget.bar
        if progress.total > 0:
            if bar.maximum() != progress.total:
                bar.setRange(0, progress.total)
            bar.setValue(min(progress.done, progress.total))
        if progress.text:
            self.widget.label.setText(progress.text)

    def _finished(self, job: Future[Any]) -> None:
        if job is not self._job:
            return  # cancelled: its result is dropped
        callbacks = self._callbacks
        result, error = job.result()  # _guarded never raises
        self._end()
        if callbacks is None:
            return
        if error is not None:
            callbacks[1](error)
        else:
            callbacks[0](result)

    def _end(self) -> None:
        self._worker.forget(self._job)
        title = self._title
        self._job, self._progress, self._callbacks = None, None, None
        self.widget.hide()
        self.finished.emit(title)

    def shutdown(self) -> None:
        """At close: stop polling, tell a running job to stop, and do not wait for it."""
        if self._progress is not None:
            self._progress.cancel()
        self._job, self._callbacks = None, None
        self._worker.shutdown(wait=False)


def _guarded(work: Callable[[Progress], Any], progress: Progress, title: str) -> tuple[Any, str | None]:
    """Run a job; every failure becomes a message for the user (a job never raises into the GUI thread)."""
    try:
        try:
            return work(progress), None
        finally:
            progress.ended.set()
    except Cancelled:
        return None, f"{title}: cancelled; nothing was changed."
    except QkvError as e:
        return None, str(e)
    except MemoryError:
        return None, f"{title}: there is not enough memory for it; nothing was changed."
    except Exception as e:  # noqa: BLE001 - a bug must not freeze the window or lose the document
        return None, f"{title} failed ({type(e).__name__}: {e}); nothing was changed."
