"""Recovery data per document and per process (issue 11, item 10): a crash loses nothing, and no running qkvgui ever
offers or deletes another running one's work."""

import os
import signal
import subprocess
import sys

import pytest

from qkvgui.io.recovery import RecoveryStore, document_key

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the other process is killed with SIGKILL")

OTHER = """
import sys, time
from pathlib import Path
from qkvgui.io.recovery import RecoveryStore
store = RecoveryStore(sys.argv[1])
store.autosave("doc-a", lambda p: Path(p).write_bytes(b"work of A"), source=sys.argv[2], title="A's work")
print("ready", store.instance, flush=True)
time.sleep(120)
"""


@pytest.fixture
def other(tmp_path):
    """Another running qkvgui process with unsaved work in the same recovery folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", OTHER, str(tmp_path / "recovery"), str(tmp_path / "a.qkv")],
        stdout=subprocess.PIPE,
        env=env,
    )
    line = proc.stdout.readline().split()
    assert line[0] == b"ready"
    yield proc, line[1].decode()
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_live_instances_work_is_never_offered_nor_deleted(tmp_path, other):
    proc, instance = other
    folder = tmp_path / "recovery"
    mine = RecoveryStore(folder)
    assert mine.orphans() == []  # the other process is alive: its work is not ours to offer
    mine.autosave("doc-b", lambda p: p.write_bytes(b"work of B"))
    mine.close()  # a clean close removes this process's data only
    assert f"{instance}--doc-a.qkv" in files(folder)
    assert (folder / f"{instance}--doc-a.qkv").read_bytes() == b"work of A"
    assert not any(name.endswith("doc-b.qkv") for name in files(folder))


def test_after_a_crash_the_work_is_offered_once_and_deleted_only_when_declined(tmp_path, other):
    proc, instance = other
    folder = tmp_path / "recovery"
    proc.send_signal(signal.SIGKILL)  # a crash: no cleanup at all
    proc.wait()
    first = RecoveryStore(folder)
    (orphan,) = first.orphans()
    assert orphan.data.read_bytes() == b"work of A" and orphan.title == "A's work"
    assert orphan.matches(tmp_path / "a.qkv") and not orphan.matches(tmp_path / "b.qkv")
    second = RecoveryStore(folder)  # another qkvgui starting meanwhile does not offer the same work twice
    assert second.orphans() == []
    with pytest.raises(ValueError):
        second.forget(orphan)
    assert orphan.data.exists()
    first.forget(orphan)
    assert not orphan.data.exists() and not orphan.meta.exists()
    first.close()
    second.close()
    assert files(folder) == []


def test_an_orphan_left_for_later_is_offered_on_the_next_start(tmp_path, other):
    proc, _ = other
    folder = tmp_path / "recovery"
    proc.kill()
    proc.wait()
    store = RecoveryStore(folder)
    assert len(store.orphans()) == 1
    store.close()  # "later": closing keeps the orphan (it is not this process's data)
    again = RecoveryStore(folder)
    (orphan,) = again.orphans()
    assert orphan.data.read_bytes() == b"work of A"
    again.close()


def test_each_document_has_its_own_recovery_data(tmp_path):
    store = RecoveryStore(tmp_path)
    a, b = document_key(tmp_path / "a.qkv", "1"), document_key(None, "untitled 2")
    assert a != b and document_key(tmp_path / "a.qkv", "9") == a
    store.autosave(a, lambda p: p.write_bytes(b"a"), source=tmp_path / "a.qkv")
    store.autosave(b, lambda p: p.write_bytes(b"b"))
    store.discard(a)  # a was saved: its recovery data goes, b's stays
    assert not store.has(a) and store.has(b)
    store.close()
    assert files(tmp_path) == []
