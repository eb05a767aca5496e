"""Atomic writes: through symbolic links, never over read-only files, and no temporary files left to pile up."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from qkvgui import Session
from qkvgui.core import MatrixFileError
from qkvgui.io.atomic import ReadOnlyFileError, atomic_write, clean_stale_temporaries
from qkvgui.io.matrix_file import read_matrix, write_matrix


def test_saving_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path):
    """Issue 11, item 12: the link used to be replaced by a file, and the real file went stale."""
    real = tmp_path / "work" / "real.qkv"
    real.parent.mkdir()
    Session.from_preset("induction").save(real)
    link = tmp_path / "shortcut.qkv"
    link.symlink_to(real)
    s = Session()
    s.save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert Session.load(real).tokens == s.tokens  # the real file has the new content
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.qkv"]  # no temporary left beside it
    write_matrix(tmp_path / "m.csv", np.eye(2))
    (tmp_path / "m-link.csv").symlink_to("m.csv")  # a relative link
    write_matrix(tmp_path / "m-link.csv", np.ones((2, 2)))
    assert (tmp_path / "m-link.csv").is_symlink()
    np.testing.assert_array_equal(read_matrix(tmp_path / "m.csv"), np.ones((2, 2)))


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "new.npy"
    link.symlink_to(tmp_path / "target.npy")
    write_matrix(link, np.eye(2))
    assert link.is_symlink() and (tmp_path / "target.npy").is_file()


def test_a_read_only_file_is_refused_and_left_as_it_was(tmp_path):
    """Issue 11, item 12: saving over a read-only file used to replace it silently."""
    path = tmp_path / "kept.qkv"
    Session.from_preset("induction").save(path)
    before = path.read_bytes()
    path.chmod(0o444)
    with pytest.raises(ReadOnlyFileError, match="kept.qkv is read-only") as info:
        Session().save(path)
    assert isinstance(info.value, OSError)  # callers that catch OSError report it too
    assert path.read_bytes() == before and path.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.qkv"]
    (tmp_path / "link.qkv").symlink_to(path)  # through a link, the same
    with pytest.raises(ReadOnlyFileError, match="read-only"):
        Session().save(tmp_path / "link.qkv")
    assert path.read_bytes() == before


def test_a_folder_or_a_pipe_is_not_overwritten(tmp_path):
    (tmp_path / "dir.qkv").mkdir()
    with pytest.raises(ReadOnlyFileError, match="folder"):
        Session().save(tmp_path / "dir.qkv")
    os.mkfifo(tmp_path / "pipe.npy")
    with pytest.raises(ReadOnlyFileError, match="not a regular file"):
        write_matrix(tmp_path / "pipe.npy", np.eye(2))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_stale_temporaries_are_removed_on_the_next_save_and_only_they(tmp_path):
    """Issue 11, item 11: interrupted saves left hidden .*.tmp files forever."""
    dead = _dead_pid()
    stale = tmp_path / f".a.qkv.qkvgui-{dead}-abc123xy.tmp"
    fresh = tmp_path / f".b.qkv.qkvgui-{dead}-abc123xy.tmp"  # younger than the grace period: maybe being written
    live = tmp_path / f".c.qkv.qkvgui-{os.getppid()}-abc123xy.tmp"  # its writer is alive
    old_format = tmp_path / ".d.qkv.k2j4h5g6.tmp"  # what earlier versions left, two hours old
    not_ours = tmp_path / ".notes.txt.k2j4h5g6.tmp"  # another program's temporary file
    for p in (stale, fresh, live, old_format, not_ours):
        p.write_bytes(b"x" * 100)
    for p in (stale, live, not_ours):
        _age(p, 600)
    _age(old_format, 7200)
    _age(not_ours, 7200)
    write_matrix(tmp_path / "m.npy", np.eye(2))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([fresh.name, live.name, not_ours.name, "m.npy"])
    assert clean_stale_temporaries(tmp_path, now=time.time() + 3600) == [fresh]


WRITER = """
import sys, time
from qkvgui.io.atomic import atomic_write
def write(f):
    f.write(b"half a session" * 1000)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def test_a_save_killed_half_way_leaves_the_old_file_and_its_temporary_is_cleaned(tmp_path):
    path = tmp_path / "s.qkv"
    Session.from_preset("induction").save(path)
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env)
    assert writer.stdout.readline().strip() == b"writing"
    writer.kill()
    writer.wait()
    assert path.read_bytes() == before
    (tmp,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert tmp.name.startswith(".s.qkv.qkvgui-")
    _age(tmp, 120)
    Session().save(tmp_path / "other.qkv")  # the next save into the folder cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.qkv", "s.qkv"]


def test_a_failing_write_removes_its_temporary(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.npy", boom)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MatrixFileError):
        write_matrix(tmp_path / "x.txt", np.eye(2))
