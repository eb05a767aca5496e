"""Test configuration: every test runs without a display."""

import atexit
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
