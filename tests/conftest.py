"""Test configuration: every test runs without a display."""

import os
import tempfile

# Set before anything imports Qt, so no test ever needs a screen.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QKVGUI_NO_SETTINGS", "1")  # no settings file, no modal dialogs
os.environ.setdefault("QKVGUI_AUTOSAVE_DIR", tempfile.mkdtemp(prefix="qkvgui-autosave-"))  # never the user's
