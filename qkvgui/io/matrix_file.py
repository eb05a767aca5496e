"""One matrix in and out of a file: .npy (exact, never pickled) and .csv (text, full precision)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from qkvgui.core import MatrixFileError as MatrixError
from qkvgui.core.cancel import CancelToken
from qkvgui.core.cancel import report as _report
from qkvgui.core.checks import MAX_CELLS, MAX_CSV_BYTES, MAX_NPY_HEADER, check_finite
from qkvgui.io.atomic import atomic_write
from qkvgui.io.files import file_boundary, label_of, open_regular, reason
from qkvgui.io.npy import read_npy_header

__all__ = ["MATRIX_SUFFIXES", "read_matrix", "write_matrix"]

MATRIX_SUFFIXES = (".npy", ".csv")
#: a file is read in pieces of this many bytes (a .csv parsed in pieces of about CSV_CELLS numbers), Cancel checked
#: and progress reported between them; a piece is short enough that the parser, which holds Python's lock, never
#: stalls the window (the whole 512 × 768 .csv in one call stalled it a second; 16,384 numbers, ~9 ms)
CHUNK_BYTES = 4 * 1024**2
CSV_CELLS = 4096
#: a .csv's text is split into lines this many characters at a time (all 7 MB in one call held the lock ~12 ms)
CSV_SLICE_CHARS = 512 * 1024
_WHAT = "matrix file"


def read_matrix(
    path: str | Path, shape: tuple[int, int] | None = None, cancel: CancelToken | None = None
) -> np.ndarray:
    """A 2-D float64 matrix from .npy or .csv; a file that is not one raises an error saying why.

    Only regular files are opened (never a pipe or a device), their size is checked before anything is read,
    and a .npy's header before any data. With ``shape`` (rows, cols), a matrix of another shape is refused before
    its numbers are read (a .npy by its header, a .csv by its count of lines and of the first line's entries).
    ``cancel`` (on a worker): checked between pieces of the file and of the parsing; a cancelled read stops there
    with ``Cancelled``.
    """
    path = Path(path)
    label = label_of(path)
    suffix = path.suffix.lower()
    if suffix not in MATRIX_SUFFIXES:
        raise MatrixError(f"{label}: matrices are read from {' or '.join(MATRIX_SUFFIXES)} files.")
    with file_boundary(path, MatrixError, "read as a matrix"):
        if suffix == ".npy":
            a = _read_npy(path, label, shape, cancel)
        else:
            a = _read_csv(path, label, shape, cancel)
    if a.ndim != 2 or a.size == 0:
        raise MatrixError(f"{label} holds an array of shape {a.shape}; a matrix needs rows and columns.")
    check_finite(label, a, MatrixError, rows_and_columns=True)
    return a


def _wrong_shape(label: str, got: tuple[int, ...], shape: tuple[int, int]) -> MatrixError:
    return MatrixError(
        f"{label} holds {' × '.join(map(str, got))} numbers but {shape[0]} × {shape[1]} are needed: "
        "resize one of them first."
    )


def _read_chunks(f: BinaryIO, nbytes: int, cancel: CancelToken | None, of: int) -> bytearray:
    """Up to nbytes from f in CHUNK_BYTES pieces (fewer when the file ends), Cancel checked before each; progress
    reported as bytes of ``of``."""
    data = bytearray(nbytes)
    view = memoryview(data)
    got = 0
    while got < nbytes:
        _report(cancel, got, of)
        n = f.readinto(view[got : got + CHUNK_BYTES])  # type: ignore[attr-defined]  # a real file has it
        if not n:
            break
        got += n
    return data[:got] if got < nbytes else data


def _read_npy(path: Path, label: str, shape: tuple[int, int] | None, cancel: CancelToken | None) -> np.ndarray:
    with open_regular(path, what=_WHAT, error=MatrixError, max_bytes=MAX_CELLS * 8 + MAX_NPY_HEADER + 16) as f:
        header = read_npy_header(f, label, MatrixError)
        if len(header.shape) != 2:
            raise MatrixError(f"{label} holds a {len(header.shape)}-D array {header.shape}; a matrix is 2-D.")
        rows, cols = header.shape
        if rows * cols > MAX_CELLS:
            raise MatrixError(f"{label} holds {rows} × {cols} numbers: too many to edit (at most {MAX_CELLS:,}).")
        if shape is not None and header.shape != tuple(shape):
            raise _wrong_shape(label, header.shape, shape)
        size = os.fstat(f.fileno()).st_size
        if size != header.offset + header.data_bytes:
            state = "truncated" if size < header.offset + header.data_bytes else "followed by stray bytes"
            raise MatrixError(
                f"{label} is {state}: a {rows} × {cols} {header.dtype} array needs "
                f"{header.offset + header.data_bytes} bytes, the file has {size}."
            )
        data = _read_chunks(f, header.data_bytes, cancel, header.data_bytes)
    if len(data) != header.data_bytes:
        raise MatrixError(f"{label} changed while it was read (it is shorter than its header says).")
    flat = np.frombuffer(data, dtype=header.dtype)
    a = flat.reshape(header.shape[::-1]).T if header.fortran_order else flat.reshape(header.shape)
    return np.ascontiguousarray(a, dtype=np.float64)  # a float64 file's buffer is used as it is


def _read_csv(path: Path, label: str, shape: tuple[int, int] | None, cancel: CancelToken | None) -> np.ndarray:
    with open_regular(path, what=_WHAT, error=MatrixError, max_bytes=MAX_CSV_BYTES) as f:
        size = os.fstat(f.fileno()).st_size  # at most MAX_CSV_BYTES (open_regular checked): one byte more shows growth
        raw = _read_chunks(f, size + 1, cancel, size)
    if len(raw) > size:
        raise MatrixError(f"{label} changed while it was read (it grew): read it again once it is complete.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MatrixError(f"{label} is not UTF-8 text (byte {e.start}); a .csv matrix is text.") from None
    lines = _split_lines(text)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise MatrixError(f"{label} is empty: a .csv matrix has one line of numbers per row.")
    delimiter = "," if "," in lines[0] else ("\t" if "\t" in lines[0] else None)
    cols = len(lines[0].split(delimiter))
    if len(lines) * cols > MAX_CELLS:
        raise MatrixError(f"{label} holds {len(lines)} × {cols} numbers: too many to edit (at most {MAX_CELLS:,}).")
    if shape is not None and (len(lines), cols) != tuple(shape):
        raise _wrong_shape(label, (len(lines), cols), shape)
    pieces = []
    step = max(1, CSV_CELLS // cols)
    for start in range(0, len(lines), step):
        _report(cancel, start, len(lines), "Parsing the numbers")
        try:
            pieces.append(np.loadtxt(lines[start : start + step], delimiter=delimiter, ndmin=2, dtype=np.float64))
        except ValueError as e:
            where = f" (in lines {start + 1} to {start + step})" if len(lines) > step else ""
            raise MatrixError(f"{label} could not be read as a matrix{where}: {reason(e)}") from None
    if any(p.shape[1] != cols for p in pieces):
        raise MatrixError(f"{label} could not be read as a matrix: its rows do not all have {cols} numbers.")
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]


def _split_lines(text: str) -> list[str]:
    """text.splitlines(), a slice of about CSV_SLICE_CHARS at a time (each slice ends after a newline, so the lines
    are the same), so that no single call holds Python's lock for long."""
    lines: list[str] = []
    start = 0
    while start < len(text):
        end = text.find("\n", start + CSV_SLICE_CHARS)
        end = len(text) if end < 0 else end + 1
        lines.extend(text[start:end].splitlines())
        start = end
    return lines


def write_matrix(path: str | Path, matrix) -> Path:
    """Write a 2-D matrix to .npy (bit-exact) or .csv (repr precision, so it reads back exactly), atomically."""
    path = Path(path)
    a = np.asarray(matrix, dtype=np.float64)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return atomic_write(path, lambda f: np.lib.format.write_array(f, a, allow_pickle=False))
    if suffix == ".csv":
        text = "\n".join(",".join(repr(float(v)) for v in row) for row in a) + "\n"
        return atomic_write(path, lambda f: f.write(text.encode()))
    raise MatrixError(f"{path.name}: matrices are written to {' or '.join(MATRIX_SUFFIXES)} files.")
