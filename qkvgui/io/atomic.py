"""Writing a file so that a failure half-way (a full disk, an interrupt, a kill) leaves the previous file as it was.

The new content goes to a hidden temporary file beside the target (``.<name>.qkvgui-<pid>-<random>.tmp``), is
flushed to disk, then renamed over the target. A process killed half-way leaves its temporary file behind: the next
save into that folder, and the next start of the app, remove those whose writer is gone.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from qkvgui.core.errors import ReadOnlyFileError

__all__ = ["ReadOnlyFileError", "atomic_write", "clean_stale_temporaries", "write_target"]

#: a temporary file younger than this is never removed: its writer (on this machine or another) may be at work
GRACE_SECONDS = 60.0
#: temporary files of older qkvgui versions carry no process id: they are removed when older than this
OLD_FORMAT_SECONDS = 3600.0
#: whatever their process id says, temporary files older than this are removed (process ids are reused)
ANCIENT_SECONDS = 24 * 3600.0
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.qkvgui-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")
#: what qkvgui versions before process ids wrote: ".<name>.<8 random characters>.tmp", for the files qkvgui writes
_OLD_TEMPORARY = re.compile(r"^\.(?P<name>.+\.(?:qkv|npy|csv|png|svg|pdf|gif|mp4))\.[a-z0-9_]{8}\.tmp$")


def write_target(path: str | os.PathLike) -> Path:
    """The file a save to ``path`` writes: the final target of a symbolic link (so the link stays a link and the
    file it points at gets the new content), else path itself. Refuses a read-only target or one that is not a
    regular file with ``ReadOnlyFileError``."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    except OSError as e:
        raise ReadOnlyFileError(f"Cannot write {path.name}: {e.strerror or e}.") from None
    name = path.name if target == path else f"{path.name} (a link to {target})"
    if stat.S_ISDIR(st.st_mode):
        raise ReadOnlyFileError(f"Cannot write {name}: it is a folder.")
    if not stat.S_ISREG(st.st_mode):
        raise ReadOnlyFileError(f"Cannot write {name}: it is not a regular file (a pipe or a device).")
    # Owner write bits, not os.access: as root os.access says yes to everything, and a read-only file is a choice.
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(target, os.W_OK):
        raise ReadOnlyFileError(
            f"{name} is read-only: it was left as it is. Save under another name, or make the file writable first."
        )
    return target


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(file) on a temporary file in the target's folder, flush it to disk, then rename it over the target.

    The target is path, or the file a symbolic link at path points to (the link is kept); a read-only target is
    refused with ``ReadOnlyFileError`` before anything is written. The new file keeps the permissions of the one it
    replaces (a new one gets 0o666 less the umask, not mkstemp's 0o600); on any failure the temporary file is
    removed and the error re-raised. Stale temporary files of killed writers in that folder are removed first.
    Returns path as given.
    """
    path = Path(path)
    target = write_target(path)
    folder = target.parent
    clean_stale_temporaries(folder)
    mode = _file_mode(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.qkvgui-{os.getpid()}-", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    return path


def clean_stale_temporaries(folder: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Remove the temporary files that killed qkvgui writers left in ``folder``; returns those removed.

    Only qkvgui's own names are touched, only regular files, never one younger than ``GRACE_SECONDS``, and never
    one whose writing process is still alive (unless it is a day old: process ids are reused). Errors (a folder
    that cannot be listed, a file that cannot be removed) are ignored: cleaning up must never stop a save.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.endswith(".tmp") or not entry.name.startswith("."):
            continue
        new, old = _TEMPORARY.match(entry.name), _OLD_TEMPORARY.match(entry.name)
        if not (new or old):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        age = now - st.st_mtime
        if age < GRACE_SECONDS:
            continue
        if new:
            stale = age > ANCIENT_SECONDS or not _alive(int(new["pid"]))
        else:
            stale = age > OLD_FORMAT_SECONDS
        if stale:
            try:
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (True when that cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no cheap check: rely on the age rule
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True


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
