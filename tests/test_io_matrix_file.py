"""Single matrices to and from .npy and .csv: exact round trips, clear refusals."""

import numpy as np
import pytest

from qkvgui.io.matrix_file import read_matrix, write_matrix
from qkvgui.session import SessionError


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_round_trip_is_bit_exact(tmp_path, suffix):
    a = np.random.default_rng(0).standard_normal((5, 3)) * 10.0 ** np.arange(-2, 1)
    a[0, 0] = 1 / 3
    path = write_matrix(tmp_path / f"m{suffix}", a)
    b = read_matrix(path)
    assert b.dtype == np.float64 and np.array_equal(a, b)


def test_csv_from_a_spreadsheet_with_tabs_or_commas(tmp_path):
    (tmp_path / "t.csv").write_text("1\t2\t3\n4\t5\t6\n")
    np.testing.assert_array_equal(read_matrix(tmp_path / "t.csv"), [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "c.csv").write_text("\ufeff0.5,-1e-3\n2,3\n")
    np.testing.assert_array_equal(read_matrix(tmp_path / "c.csv"), [[0.5, -0.001], [2, 3]])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "1,2\n3,abc\n", "could not be read"),
        ("b.csv", "1,2\n3\n", "could not be read"),
        ("c.csv", "1,nan\n", "finite"),
        ("d.txt", "1", ".npy or .csv"),
        ("e.npy", b"not an npy file at all", "could not be read"),
    ],
)
def test_bad_files_are_refused_clearly(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SessionError, match=message):
        read_matrix(p)


def test_npy_refuses_objects_3d_and_absurd_headers(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SessionError, match="not numbers"):
        read_matrix(tmp_path / "o.npy")
    np.save(tmp_path / "t.npy", np.zeros((2, 2, 2)))
    with pytest.raises(SessionError, match="3-D"):
        read_matrix(tmp_path / "t.npy")
    # a header that claims 10^12 cells is refused before anything is allocated
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    with pytest.raises(SessionError, match="too many"):
        read_matrix(tmp_path / "huge.npy")


def test_failed_write_leaves_the_old_file(tmp_path):
    p = write_matrix(tmp_path / "m.npy", np.eye(2))
    before = p.read_bytes()
    with pytest.raises(SessionError):
        write_matrix(tmp_path / "m.bin", np.eye(3))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m.npy"]  # no temporary file left behind
