"""Cancel stops reading (issue 11): the session and matrix readers check a cancel token between pieces of the
file, so a cancelled open or import stops there, and report how far they are. Asserted on what was read, not on
time: a token that cancels itself once a quarter is reported must see no more than one piece after that."""

from __future__ import annotations

import numpy as np
import pytest

import qkvgui.io.matrix_file as matrix_file
import qkvgui.io.session.archive as archive
from qkvgui import Session
from qkvgui.core import Cancelled, CancelToken, QkvError
from qkvgui.io.matrix_file import read_matrix, write_matrix
from qkvgui.io.session import read_state

CHUNK = 4096


class Recorder(CancelToken):
    """Records every report; cancels itself once ``stop_at`` (a fraction of the total) is reached."""

    def __init__(self, stop_at: float | None = None) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.reports: list[tuple[int, int]] = []

    def report(self, done: int, total: int, text: str | None = None) -> None:
        self.reports.append((done, total))
        if self.stop_at is not None and total and done >= self.stop_at * total:
            self.cancel()


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(archive, "CHUNK_BYTES", CHUNK)
    monkeypatch.setattr(matrix_file, "CHUNK_BYTES", CHUNK)
    monkeypatch.setattr(matrix_file, "CSV_CELLS", 16 * 30)


def two_layer_session(path):
    """30 tokens, 12 heads, two layers: 46 matrices of about 250 KB in all, 60-odd pieces of 4 KiB."""
    rng = np.random.default_rng(1)
    n, d, h, k = 30, 48, 12, 8
    s = Session.from_arrays(
        rng.standard_normal((n, d)),
        rng.standard_normal((h, d, k)),
        rng.standard_normal((h, d, k)),
        rng.standard_normal((h, d, k)),
        rng.standard_normal((h * k, d)),
        title="two layers",
    )
    s.add_layer()
    s.save(path)
    return s


def test_a_cancelled_session_read_stops_at_the_next_piece(tmp_path, small_chunks):
    path = tmp_path / "s.qkv"
    two_layer_session(path)
    full = Recorder()
    read_state(path, full)
    total = full.reports[-1][1]
    assert full.reports[-1][0] == total > 0  # progress ends at the total the file declares
    assert [d for d, _ in full.reports] == sorted(d for d, _ in full.reports)  # and never goes back
    token = Recorder(stop_at=0.25)
    with pytest.raises(Cancelled):
        read_state(path, token)
    read = token.reports[-1][0]
    assert 0.25 * total <= read < 0.25 * total + 2 * CHUNK  # stopped one piece after Cancel, far from the end
    assert len(token.reports) < len(full.reports) / 2


def test_a_session_cancelled_before_it_starts_reads_no_matrix(tmp_path):
    path = tmp_path / "s.qkv"
    two_layer_session(path)
    token = Recorder()
    token.cancel()
    with pytest.raises(Cancelled) as info:
        Session.load(path, token)
    assert isinstance(info.value, QkvError) and token.reports == []


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_a_cancelled_matrix_import_stops_early(tmp_path, small_chunks, suffix):
    a = np.random.default_rng(2).standard_normal((400, 30))
    path = write_matrix(tmp_path / f"m{suffix}", a)
    full = Recorder()
    assert np.array_equal(read_matrix(path, cancel=full), a)  # bit-exact with a token too (.csv: repr digits)
    token = Recorder(stop_at=0.25)
    with pytest.raises(Cancelled):
        read_matrix(path, (400, 30), cancel=token)
    # it stopped in the first of its stages (reading the bytes; .csv then parsing), soon after a quarter
    done, total = token.reports[-1]
    assert total == full.reports[0][1] and done < 0.25 * total + 2 * CHUNK
    assert len(token.reports) < len(full.reports) / 2
