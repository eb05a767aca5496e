"""Recomputes attention after edits: merges the edits of one event-loop turn, keeps big layers off the GUI thread.

Small layers are computed on the GUI thread at the end of the turn, so every view shows the edit in the same frame.
A layer above ``threshold`` multiply-adds goes to one worker thread: at most one computation runs at a time, and
a result that an edit has made stale is dropped; the newest request runs as soon as the worker is free.
The worker also computes the selected head's n × n steps (``result.head(h)``), and so does ``prepare_head`` when
the user selects a head whose steps are not computed yet: the GUI thread only draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from qkvgui.core import QkvError
from qkvgui.session import CONTENT_EVENTS, Session
from qkvgui.state import SessionState, compute_state, layer_cost
from qkvgui.ui.worker import Worker

#: multiply-adds above which the computation leaves the GUI thread (a GPT-2 layer at n = 128 is ~3e8)
DEFAULT_THRESHOLD = 2e7

#: what a computation gives back: (results, None, seconds) or (None, the error message, seconds)
Outcome = tuple[list[Any] | None, str | None, float]


@dataclass
class _Computation:
    """The computation on the worker: the generation it was asked for and the state it computes."""

    future: Future[Outcome]
    generation: int
    state: SessionState


@dataclass
class _HeadJob:
    """``results[layer].head(head)`` on the worker, for the results it belongs to."""

    future: Future[object]
    key: tuple[int, int, int]  # (id(results), layer, head)
    results: list[Any]


class RecomputeScheduler(QObject):
    """Turns the session's content events into ``computed(result)``, or ``failed(message)`` when the core refuses.

    Selection events (head, layer, view) are not connected: selecting shows another part of the same result."""

    computed = Signal(object)
    failed = Signal(str)
    busy = Signal(bool)

    def __init__(self, session: Session, threshold: float = DEFAULT_THRESHOLD, parent=None):
        super().__init__(parent)
        self.session = session
        self.threshold = threshold
        self.last_compute_seconds = 0.0
        self._generation = 0  # bumped by every request; a result carries the generation it was asked for
        self._running: _Computation | None = None
        self._head_job: _HeadJob | None = None  # result.head(h) for a newly selected head
        self.results: list | None = None  # the newest results emitted
        # (state, results) of the last computation: unchanged heads carry over
        self._previous: tuple[SessionState, list[Any]] | None = None
        self._pending = False
        self._worker = Worker("qkvgui-compute", parent=self)  # one thread: one computation at a time
        self._turn = QTimer(self, singleShot=True, interval=0)
        self._turn.timeout.connect(self._start)
        for kind in CONTENT_EVENTS:
            getattr(session.events, kind).connect(self._on_content_changed)
        # kind -> (generation, future, done): the running job of each kind
        self._side_jobs: dict[str, tuple[int, Callable[[Any], None]]] = {}  # kind: (its generation, its done)
        self._side_waiting: dict[str, tuple[Any, ...]] = {}  # kind -> (fn, arg, done): the newest request waiting
        self._side_generation: dict[str, int] = {}

    def _on_content_changed(self, *_: object) -> None:
        self.request()

    def request(self) -> None:
        """Ask for a recomputation at the end of this event-loop turn (many requests, one computation)."""
        self._generation += 1
        if not self._turn.isActive():
            self._turn.start()

    def compute_now(self) -> None:
        """Compute synchronously on the calling thread (start-up, tests)."""
        self._generation += 1
        state = self.session.state()
        self._finish(self._generation, *self._run(state, self._previous), state=state)

    def _start(self) -> None:
        # This start reads the session as it is now, so a turn still waiting (a request made while the last job
        # ran, that job's stale result starting this one) has nothing left to ask: without this it computed the
        # same state a second time and drew it twice.
        self._turn.stop()
        state = self.session.state()
        if layer_cost(state) <= self.threshold:
            if self._running is None:
                self._finish(self._generation, *self._run(state, self._previous), state=state)
            else:
                self._pending = True  # a big job is still running; this small one follows it
            return
        if self._running is not None:
            self._pending = True  # at most one at a time: run the newest when the worker is free
            return
        future = self._worker.submit(self._run, state, self._previous, done=self._computed)
        self._running = _Computation(future, self._generation, state)
        self.busy.emit(True)

    def prepare_head(self, results: list, layer: int, head: int) -> bool:
        """True when results[layer].head(head) is at hand; otherwise compute it on the worker and emit
        ``computed(results)`` again when it is (unless newer results came first)."""
        r = results[layer] if 0 <= layer < len(results) else None
        if r is None or not 0 <= head < r.n_heads or r.head_ready(head):
            return True
        job = self._head_job
        if job is not None and not job.future.done() and job.key == (id(results), layer, head):
            return False  # already on its way
        future = self._worker.submit(r.head, head, done=self._head_done)
        self._head_job = _HeadJob(future, (id(results), layer, head), results)
        return False

    def _head_done(self, future: Future[object]) -> None:
        job = self._head_job
        if job is None or job.future is not future:
            return  # another head was selected meanwhile
        self._head_job = None
        if job.results is self.results and self._running is None:
            self.computed.emit(job.results)

    def _computed(self, future: Future[Outcome]) -> None:
        job = self._running
        if job is None or job.future is not future:
            return
        self._running = None
        self.busy.emit(False)
        self._finish(job.generation, *future.result(), state=job.state)
        if self._pending:
            self._pending = False
            self._start()

    @staticmethod
    def _run(state: SessionState, previous: tuple[SessionState, list[Any]] | None = None) -> Outcome:
        t0 = time.perf_counter()
        try:
            results = compute_state(state, previous)
            if 0 <= state.layer < len(results) and 0 <= state.head < results[state.layer].n_heads:
                results[state.layer].head(state.head)  # the selected head's steps, here rather than in the GUI
            return results, None, time.perf_counter() - t0
        except QkvError as e:
            return None, str(e), time.perf_counter() - t0

    def _finish(
        self,
        generation: int,
        result: list[Any] | None,
        error: str | None,
        seconds: float,
        state: SessionState | None = None,
    ) -> None:
        if result is not None and state is not None:
            self._previous = (state, result)  # valid for its state even when stale
        if generation != self._generation:
            self._pending = True  # stale: an edit came in while it ran; the newest request will follow
            return
        self.last_compute_seconds = seconds
        if error is not None:
            self.failed.emit(error)
        else:
            self.results = result
            self.computed.emit(result)

    def submit(self, kind: str, fn, arg, done) -> None:
        """Run ``fn(arg)`` on the worker and ``done(value)`` on the GUI thread (the circuits tab's SVDs and
        composition scores). At most one job of a kind runs; a newer submit waits for it and replaces any older
        waiting one, and a result made stale by a newer submit is dropped. An error is reported by ``failed``."""
        self._side_generation[kind] = self._side_generation.get(kind, 0) + 1
        if kind in self._side_jobs:
            self._side_waiting[kind] = (fn, arg, done)
            return
        self._side_start(kind, fn, arg, done)

    def _side_start(self, kind: str, fn, arg, done) -> None:
        self._worker.submit(fn, arg, done=partial(self._side_done, kind))
        self._side_jobs[kind] = (self._side_generation[kind], done)

    def _side_done(self, kind: str, job: Future[Any]) -> None:
        generation, done = self._side_jobs.pop(kind)
        if kind in self._side_waiting:  # a newer request came in while this one ran: run it now
            self._side_start(kind, *self._side_waiting.pop(kind))
        if generation != self._side_generation.get(kind):
            return
        try:
            value = job.result()
        except (QkvError, ValueError, np.linalg.LinAlgError) as e:
            self.failed.emit(str(e))
        else:
            done(value)

    def side_busy(self) -> bool:
        """True while a submitted side job runs."""
        return bool(self._side_jobs)

    def busy_now(self) -> bool:
        """True while a computation is asked for or running."""
        return self._turn.isActive() or self._running is not None or self._pending or self._head_job is not None

    def shutdown(self) -> None:
        self._turn.stop()
        self._worker.shutdown(wait=True)
