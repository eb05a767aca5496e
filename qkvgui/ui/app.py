"""Starting the Qt application (figures are written by qkvgui.io.figure_files, with no window)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path


def freeze_startup_objects() -> None:
    """Move everything built at start-up (Qt wrappers, pyqtgraph, NumPy) out of the garbage collector's view.

    A full collection otherwise walks all of it and stalls the GUI thread for ~20 ms at unpredictable moments,
    on top of whatever is being drawn then; the objects made later (results, edits) are still collected.
    """
    gc.collect()
    gc.freeze()


def run_app(session=None, path: Path | None = None) -> int:
    """Build the app and the window, offer to recover the work of crashed runs (however the app was launched),
    clean up after killed saves, run the event loop; returns its exit code."""
    from PySide6.QtWidgets import QApplication

    from qkvgui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("qkvgui")
    app.setOrganizationName("qkvgui")
    window = MainWindow(session, path)
    window.show()
    freeze_startup_objects()
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
