"""Session files (``.qkv``): a state written atomically and read back bit-exact, one loader per format version.

A ``.qkv`` file is a ZIP archive (members stored, not compressed, so saving and loading run at disk speed) holding
``session.json`` (every setting, human-readable) and one ``.npy`` per matrix (float64, little-endian).
docs/session-format.md describes the format; tests/data holds a golden file of every version, which must keep
loading forever.

    write_state(state, path) -> Path     atomic: the previous file survives any failure   (writer.py)
    read_state(path) -> SessionState     validated; anything wrong raises SessionFileError (reader.py)

The rest, one job per module: ``archive.py`` the guarded ZIP reader and the size limits, ``v1.py`` and ``v2.py``
the loader of each format version, ``pretty.py`` the JSON layout. The document (``qkvgui.Session``) calls these
functions in ``Session.load`` and ``Session.save``; ``python -m qkvgui.bench session`` times them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qkvgui.core import SessionFileError
from qkvgui.io.session.reader import LOADERS, read_state
from qkvgui.io.session.writer import FORMAT, VERSION, write_state
from qkvgui.state import SessionState

__all__ = ["FORMAT", "LOADERS", "SUFFIX", "VERSION", "read_state", "write_session", "write_state"]

#: the file name suffix of session files
SUFFIX = ".qkv"


def write_session(session_or_state: Any, path: str | os.PathLike[str]) -> Path:
    """Write a ``Session`` (anything with a ``state()``) or a ``SessionState``: ``write_state`` for either."""
    state = session_or_state
    if not isinstance(state, SessionState) and callable(getattr(state, "state", None)):
        state = state.state()
    if not isinstance(state, SessionState):
        raise SessionFileError(
            f"write_session needs a Session or a session state, not {type(session_or_state).__name__}."
        )
    return write_state(state, path)
