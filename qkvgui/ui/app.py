"""Starting the Qt application (figures are written by qkvgui.io.figure_files, with no window)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

#: run_app freezes the start-up objects this long after every view of the window is drawn
FREEZE_AFTER_MS = 300


#: how long (s) a thread may keep Python's lock while another waits for it (CPython's default is 5 ms)
SWITCH_INTERVAL = 0.0003


def favour_the_gui_thread() -> None:
    """Let the GUI thread have Python's lock within a fraction of a millisecond while a worker computes or parses.

    Every Python call Qt makes (a paint, a model's data, a timer) first waits for the lock. With CPython's 5 ms
    default, a turn of the event loop that makes many such calls while a worker parses a 7 MB paste or .csv waited
    about 5 ms for each: 100-170 ms stalls with only ~8 ms of the GUI thread's own work in them. At 1 ms the
    paste still stalled the window ~155 ms (GUI CPU 13 ms) on a quiet machine; at 0.3 ms, 15-20 ms, with the paste
    no slower (``python -m qkvgui.bench open``). Workers lose nothing measurable: NumPy and BLAS release the lock
    for their long loops anyway, and a forced switch happens only while another thread waits for the lock.
    """
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)


def freeze_startup_objects() -> None:
    """Move everything built at start-up (Qt wrappers, pyqtgraph, NumPy) out of the garbage collector's view.

    A full collection otherwise walks all of it and stalls the GUI thread for ~20 ms at unpredictable moments,
    on top of whatever is being drawn then; the objects made later (results, edits) are still collected.
    """
    gc.collect()
    gc.freeze()


class SafeGarbageCollector:
    """Collect Python's garbage only between events, on the GUI thread, never in the middle of a Qt call.

    With automatic collection on, a collection can start inside any allocation, including one Qt makes while it
    holds its signal-slot lock (e.g. in ``QObject::disconnect`` calling back into Python). If that collection
    frees a dead widget, the widget's destructor waits for the same lock and the window hangs for good (seen as
    a test run that froze in pyqtgraph's ``GraphicsItem._updateView``). So automatic collection is switched off
    and a timer collects on the same thresholds from the event loop, where no Qt lock is held (the pattern
    Camelot and other PyQt applications use for the same reason). ``stop()`` puts the collector back as it was.
    """

    INTERVAL_MS = 500

    def __init__(self, parent=None) -> None:
        from PySide6.QtCore import QTimer

        self._was_enabled = gc.isenabled()
        self._thresholds = gc.get_threshold()
        gc.disable()
        self._timer = QTimer(parent)
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self.check)
        self._timer.start()

    def check(self) -> int:
        """Collect the generations whose counts passed their thresholds; returns the oldest one collected (-1:
        none)."""
        counts = gc.get_count()
        collected = -1
        for generation in range(len(counts)):
            if self._thresholds[generation] and counts[generation] > self._thresholds[generation]:
                collected = generation
        if collected >= 0:
            gc.collect(collected)
        return collected

    def stop(self) -> None:
        self._timer.stop()
        if self._was_enabled:
            gc.enable()


def install_safe_gc(app) -> SafeGarbageCollector:
    """Give the application one SafeGarbageCollector (kept on the application, not in a module global)."""
    collector = getattr(app, "_qkvgui_gc", None)
    if collector is None:
        collector = app._qkvgui_gc = SafeGarbageCollector(app)
    return collector


def run_app(session=None, path: Path | None = None) -> int:
    """Build the app and the window, offer to recover the work of crashed runs (however the app was launched),
    clean up after killed saves, run the event loop; returns its exit code."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from qkvgui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("qkvgui")
    app.setOrganizationName("qkvgui")
    install_safe_gc(app)
    # painted first, its heatmaps drawn in over the next event-loop turns (pyqtgraph is imported after the paint)
    window = MainWindow(session, path, progressive=True)
    window.show()
    # once every view is drawn (a full collection of everything built so far takes ~0.15 s): the window first
    window.constructed.connect(lambda: QTimer.singleShot(FREEZE_AFTER_MS, freeze_startup_objects))
    window.document.clean_up_at_start()
    window.document.offer_recovery()
    return app.exec()


def show_window(session=None):
    """Open the explorer on `session` and return the window at once, without running an event loop.

    For IPython and Jupyter: after ``%gui qt`` the kernel's own loop drives the window, so the session can be
    changed from code (``session.set_matrix(...)``) and every view follows live. In a plain script, call
    ``QApplication.instance().exec()`` afterwards. The application keeps the window alive until it is closed.
    """
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from qkvgui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("qkvgui")
    install_safe_gc(app)
    window = MainWindow(session)
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
    # a reference held by the application (not a module global): an unassigned show() keeps its window
    kept = getattr(app, "_qkvgui_windows", None)
    if kept is None:
        kept = app._qkvgui_windows = []
    kept.append(window)
    window.destroyed.connect(lambda *_: kept.remove(window) if window in kept else None)
    window.show()
    window.raise_()
    return window
