"""Reading session files: open the file defensively, read session.json, and hand it to the loader of its version.

Reading trusts nothing in the file: sizes are checked against ``LIMITS`` and a byte budget from the JSON and from
each ``.npy`` header before any array is allocated (``archive.py``), pickles are never loaded, and every problem is
reported as a ``SessionFileError`` naming the file, the member and the field. A new format version adds a module
with a ``load(fields, archive)`` function and one line to ``LOADERS``; it never changes an old loader.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

from qkvgui.core import SessionError, SessionFileError
from qkvgui.core.cancel import CancelToken
from qkvgui.core.checks import MAX_JSON_BYTES
from qkvgui.io.files import open_regular
from qkvgui.io.session import v1, v2, v3, v4
from qkvgui.io.session.archive import DAMAGE, JSON_MEMBER, Archive, Fields, json_kind, reason
from qkvgui.io.session.writer import FORMAT, VERSION
from qkvgui.state import SessionState, validate_state

__all__ = ["LOADERS", "read_state"]

#: one loader per format version; a file of any version listed here loads forever
LOADERS: dict[int, Callable[[Fields, Archive], SessionState]] = {1: v1.load, 2: v2.load, 3: v3.load, 4: v4.load}


def read_state(path: str | os.PathLike[str], cancel: CancelToken | None = None) -> SessionState:
    """The validated state stored in a .qkv file (arrays float64); raises SessionFileError for any bad file.

    ``cancel`` (from a worker): checked between pieces of the matrices, so a cancelled read stops there with
    ``Cancelled`` (nothing kept); it is told the progress in float64 bytes read of all the file declares."""
    path = Path(path)
    label = path.name or str(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SessionFileError(f"Cannot open {label}: it is a folder, not a session file.")
        if not stat.S_ISREG(mode):  # a pipe or a device could block or never end
            raise SessionFileError(f"Cannot open {label}: it is not a regular file.")
        # opened without blocking and checked again once open: a file swapped for a pipe in between is refused too
        f = open_regular(path, what="session file", error=SessionFileError)
    except OSError as e:
        raise SessionFileError(f"Cannot open {label}: {e.strerror or e}.") from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise SessionFileError(f"Cannot read {label}: {e.strerror or e}.") from None
        if size == 0:
            raise SessionFileError(f"{label} is empty: it is not a qkvgui session (was it saved completely?).")
        try:
            zf = zipfile.ZipFile(f)
        except DAMAGE:
            raise SessionFileError(
                f"{label} is not a qkvgui session: it is not a ZIP archive, or it is truncated or damaged."
            ) from None
        with zf:
            state = _read_archive(zf, label, cancel)
    try:
        validate_state(state)
    except SessionError as e:
        raise SessionFileError(f"{label}: {e}") from None
    return state


def _read_archive(zf: zipfile.ZipFile, label: str, cancel: CancelToken | None) -> SessionState:
    archive = Archive(zf, label, cancel)
    if JSON_MEMBER not in archive.infos:
        raise archive.error(f"it is a ZIP archive but not a qkvgui session: it has no {JSON_MEMBER}.")
    raw = archive.read_bytes(JSON_MEMBER, "the settings", MAX_JSON_BYTES)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise archive.error(f"{JSON_MEMBER} is not UTF-8 text.") from None
    except RecursionError:
        raise archive.error(f"{JSON_MEMBER} is nested too deeply to be a session.") from None
    except ValueError as e:
        raise archive.error(f"{JSON_MEMBER} is not valid JSON ({reason(e)}).") from None
    if not isinstance(doc, dict):
        raise archive.error(f"{JSON_MEMBER} must hold a JSON object, not {json_kind(doc)}.")
    fields = Fields(doc, archive)
    fmt = fields.get("format", str)
    if fmt != FORMAT:
        raise archive.error(f"{JSON_MEMBER} says its format is {fmt!r}, not {FORMAT!r}: it is not a qkvgui session.")
    version = fields.get("version", int)
    loader = LOADERS.get(version)
    if loader is None:
        known = ", ".join(str(v) for v in sorted(LOADERS))
        newer = " It was probably written by a newer qkvgui: update qkvgui to open it." if version > VERSION else ""
        raise archive.error(
            f"session format version {version} is not supported; this qkvgui reads version(s) {known}.{newer}"
        )
    return loader(fields, archive)
