"""The guarded reader of session archives: every size is checked before it is allocated, nothing is unpickled.

``Archive`` reads members of an open ZIP within the byte limits below; ``Fields`` gives typed access to
session.json's fields. Every problem becomes a ``SessionFileError`` naming the file, the member and the field.
The limits are the same for writing (``writer.py`` refuses what could not be read back) and reading.
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from collections.abc import Iterable
from typing import IO, Any, BinaryIO, cast

import numpy as np

from qkvgui.core import SessionFileError
from qkvgui.core.cancel import Cancelled, CancelToken
from qkvgui.core.checks import (
    BOMB_MIN_BYTES,
    BOMB_RATIO,
    MAX_MATRIX_BYTES,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    MAX_TOTAL_BYTES,
)
from qkvgui.core.format import format_shape
from qkvgui.io.npy import read_npy_header
from qkvgui.state import BIASES, LIMITS

#: the metadata member of the archive
JSON_MEMBER = "session.json"

# The limits (core.checks): MAX_MATRIX_BYTES, the document's own budget, is checked from the declared shapes
# before any array is read (a 248 KB file of deflated |u1 members once widened to 1.7 GiB).
#: a matrix is read in pieces of this many bytes, Cancel checked and progress reported between them
CHUNK_BYTES = 4 * 1024**2

# The shape of each matrix, by the LIMITS that bound each axis (W_O's rows are heads·d_v).
AXES = {
    "X": ("tokens", "d_model"),
    "X_kv": ("tokens", "d_model"),
    "W_Q": ("heads", "d_model", "d_head"),
    "W_K": ("heads", "d_model", "d_head"),
    "W_V": ("heads", "d_model", "d_head"),
    "W_O": ("heads·d_head", "d_model"),
    "X_residual": ("tokens", "d_model"),
    "b_Q": ("heads", "d_head"),
    "b_K": ("heads", "d_head"),
    "b_V": ("heads", "d_head"),
    "b_O": ("d_model",),
}
#: the matrices of each layer, from version 2 on
LAYER_MATRICES = ("W_Q", "W_K", "W_V", "W_O", *BIASES)

# What reading damaged or hostile bytes can raise, inside zipfile, zlib, json and numpy's header parser.
DAMAGE = (
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    MemoryError,
    SyntaxError,
    EOFError,
    OSError,
    RuntimeError,
    NotImplementedError,
    KeyError,
    IndexError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
)
# Of those, the ones that mean the archive (not the member's content) is damaged or unreadable.
UNREADABLE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError)


class Archive:
    """The members of an open archive, read within the size limits; every failure becomes a SessionFileError."""

    def __init__(self, zf: zipfile.ZipFile, label: str, cancel: CancelToken | None = None):
        self.zf, self.label, self.cancel = zf, label, cancel
        infos = zf.infolist()  # parsed when the archive was opened
        if len(infos) > MAX_MEMBERS:
            raise self.error(f"it lists {len(infos)} files; a session has at most {MAX_MEMBERS}.")
        self.infos = {i.filename: i for i in infos}
        self.budget = MAX_TOTAL_BYTES  # bytes left to read, across all members
        self.matrix_bytes = 0  # float64 bytes of every matrix declared so far (check_total adds them up)
        self.read_so_far = 0  # float64 bytes of the matrices read so far (progress: of matrix_bytes)

    def error(self, message: str) -> SessionFileError:
        return SessionFileError(f"{self.label}: {message}")

    def info(self, member: str, what: str) -> zipfile.ZipInfo:
        info = self.infos.get(member)
        if info is None:
            raise self.error(f"the archive has no member '{member}' ({what}); the file is incomplete or damaged.")
        if info.file_size > MAX_MEMBER_BYTES:
            raise self.error(
                f"'{member}' claims {byte_text(info.file_size)}, more than the "
                f"{byte_text(MAX_MEMBER_BYTES)} "
                "a session member may have."
            )
        if (
            info.compress_type != zipfile.ZIP_STORED
            and info.file_size > BOMB_MIN_BYTES
            and info.file_size > BOMB_RATIO * max(info.compress_size, 1)
        ):
            raise self.error(
                f"'{member}' would expand {info.compress_size} bytes into {byte_text(info.file_size)}: "
                "refused as a zip bomb."
            )
        if info.file_size > self.budget:
            raise self.error(f"its members add up to more than {byte_text(MAX_TOTAL_BYTES)}; refused as too large.")
        self.budget -= info.file_size
        return info

    def read_bytes(self, member: str, what: str, limit: int) -> bytes:
        info = self.info(member, what)
        if info.file_size > limit:
            raise self.error(f"'{member}' is {byte_text(info.file_size)}, more than the {byte_text(limit)} allowed.")
        try:
            with self.zf.open(info) as m:
                data = m.read(info.file_size + 1)
        except DAMAGE as e:
            raise self.error(f"'{member}' cannot be read ({reason(e)}): the file is damaged.") from None
        if len(data) != info.file_size:
            raise self.error(f"'{member}' is damaged: it holds {len(data)} bytes, not the {info.file_size} listed.")
        return data

    def read_matrix(self, name: str, member: str, shape: tuple[int, ...]) -> np.ndarray:
        """The float64 array in a .npy member, after checking its header against the declared shape."""
        info = self.info(member, f"the matrix {name}")
        where = f"'{member}' (the matrix {name})"
        try:
            with self.zf.open(info) as m:
                dtype, fortran, offset = self._npy_header(m, where, shape)
                nbytes = math.prod(shape) * dtype.itemsize
                if info.file_size != offset + nbytes:
                    state = "truncated" if info.file_size < offset + nbytes else "followed by stray bytes"
                    raise self.error(
                        f"{where} is {state}: a {format_shape(shape)} {dtype} array needs "
                        f"{offset + nbytes} "
                        f"bytes with its header, the member has {info.file_size}."
                    )
                data = self._read_data(m, nbytes, math.prod(shape) * 8, where)
                m.read(1)  # reaching the end makes zipfile check the CRC, catching flipped bytes in the data
        except (SessionFileError, Cancelled):  # Cancelled is a QkvError, hence a ValueError: not damage
            raise
        except DAMAGE as e:
            raise self.error(f"{where} cannot be read ({reason(e)}): the file is damaged.") from None
        flat = np.frombuffer(data, dtype=dtype)
        array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
        return np.ascontiguousarray(array, dtype=np.float64)  # a float64 file's buffer is used as it is

    def _read_data(self, m: IO[bytes], nbytes: int, weight: int, where: str) -> bytearray:
        """nbytes of a member's data, read in CHUNK_BYTES pieces: Cancel is checked before each piece (a cancelled
        read stops there, raising ``Cancelled``) and progress reported in float64 bytes (``weight`` for all)."""
        data = bytearray(nbytes)
        view = memoryview(data)
        start, got = self.read_so_far, 0
        while True:
            if self.cancel is not None:
                self.cancel.check()
                self.cancel.report(start + (weight * got // nbytes if nbytes else weight), self.matrix_bytes)
            if got >= nbytes:
                break
            n = m.readinto(view[got : got + CHUNK_BYTES])  # type: ignore[attr-defined]
            if not n:
                raise self.error(f"{where} is truncated: {got} of {nbytes} bytes.")
            got += n
        self.read_so_far = start + weight
        return data

    def _npy_header(self, m: IO[bytes], where: str, shape: tuple[int, ...]) -> tuple[np.dtype, bool, int]:
        """(dtype, fortran_order, offset of the data) of a .npy stream, refusing any header that does not promise
        exactly the declared shape of plain numbers. The header is length-checked before it is read."""
        try:
            header = read_npy_header(cast(BinaryIO, m), where, self.error)  # any parser failure becomes one message
        except SessionFileError:
            raise
        except UNREADABLE as e:  # the archive's own checks: a CRC, a compression method, a password
            raise self.error(f"{where} cannot be read ({reason(e)}): the file is damaged.") from None
        except DAMAGE as e:
            raise self.error(f"{where} is not a valid .npy array ({reason(e)}).") from None
        got, fortran, dtype = header.shape, header.fortran_order, header.dtype
        check_dtype(self, where, dtype)
        if tuple(got) != shape:
            raise self.error(f"{where} is {format_shape(got)} but {JSON_MEMBER} declares {format_shape(shape)}.")
        return dtype, fortran, header.offset


def check_dtype(archive: Archive, where: str, dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise archive.error(
            f"{where} holds Python objects; session files hold numbers only, and pickled objects "
            "are never loaded (they could run code)."
        )
    if dtype.fields is not None or dtype.subdtype is not None:
        raise archive.error(f"{where} is a structured array ({dtype}); a matrix must hold plain numbers.")
    if dtype.kind == "c":
        raise archive.error(f"{where} holds complex numbers ({dtype}); a matrix must hold real numbers.")
    if dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise archive.error(f"{where} holds {dtype} values; a matrix must hold real numbers (float64).")


class Fields:
    """Typed access to session.json's fields; a missing or mistyped field raises SessionFileError naming it."""

    def __init__(self, doc: dict[str, Any], archive: Archive, prefix: str = ""):
        self.doc, self.archive, self.prefix = doc, archive, prefix

    def error(self, key: str, message: str) -> SessionFileError:
        return self.archive.error(f"{JSON_MEMBER}: the field '{self.prefix}{key}' {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.doc:
            if default is not ...:
                return default
            raise self.error(key, "is missing.")
        value = self.doc[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # JSON true/false are Python bools, which are ints too: a count or index must not be a bool.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = "a number" if float in kinds else " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
            raise self.error(key, f"must be {names}, not {json_kind(value)}.")
        return value

    def strings(self, key: str, *, low: int, high: int, default: Any = ...) -> list[str]:
        values = self.get(key, list, default)
        if not low <= len(values) <= high:
            raise self.error(key, f"has {len(values)} entries; it must have between {low} and {high}.")
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.error(key, f"must hold text; entry {i} is {json_kind(v)}.")
        return list(values)

    def flags(self, key: str, length: int, what: str) -> np.ndarray:
        values = self.get(key, list)
        if len(values) != length:
            raise self.error(key, f"has {len(values)} flags but there are {length} {what}: give one per token.")
        for i, v in enumerate(values):
            if not isinstance(v, bool):
                raise self.error(key, f"must hold true/false flags; entry {i} is {json_kind(v)}.")
        return np.array(values, dtype=bool)

    def child(self, key: str) -> Fields:
        return Fields(self.get(key, dict), self.archive, f"{self.prefix}{key}.")


_JSON_NAMES = {
    str: "text",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


def check_total(archive: Archive, shapes: Iterable[tuple[int, ...]]) -> None:
    """The declared matrices, with every one declared before them in this file (a whole model's blocks and the
    layers count together, as the writer counts them), fit MAX_MATRIX_BYTES as float64."""
    total = archive.matrix_bytes + sum(math.prod(shape) for shape in shapes) * 8
    archive.matrix_bytes = total
    if total > MAX_MATRIX_BYTES:
        raise archive.error(
            f"{JSON_MEMBER} declares matrices of {byte_text(total)} in all, more than the "
            f"{byte_text(MAX_MATRIX_BYTES)} qkvgui loads."
        )


def declared_shapes(shapes: Fields, names: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Each named matrix's shape from session.json, every axis within LIMITS (checked before anything is
    allocated)."""
    out = {}
    for name in names:
        dims = shapes.get(name, list)
        problem = shape_problem(name, dims)
        if problem:
            raise shapes.error(name, problem)
        out[name] = tuple(dims)
    return out


def shape_problem(name: str, dims: Any) -> str | None:
    """What is wrong with a matrix shape for a session file (the same rule for writing and reading), or None."""
    axes = AXES[name]
    if len(dims) != len(axes) or not all(type(d) is int for d in dims):
        return f"must list {len(axes)} whole numbers ({' × '.join(axes)}), not {dims!r:.80}."
    for d, axis in zip(dims, axes, strict=True):
        limit = LIMITS["heads"] * LIMITS["d_head"] if axis == "heads·d_head" else LIMITS[axis]
        if not 1 <= d <= limit:
            return f"is {format_shape(dims)}: its {axis} must be between 1 and {limit}, not {d}."
    return None


def byte_text(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return {str: "text", int: "an integer", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )
