"""The recompute scheduler: a result an edit has made stale never reaches the views, and selecting a head or a
layer computes nothing."""

from __future__ import annotations

import threading

import numpy as np

from qkvgui import Session
from qkvgui.ui.scheduler import RecomputeScheduler


def test_a_result_made_stale_by_an_edit_is_dropped(qtbot, monkeypatch):
    session = Session()
    gate = threading.Event()
    real_run = RecomputeScheduler._run

    def held_run(state, previous=None):  # the worker waits until the test has edited the session
        gate.wait(10)
        return real_run(state, previous)

    monkeypatch.setattr(RecomputeScheduler, "_run", staticmethod(held_run))
    scheduler = RecomputeScheduler(session, threshold=0)  # every computation on the worker
    emitted: list = []
    scheduler.computed.connect(emitted.append)
    try:
        scheduler.request()
        qtbot.waitUntil(lambda: scheduler._running is not None)  # the first computation is under way
        session.set_block("W_Q", 0, 0, [[3.0]], head=0)  # ...and now stale
        gate.set()
        qtbot.waitUntil(lambda: not scheduler.busy_now() and bool(emitted), timeout=10000)
        qtbot.wait(50)  # nothing else arrives later
        assert len(emitted) == 1, "the stale result was shown before the fresh one"
        fresh = session.compute_layers()
        np.testing.assert_array_equal(emitted[0][0].output, fresh[0].output)
    finally:
        gate.set()
        scheduler.shutdown()


def test_selecting_a_head_or_a_layer_computes_nothing(qtbot):
    session = Session.from_preset("induction")
    scheduler = RecomputeScheduler(session)
    emitted: list = []
    scheduler.computed.connect(emitted.append)
    try:
        session.set_head(0)
        session.set_layer(0)
        session.set_view("circuits")
        qtbot.wait(30)
        assert not emitted and not scheduler.busy_now()
        session.set_causal(not session.causal)  # content: computed
        qtbot.waitUntil(lambda: len(emitted) == 1)
    finally:
        scheduler.shutdown()
