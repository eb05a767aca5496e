"""Recovery data: the unsaved work of each open document of each running qkvgui, kept so a crash loses nothing.

Every process that autosaves first claims an *instance*: a lock file it holds (``flock``) for as long as it runs.
Each document's autosave is ``<instance>--<document>.qkv`` with a small ``.json`` beside it (the file it came from,
its title, when it was saved). A recovery whose instance lock can be taken belongs to a process that is gone: it is
an *orphan*, offered on the next start however the app is launched. A live instance's files are never offered and
never deleted by another one. Qt-free: the window's document controller calls this.

    store = RecoveryStore(folder)              # claims this process's instance
    store.autosave(doc, write)                 # write(path) saves the session to path (atomically)
    store.discard(doc)                         # saved or discarded: nothing left to recover
    for orphan in store.orphans(): ...         # adopted: locked by this process until recovered or discarded
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from qkvgui.io.atomic import _alive, atomic_write, clean_stale_temporaries

__all__ = ["Orphan", "RecoveryStore", "document_key"]

_LOCK = re.compile(r"^(?P<instance>\d+-[0-9a-f]{8})\.lock$")
_META = re.compile(r"^(?P<instance>\d+-[0-9a-f]{8})--(?P<doc>[A-Za-z0-9_-]{1,80})\.json$")


def document_key(path: str | os.PathLike | None, fallback: str) -> str:
    """A file-name-safe key for a document: from its absolute path when it has one (so the same file gets the same
    key in every run), else ``fallback`` (an untitled document's number)."""
    if path is None:
        return re.sub(r"[^A-Za-z0-9_-]", "_", fallback)[:40] or "untitled"
    resolved = os.path.realpath(os.fspath(path))
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(resolved).stem)[:40]
    return f"{stem}-{hashlib.sha1(resolved.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


@dataclass(frozen=True)
class Orphan:
    """The recovery data of a document whose process is gone."""

    data: Path  # the autosaved session
    meta: Path
    instance: str
    source: str | None  # the file the document was opened from or saved to; None when untitled
    title: str
    saved_at: float  # seconds since the epoch

    @property
    def label(self) -> str:
        """How the document is named to the user: its file's name, or its title, or "an untitled session"."""
        if self.source:
            return Path(self.source).name
        return f"“{self.title[:60]}”" if self.title else "an untitled session"

    def matches(self, path: str | os.PathLike | None) -> bool:
        return (
            path is not None
            and self.source is not None
            and (os.path.realpath(os.fspath(path)) == os.path.realpath(self.source))
        )


class _Lock:
    """An exclusive advisory lock on a file, held while this object lives (POSIX flock, Windows msvcrt)."""

    def __init__(self, path: Path, wait: bool = False):
        self.path = path
        self.file: IO[bytes] | None = open(path, "a+b")  # noqa: SIM115 - held open: the lock lives with it
        try:
            _lock(self.file, wait)
        except OSError:
            self.file.close()
            self.file = None
            raise

    def release(self) -> None:
        if self.file is not None:
            try:
                _unlock(self.file)
            finally:
                self.file.close()
                self.file = None


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(f: IO[bytes], wait: bool) -> None:
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)

    def _unlock(f: IO[bytes]) -> None:
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(f: IO[bytes], wait: bool) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))

    def _unlock(f: IO[bytes]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class RecoveryStore:
    """The recovery folder as seen by one running process (see the module's docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._own = _Lock(self.folder / f"{self.instance}.lock")
        self._adopted: dict[str, _Lock] = {}  # instance -> the lock of a gone process, held while its files are offered
        clean_stale_temporaries(self.folder)

    # ---- this process's documents ----------------------------------------------------------------------------
    def paths(self, doc: str) -> tuple[Path, Path]:
        return self.folder / f"{self.instance}--{doc}.qkv", self.folder / f"{self.instance}--{doc}.json"

    def autosave(
        self, doc: str, write: Callable[[Path], object], *, source: str | os.PathLike | None = None, title: str = ""
    ) -> Path:
        """Keep a document's unsaved work: ``write(path)`` saves it, then the description beside it is written."""
        data, meta = self.paths(doc)
        write(data)
        info = {
            "source": None if source is None else os.path.realpath(os.fspath(source)),
            "title": str(title)[:200],
            "saved_at": time.time(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        text = json.dumps(info, ensure_ascii=True).encode()
        atomic_write(meta, lambda f: f.write(text))
        return data

    def has(self, doc: str) -> bool:
        return self.paths(doc)[0].exists()

    def discard(self, doc: str) -> None:
        """Remove this process's recovery data of a document (it was saved, or its changes were discarded)."""
        for p in self.paths(doc):
            p.unlink(missing_ok=True)

    def close(self) -> None:
        """At a clean exit: remove this process's remaining recovery data and release every lock."""
        for meta in self.folder.glob(f"{self.instance}--*.json"):
            meta.with_suffix(".qkv").unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
        for instance in list(self._adopted):
            self._release(instance)
        self._own.release()
        (self.folder / f"{self.instance}.lock").unlink(missing_ok=True)

    # ---- other processes' documents --------------------------------------------------------------------------
    def orphans(self) -> list[Orphan]:
        """The recovery data of processes that are gone, newest first. Each is adopted: this process holds its
        instance's lock, so no other starting qkvgui offers it at the same time."""
        found = []
        for entry in sorted(os.listdir(self.folder)):
            m = _META.match(entry)
            if not m or m["instance"] == self.instance:
                continue
            instance = m["instance"]
            if not self._adopt(instance):
                continue  # a live process: its work is its own
            meta = self.folder / entry
            data = meta.with_suffix(".qkv")
            if not data.is_file():
                meta.unlink(missing_ok=True)  # a description without its session: nothing to recover
                continue
            try:
                info = json.loads(meta.read_text(encoding="utf-8"))
                if not isinstance(info, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError):
                info = {}
            source = info.get("source")
            saved_at = info.get("saved_at")
            found.append(
                Orphan(
                    data=data,
                    meta=meta,
                    instance=instance,
                    source=source if isinstance(source, str) else None,
                    title=str(info.get("title") or ""),
                    saved_at=float(saved_at) if isinstance(saved_at, (int, float)) else data.stat().st_mtime,
                )
            )
        self._drop_dead_locks()
        return sorted(found, key=lambda o: o.saved_at, reverse=True)

    def forget(self, orphan: Orphan) -> None:
        """Delete an orphan's files (recovered into a document now autosaved as this process's, or declined)."""
        if orphan.instance not in self._adopted:
            raise ValueError("only an adopted orphan can be deleted")  # never another live instance's data
        orphan.data.unlink(missing_ok=True)
        orphan.meta.unlink(missing_ok=True)
        if not any(self.folder.glob(f"{orphan.instance}--*.json")):
            self._release(orphan.instance)
            (self.folder / f"{orphan.instance}.lock").unlink(missing_ok=True)

    def release(self, orphan: Orphan) -> None:
        """Leave an orphan for later: its lock is released, so the next qkvgui to start offers it again."""
        if orphan.instance in self._adopted and orphan.instance != self.instance:
            self._release(orphan.instance)

    def _adopt(self, instance: str) -> bool:
        """Take the lock of another instance: True when its process is gone (the lock was free)."""
        if instance in self._adopted:
            return True
        path = self.folder / f"{instance}.lock"
        if not path.exists() and _alive(int(instance.split("-")[0])):
            return False  # no lock file to prove it gone, and its process id runs: leave its data alone
        try:
            self._adopted[instance] = _Lock(path)
        except OSError:
            return False
        return True

    def _release(self, instance: str) -> None:
        lock = self._adopted.pop(instance, None)
        if lock is not None:
            lock.release()

    def _drop_dead_locks(self) -> None:
        """Lock files of gone processes that left no recovery data are removed."""
        for entry in os.listdir(self.folder):
            m = _LOCK.match(entry)
            if not m or m["instance"] == self.instance:
                continue
            instance = m["instance"]
            if any(self.folder.glob(f"{instance}--*.json")):
                continue
            if self._adopt(instance):
                self._release(instance)
                (self.folder / entry).unlink(missing_ok=True)
