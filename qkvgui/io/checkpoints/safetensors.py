"""Reading tensors from a ``.safetensors`` file in NumPy: lazily, pickle-free, float16 and bfloat16 widened exactly.

The format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte offsets) and the
raw little-endian data. We read it ourselves (not through the safetensors library) because NumPy has no bfloat16:
a bfloat16 is the top half of a float32, so shifting its 16 bits up gives the same number exactly, then float64.
Every offset and size in the header is checked against the file before anything is read.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from qkvgui.core.models import ModelError

__all__ = ["SafetensorsFile", "DTYPES"]

#: safetensors dtype -> the NumPy dtype of its bytes (BF16 read as uint16 and widened)
DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
#: the largest header read (real headers are a few hundred KiB even for big models)
MAX_HEADER = 100 * 1024**2


class SafetensorsFile:
    """The tensors of one file, by name; ``get(name)`` reads one (float64), ``rows(name, ids)`` some of its rows."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        label = self.path.name
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise ModelError(f"{label} is too short to be a safetensors file.")
                length = int.from_bytes(head, "little")
                if not 2 <= length <= min(MAX_HEADER, size - 8):
                    raise ModelError(
                        f"{label} is not a safetensors file (its header length {length} does not fit "
                        f"a {size}-byte file)."
                    )
                header = json.loads(f.read(length).decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ModelError(f"{label} cannot be read as safetensors: {e}") from None
        if not isinstance(header, dict):
            raise ModelError(f"{label}: the safetensors header is not a JSON object.")
        header.pop("__metadata__", None)
        self._start = 8 + length
        data = size - self._start
        self._entries: dict[str, tuple[str, tuple[int, ...], int]] = {}
        for name, entry in header.items():
            try:
                dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
                ok = all(isinstance(d, int) and d >= 0 for d in (*shape, begin, end))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise ModelError(f"{label}: the header entry of {name!r} is damaged.")
            if dtype not in DTYPES:
                raise ModelError(f"{label}: tensor {name!r} is stored as {dtype}; qkvgui reads {', '.join(DTYPES)}.")
            if end - begin != math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize or end > data:
                raise ModelError(
                    f"{label}: tensor {name!r} ({dtype} {list(shape)}) does not fit its bytes {begin}..{end} of {data}."
                )
            self._entries[name] = (dtype, shape, begin)
        self._map: np.memmap | None = None

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def dtype(self, name: str) -> str:
        return self._entries[name][0]

    def dtypes(self) -> set[str]:
        return {entry[0] for entry in self._entries.values()}

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def _raw(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise KeyError(name)
        if self._map is None:
            try:
                self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
            except (OSError, ValueError) as e:
                raise ModelError(f"{self.path.name} cannot be read: {e}") from None
        dtype, shape, begin = self._entries[name]
        count = math.prod(shape)
        return np.frombuffer(self._map, dtype=DTYPES[dtype], count=count, offset=self._start + begin).reshape(shape)

    def get(self, name: str) -> np.ndarray:
        """The whole tensor as a new float64 array."""
        return _widen(self._raw(name), self._entries[name][0])

    def rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` of a 2-D tensor (an embedding table) as float64, reading only those rows."""
        raw = self._raw(name)
        if raw.ndim != 2 or (len(ids) and (ids.min() < 0 or ids.max() >= raw.shape[0])):
            raise ModelError(
                f"{self.path.name}: the embedding table {name} {list(raw.shape)} has no rows for token ids up to "
                f"{int(ids.max()) if len(ids) else 0}."
            )
        return _widen(raw[ids], self._entries[name][0])

    def close(self) -> None:
        self._map = None


def _widen(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # bfloat16 is float32's top 16 bits: shift back up, exactly
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.astype(np.float64)
