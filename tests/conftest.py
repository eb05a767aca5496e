"""Test configuration: every test runs without a display."""

import atexit
import gc
import os
import shutil
import tempfile

import pytest

# Set before anything imports Qt, so no test ever needs a screen.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QKVGUI_NO_SETTINGS", "1")  # no settings file, no modal dialogs
if "QKVGUI_AUTOSAVE_DIR" not in os.environ:  # never the user's autosave; removed when the tests end
    os.environ["QKVGUI_AUTOSAVE_DIR"] = tempfile.mkdtemp(prefix="qkvgui-autosave-")
    atexit.register(shutil.rmtree, os.environ["QKVGUI_AUTOSAVE_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _collect_garbage_between_tests():
    """Collect garbage after each test, not in the middle of a Qt call, as the app does (ui.app.SafeGarbageCollector).

    An automatic collection that starts while Qt holds its signal-slot lock and frees a dead widget of an earlier
    test deadlocks the test run (seen: a landing frozen for 15 minutes in pyqtgraph's GraphicsItem._updateView)."""
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    gc.collect()
    if was_enabled:
        gc.enable()


@pytest.fixture
def window(qtbot):
    """The main window with the default session, shown (offscreen) and laid out, as a user first sees it."""
    from qkvgui.ui.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    qtbot.wait(50)  # let the views' layouts settle
    return w
