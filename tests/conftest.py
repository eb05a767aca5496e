"""Test configuration: every test runs without a display."""

import os

# Set before anything imports Qt, so no test ever needs a screen.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QKVGUI_NO_SETTINGS", "1")
