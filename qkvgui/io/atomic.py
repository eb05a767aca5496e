"""Writing a file so that a failure half-way (a full disk, an interrupt) leaves the previous file as it was."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(file) on a temporary file in path's folder, flush it to disk, then rename it over path.

    The new file keeps the permissions of the one it replaces (a new one gets 0o666 less the umask, not
    mkstemp's 0o600); on any failure the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    folder = path.parent
    mode = _file_mode(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    return path


def _file_mode(path: Path) -> int:
    """The permissions of the file being replaced, or those a new file gets."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0o077)  # reading the umask means setting it; restrictive for the instant it is wrong
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); best effort where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
