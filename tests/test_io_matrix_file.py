"""Single matrices to and from .npy and .csv: exact round trips, clear refusals."""

import numpy as np
import pytest

from qkvgui.core import MatrixFileError
from qkvgui.io.matrix_file import read_matrix, write_matrix


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
        ("e.npy", b"not an npy file at all", "not a valid .npy array"),
    ],
)
def test_bad_files_are_refused_clearly(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MatrixFileError, match=message):
        read_matrix(p)


def test_npy_refuses_objects_3d_and_absurd_headers(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MatrixFileError, match="Python objects"):
        read_matrix(tmp_path / "o.npy")
    np.save(tmp_path / "t.npy", np.zeros((2, 2, 2)))
    with pytest.raises(MatrixFileError, match="3-D"):
        read_matrix(tmp_path / "t.npy")
    # a header that claims 10^12 cells is refused before anything is allocated
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    with pytest.raises(MatrixFileError, match="too many"):
        read_matrix(tmp_path / "huge.npy")


def test_failed_write_leaves_the_old_file(tmp_path):
    p = write_matrix(tmp_path / "m.npy", np.eye(2))
    before = p.read_bytes()
    with pytest.raises(MatrixFileError):
        write_matrix(tmp_path / "m.bin", np.eye(3))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m.npy"]  # no temporary file left behind


def npy_with_header(path, header: str, data: bytes = b"") -> None:
    """A .npy whose header text is exactly ``header`` (padded as numpy pads it), then ``data``."""
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data)


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': '<f8', 'fortran_order': False, 'shape': (6, 12",  # unbalanced: numpy raises tokenize.TokenError
        "{'descr': '<f8', 'fortran_order': False, 'shape': (6, 12)",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (6, 12)}}",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (6, -12)}",
        "{'descr': '<f8', 'fortran_order': False, 'shape': " + "(" * 200 + ")" * 200 + "}",
        "{'descr': 'O', 'fortran_order': False, 'shape': (1, 1)}",
        "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1, 1)}",
        "\x00\xff garbage",
    ],
)
def test_a_damaged_npy_header_is_one_clear_message(tmp_path, header):
    """Issue 11, item 2: hostile .npy headers make numpy's parser raise anything; we say what and where."""
    npy_with_header(tmp_path / "m.npy", header, b"\0" * 576)
    with pytest.raises(MatrixFileError) as info:
        read_matrix(tmp_path / "m.npy")
    assert str(info.value).startswith("m.npy")
    assert "\n" not in str(info.value)


def test_a_truncated_npy_and_stray_bytes_are_refused(tmp_path):
    np.save(tmp_path / "m.npy", np.eye(3))
    data = (tmp_path / "m.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[:-8])
    with pytest.raises(MatrixFileError, match="short.npy is truncated"):
        read_matrix(tmp_path / "short.npy")
    (tmp_path / "long.npy").write_bytes(data + b"x")
    with pytest.raises(MatrixFileError, match="stray bytes"):
        read_matrix(tmp_path / "long.npy")


def test_fortran_order_and_other_number_types_read_exactly(tmp_path):
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(tmp_path / "f.npy", a)
    np.testing.assert_array_equal(read_matrix(tmp_path / "f.npy"), a.astype(np.float64))
    np.save(tmp_path / "i.npy", np.arange(6, dtype=">i4").reshape(2, 3))
    np.testing.assert_array_equal(read_matrix(tmp_path / "i.npy"), np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_a_fifo_is_refused_without_blocking(tmp_path, suffix):
    """Issue 11, item 13: a .csv that is a FIFO used to hang forever."""
    import os
    import threading

    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_matrix(fifo)
        except MatrixFileError as e:
            outcome.append(str(e))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # unblock the reader so the test run can go on, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert outcome and "is a pipe" in outcome[0]


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_a_link_to_a_device_or_a_folder_is_refused(tmp_path, suffix):
    """Issue 11, item 13: a .csv linked to /dev/zero read until memory ran out."""
    link = tmp_path / f"zero{suffix}"
    link.symlink_to("/dev/zero")
    with pytest.raises(MatrixFileError, match="is a device"):
        read_matrix(link)
    (tmp_path / f"folder{suffix}").mkdir()
    with pytest.raises(MatrixFileError, match="is a folder"):
        read_matrix(tmp_path / f"folder{suffix}")
    with pytest.raises(MatrixFileError, match="Cannot open missing"):
        read_matrix(tmp_path / f"missing{suffix}")


def test_a_link_to_a_regular_file_is_read(tmp_path):
    write_matrix(tmp_path / "real.csv", np.eye(2))
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    np.testing.assert_array_equal(read_matrix(tmp_path / "link.csv"), np.eye(2))


def test_size_is_checked_before_reading(tmp_path):
    from qkvgui.core.checks import MAX_CSV_BYTES

    big = tmp_path / "big.csv"
    with open(big, "wb") as f:
        f.truncate(MAX_CSV_BYTES + 1)  # sparse: no disk used, and nothing may be read
    with pytest.raises(MatrixFileError, match="big.csv is 256.0 MiB, more than"):
        read_matrix(big)


def test_a_wrong_shape_is_refused_before_the_numbers_are_read(tmp_path):
    np.save(tmp_path / "m.npy", np.eye(3))
    with pytest.raises(MatrixFileError, match="3 × 3 numbers but 2 × 3 are needed"):
        read_matrix(tmp_path / "m.npy", shape=(2, 3))
    # a .csv with a bad entry far down: the shape is refused first, without parsing a number
    (tmp_path / "m.csv").write_text("1,2,3\n" * 1000 + "x,y,z\n")
    with pytest.raises(MatrixFileError, match="1001 × 3 numbers but 12 × 3"):
        read_matrix(tmp_path / "m.csv", shape=(12, 3))
    np.testing.assert_array_equal(read_matrix(tmp_path / "m.npy", shape=(3, 3)), np.eye(3))
