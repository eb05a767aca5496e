"""Writing session files: the current format version, atomically, with the same size rules the reader applies.

``write_state(state, path)`` validates the state, builds session.json and streams one float64 ``.npy`` per matrix
into a ZIP archive (members stored, fixed timestamps: the same session always gives the same bytes) written through
``qkvgui.io.atomic``: the previous file survives any failure.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from qkvgui.core import SessionError, SessionFileError
from qkvgui.core.checks import MAX_MATRIX_BYTES
from qkvgui.io.atomic import atomic_write
from qkvgui.io.session.archive import (
    JSON_MEMBER,
    LAYER_MATRICES,
    byte_text,
    reason,
    shape_problem,
)
from qkvgui.io.session.pretty import pretty_json
from qkvgui.state import LIMITS, SessionState, validate_state

__all__ = ["FORMAT", "VERSION", "write_state"]

#: the value of session.json's "format" field: what tells a session file from any other ZIP
FORMAT = "qkvgui-session"
#: the newest version this qkvgui writes (4, for a session with rotary positions or shared key/value heads; 3, for
#: one holding a whole model; 2 for every other session); the reader reads every version in ``reader.LOADERS``
VERSION = 4
#: the version of a session holding a whole model's blocks (and no rotary positions or shared key/value heads)
MODEL_VERSION = 3
#: the version of a session without a whole model's blocks
PLAIN_VERSION = 2
_ATTR = {
    "X": "x",
    "X_kv": "x_kv",
    "X_residual": "x_residual",
    "W_Q": "w_q",
    "W_K": "w_k",
    "W_V": "w_v",
    "W_O": "w_o",
    "b_Q": "b_q",
    "b_K": "b_k",
    "b_V": "b_v",
    "b_O": "b_o",
}
# Members get a fixed timestamp so that the same session always gives the same bytes (golden files regenerate).
_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_state(state: SessionState, path: str | os.PathLike[str]) -> Path:
    """Write a session state to path atomically and return the path.

    The archive is written to a temporary file in the same folder, flushed to disk, then renamed over path: on any
    failure (a full disk, an interrupt) the previous file is untouched and the temporary file removed.
    Raises SessionFileError when the state itself is invalid (nothing is written), OSError when the disk refuses.
    """
    if not isinstance(state, SessionState):
        raise SessionFileError(f"write_session needs a Session or a session state, not {type(state).__name__}.")
    try:
        validate_state(state)  # never write a file that would not load
    except SessionFileError:
        raise
    except SessionError as e:
        raise SessionFileError(f"The session cannot be saved: {e}") from None
    state = state.filled()  # every optional array present (biases, ablation flags)
    metadata = _metadata(state)  # refuses an unsaveable state before a temporary file exists
    arrays = {stem: np.ascontiguousarray(a, dtype="<f8") for stem, a in _arrays(state).items()}

    return atomic_write(path, lambda f: _write_archive(f, metadata, arrays))


def _session_arrays(s: SessionState) -> dict[str, np.ndarray]:
    """The arrays of the session itself, by name: X, X_kv and, when there is one, X_residual."""
    names = ("X", "X_kv") + (("X_residual",) if s.x_residual is not None else ())
    return {name: getattr(s, _ATTR[name]) for name in names}


def _arrays(s: SessionState) -> dict[str, np.ndarray]:
    """Every array to write, by its member's name without ".npy" (layers under layers/<index>/)."""
    out = dict(_session_arrays(s))
    for i, layer in enumerate(s.layers):
        out.update({f"layers/{i}/{name}": getattr(layer, _ATTR[name]) for name in LAYER_MATRICES})
    if s.model is not None:
        out.update({f"model/{name}": a for name, a in s.model.to_plain()[1].items()})
    return out


def _version(s: SessionState) -> int:
    """The oldest format version that holds everything in s: files stay readable by older qkvgui when they can."""
    shared = any(L.w_k.shape[0] != L.w_q.shape[0] for L in s.layers)
    if s.rotary or shared or s.rope_theta != 10000.0:
        return VERSION
    return MODEL_VERSION if s.model is not None else PLAIN_VERSION


def _metadata(s: SessionState) -> bytes:
    """session.json (version 3 with a whole model's blocks, 2 otherwise), as UTF-8 bytes (indented, for people)."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": _version(s),
        "title": s.title,
        "description": s.description,
        "tokens": list(s.tokens),
        "source_tokens": list(s.source_tokens),
        "padding": [bool(p) for p in np.asarray(s.padding).tolist()],
        "source_padding": [bool(p) for p in np.asarray(s.source_padding).tolist()],
        "cross": bool(s.cross),
        "causal": bool(s.causal),
        "scale": {"mode": s.scale_mode, "custom": float(s.custom_scale)},
        "head": int(s.head),
        "layer": int(s.layer),
        "features": list(s.features),
        "extra": s.extra,
        "shapes": {name: list(a.shape) for name, a in _session_arrays(s).items()},
        "matrices": {name: f"{name}.npy" for name in _session_arrays(s)},
        "layers": [
            {
                "ablated": [bool(f) for f in np.asarray(layer.ablated).tolist()],
                "shapes": {name: list(getattr(layer, _ATTR[name]).shape) for name in LAYER_MATRICES},
                "matrices": {name: f"layers/{i}/{name}.npy" for name in LAYER_MATRICES},
            }
            for i, layer in enumerate(s.layers)
        ],
    }
    if _version(s) == VERSION:  # version 4: rotary positions (shared key/value heads show in the shapes)
        doc["rotary"] = {"on": bool(s.rotary), "theta": float(s.rope_theta)}
    if s.model is not None:  # version 3: the model's own blocks between the layers
        plain, model_arrays = s.model.to_plain()
        doc["model"] = {
            **plain,
            "shapes": {name: list(a.shape) for name, a in model_arrays.items()},
            "matrices": {name: f"model/{name}.npy" for name in model_arrays},
        }
    # The document checks shapes and numbers; the words are checked here, so every file written reads back.
    for key in ("title", "description"):
        if not isinstance(doc[key], str):
            raise SessionFileError(f"The {key} must be text, not {type(doc[key]).__name__}.")
    for key in ("tokens", "source_tokens", "features"):
        if not all(isinstance(t, str) for t in doc[key]):
            raise SessionFileError(f"Every entry of {key} must be text.")
    if not isinstance(doc["extra"], dict):
        raise SessionFileError(f"The extra data must be a dict, not {type(doc['extra']).__name__}.")
    # ... and the sizes, by the rules the loader applies: a file that could be written but not read would be a trap.
    for key in ("tokens", "source_tokens"):
        if len(doc[key]) > LIMITS["tokens"]:
            raise SessionFileError(
                f"{len(doc[key])} {key.replace('_', ' ')} is more than the {LIMITS['tokens']} a session file holds."
            )
    all_shapes = [*doc["shapes"].items(), *((n, d) for layer in doc["layers"] for n, d in layer["shapes"].items())]
    for name, dims in all_shapes:
        problem = shape_problem(name, dims)
        if problem:
            raise SessionFileError(f"{name} cannot be saved: it {problem}")
    # A whole model's own blocks count too, as the reader counts them (a file over the budget would not read back).
    model_shapes = list(doc["model"]["shapes"].values()) if "model" in doc else []
    total = sum(math.prod(dims) for dims in [*(d for _, d in all_shapes), *model_shapes]) * 8
    if total > MAX_MATRIX_BYTES:
        blocks = " with the model's own blocks" if model_shapes else ""
        raise SessionFileError(
            f"The session cannot be saved: its matrices{blocks} take {byte_text(total)}, more than the "
            f"{byte_text(MAX_MATRIX_BYTES)} a session file holds. Nothing was written."
        )
    if len(doc["features"]) > LIMITS["d_model"]:
        raise SessionFileError(f"{len(doc['features'])} feature names is more than the {LIMITS['d_model']} allowed.")
    try:
        text = pretty_json(doc, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise SessionFileError(
            f"The session cannot be saved: its extra data is not plain JSON ({reason(e)})."
        ) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a token: escape it, JSON reads it back exactly
        return pretty_json(doc, ensure_ascii=True).encode("ascii")


def _write_archive(f: IO[bytes], metadata: bytes, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(_member(JSON_MEMBER), metadata)
        for name, array in arrays.items():
            _write_matrix(zf, f"{name}.npy", array)


def _write_matrix(zf: zipfile.ZipFile, member: str, array: np.ndarray) -> None:
    """One .npy member, streamed into the archive (no second copy of the array in memory)."""
    big = array.nbytes + 4096 >= zipfile.ZIP64_LIMIT
    with zf.open(_member(member), "w", force_zip64=big) as m:
        np.lib.format.write_array(m, array, allow_pickle=False)


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info
