"""qkvgui: a desktop attention explorer. ``qkvgui.core`` is the NumPy math; ``qkvgui.Session`` the document."""

from qkvgui.core.errors import (
    CheckpointError,
    FigureError,
    MatrixFileError,
    NonFiniteError,
    PresetError,
    QkvError,
    SessionError,
    SessionFileError,
    ShapeError,
    UsageError,
)
from qkvgui.session import Selection, Session, SessionEvents
from qkvgui.state import Layer, SessionState, validate_state

__all__ = [
    "CheckpointError",
    "FigureError",
    "Layer",
    "MainWindow",
    "MatrixFileError",
    "NonFiniteError",
    "PresetError",
    "QkvError",
    "Selection",
    "Session",
    "SessionError",
    "SessionEvents",
    "SessionFileError",
    "SessionState",
    "ShapeError",
    "UsageError",
    "__version__",
    "show",
    "validate_state",
]
#: the version, in one place (pyproject reads it from here)
__version__ = "0.1.0"


def show(session: Session | None = None) -> object:
    """Open the explorer window on `session` and return it without blocking (IPython/Jupyter: run ``%gui qt``
    first; the session can then be changed from code and the window follows live). See ``qkvgui.ui.app``."""
    from qkvgui.ui.app import show_window

    return show_window(session)


def __getattr__(name: str) -> object:
    # The window pulls in Qt; import it only when asked for, so scripts using the core stay Qt-free.
    if name == "MainWindow":
        from qkvgui.ui.main_window import MainWindow

        return MainWindow
    raise AttributeError(f"module 'qkvgui' has no attribute {name!r}")
