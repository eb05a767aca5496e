"""Work off the GUI thread, handed back on it: a thread pool whose finished jobs a timer on the GUI thread collects.

The one implementation of the pattern the recompute scheduler and the status bar's jobs use: a
``ThreadPoolExecutor`` runs the work, a ``QTimer`` on the GUI thread polls for finished futures while any is
outstanding (no signal crosses threads, nothing runs on a worker but the work itself) and calls each one's
``done(future)`` there, in the order they were submitted.

    worker = Worker("qkvgui-compute", parent=self)
    worker.submit(compute, state, done=lambda future: show(future.result()))
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

__all__ = ["Worker"]


class Worker(QObject):
    """Runs ``submit``ted functions on ``threads`` worker threads; each one's ``done(future)`` runs on the GUI
    thread once it has finished. ``polled`` is emitted on every look while something is still running (progress)."""

    polled = Signal()

    def __init__(self, name: str, threads: int = 1, interval_ms: int = 5, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._waiting: dict[Future[Any], Callable[[Future[Any]], None]] = {}
        self._poll = QTimer(self, interval=interval_ms)
        self._poll.timeout.connect(self._collect)

    def submit(self, fn: Callable[..., Any], *args: Any, done: Callable[[Future[Any]], None]) -> Future[Any]:
        """Run ``fn(*args)`` on a worker thread; ``done(future)`` on the GUI thread when it has finished."""
        future = self._pool.submit(fn, *args)
        self._waiting[future] = done
        self._poll.start()
        return future

    def forget(self, future: Future[Any] | None) -> None:
        """Never call ``future``'s done (it was cancelled: its result, whenever it comes, is dropped)."""
        if future is not None:
            self._waiting.pop(future, None)
        if not self._waiting:
            self._poll.stop()

    def busy(self) -> bool:
        """True while a submitted job's done has not run yet."""
        return bool(self._waiting)

    def _collect(self) -> None:
        for future, done in list(self._waiting.items()):
            if future.done() and self._waiting.pop(future, None) is not None:
                done(future)
        if self._waiting:
            self.polled.emit()
        else:
            self._poll.stop()

    def shutdown(self, wait: bool = True) -> None:
        """Stop collecting and drop every job not started yet; ``wait`` for the running one or not."""
        self._poll.stop()
        self._waiting.clear()
        self._pool.shutdown(wait=wait, cancel_futures=True)
