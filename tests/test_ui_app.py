"""The application's garbage collection: only from the event loop, never inside a Qt call."""

import gc
import weakref

from qkvgui.ui.app import SafeGarbageCollector


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_the_collector_switches_automatic_collection_off_and_back(qapp):
    gc.enable()
    collector = SafeGarbageCollector()
    try:
        assert not gc.isenabled()
    finally:
        collector.stop()
    assert gc.isenabled()
    gc.disable()  # as the test configuration keeps it during a test


def test_garbage_in_cycles_is_collected_by_the_event_loop(qapp, qtbot):
    collector = SafeGarbageCollector()
    try:
        node = _Node()
        alive = weakref.ref(node)
        del node
        gc.collect()  # start from zero counts
        node = _Node()
        alive = weakref.ref(node)
        del node
        # more garbage in cycles, past the youngest generation's threshold, as a running window makes
        for _ in range(gc.get_threshold()[0] + 10):
            _Node()
        assert alive() is not None  # nothing collected it yet: automatic collection is off
        qtbot.waitUntil(lambda: alive() is None, timeout=3 * SafeGarbageCollector.INTERVAL_MS)
    finally:
        collector.stop()
        gc.disable()


def test_nothing_is_collected_below_the_thresholds(qapp):
    collector = SafeGarbageCollector()
    try:
        gc.collect()
        assert collector.check() == -1
    finally:
        collector.stop()
        gc.disable()
