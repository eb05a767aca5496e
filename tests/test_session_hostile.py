"""Hostile sessions (issue 11, items 1, 2, 5 and 8): refused with one SessionError naming the file and what was
wrong, before anything large is allocated; and the document never grows beyond what a file can save."""

import tracemalloc
import zipfile

import numpy as np
import pytest
from test_cli import qkvgui

from qkvgui import Session
from qkvgui.bench_hostile import _bad_npy_header, _deep_extra, _widened_bomb
from qkvgui.core import SessionError, SessionFileError
from qkvgui.core.checks import MAX_MATRIX_BYTES
from qkvgui.io.session import archive
from qkvgui.state import check_sizes


@pytest.fixture(scope="module")
def widened(tmp_path_factory):
    return _widened_bomb(tmp_path_factory.mktemp("hostile") / "widened.qkv")


def test_extra_nested_500_deep_is_one_message_from_the_file_the_document_and_the_cli(tmp_path):
    """Item 1: copy.deepcopy raised RecursionError (a 3,000-line traceback from the CLI)."""
    path = _deep_extra(tmp_path / "deep.qkv")
    with pytest.raises(SessionFileError, match=r"deep.qkv: session.json: the field 'extra' is nested more than 32"):
        Session.load(path)
    s = Session()
    deep: list = []
    for _ in range(500):
        deep = [deep]
    with pytest.raises(SessionError, match="nested more than 32 levels"):
        s.set_extra("deep", deep)
    assert "deep" not in s.extra
    s.set_extra("fine", {"a": [[1, 2], {"b": None}]})
    assert s.extra["fine"] == {"a": [[1, 2], {"b": None}]}
    out = qkvgui("export", str(path), "--out", str(tmp_path / "figs"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "nested more than 32" in out.stderr


def test_an_unbalanced_npy_header_inside_a_session_is_one_message(tmp_path):
    """Item 2: numpy's header parser raised tokenize.TokenError (129 of 130 fuzz crashes)."""
    path = _bad_npy_header(tmp_path / "bad.qkv")
    with pytest.raises(
        SessionFileError,
        match=r"bad.qkv: 'X.npy' \(the matrix X\) is not a valid .npy array: its "
        r"header is damaged \(TokenError",
    ):
        Session.load(path)


def test_a_small_file_that_would_widen_to_1_7_gib_is_refused_before_reading_any_array(widened, monkeypatch):
    """Item 5: 248 KB of deflated |u1 members, each under the per-member limit, widened to 1.7 GiB of float64
    (9 s and 7 GB on the GUI thread). The budget counts the float64 each matrix becomes."""
    assert widened.stat().st_size < 300_000
    with zipfile.ZipFile(widened) as zf:
        big = [i for i in zf.infolist() if i.file_size > 10 * 2**20]
    assert len(big) == 14 and all(i.file_size < archive.BOMB_MIN_BYTES for i in big)  # the reported shape
    read = []
    monkeypatch.setattr(archive.Archive, "read_matrix", lambda *args: read.append(args))
    tracemalloc.start()
    try:
        with pytest.raises(
            SessionFileError,
            match=r"widened.qkv: session.json declares matrices of 1.7 GiB in all, "
            r"more than the 1.0 GiB qkvgui loads",
        ):
            Session.load(widened)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read == [] and peak < 50 * 2**20


def test_sizes_beyond_what_a_file_holds_are_refused_before_allocating():
    """Item 8: heads 64, d_model 4096, d_k 1024 (all within the spin boxes) built 12.8 GB that could not be saved."""
    s = Session()
    s.resize(n_heads=64)
    s.resize(d_model=4096)
    before = s.state()
    tracemalloc.start()
    try:
        with pytest.raises(SessionError, match=r"would take 4\.0 GiB of matrices; a session holds at most 1\.0 GiB"):
            s.resize(d_k=1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # refused from the sizes alone
    assert s.d_k == before.layers[0].w_q.shape[2] and s.n_heads == 64
    # the same budget for more layers and more tokens, from the sizes alone
    with pytest.raises(SessionError, match="over 64 layers"):
        check_sizes(heads=64, d_model=4096, d_k=3, d_v=3, layers=64)
    with pytest.raises(SessionError, match="and 4096 tokens would take"):
        check_sizes(heads=4, d_model=8192, d_k=512, d_v=512, tokens=4096, source_tokens=4096, residual=True)


def test_the_largest_document_still_saves_and_loads(tmp_path):
    """The budget is the same number for the document, the writer and the reader."""
    s = Session()
    s.resize(n_heads=16, d_model=1024, d_k=64, d_v=64)
    assert MAX_MATRIX_BYTES == 1024**3
    s.save(tmp_path / "big.qkv")
    back = Session.load(tmp_path / "big.qkv")
    assert np.array_equal(back.matrix("W_Q"), s.matrix("W_Q"))
