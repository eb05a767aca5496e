"""Files: sessions, matrices, figures, checkpoints.

``qkvgui.io.Session`` (exported as ``qkvgui.Session``) is the document of ``qkvgui.session`` with its files:
``Session.load(path)`` and ``session.save(path)``. The persistence lives here, one floor above the document,
so that the document itself stays free of file formats (the layering of DESIGN.md: io → session → core).
"""

from __future__ import annotations

from pathlib import Path

from qkvgui.io.session_file import read_state, write_session
from qkvgui.session import Session as _Document
from qkvgui.session import SessionError

__all__ = ["Session", "SessionError"]


class Session(_Document):
    """The attention document, with loading and saving (see docs/session-format.md for the format)."""

    @classmethod
    def load(cls, path: str | Path) -> Session:
        """Read a session file; anything wrong with it raises SessionError saying what and where."""
        return cls(read_state(path))

    def save(self, path: str | Path) -> Path:
        """Write the session atomically: the previous file survives any failure half-way."""
        return write_session(self, path)
