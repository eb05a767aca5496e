"""Reading a ``.npy`` header from untrusted bytes: the shape and type of plain numbers, or one clear refusal.

numpy's own header parser raises whatever the hostile text provokes (``tokenize.TokenError`` for an unbalanced
bracket, ``SyntaxError``, ``ValueError``, ``MemoryError`` for a huge header): here every one of them becomes the
caller's ``QkvError`` naming the file, the header's length is bounded before it is read, and only real numbers
(no objects, no structures, no complex) pass. Nothing is ever unpickled.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from qkvgui.core.checks import MAX_NPY_HEADER
from qkvgui.io.files import reason

__all__ = ["NpyHeader", "MAX_NPY_HEADER", "read_npy_header", "check_number_dtype"]

_LENGTH = {(1, 0): "<H", (2, 0): "<I", (3, 0): "<I"}  # the header-length field of each .npy version


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    offset: int  # bytes from the start of the .npy to its data

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(f: BinaryIO, where: str, error: Callable[[str], Exception]) -> NpyHeader:
    """Read and check the header at the current position of ``f``; ``where`` names the file in messages, and
    ``error(message)`` makes the exception raised (a ``QkvError`` class, or a function adding context)."""
    magic = f.read(6)
    if len(magic) < 6 or magic[:6] != b"\x93NUMPY":
        raise error(f"{where} is not a valid .npy array: it does not start with numpy's signature.")
    version_bytes = f.read(2)
    if len(version_bytes) < 2:
        raise error(f"{where} is truncated inside its .npy header.")
    version = (version_bytes[0], version_bytes[1])
    if version not in _LENGTH:
        raise error(f"{where} is a .npy of version {version[0]}.{version[1]}; versions 1.0 to 3.0 are read.")
    length_format = _LENGTH[version]
    length_bytes = f.read(struct.calcsize(length_format))
    if len(length_bytes) != struct.calcsize(length_format):
        raise error(f"{where} is truncated inside its .npy header.")
    (length,) = struct.unpack(length_format, length_bytes)
    if length > MAX_NPY_HEADER:
        raise error(f"{where} has a .npy header of {length} bytes; a real one is a few dozen.")
    text = f.read(length)
    if len(text) != length:
        raise error(f"{where} is truncated inside its .npy header.")
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    if version == (3, 0):  # utf-8 header, same layout as 2.0; numpy reads it by version, so give it as 2.0's
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{where} has a .npy header that is not UTF-8 text.") from None
    try:
        shape, fortran, dtype = reader(io.BytesIO(length_bytes + text))
    except Exception as e:  # noqa: BLE001 - tokenize.TokenError, SyntaxError, ValueError, MemoryError...
        raise error(
            f"{where} is not a valid .npy array: its header is damaged ({type(e).__name__}: {reason(e)})."
        ) from None
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise error(f"{where} has a .npy header with an impossible shape {shape!r:.80}.")
    check_number_dtype(dtype, where, error)
    return NpyHeader(tuple(shape), bool(fortran), dtype, 6 + 2 + len(length_bytes) + length)


def check_number_dtype(dtype: np.dtype, where: str, error: Callable[[str], Exception]) -> None:
    """Refuse anything but real numbers (and booleans) of at most 8 bytes."""
    if dtype.hasobject:
        raise error(
            f"{where} holds Python objects; only numbers are read, and pickled objects are never loaded "
            "(they could run code)."
        )
    if dtype.fields is not None or dtype.subdtype is not None:
        raise error(f"{where} is a structured array ({dtype}); a matrix must hold plain numbers.")
    if dtype.kind == "c":
        raise error(f"{where} holds complex numbers ({dtype}); a matrix must hold real numbers.")
    if dtype.kind not in "fiub" or dtype.itemsize > 8:
        raise error(f"{where} holds {dtype} values; a matrix must hold real numbers.")
