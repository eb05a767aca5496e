"""Checks shared by every room: the largest sizes qkvgui accepts (of a session, and of each kind of file it reads),
and the search for NaN and infinities.

One place for each, so that a file, a resize and a paste refuse the same things with the same words.
"""

from __future__ import annotations

import numpy as np

from .errors import NonFiniteError, QkvError

__all__ = [
    "BOMB_MIN_BYTES",
    "BOMB_RATIO",
    "LIMITS",
    "MAX_CELLS",
    "MAX_CSV_BYTES",
    "MAX_EXTRA_DEPTH",
    "MAX_EXTRA_ITEMS",
    "MAX_JSON_BYTES",
    "MAX_MATRIX_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_NPY_HEADER",
    "MAX_TOTAL_BYTES",
    "check_finite",
    "check_json_plain",
    "matrix_bytes",
    "byte_text",
]

#: the largest sizes a session may have; files, resizes and imports beyond them are refused before allocating
LIMITS = {"tokens": 4096, "d_model": 8192, "heads": 256, "d_head": 4096, "layers": 64}
#: the most bytes all matrices of one session may take as float64: what a session file saves and loads, so the
#: window never builds a document it cannot save (checked before allocating, and before a file's arrays are read)
MAX_MATRIX_BYTES = 1024**3
#: how deep a session's free-form extra data may nest, and how many values it may hold (each is copied on the way
#: in and out: 500 levels of lists overflowed Python's stack)
MAX_EXTRA_DEPTH = 32
MAX_EXTRA_ITEMS = 100_000

# What a file may hold, checked from its size and headers before anything is allocated or read.
#: the largest matrix a .npy or .csv matrix file may hold (cells): the largest X a session holds
MAX_CELLS = LIMITS["tokens"] * LIMITS["d_model"]
#: the largest .csv read (a full-precision number takes about 20 characters: larger matrices travel as .npy)
MAX_CSV_BYTES = 256 * 1024**2
#: the largest .npy header read (numpy writes a few dozen bytes; its own reader refuses more than 10000)
MAX_NPY_HEADER = 65536
#: a session file (a ZIP archive): the largest member read, by its declared uncompressed size (a hostile header
#: cannot make us allocate more)
MAX_MEMBER_BYTES = 2 * 1024**3
#: the largest session.json read
MAX_JSON_BYTES = 16 * 1024**2
#: the most members an archive may list (a session has 3 + 8 per layer, at most 64 layers)
MAX_MEMBERS = 1000
#: the most bytes read from one archive, all members together (duplicate references count each time)
MAX_TOTAL_BYTES = MAX_MATRIX_BYTES + MAX_JSON_BYTES + MAX_MEMBERS * MAX_NPY_HEADER
#: a compressed member larger than BOMB_MIN_BYTES whose size is more than BOMB_RATIO times its compressed size is
#: refused (a ZIP bomb)
BOMB_MIN_BYTES = 16 * 1024**2
BOMB_RATIO = 200


def byte_text(n: int | float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def matrix_bytes(
    *,
    tokens: int,
    source_tokens: int,
    d_model: int,
    heads: int,
    d_k: int,
    d_v: int,
    layers: int,
    residual: bool = False,
    kv_heads: int | None = None,
) -> int:
    """Bytes of every matrix of a session of these sizes, as float64 (X, X_kv, the residual stream, and per layer
    W_Q, W_K, W_V, W_O and the biases; W_K, W_V and their biases per key/value head, ``heads`` unless given);
    computed without allocating anything."""
    kv = heads if kv_heads is None else kv_heads
    per_layer = (
        heads * d_model * d_k
        + kv * d_model * (d_k + d_v)
        + heads * d_v * d_model
        + heads * d_k
        + kv * (d_k + d_v)
        + d_model
    )
    return 8 * ((tokens * (2 if residual else 1) + source_tokens) * d_model + layers * per_layer)


def check_json_plain(value: object, what: str, error: type[Exception] = ValueError) -> None:
    """``value`` is plain JSON (dicts with text keys, lists, text, finite numbers, true/false, null), nested at most
    MAX_EXTRA_DEPTH deep with at most MAX_EXTRA_ITEMS values; walked without recursion, so no depth can overflow."""
    stack: list[tuple[object, int]] = [(value, 0)]
    items = 0
    while stack:
        v, depth = stack.pop()
        items += 1
        if items > MAX_EXTRA_ITEMS:
            raise error(f"{what} holds more than {MAX_EXTRA_ITEMS:,} values; it is free-form data, not a store.")
        if depth > MAX_EXTRA_DEPTH:
            raise error(f"{what} is nested more than {MAX_EXTRA_DEPTH} levels deep.")
        if isinstance(v, dict):
            for k, inner in v.items():
                if not isinstance(k, str):
                    raise error(f"{what} is not plain JSON: it has a key that is not text ({type(k).__name__}).")
                stack.append((inner, depth + 1))
        elif isinstance(v, list | tuple):
            stack.extend((inner, depth + 1) for inner in v)
        elif isinstance(v, float):
            if not np.isfinite(v):
                raise error(f"{what} is not plain JSON: it holds {v} (only finite numbers are).")
        elif not (v is None or isinstance(v, str | int | bool)):
            raise error(
                f"{what} is not plain JSON: it holds a {type(v).__name__} (text, numbers, true/false, null, "
                "lists and objects are kept with a session)."
            )


def check_finite(
    name: str, a: np.ndarray, error: type[QkvError] = NonFiniteError, *, rows_and_columns: bool = False
) -> None:
    """Raise ``error`` naming the first NaN or infinity of a, where it is and how many there are.

    Where: its index, ``[1, 2]``; with ``rows_and_columns``, a 2-D array's ``row 1, column 2`` (a file's matrix,
    as a spreadsheet shows it)."""
    # One fast reduction first: the sum of finite numbers is finite unless it overflows, so only a
    # non-finite sum needs the element-wise search that says where the bad value is.
    if a.dtype.kind not in "fc" or np.isfinite(np.sum(a)):
        return
    bad = np.argwhere(~np.isfinite(a))
    if len(bad) == 0:
        return
    if rows_and_columns and a.ndim == 2:
        where = f"row {int(bad[0][0])}, column {int(bad[0][1])}"
    else:
        where = "[" + ", ".join(str(int(i)) for i in bad[0]) + "]"
    value = a[tuple(bad[0])]
    raise error(
        f"{name} holds {value} at {where} ({len(bad)} non-finite value{'s' if len(bad) > 1 else ''}): "
        "every entry must be a finite number."
    )
