"""The file boundary: open only regular files of a bounded size, and turn any failure into one message naming the file.

Every reader in ``qkvgui.io`` goes through here, so that a pipe, a device, a folder, a link to ``/dev/zero``, a
file too large, or any exception a parser raises on hostile bytes (``tokenize.TokenError`` from numpy's header
parser, ``RecursionError`` from deep JSON, ``MemoryError``...) reaches the user as one ``QkvError`` whose message
says which file and what was wrong, and the caller keeps what it had.

    with file_boundary(path, MatrixError, "read as a matrix"):
        with open_regular(path, max_bytes=LIMIT) as f:
            ...
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from qkvgui.core.errors import Cancelled, QkvError

__all__ = ["file_boundary", "label_of", "open_regular", "human_bytes", "reason"]


def label_of(path: str | os.PathLike) -> str:
    """How a file is named in messages: its name (the full path when it has none)."""
    p = Path(path)
    return p.name or str(p)


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB': sizes in messages, for people."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def reason(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (or its type), short enough for a status bar, printable."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates cannot be printed
    return text if len(text) <= limit else text[: limit - 3] + "..."


def open_regular(
    path: str | os.PathLike, *, max_bytes: int | None = None, what: str = "file", error: type[QkvError] = QkvError
) -> BinaryIO:
    """Open a regular file for reading in binary mode, or raise ``error`` saying why not.

    Refused before anything is read: a missing file, a folder, a pipe (which would block forever), a device or a
    link to one (``/dev/zero`` never ends), a socket, and a file larger than ``max_bytes``. The file is opened
    without blocking and checked again once open, so a file swapped for a pipe in between is refused too.
    """
    label = label_of(path)
    try:
        st = os.stat(path)  # follows symbolic links: what matters is what they point at
    except OSError as e:
        raise error(f"Cannot open {label}: {e.strerror or reason(e)}.") from None
    _check_kind(label, st, what, error)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(f"Cannot open {label}: {e.strerror or reason(e)}.") from None
    try:
        st = os.fstat(fd)
        _check_kind(label, st, what, error)
        if max_bytes is not None and st.st_size > max_bytes:
            raise error(
                f"{label} is {human_bytes(st.st_size)}, more than the {human_bytes(max_bytes)} a {what} may have."
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_kind(label: str, st: os.stat_result, what: str, error: type[QkvError]) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise error(f"Cannot open {label}: it is a folder, not a {what}.")
    if not stat.S_ISREG(mode):
        kind = (
            "a pipe"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise error(f"Cannot open {label}: it is {kind}, not a {what} (only regular files are read).")


@contextmanager
def file_boundary(path: str | os.PathLike, error: type[QkvError], doing: str) -> Iterator[None]:
    """Turn any failure inside the block into ``error`` naming the file: the one place where hostile bytes stop.

    ``doing`` completes "<file> could not be ...", e.g. "read as a matrix". An ``error`` raised inside passes
    through unchanged; another ``QkvError`` keeps its message; anything else (a parser's own exception, an
    ``OSError``, ``RecursionError``, ``MemoryError``) becomes one line that says what went wrong where.
    """
    label = label_of(path)
    try:
        yield
    except (error, Cancelled):  # Cancel is not a problem with the file
        raise
    except QkvError as e:
        raise error(reason(e, 400)) from None
    except MemoryError:
        raise error(f"{label} could not be {doing}: there is not enough memory for it.") from None
    except RecursionError:
        raise error(f"{label} could not be {doing}: it is nested too deeply.") from None
    except OSError as e:
        raise error(f"{label} could not be {doing}: {e.strerror or reason(e)}.") from None
    except Exception as e:  # noqa: BLE001 - this is the boundary: nothing a file holds may escape as a crash
        raise error(f"{label} could not be {doing} ({type(e).__name__}: {reason(e)}).") from None
