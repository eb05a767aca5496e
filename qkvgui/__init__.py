"""qkvgui: a desktop attention explorer. `qkvgui.core` is the NumPy math; `qkvgui.Session` the document."""

from qkvgui.io import Session, SessionError

__all__ = ["MainWindow", "Session", "SessionError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The window pulls in Qt; import it only when asked for, so scripts using the core stay Qt-free.
    if name == "MainWindow":
        from qkvgui.ui.main_window import MainWindow

        return MainWindow
    raise AttributeError(f"module 'qkvgui' has no attribute {name!r}")
