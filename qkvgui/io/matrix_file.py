"""One matrix in and out of a file: .npy (exact, never pickled) and .csv (text, full precision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qkvgui.io.atomic import atomic_write
from qkvgui.session import SessionError

__all__ = ["MATRIX_SUFFIXES", "read_matrix", "write_matrix"]

MATRIX_SUFFIXES = (".npy", ".csv")
#: the largest matrix a file may hold (cells), checked before reading any data
MAX_CELLS = 64_000_000


def read_matrix(path: str | Path) -> np.ndarray:
    """A 2-D float64 matrix from .npy or .csv; a file that is not one raises SessionError saying why."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MATRIX_SUFFIXES:
        raise SessionError(f"{path.name}: matrices are read from {' or '.join(MATRIX_SUFFIXES)} files.")
    try:
        if suffix == ".npy":
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)  # the header only: check the size before reading any data
                if dtype.kind not in "fiub" or dtype.hasobject:
                    raise SessionError(f"{path.name} holds {dtype} values, not numbers.")
                if len(shape) != 2:
                    raise SessionError(f"{path.name} holds a {len(shape)}-D array {shape}; a matrix is 2-D.")
                if int(np.prod(shape)) > MAX_CELLS:
                    raise SessionError(f"{path.name} holds {shape[0]} × {shape[1]} numbers: too many to edit.")
                f.seek(0)
                a = np.load(f, allow_pickle=False)
        else:
            if path.stat().st_size > MAX_CELLS * 8:
                raise SessionError(f"{path.name} is too large to be a matrix qkvgui can edit.")
            text = path.read_text(encoding="utf-8-sig")
            delimiter = "," if "," in text else ("\t" if "\t" in text else None)
            a = np.loadtxt(text.splitlines(), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except SessionError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise SessionError(f"{path.name} could not be read as a matrix: {e}") from None
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise SessionError(f"{path.name} holds an array of shape {a.shape}; a matrix needs rows and columns.")
    if not np.isfinite(a).all():
        i, j = np.argwhere(~np.isfinite(a))[0]
        raise SessionError(f"{path.name} holds {a[i, j]} at row {i}, column {j}: every entry must be finite.")
    return a


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
    raise SessionError(f"{path.name}: matrices are written to {' or '.join(MATRIX_SUFFIXES)} files.")
