"""The 1 GiB budget of a session file counts a whole model's own blocks (issue 11, item 3): the writer refuses,
before writing anything, a whole-model session whose blocks push it over the limit, with a message naming the
limit; the reader counts the blocks and the layers together; the two agree, so no file is written that the reader
would refuse. The limit is made small for the test (the real one is 1 GiB)."""

from __future__ import annotations

import math

import pytest
from make_golden_sessions import golden_state_v3

import qkvgui.io.session.archive as archive
import qkvgui.io.session.writer as writer
import qkvgui.state as state_module
from qkvgui.core import SessionError, SessionFileError
from qkvgui.core.checks import byte_text
from qkvgui.io.session import read_state, write_state
from qkvgui.state import validate_state


def sizes():
    """(bytes of the session's own matrices and layers, bytes of the model's blocks) of the golden v3 state."""
    s = golden_state_v3().filled()
    plain = [s.x, s.x_kv, *([] if s.x_residual is None else [s.x_residual])] + [
        a for L in s.layers for a in (L.w_q, L.w_k, L.w_v, L.w_o, L.b_q, L.b_k, L.b_v, L.b_o)
    ]
    blocks = s.model.to_plain()[1].values()
    return 8 * sum(math.prod(a.shape) for a in plain), 8 * sum(a.size for a in blocks)


def limit_to(monkeypatch, limit: int, *, document: bool = False) -> None:
    monkeypatch.setattr(writer, "MAX_MATRIX_BYTES", limit)
    monkeypatch.setattr(archive, "MAX_MATRIX_BYTES", limit)
    if document:
        monkeypatch.setattr(state_module, "MAX_MATRIX_BYTES", limit)


def test_the_writer_counts_the_blocks_and_writes_nothing(tmp_path, monkeypatch):
    layers, blocks = sizes()
    limit = layers + blocks - 8  # the layers alone fit, with the blocks they do not
    limit_to(monkeypatch, limit)
    path = tmp_path / "model.qkv"
    with pytest.raises(SessionFileError, match="with the model's own blocks") as info:
        write_state(golden_state_v3(), path)
    assert byte_text(limit) in str(info.value) and "Nothing was written" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary


def test_the_document_refuses_a_model_whose_blocks_pass_the_limit(monkeypatch):
    layers, blocks = sizes()
    limit_to(monkeypatch, layers + blocks - 8, document=True)
    with pytest.raises(SessionError, match="its own blocks") as info:
        validate_state(golden_state_v3())
    assert byte_text(layers + blocks - 8) in str(info.value)


def test_the_reader_counts_blocks_and_layers_together(tmp_path, monkeypatch):
    layers, blocks = sizes()
    path = write_state(golden_state_v3(), tmp_path / "model.qkv")  # under the real limit
    assert max(layers, blocks) < layers + blocks - 8
    monkeypatch.setattr(archive, "MAX_MATRIX_BYTES", layers + blocks - 8)  # each part alone would fit
    with pytest.raises(SessionFileError, match="more than the"):
        read_state(path)


def test_whatever_the_limit_a_written_whole_model_reads_back(tmp_path, monkeypatch):
    layers, blocks = sizes()
    outcomes = set()
    for limit in range(layers - 16, layers + blocks + 24, 8):
        limit_to(monkeypatch, limit)
        path = tmp_path / f"{limit}.qkv"
        try:
            write_state(golden_state_v3(), path)
        except SessionFileError:
            assert not path.exists()
            outcomes.add("refused")
            continue
        assert read_state(path).model is not None
        outcomes.add("written")
    assert outcomes == {"refused", "written"}
