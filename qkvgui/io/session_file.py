"""Session files (``.qkv``): the document written atomically and read back bit-exact, one loader per format version.

A ``.qkv`` file is a ZIP archive (members stored, not compressed, so saving and loading run at disk speed) holding
``session.json`` (every setting, human-readable) and one ``.npy`` per matrix (float64, little-endian).
docs/session-format.md describes the format; tests/data holds a golden file of every version, which must keep
loading forever: a new version adds a loader to ``_LOADERS``, it never changes an old one.

    write_session(session_or_state, path) -> Path    atomic: the previous file survives any failure
    read_state(path) -> _State                       validated; anything wrong raises SessionError
    read_session(path) -> Session

Reading trusts nothing in the file: sizes are checked against ``LIMITS`` and a byte budget from the JSON and from
each ``.npy`` header before any array is allocated, pickles are never loaded, and every problem is reported as a
``SessionError`` naming the member and field. ``python -m qkvgui.bench session`` times a GPT-2-size session.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qkvgui.io.atomic import atomic_write
from qkvgui.session import BIASES, LIMITS, SCALE_MODES, Layer, Session, SessionError, _State

__all__ = ["FORMAT", "VERSION", "SUFFIX", "write_session", "read_state", "read_session", "bench_gpt2_session"]

#: the value of session.json's "format" field: what tells a session file from any other ZIP
FORMAT = "qkvgui-session"
#: the version this qkvgui writes; it reads every version in _LOADERS
VERSION = 2
SUFFIX = ".qkv"
#: the metadata member of the archive
JSON_MEMBER = "session.json"

#: the largest member read, by its declared uncompressed size (a hostile header cannot make us allocate more)
MAX_MEMBER_BYTES = 2 * 1024**3
#: the largest session.json read
MAX_JSON_BYTES = 16 * 1024**2
#: the most bytes all matrices of one session may take, as float64
MAX_MATRIX_BYTES = 2 * 1024**3
#: the largest .npy header read (numpy writes a few dozen bytes; its own reader refuses more than 10000)
MAX_NPY_HEADER = 65536
#: the most members an archive may list (a session has 3 + 8 per layer, at most 64 layers)
MAX_MEMBERS = 1000
#: the most bytes read from one archive, all members together (duplicate references count each time)
MAX_TOTAL_BYTES = MAX_MATRIX_BYTES + MAX_JSON_BYTES + MAX_MEMBERS * MAX_NPY_HEADER
#: a compressed member larger than this whose size is more than BOMB_RATIO times its compressed size is refused
BOMB_MIN_BYTES = 16 * 1024**2
BOMB_RATIO = 200

# The shape of each matrix, by the LIMITS that bound each axis (W_O's rows are heads·d_v).
_AXES = {
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
#: the matrices of the whole session (version 1 also kept the one layer's weights at the top level)
_V1_MATRICES = ("X", "X_kv", "W_Q", "W_K", "W_V", "W_O")
#: the matrices of each layer, from version 2 on
_LAYER_MATRICES = ("W_Q", "W_K", "W_V", "W_O", *BIASES)
_NPY_LENGTH = {(1, 0): "<H", (2, 0): "<I"}  # the header-length field of each .npy version
_ATTR = {"X": "x", "X_kv": "x_kv", "X_residual": "x_residual", "W_Q": "w_q", "W_K": "w_k", "W_V": "w_v",
         "W_O": "w_o", **BIASES}
# Members get a fixed timestamp so that the same session always gives the same bytes (golden files regenerate).
_EPOCH = (1980, 1, 1, 0, 0, 0)

# What reading damaged or hostile bytes can raise, inside zipfile, zlib, json and numpy's header parser.
_DAMAGE = (ValueError, TypeError, OverflowError, RecursionError, MemoryError, SyntaxError, EOFError, OSError,
           RuntimeError, NotImplementedError, KeyError, IndexError, struct.error, zlib.error, zipfile.BadZipFile)
# Of those, the ones that mean the archive (not the member's content) is damaged or unreadable.
_UNREADABLE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError)


# ---- writing ---------------------------------------------------------------------------------------------------
def write_session(session_or_state: Session | _State, path: str | os.PathLike) -> Path:
    """Write a session (or a state snapshot) to path atomically and return the path.

    The archive is written to a temporary file in the same folder, flushed to disk, then renamed over path: on any
    failure (a full disk, an interrupt) the previous file is untouched and the temporary file removed.
    Raises SessionError when the state itself is invalid (nothing is written), OSError when the disk refuses.
    """
    state = session_or_state.state() if isinstance(session_or_state, Session) else session_or_state
    if not isinstance(state, _State):
        raise SessionError(f"write_session needs a Session or a session state, not {type(state).__name__}.")
    Session._check(state)  # never write a file that would not load
    state = Session(state).state()  # every optional array filled in (biases, ablation flags)
    metadata = _metadata(state)  # refuses an unsaveable state before a temporary file exists
    arrays = {stem: np.ascontiguousarray(a, dtype="<f8") for stem, a in _arrays(state).items()}

    return atomic_write(path, lambda f: _write_archive(f, metadata, arrays))


def _session_arrays(s: _State) -> dict[str, np.ndarray]:
    """The arrays of the session itself, by name: X, X_kv and, when there is one, X_residual."""
    names = ("X", "X_kv") + (("X_residual",) if s.x_residual is not None else ())
    return {name: getattr(s, _ATTR[name]) for name in names}


def _arrays(s: _State) -> dict[str, np.ndarray]:
    """Every array to write, by its member's name without ".npy" (layers under layers/<index>/)."""
    out = dict(_session_arrays(s))
    for i, layer in enumerate(s.layers):
        out.update({f"layers/{i}/{name}": getattr(layer, _ATTR[name]) for name in _LAYER_MATRICES})
    return out


def _metadata(s: _State) -> bytes:
    """session.json of the current format version (2), as UTF-8 bytes (indented, for people reading it)."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
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
                "ablated": [bool(f) for f in layer.ablated.tolist()],
                "shapes": {name: list(getattr(layer, _ATTR[name]).shape) for name in _LAYER_MATRICES},
                "matrices": {name: f"layers/{i}/{name}.npy" for name in _LAYER_MATRICES},
            }
            for i, layer in enumerate(s.layers)
        ],
    }
    # The document checks shapes and numbers; the words are checked here, so every file written reads back.
    for key in ("title", "description"):
        if not isinstance(doc[key], str):
            raise SessionError(f"The {key} must be text, not {type(doc[key]).__name__}.")
    for key in ("tokens", "source_tokens", "features"):
        if not all(isinstance(t, str) for t in doc[key]):
            raise SessionError(f"Every entry of {key} must be text.")
    if not isinstance(doc["extra"], dict):
        raise SessionError(f"The extra data must be a dict, not {type(doc['extra']).__name__}.")
    # ... and the sizes, by the rules the loader applies: a file that could be written but not read would be a trap.
    for key in ("tokens", "source_tokens"):
        if len(doc[key]) > LIMITS["tokens"]:
            raise SessionError(f"{len(doc[key])} {key.replace('_', ' ')} is more than the {LIMITS['tokens']} a "
                               "session file holds.")
    all_shapes = [*doc["shapes"].items(), *((n, d) for layer in doc["layers"] for n, d in layer["shapes"].items())]
    for name, dims in all_shapes:
        problem = _shape_problem(name, dims)
        if problem:
            raise SessionError(f"{name} cannot be saved: it {problem}")
    total = sum(math.prod(dims) for _, dims in all_shapes) * 8
    if total > MAX_MATRIX_BYTES:
        raise SessionError(f"The matrices take {_bytes(total)}, more than the {_bytes(MAX_MATRIX_BYTES)} a session "
                           "file holds.")
    if len(doc["features"]) > LIMITS["d_model"]:
        raise SessionError(f"{len(doc['features'])} feature names is more than the {LIMITS['d_model']} allowed.")
    try:
        text = _pretty(doc, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise SessionError(f"The session cannot be saved: its extra data is not plain JSON ({_reason(e)}).") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a token: escape it, JSON reads it back exactly
        return _pretty(doc, ensure_ascii=True).encode("ascii")


def _pretty(doc: dict, ensure_ascii: bool) -> str:
    """JSON with one field per line and each list on one line (tokens read as a sentence, shapes as 4 × 12)."""
    lines = []
    for i, (key, value) in enumerate(doc.items()):
        if isinstance(value, dict) and value and key != "extra":
            inner = ",\n".join(f"    {json.dumps(k)}: {_compact(v, ensure_ascii)}" for k, v in value.items())
            text = "{\n" + inner + "\n  }"
        elif key == "layers" and value:  # one layer per line
            text = "[\n" + ",\n".join(f"    {_compact(v, ensure_ascii)}" for v in value) + "\n  ]"
        else:
            text = _compact(value, ensure_ascii)
        lines.append(f"  {json.dumps(key)}: {text}" + ("," if i < len(doc) - 1 else ""))
    return "{\n" + "\n".join(lines) + "\n}\n"


def _compact(value, ensure_ascii: bool) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=False, separators=(", ", ": "))


def _write_archive(f, metadata: bytes, arrays: dict[str, np.ndarray]) -> None:
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


# ---- reading ---------------------------------------------------------------------------------------------------
def read_session(path: str | os.PathLike) -> Session:
    """The session stored in a .qkv file, as a ``qkvgui.io.Session`` (the document that can save itself);
    anything wrong with the file raises SessionError saying what and where."""
    from qkvgui.io import Session as FileSession  # here, not at the top: qkvgui.io may one day import this module

    return FileSession(read_state(path))


def read_state(path: str | os.PathLike) -> _State:
    """The validated state stored in a .qkv file (arrays float64); raises SessionError for any bad file."""
    path = Path(path)
    label = path.name or str(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SessionError(f"Cannot open {label}: it is a folder, not a session file.")
        if not stat.S_ISREG(mode):  # a pipe or a device could block or never end
            raise SessionError(f"Cannot open {label}: it is not a regular file.")
        f = open(path, "rb")
    except OSError as e:
        raise SessionError(f"Cannot open {label}: {e.strerror or e}.") from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise SessionError(f"Cannot read {label}: {e.strerror or e}.") from None
        if size == 0:
            raise SessionError(f"{label} is empty: it is not a qkvgui session (was it saved completely?).")
        try:
            zf = zipfile.ZipFile(f)
        except _DAMAGE:
            raise SessionError(
                f"{label} is not a qkvgui session: it is not a ZIP archive, or it is truncated or damaged."
            ) from None
        with zf:
            state = _read_archive(zf, label)
    try:
        Session._check(state)
    except SessionError as e:
        raise SessionError(f"{label}: {e}") from None
    return state


class _Archive:
    """The members of an open archive, read within the size limits; every failure becomes a SessionError."""

    def __init__(self, zf: zipfile.ZipFile, label: str):
        self.zf, self.label = zf, label
        infos = zf.infolist()  # parsed when the archive was opened
        if len(infos) > MAX_MEMBERS:
            raise self.error(f"it lists {len(infos)} files; a session has at most {MAX_MEMBERS}.")
        self.infos = {i.filename: i for i in infos}
        self.budget = MAX_TOTAL_BYTES  # bytes left to read, across all members

    def error(self, message: str) -> SessionError:
        return SessionError(f"{self.label}: {message}")

    def info(self, member: str, what: str) -> zipfile.ZipInfo:
        info = self.infos.get(member)
        if info is None:
            raise self.error(f"the archive has no member '{member}' ({what}); the file is incomplete or damaged.")
        if info.file_size > MAX_MEMBER_BYTES:
            raise self.error(f"'{member}' claims {_bytes(info.file_size)}, more than the {_bytes(MAX_MEMBER_BYTES)} "
                             "a session member may have.")
        if (info.compress_type != zipfile.ZIP_STORED and info.file_size > BOMB_MIN_BYTES
                and info.file_size > BOMB_RATIO * max(info.compress_size, 1)):
            raise self.error(f"'{member}' would expand {info.compress_size} bytes into {_bytes(info.file_size)}: "
                             "refused as a zip bomb.")
        if info.file_size > self.budget:
            raise self.error(f"its members add up to more than {_bytes(MAX_TOTAL_BYTES)}; refused as too large.")
        self.budget -= info.file_size
        return info

    def read_bytes(self, member: str, what: str, limit: int) -> bytes:
        info = self.info(member, what)
        if info.file_size > limit:
            raise self.error(f"'{member}' is {_bytes(info.file_size)}, more than the {_bytes(limit)} allowed.")
        try:
            with self.zf.open(info) as m:
                data = m.read(info.file_size + 1)
        except _DAMAGE as e:
            raise self.error(f"'{member}' cannot be read ({_reason(e)}): the file is damaged.") from None
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
                    raise self.error(f"{where} is {state}: a {_shape(shape)} {dtype} array needs {offset + nbytes} "
                                     f"bytes with its header, the member has {info.file_size}.")
                data = m.read(nbytes)
                if len(data) != nbytes:
                    raise self.error(f"{where} is truncated: {len(data)} of {nbytes} bytes.")
                m.read(1)  # reaching the end makes zipfile check the CRC, catching flipped bytes in the data
        except SessionError:
            raise
        except _DAMAGE as e:
            raise self.error(f"{where} cannot be read ({_reason(e)}): the file is damaged.") from None
        flat = np.frombuffer(data, dtype=dtype)
        array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
        return np.array(array, dtype=np.float64, order="C")

    def _npy_header(self, m, where: str, shape: tuple[int, ...]) -> tuple[np.dtype, bool, int]:
        """(dtype, fortran_order, offset of the data) of a .npy stream, refusing any header that does not promise
        exactly the declared shape of plain numbers. The header is length-checked before it is read."""
        try:
            magic = m.read(np.lib.format.MAGIC_LEN)
            version = np.lib.format.read_magic(io.BytesIO(magic))
            if version not in _NPY_LENGTH:
                raise self.error(f"{where} is a .npy of version {version[0]}.{version[1]}; "
                                 "only versions 1.0 and 2.0 are read.")
            length_format = _NPY_LENGTH[version]
            length_bytes = m.read(struct.calcsize(length_format))
            (length,) = struct.unpack(length_format, length_bytes)
            if length > MAX_NPY_HEADER:
                raise self.error(f"{where} has a header of {length} bytes; a .npy header is a few dozen.")
            text = m.read(length)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            got, fortran, dtype = reader(io.BytesIO(length_bytes + text))
        except SessionError:
            raise
        except _UNREADABLE as e:  # the archive's own checks: a CRC, a compression method, a password
            raise self.error(f"{where} cannot be read ({_reason(e)}): the file is damaged.") from None
        except _DAMAGE as e:
            raise self.error(f"{where} is not a valid .npy array ({_reason(e)}).") from None
        _check_dtype(self, where, dtype)
        if tuple(got) != shape:
            raise self.error(f"{where} is {_shape(got)} but {JSON_MEMBER} declares {_shape(shape)}.")
        return dtype, fortran, len(magic) + len(length_bytes) + len(text)


def _check_dtype(archive: _Archive, where: str, dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise archive.error(f"{where} holds Python objects; session files hold numbers only, and pickled objects "
                            "are never loaded (they could run code).")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise archive.error(f"{where} is a structured array ({dtype}); a matrix must hold plain numbers.")
    if dtype.kind == "c":
        raise archive.error(f"{where} holds complex numbers ({dtype}); a matrix must hold real numbers.")
    if dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise archive.error(f"{where} holds {dtype} values; a matrix must hold real numbers (float64).")


def _read_archive(zf: zipfile.ZipFile, label: str) -> _State:
    archive = _Archive(zf, label)
    if JSON_MEMBER not in archive.infos:
        raise archive.error(f"it is a ZIP archive but not a qkvgui session: it has no {JSON_MEMBER}.")
    raw = archive.read_bytes(JSON_MEMBER, "the settings", MAX_JSON_BYTES)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise archive.error(f"{JSON_MEMBER} is not UTF-8 text.") from None
    except RecursionError:
        raise archive.error(f"{JSON_MEMBER} is nested too deeply to be a session.") from None
    except ValueError as e:
        raise archive.error(f"{JSON_MEMBER} is not valid JSON ({_reason(e)}).") from None
    if not isinstance(doc, dict):
        raise archive.error(f"{JSON_MEMBER} must hold a JSON object, not {_json_kind(doc)}.")
    fields = _Fields(doc, archive)
    fmt = fields.get("format", str)
    if fmt != FORMAT:
        raise archive.error(f"{JSON_MEMBER} says its format is {fmt!r}, not {FORMAT!r}: it is not a qkvgui session.")
    version = fields.get("version", int)
    loader = _LOADERS.get(version)
    if loader is None:
        known = ", ".join(str(v) for v in sorted(_LOADERS))
        newer = " It was probably written by a newer qkvgui: update qkvgui to open it." if version > VERSION else ""
        raise archive.error(f"session format version {version} is not supported; this qkvgui reads version(s) "
                            f"{known}.{newer}")
    return loader(fields, archive)


class _Fields:
    """Typed access to session.json's fields; a missing or mistyped field raises SessionError naming it."""

    def __init__(self, doc: dict, archive: _Archive, prefix: str = ""):
        self.doc, self.archive, self.prefix = doc, archive, prefix

    def error(self, key: str, message: str) -> SessionError:
        return self.archive.error(f"{JSON_MEMBER}: the field '{self.prefix}{key}' {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default=...):
        if key not in self.doc:
            if default is not ...:
                return default
            raise self.error(key, "is missing.")
        value = self.doc[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # JSON true/false are Python bools, which are ints too: a count or index must not be a bool.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = "a number" if float in kinds else " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
            raise self.error(key, f"must be {names}, not {_json_kind(value)}.")
        return value

    def strings(self, key: str, *, low: int, high: int, default=...) -> list[str]:
        values = self.get(key, list, default)
        if not low <= len(values) <= high:
            raise self.error(key, f"has {len(values)} entries; it must have between {low} and {high}.")
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.error(key, f"must hold text; entry {i} is {_json_kind(v)}.")
        return list(values)

    def flags(self, key: str, length: int, what: str) -> np.ndarray:
        values = self.get(key, list)
        if len(values) != length:
            raise self.error(key, f"has {len(values)} flags but there are {length} {what}: give one per token.")
        for i, v in enumerate(values):
            if not isinstance(v, bool):
                raise self.error(key, f"must hold true/false flags; entry {i} is {_json_kind(v)}.")
        return np.array(values, dtype=bool)

    def child(self, key: str) -> _Fields:
        return _Fields(self.get(key, dict), self.archive, f"{self.prefix}{key}.")


_JSON_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "an object"}


def _load_v1_settings(fields: _Fields) -> dict:
    """The settings of format version 1 (everything but the matrices), as _State fields."""
    tokens = fields.strings("tokens", low=1, high=LIMITS["tokens"])
    source_tokens = fields.strings("source_tokens", low=1, high=LIMITS["tokens"])
    padding = fields.flags("padding", len(tokens), "tokens")
    source_padding = fields.flags("source_padding", len(source_tokens), "source tokens")
    cross = fields.get("cross", bool)
    causal = fields.get("causal", bool)
    scale = fields.child("scale")
    mode = scale.get("mode", str)
    if mode not in SCALE_MODES:
        raise scale.error("mode", f"is {mode!r}; it must be one of {', '.join(SCALE_MODES)}.")
    custom = scale.get("custom", (int, float))
    try:
        custom = float(custom)
    except OverflowError:
        custom = math.inf
    if not math.isfinite(custom):
        raise scale.error("custom", f"must be a finite number, not {custom}.")
    head = fields.get("head", int)
    if not 0 <= head < LIMITS["heads"]:
        raise fields.error("head", f"is {head}; a head index runs from 0 to the number of heads - 1.")
    title = fields.get("title", str)
    description = fields.get("description", str)
    features = fields.strings("features", low=0, high=LIMITS["d_model"], default=[])
    extra = fields.get("extra", dict, default={})

    return dict(tokens=tokens, source_tokens=source_tokens, padding=padding, source_padding=source_padding,
                cross=cross, causal=causal, scale_mode=mode, custom_scale=custom, head=head, title=title,
                description=description, features=features, extra=extra)


def _load_v1(fields: _Fields, archive: _Archive) -> _State:
    """Format version 1 (qkvgui 0.1, one layer): the layout of docs/session-format.md. Never change it."""
    settings = _load_v1_settings(fields)
    shapes = _declared_shapes(fields.child("shapes"), _V1_MATRICES)
    _check_total(archive, shapes.values())
    members = fields.child("matrices")
    arrays = {name: archive.read_matrix(name, members.get(name, str), shapes[name]) for name in _V1_MATRICES}
    return _State(**settings, x=arrays["X"], x_kv=arrays["X_kv"],
                  layers=[Layer(arrays["W_Q"], arrays["W_K"], arrays["W_V"], arrays["W_O"])])


def _check_total(archive: _Archive, shapes) -> None:
    total = sum(math.prod(shape) for shape in shapes) * 8
    if total > MAX_MATRIX_BYTES:
        raise archive.error(f"{JSON_MEMBER} declares matrices of {_bytes(total)} in all, more than the "
                            f"{_bytes(MAX_MATRIX_BYTES)} qkvgui loads.")


def _load_v2(fields: _Fields, archive: _Archive) -> _State:
    """Format version 2 (layers, biases, switched-off heads): the settings of version 1 plus "layer", the session's
    matrices X, X_kv (and X_residual) at the top, and a "layers" list, each with its own shapes and matrices."""
    layers_doc = fields.get("layers", list)
    if not 1 <= len(layers_doc) <= LIMITS["layers"]:
        raise fields.error("layers", f"has {len(layers_doc)} entries; a session has 1 to {LIMITS['layers']} layers.")
    top = {k: v for k, v in fields.doc.items() if k not in ("shapes", "matrices", "layers")}
    shape_fields = fields.child("shapes")
    names = ("X", "X_kv") + (("X_residual",) if "X_residual" in shape_fields.doc else ())
    shapes = _declared_shapes(shape_fields, names)
    layer_fields = []
    for i, entry in enumerate(layers_doc):
        if not isinstance(entry, dict):
            raise fields.error(f"layers[{i}]", f"must be an object, not {_json_kind(entry)}.")
        lf = _Fields(entry, archive, f"layers[{i}].")
        layer_fields.append((lf, _declared_shapes(lf.child("shapes"), _LAYER_MATRICES)))
    _check_total(archive, [*shapes.values(), *(v for _, ls in layer_fields for v in ls.values())])
    # The settings shared with version 1 are read by its loader's rules, on a copy without the matrices.
    v1 = _load_v1_settings(_Fields(top, archive))
    members = fields.child("matrices")
    arrays = {name: archive.read_matrix(name, members.get(name, str), shapes[name]) for name in names}
    layers = []
    for i, (lf, layer_shapes) in enumerate(layer_fields):
        mf = lf.child("matrices")
        got = {name: archive.read_matrix(f"{name} of layer {i + 1}", mf.get(name, str), layer_shapes[name])
               for name in _LAYER_MATRICES}
        h = layer_shapes["W_Q"][0]
        ablated = lf.flags("ablated", h, "heads")
        layers.append(Layer(*(got[n] for n in _LAYER_MATRICES), ablated=ablated))
    layer = fields.get("layer", int)
    if not 0 <= layer < len(layers):
        raise fields.error("layer", f"is {layer}; a layer index runs from 0 to {len(layers) - 1}.")
    return _State(**v1, x=arrays["X"], x_kv=arrays["X_kv"], x_residual=arrays.get("X_residual"), layers=layers,
                  layer=layer)


def _declared_shapes(shapes: _Fields, names) -> dict[str, tuple[int, ...]]:
    """Each named matrix's shape from session.json, every axis within LIMITS (checked before anything is
    allocated)."""
    out = {}
    for name in names:
        dims = shapes.get(name, list)
        problem = _shape_problem(name, dims)
        if problem:
            raise shapes.error(name, problem)
        out[name] = tuple(dims)
    return out


def _shape_problem(name: str, dims) -> str | None:
    """What is wrong with a matrix shape for a session file (the same rule for writing and reading), or None."""
    axes = _AXES[name]
    if len(dims) != len(axes) or not all(type(d) is int for d in dims):
        return f"must list {len(axes)} whole numbers ({' × '.join(axes)}), not {dims!r:.80}."
    for d, axis in zip(dims, axes, strict=True):
        limit = LIMITS["heads"] * LIMITS["d_head"] if axis == "heads·d_head" else LIMITS[axis]
        if not 1 <= d <= limit:
            return f"is {_shape(dims)}: its {axis} must be between 1 and {limit}, not {d}."
    return None


#: one loader per format version; a file of any version listed here loads forever
_LOADERS: dict[int, Callable[[_Fields, _Archive], _State]] = {1: _load_v1, 2: _load_v2}


# ---- small helpers ---------------------------------------------------------------------------------------------
def _shape(shape) -> str:
    return " × ".join(str(d) for d in shape) if len(shape) else "a scalar"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return {str: "text", int: "an integer", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


# ---- benchmark -------------------------------------------------------------------------------------------------
def bench_gpt2_session(repeats: int = 5, folder: str | os.PathLike | None = None) -> tuple[float, float, int]:
    """Median seconds to save and to load a GPT-2-size session (X 512×768, W_Q/W_K/W_V 12×768×64, W_O 768×768),
    and the file's size in bytes."""
    import statistics
    import time

    rng = np.random.default_rng(0)
    n, d_model, h, d_head = 512, 768, 12, 64
    session = Session.from_arrays(
        rng.standard_normal((n, d_model)), rng.standard_normal((h, d_model, d_head)),
        rng.standard_normal((h, d_model, d_head)), rng.standard_normal((h, d_model, d_head)),
        rng.standard_normal((h * d_head, d_model)), causal=True, title="GPT-2 size")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "gpt2.qkv"
        saves, loads = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            write_session(session, path)
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            loaded = read_session(path)
            loads.append(time.perf_counter() - t0)
        assert np.array_equal(loaded.matrix("W_O"), session.matrix("W_O"))
        size = path.stat().st_size
    return statistics.median(saves), statistics.median(loads), size
