"""Every error a user can meet, one family under ``QkvError``; each message says what is wrong, where, and what to do.

Catch ``QkvError`` at a boundary (a menu action, the command line) and show its message; anything else escaping is
a bug. The family:

    QkvError                 base class (a ValueError, so older ``except ValueError`` code keeps working)
      ShapeError             two matrices do not fit together
      NonFiniteError         NaN or an infinity where only finite numbers make sense
      SessionError           the document refuses a state or an edit
        SessionFileError     a session file (.qkv) cannot be read or written
        PresetError          there is no preset of that name
      MatrixFileError        a matrix file (.npy, .csv) cannot be read or written
      CheckpointError        a model folder (config, weights, tokenizer) cannot be read or run
      FigureError            a figure or animation cannot be drawn or written
      UsageError             bad input on the command line
      ReadOnlyFileError      a file to be replaced is read-only or not a regular file (also a PermissionError)
      Cancelled              the user cancelled long work (reading a file, a forward pass); nothing was changed
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "CheckpointError",
    "FigureError",
    "MatrixFileError",
    "NonFiniteError",
    "PresetError",
    "QkvError",
    "ReadOnlyFileError",
    "SessionError",
    "SessionFileError",
    "ShapeError",
    "UsageError",
]


class QkvError(ValueError):
    """Base class of every error qkvgui raises on purpose; its message is written for the user."""


class ShapeError(QkvError):
    """Two matrices do not fit together (names both sides and the dimension they disagree on)."""


class NonFiniteError(QkvError):
    """A matrix holds NaN or an infinity where only finite numbers make sense."""


class SessionError(QkvError):
    """A session (or a change to one) that cannot be accepted; the message says what and where."""


class SessionFileError(SessionError):
    """A session file that cannot be read or written: the message names the file and the member or field."""


class PresetError(SessionError):
    """There is no preset of that name; the message lists the presets that exist."""


class MatrixFileError(QkvError):
    """A matrix file (.npy or .csv) that cannot be read or written: the message names the file and the problem."""


class CheckpointError(QkvError):
    """A model checkpoint that cannot be read or run: missing file, unknown architecture, missing tensor, bad
    layer number or a sentence too long for the model."""


class FigureError(QkvError):
    """A figure that cannot be drawn or written: unknown format, empty or oversized picture, unwritable place."""


class UsageError(QkvError):
    """Bad input on the command line: printed as one line, exit code 2."""


class ReadOnlyFileError(QkvError, PermissionError):
    """The file to be replaced is read-only (or not a file): it is left alone, as office suites do. Also a
    ``PermissionError``, so code that catches OSError on a save still catches it."""


class Cancelled(QkvError):
    """The user cancelled long work (``core.cancel``: reading a file, a forward pass); nothing was changed."""

    def __init__(self, message: str = "cancelled; nothing was changed.") -> None:
        super().__init__(message)
