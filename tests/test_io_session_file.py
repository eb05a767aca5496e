"""Session files: what is saved loads back bit-exact, every bad file is refused with a SessionError that says what and
where, saving never destroys the previous file, and old format versions keep loading (the golden files)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import stat
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from make_golden_sessions import golden_state_v1, golden_state_v2

import qkvgui
from qkvgui.io.session import LOADERS, VERSION, read_state, write_session, writer
from qkvgui.session import Session, SessionError
from qkvgui.state import Layer, SessionState, validate_state

read_session = Session.load

DATA = Path(__file__).parent / "data"
LAYER_MATRICES = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
MEMBERS = ["X.npy", "X_kv.npy", *(f"layers/0/{m}.npy" for m in LAYER_MATRICES), "session.json"]


# ---- helpers ---------------------------------------------------------------------------------------------------
def _same_array(name: str, a, b) -> None:
    if b is None:
        assert a is None, name
        return
    b = np.asarray(b, dtype=np.float64)
    assert a.dtype == np.float64, name
    assert a.shape == b.shape, name
    assert a.tobytes() == b.tobytes(), f"{name} is not bit-exact"


def assert_same_state(got: SessionState, want: SessionState) -> None:
    """Every matrix bit-exact (so -0.0 and subnormals too) and float64, in every layer; every setting equal."""
    for attr in ("x", "x_kv", "x_residual"):
        _same_array(attr, getattr(got, attr), getattr(want, attr))
    assert len(got.layers) == len(want.layers)
    for i, (g, w) in enumerate(zip(got.layers, want.layers, strict=True)):
        g, w = g.filled(), w.filled()
        for attr in ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o"):
            _same_array(f"layer {i} {attr}", getattr(g, attr), getattr(w, attr))
        assert np.array_equal(g.ablated, w.ablated) and g.ablated.dtype == bool
    for key in ("padding", "source_padding"):
        a, b = getattr(got, key), getattr(want, key)
        assert a.dtype == bool and np.array_equal(a, b), key
    for key in (
        "tokens",
        "source_tokens",
        "cross",
        "causal",
        "scale_mode",
        "custom_scale",
        "head",
        "layer",
        "title",
        "description",
        "features",
        "extra",
    ):
        assert getattr(got, key) == getattr(want, key), key
        assert type(getattr(got, key)) is type(getattr(want, key)), key


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def rezip(path: Path, content: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return path


def doc_of(path: Path) -> dict:
    return json.loads(members(path)["session.json"])


def with_doc(path: Path, change) -> Path:
    content = members(path)
    doc = json.loads(content["session.json"])
    change(doc)
    content["session.json"] = json.dumps(doc).encode()
    return rezip(path, content)


def with_member(path: Path, name: str, data: bytes | None) -> Path:
    content = members(path)
    if data is None:
        del content[name]
    else:
        content[name] = data
    return rezip(path, content)


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def refused(path: Path, *words: str) -> str:
    """Loading path raises SessionError whose message names the file and contains every word (any case)."""
    with pytest.raises(SessionError) as info:
        read_session(path)
    message = str(info.value)
    assert path.name in message, message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def patch_central(path: Path, member: str, fmt: str, offset: int, value: int) -> None:
    """Overwrite one field of a member's central-directory record (and, at the same offset less 10 and only for
    the flag and method fields, its local header), as a hostile or damaged file would have it."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    central = data.find(b"PK\x01\x02")  # the first central record
    while central != -1:
        (name_len,) = struct.unpack_from("<H", data, central + 28)
        if data[central + 46 : central + 46 + name_len] == name:
            break
        central = data.find(b"PK\x01\x02", central + 4)
    assert central != -1
    struct.pack_into(fmt, data, central + offset, value)
    if offset in (8, 10):  # flags and compression method also live in the local header (offsets 6 and 8)
        (local,) = struct.unpack_from("<I", data, central + 42)
        struct.pack_into(fmt, data, local + offset - 2, value)
    path.write_bytes(bytes(data))


@pytest.fixture
def good(tmp_path) -> Path:
    """A valid session file of the default session."""
    return write_session(Session(), tmp_path / "good.qkv")


def modified_session() -> Session:
    """Every setting away from its default: cross-attention, padding, a custom scale, head 2, resized."""
    s = Session()
    s.set_tokens(["a", "b", "c", "d", "é"])
    s.set_tokens(["x", "y", "🙂"], source=True)
    s.resize(d_model=7, n_heads=3, d_k=5, d_v=2)
    s.set_cross(True)
    s.set_causal(False)
    s.set_padding([False, True, False, False, True], source=False)
    s.set_padding([False, False, True], source=True)
    s.set_scale("custom", 0.1)
    s.set_head(1)
    s.set_block("X", 0, 0, [[-0.0, 5e-324, 1 / 3, -1e300]])
    s.set_block("W_Q", 1, 2, [[0.1, np.nextafter(1.0, 2.0)]], head=2)
    return s


# ---- round trips -----------------------------------------------------------------------------------------------
def test_default_session_round_trips_bit_exact(tmp_path):
    session = Session()
    path = write_session(session, tmp_path / "default.qkv")
    assert path == tmp_path / "default.qkv"
    loaded = read_session(path)
    assert isinstance(loaded, qkvgui.Session)  # the one document class
    assert_same_state(loaded.state(), session.state())
    assert np.array_equal(loaded.compute().output, session.compute().output)


def test_modified_session_round_trips_bit_exact(tmp_path):
    session = modified_session()
    loaded = read_session(write_session(session, tmp_path / "modified.qkv"))
    assert_same_state(loaded.state(), session.state())
    assert (loaded.cross, loaded.head, loaded.scale(), loaded.n_heads, loaded.d_model) == (True, 1, 0.1, 3, 7)
    assert np.signbit(loaded.matrix("X")[0, 0]) and loaded.matrix("X")[0, 1] == 5e-324


@pytest.mark.parametrize(
    "name", ["previous-token", "search-engine", "translation", "two-heads", "causal-gpt", "bilinear"]
)
def test_presets_round_trip_with_their_feature_names(tmp_path, name):
    session = Session.from_preset(name)
    loaded = read_session(write_session(session, tmp_path / f"{name}.qkv"))
    assert_same_state(loaded.state(), session.state())
    assert loaded.features == session.features


def test_session_load_and_save_use_this_format(tmp_path):
    session = qkvgui.Session.from_preset("two-heads")
    path = session.save(tmp_path / "two.qkv")
    assert zipfile.is_zipfile(path)
    assert_same_state(qkvgui.Session.load(path).state(), session.state())


def test_a_state_snapshot_saves_like_its_session_and_read_state_returns_a_state(tmp_path):
    state = modified_session().state()
    state = state.replace(
        extra={"notes": ["kept", 1, 2.5, None, True], "nested": {"a": {}}},
        tokens=["lone \ud800 surrogate", *state.tokens[1:]],
    )  # not UTF-8: escaped in the JSON
    path = write_session(state, str(tmp_path / "state.qkv"))
    got = read_state(path)
    assert isinstance(got, SessionState)
    assert_same_state(got, state)


def test_the_file_is_a_plain_zip_with_readable_settings(good):
    """What docs/session-format.md promises: session.json plus one float64 .npy per matrix, stored uncompressed."""
    with zipfile.ZipFile(good) as zf:
        names = [i.filename for i in zf.infolist()]
        assert names == ["session.json", "X.npy", "X_kv.npy", *(f"layers/0/{m}.npy" for m in LAYER_MATRICES)]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        text = zf.read("session.json").decode("utf-8")
        x = np.load(io.BytesIO(zf.read("X.npy")), allow_pickle=False)
    assert text.startswith('{\n  "format": "qkvgui-session",\n  "version": 2,')
    doc = json.loads(text)
    assert doc["tokens"] == ["the", "cat", "sat", "on", "the", "mat"]
    layer = doc["layers"][0]
    assert layer["shapes"]["W_Q"] == [2, 12, 3] and layer["matrices"]["W_O"] == "layers/0/W_O.npy"
    assert doc["scale"] == {"mode": "sqrt", "custom": 1.0}
    assert x.dtype == np.dtype("<f8") and x.shape == (6, 12)


def test_saving_is_deterministic(tmp_path):
    a = write_session(Session(), tmp_path / "a.qkv").read_bytes()
    b = write_session(Session(), tmp_path / "b.qkv").read_bytes()
    assert a == b


@pytest.mark.parametrize("dtype", [">f8", "<f4", "<i2", "u1"])
@pytest.mark.parametrize("fortran", [False, True])
def test_other_real_dtypes_and_orders_are_read_as_float64(good, dtype, fortran):
    """Files written by hand (np.save) load too: any real numeric dtype, either byte order, C or Fortran order."""
    x = np.arange(72, dtype=float).reshape(6, 12) % 7
    stored = np.asfortranarray(x.astype(dtype)) if fortran else x.astype(dtype)
    loaded = read_session(with_member(good, "X.npy", npy(stored)))
    assert loaded.matrix("X").dtype == np.float64
    assert np.array_equal(loaded.matrix("X"), x)


# ---- the golden files ------------------------------------------------------------------------------------------
def test_golden_v1_loads_with_the_values_it_was_built_from():
    session = read_session(DATA / "session_v1.qkv")
    assert_same_state(session.state(), golden_state_v1())
    # and a few values spelled out, as a reader of the file would check them
    assert session.tokens == ["the", "cat", "sat", "<pad>"] and session.source_tokens == ["le", "chat", "<pad>"]
    assert session.cross and session.causal and session.head == 1 and session.scale() == 0.75
    assert (session.n_heads, session.d_model, session.d_k, session.d_v) == (2, 4, 2, 3)
    assert session.padding.tolist() == [False, False, False, True]
    assert session.description == "Schlüssel → Wert: the session format's first version."
    assert session.matrix("X")[0, 0] == 0 and np.signbit(session.matrix("X")[0, 0])
    assert session.matrix("W_O")[-1, -1] == 5e-324
    assert session.matrix("X")[0, 1] == (4 - 5) / 10 + 1 / 3  # k = (1·3 + salt 1) % 11 = 4 in _values
    assert session.features == ["a", "b", "c", "d"] and session.state().extra == {"note": "golden", "numbers": [1, 2.5]}


def test_golden_v2_loads_layers_biases_and_switched_off_heads():
    session = read_session(DATA / "session_v2.qkv")
    want = golden_state_v2()
    assert_same_state(session.state(), want)
    assert session.n_layers == 2 and session.layer == 1 and session.ablated(1).tolist() == [True, False]
    r0, r1 = session.compute()
    assert not r1.head_outputs[0].any()  # the switched-off head writes nothing
    np.testing.assert_array_equal(r0.residual, want.x_residual + r0.output)


def test_golden_v3_loads_a_whole_models_blocks():
    from make_golden_sessions import golden_state_v3

    session = read_session(DATA / "session_v3.qkv")
    want = golden_state_v3()
    assert_same_state(session.state(), want)
    got, expected = session.model, want.model
    assert got.scale_factors == expected.scale_factors and got.family == "gpt2"
    for a, b in zip(got.blocks, expected.blocks, strict=True):
        assert a.pre_norm and a.norm_mlp.kind == "rms" and a.norm_mlp.bias is None and a.mlp.activation == "gelu_new"
        for part in ("w_in", "b_in", "w_out", "b_out"):
            np.testing.assert_array_equal(getattr(a.mlp, part), getattr(b.mlp, part))
        np.testing.assert_array_equal(a.norm_attn.weight, b.norm_attn.weight)
    # the stack runs: layer 2 reads layer 1's stream through the model's block
    _, after = session.compute_model()[0][1:]
    assert not np.array_equal(after, want.x_residual)


def test_every_readable_version_has_a_golden_file_and_every_golden_file_loads():
    assert VERSION in LOADERS
    for version in LOADERS:
        assert (DATA / f"session_v{version}.qkv").is_file(), f"no golden file for format version {version}"
    for path in DATA.glob("session_v*.qkv"):
        assert isinstance(read_session(path), Session)


# ---- bad files -------------------------------------------------------------------------------------------------
def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(doc):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


def _delete(*keys):
    def change(doc):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return change


BAD_SETTINGS = {
    "wrong format": (_set("format", "glue-session"), ["format", "glue-session", "not a qkvgui session"]),
    "no format": (_delete("format"), ["'format'", "missing"]),
    "unknown version": (_set("version", 99), ["version 99", "not supported", "1", "newer qkvgui"]),
    "version as text": (_set("version", "1"), ["'version'", "integer", "text"]),
    "version as bool": (_set("version", True), ["'version'", "integer"]),
    "no tokens": (_delete("tokens"), ["'tokens'", "missing"]),
    "tokens not text": (_set("tokens", [1, 2, 3, 4, 5, 6]), ["'tokens'", "text"]),
    "tokens empty": (_set("tokens", []), ["'tokens'", "0 entries"]),
    "tokens too many": (_set("tokens", ["t"] * 5000), ["'tokens'", "5000"]),
    "tokens not a list": (_set("tokens", "the cat"), ["'tokens'", "a list"]),
    "cross as text": (_set("cross", "yes"), ["'cross'", "true or false"]),
    "causal missing": (_delete("causal"), ["'causal'", "missing"]),
    "scale not object": (_set("scale", 1.0), ["'scale'", "an object"]),
    "scale mode unknown": (_set("scale", "mode", "cubic"), ["'scale.mode'", "cubic", "sqrt"]),
    "scale custom text": (_set("scale", "custom", "big"), ["'scale.custom'", "number"]),
    "scale custom infinite": (_set("scale", "custom", float("inf")), ["'scale.custom'", "finite"]),
    "scale custom huge int": (_set("scale", "custom", 10**400), ["'scale.custom'", "finite"]),
    "head as text": (_set("head", "0"), ["'head'", "integer"]),
    "head negative": (_set("head", -1), ["'head'", "-1"]),
    "head beyond heads": (_set("head", 5), ["head 6", "2 heads"]),
    "title not text": (_set("title", None), ["'title'", "null"]),
    "features not text": (_set("features", [1] * 12), ["'features'", "text"]),
    "extra not object": (_set("extra", [1]), ["'extra'", "an object"]),
    "padding too short": (_set("padding", [False]), ["'padding'", "1 flags", "6 tokens"]),
    "padding not bools": (_set("padding", [0, 1, 0, 0, 0, 0]), ["'padding'", "true/false"]),
    "source padding wrong": (_set("source_padding", [True] * 9), ["'source_padding'", "9 flags"]),
    "no shapes": (_delete("shapes"), ["'shapes'", "missing"]),
    "shape of wrong rank": (_set("shapes", "X", [6]), ["'shapes.X'", "2 whole numbers"]),
    "shape not numbers": (_set("layers", 0, "shapes", "W_O", [6.0, 12]), ["'layers[0].shapes.W_O'", "whole numbers"]),
    "shape absurd": (_set("shapes", "X", [10**9, 12]), ["'shapes.X'", "tokens", "4096"]),
    "shape zero": (_set("layers", 0, "shapes", "W_V", [2, 12, 0]), ["'layers[0].shapes.W_V'", "d_head", "between 1"]),
    "shapes too large in all": (_set("layers", 0, "shapes", "W_Q", [256, 8192, 4096]), ["64.0 GiB", "1.0 GiB"]),
    "no matrices": (_delete("matrices"), ["'matrices'", "missing"]),
    "matrix member missing": (_set("layers", 0, "matrices", "W_K", "gone.npy"), ["gone.npy", "W_K", "no member"]),
    "matrix member not text": (_set("layers", 0, "matrices", "W_K", 3), ["'layers[0].matrices.W_K'", "text"]),
    "header disagrees": (_set("shapes", "X", [5, 12]), ["X.npy", "6 × 12", "declares 5 × 12"]),
}


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_bad_settings_are_refused_naming_the_field(good, case):
    change, words = BAD_SETTINGS[case]
    refused(with_doc(good, change), *words)


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.qkv"
    path.write_bytes(b"")
    refused(path, "empty")


def test_a_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.qkv"
    path.write_text("hello, I am not a session\n" * 20)
    refused(path, "not a ZIP archive")


@pytest.mark.parametrize("keep", [0.5, 0.99, 22 / 3099])
def test_a_truncated_file_is_refused(good, keep):
    data = good.read_bytes()
    good.write_bytes(data[: int(len(data) * keep)])
    refused(good, "truncated")


def test_a_missing_file_a_folder_and_a_pipe_are_refused(tmp_path):
    refused(tmp_path / "nowhere.qkv", "cannot open", "no such file")
    (tmp_path / "folder.qkv").mkdir()
    refused(tmp_path / "folder.qkv", "folder")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.qkv")
        refused(tmp_path / "pipe.qkv", "not a regular file")  # and does not hang waiting for a writer


def test_a_zip_without_session_json_is_refused(good):
    refused(with_member(good, "session.json", None), "no session.json", "not a qkvgui session")


@pytest.mark.parametrize(
    "text, words",
    [
        (b"{not json", ["session.json", "not valid JSON"]),
        (b"\xff\xfe{}", ["session.json", "UTF-8"]),
        (b"[1, 2, 3]", ["session.json", "JSON object", "a list"]),
        (b"null", ["JSON object", "null"]),
        (b"[" * 100_000 + b"]" * 100_000, ["session.json", "nested too deeply"]),
        (b'{"head": 1' + b"0" * 5000 + b"}", ["session.json", "not valid JSON"]),
    ],
)
def test_session_json_that_is_not_a_json_object_is_refused(good, text, words):
    refused(with_member(good, "session.json", text), *words)


def test_a_missing_matrix_member_is_refused(good):
    refused(with_member(good, "layers/0/W_K.npy", None), "layers/0/W_K.npy", "the matrix W_K", "incomplete")


@pytest.mark.parametrize(
    "array, words",
    [
        (np.array([[object()] * 12] * 6, dtype=object), ["X.npy", "Python objects", "never loaded"]),
        (np.full((6, 12), "abc"), ["X.npy", "<U3", "real numbers"]),
        (np.zeros((6, 12), dtype=complex), ["X.npy", "complex"]),
        (np.zeros((6, 12), dtype=bool), ["X.npy", "bool", "real numbers"]),
        (np.zeros((6, 12), dtype=[("a", "<f8")]), ["X.npy", "structured"]),
        (np.zeros((6, 12), dtype=np.longdouble), ["X.npy", "real numbers"]),
        (np.zeros((6, 12), dtype="M8[s]"), ["X.npy", "real numbers"]),
    ],
)
def test_matrices_that_are_not_real_numbers_are_refused(good, array, words):
    if array.dtype.itemsize <= 8 and array.dtype.kind == "f":  # longdouble is float64 on some platforms
        pytest.skip("longdouble is plain float64 here")
    refused(with_member(good, "X.npy", npy(array, allow_pickle=array.dtype.hasobject)), *words)


def test_a_pickled_matrix_is_never_unpickled(good, monkeypatch):
    import pickle

    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    refused(
        with_member(good, "layers/0/W_O.npy", npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)),
        "layers/0/W_O.npy",
        "Python objects",
    )


@pytest.mark.parametrize(
    "data, words",
    [
        (b"random bytes, not an array at all", ["X.npy", "not a valid .npy"]),
        (b"\x93NUMPY\x09\x00" + b"\0" * 100, ["X.npy", "version 9.0"]),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    ", ["X.npy", "not a valid .npy"]),
        (b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{", ["X.npy", "header of 2147483648 bytes"]),
        (npy(np.zeros((6, 12)))[:-8], ["X.npy", "truncated"]),
        (npy(np.zeros((6, 12))) + b"\0" * 8, ["X.npy", "stray bytes"]),
        (npy(np.zeros((12, 6))), ["X.npy", "12 × 6", "declares 6 × 12"]),
        (npy(np.zeros((6, 12, 1))), ["X.npy", "declares 6 × 12"]),
    ],
)
def test_broken_npy_members_are_refused(good, data, words):
    refused(with_member(good, "X.npy", data), *words)


def test_a_hostile_header_is_refused_before_anything_is_allocated(good):
    """session.json and the header both promise a 4096 × 8192 X (256 MiB): the member is too short for it, which is
    seen from the sizes alone."""
    content = members(good)
    doc = json.loads(content["session.json"])
    doc["shapes"]["X"] = [4096, 8192]
    content["session.json"] = json.dumps(doc).encode()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (4096, 8192)})
    content["X.npy"] = header.getvalue() + b"\0" * 64
    t0 = time.perf_counter()
    refused(rezip(good, content), "X.npy", "truncated")
    assert time.perf_counter() - t0 < 0.5


def test_matrices_that_do_not_fit_together_are_refused_by_the_sessions_own_check(good):
    content = members(good)
    doc = json.loads(content["session.json"])
    doc["layers"][0]["shapes"]["W_K"] = [2, 12, 4]
    content["session.json"] = json.dumps(doc).encode()
    content["layers/0/W_K.npy"] = npy(np.ones((2, 12, 4)))
    refused(rezip(good, content), "W_K is 2 × 12 × 4", "must be 2 × 12 × 3")


@pytest.mark.parametrize("name, value, word", [("X", np.nan, "nan"), ("W_O", np.inf, "inf"), ("W_Q", -np.inf, "-inf")])
def test_non_finite_numbers_are_refused(good, name, value, word):
    array = Session(read_state(good)).matrix(name).copy()
    array.flat[3] = value
    member = f"{name}.npy" if name == "X" else f"layers/0/{name}.npy"
    refused(with_member(good, member, npy(array)), name, word, "finite")


def test_a_member_claiming_more_than_2_gib_is_refused(good):
    patch_central(good, "layers/0/W_O.npy", "<I", 24, 0xF000_0000)  # uncompressed size: 3.75 GiB
    refused(good, "layers/0/W_O.npy", "claims 3.8 GiB")


def test_a_zip_bomb_is_refused(good):
    content = members(good)
    content["session.json"] = content["session.json"] + b" " * (32 * 1024**2)  # deflates to ~32 KiB
    refused(rezip(good, content, zipfile.ZIP_DEFLATED), "session.json", "zip bomb")


def test_a_large_session_json_is_refused(good):
    content = members(good)
    content["session.json"] = content["session.json"] + os.urandom(9 * 1024**2).hex().encode()
    refused(rezip(good, content), "session.json", "more than the 16.0 MiB")


def test_an_archive_of_many_members_is_refused(good):
    content = members(good) | {f"junk{i}": b"" for i in range(1001)}
    refused(rezip(good, content), f"{len(content)} files")


def test_encrypted_and_unknown_compression_members_are_refused(good, tmp_path):
    encrypted = tmp_path / "encrypted.qkv"
    encrypted.write_bytes(good.read_bytes())
    patch_central(encrypted, "session.json", "<H", 8, 0x1)  # the "encrypted" flag
    refused(encrypted, "session.json", "cannot be read")
    patch_central(good, "X.npy", "<H", 10, 99)  # compression method 99
    refused(good, "X.npy", "cannot be read")


def test_a_flipped_byte_in_a_matrix_is_caught_by_the_checksum(good):
    with zipfile.ZipFile(good) as zf:
        local = zf.getinfo("layers/0/W_V.npy").header_offset
    data = bytearray(good.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
    at = local + 30 + name_len + extra_len + 200  # inside the array data, past the .npy header
    data[at] ^= 0x40
    good.write_bytes(bytes(data))
    refused(good, "layers/0/W_V.npy", "damaged")


def test_compressed_members_written_by_other_tools_load(good):
    """A session re-zipped with compression (by an archiver, say) is still a session."""
    session = read_session(good)
    again = read_session(rezip(good, members(good), zipfile.ZIP_DEFLATED))
    assert_same_state(again.state(), session.state())


# ---- atomic saving ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_save_leaves_the_previous_file_untouched(tmp_path, monkeypatch, error):
    path = write_session(Session(), tmp_path / "work.qkv")
    before = path.read_bytes()
    real = writer._write_matrix
    written = []

    def fail_on_third(zf, member, array):
        if len(written) == 2:
            raise error
        written.append(member)
        real(zf, member, array)

    monkeypatch.setattr(writer, "_write_matrix", fail_on_third)
    with pytest.raises(type(error)):
        write_session(modified_session(), path)
    assert written == ["X.npy", "X_kv.npy"]  # it failed half-way through
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["work.qkv"]  # no temporary file left behind
    monkeypatch.undo()
    assert_same_state(read_state(path), Session().state())


def test_an_invalid_state_is_refused_before_any_file_is_touched(tmp_path):
    path = write_session(Session(), tmp_path / "work.qkv")
    before = path.read_bytes()
    x = Session().state().x.copy()
    x[1, 2] = np.nan
    nan = Session().state().replace(x=x)
    unsaveable = Session().state().replace(extra={"callback": print})
    bad_tokens = Session().state().replace(tokens=[1, 2, 3, 4, 5, 6])
    # States a Session would refuse, built by hand as a careless script might
    long = dataclasses.replace(
        Session().state(), tokens=["t"] * 4097, x=np.zeros((4097, 12)), padding=np.zeros(4097, bool)
    )
    empty_head = dataclasses.replace(
        Session().state(),
        layers=[Layer(np.ones((2, 12, 0)), np.ones((2, 12, 0)), np.ones((2, 12, 3)), np.ones((6, 12)))],
    )
    cases = (
        (nan, "X holds nan"),
        (unsaveable, "extra data is not plain JSON"),
        (bad_tokens, "tokens must be"),
        (long, "4097 tokens is more than the 4096"),
        (empty_head, "d_k must be between 1"),
    )
    for state, words in cases:
        with pytest.raises(SessionError, match=words):
            write_session(state, path)
    with pytest.raises(SessionError, match="needs a Session"):
        write_session({"tokens": []}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["work.qkv"]


def test_saving_into_a_missing_folder_raises_oserror_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_session(Session(), tmp_path / "missing" / "s.qkv")
    assert os.listdir(tmp_path) == []


def test_saved_files_get_ordinary_permissions_and_replaced_files_keep_theirs(tmp_path):
    path = write_session(Session(), tmp_path / "s.qkv")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    path.chmod(0o640)
    write_session(modified_session(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_gpt2_size_session_round_trips_bit_exact(tmp_path):
    """The size `python -m qkvgui.bench session` times (speed is printed there, never asserted here)."""
    rng = np.random.default_rng(0)
    n, d_model, h, d_head = 512, 768, 12, 64
    session = Session.from_arrays(
        rng.standard_normal((n, d_model)),
        rng.standard_normal((h, d_model, d_head)),
        rng.standard_normal((h, d_model, d_head)),
        rng.standard_normal((h, d_model, d_head)),
        rng.standard_normal((h * d_head, d_model)),
        causal=True,
        title="GPT-2 size",
    )
    path = session.save(tmp_path / "gpt2.qkv")
    assert path.stat().st_size > 24 * 1024**2
    assert_same_state(Session.load(path).state(), session.state())


# ---- fuzzing: nothing but SessionError, ever -------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("fuzz")
    valid = write_session(modified_session(), folder / "valid.qkv").read_bytes()
    return folder / "fuzzed.qkv", valid


def load_or_refuse(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        session = read_session(path)
    except SessionError as e:
        assert str(e) and path.name in str(e)
        return
    assert isinstance(session, Session)
    validate_state(session.state())
    for name in ("X", "X_kv", *LAYER_MATRICES):
        assert session.matrix(name).dtype == np.float64


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

byte_edits = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(1, 255)),
        st.tuples(st.just("truncate"), st.integers(0, 2**20)),
        st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(edits=byte_edits)
def test_fuzz_damaged_bytes(base, edits):
    path, valid = base
    data = bytearray(valid)
    for edit in edits:
        at = edit[1] % (len(data) + 1)
        if edit[0] == "flip" and at < len(data):
            data[at] ^= edit[2]
        elif edit[0] == "truncate":
            del data[at:]
        elif edit[0] == "insert":
            data[at:at] = edit[2]
    load_or_refuse(path, bytes(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
json_keys = st.sampled_from(
    [
        "format",
        "version",
        "tokens",
        "source_tokens",
        "padding",
        "source_padding",
        "cross",
        "causal",
        "scale",
        "scale.mode",
        "scale.custom",
        "head",
        "title",
        "description",
        "features",
        "extra",
        "shapes",
        "shapes.X",
        "shapes.X_kv",
        "shapes.X_residual",
        "matrices",
        "matrices.X",
        "matrices.X_kv",
        "layer",
        "layers",
        "layers.0",
        "layers.0.ablated",
        "layers.0.shapes",
        "layers.0.matrices",
        *(f"layers.0.shapes.{m}" for m in LAYER_MATRICES),
        *(f"layers.0.matrices.{m}" for m in LAYER_MATRICES),
        "unknown",
    ]
)
dims = st.lists(st.integers(-2, 9), min_size=0, max_size=4)


@FUZZ
@given(edits=st.lists(st.tuples(json_keys, st.one_of(json_values, dims, st.just("<delete>"))), min_size=1, max_size=4))
def test_fuzz_rewritten_settings(base, edits):
    path, valid = base
    path.write_bytes(valid)
    content = members(path)
    doc = json.loads(content["session.json"])
    for key, value in edits:
        *steps, target = (int(p) if p.isdigit() else p for p in key.split("."))
        holder = doc
        for step in steps:  # walk into objects and lists, making an object where there is none
            inside = (
                holder[step]
                if isinstance(holder, dict) and step in holder
                else (
                    holder[step] if isinstance(holder, list) and isinstance(step, int) and step < len(holder) else None
                )
            )
            if not isinstance(inside, (dict, list)):
                inside = {}
                if isinstance(holder, dict):
                    holder[step] = inside
            holder = inside
        if isinstance(holder, list):
            if isinstance(target, int) and target < len(holder):
                holder[target] = None if value == "<delete>" else value
        elif value == "<delete>":
            holder.pop(target, None)
        else:
            holder[target] = value
    content["session.json"] = json.dumps(doc).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    load_or_refuse(path, buf.getvalue())


DTYPES = ["<f8", ">f8", "<f4", "<f2", "<i8", "u1", "?", "<c16", "<U3", "O", "V4", "M8[s]", [("a", "<f8")]]


@st.composite
def member_contents(draw):
    kind = draw(st.sampled_from(["bytes", "array", "array", "npy-prefix", "delete"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "delete":
        return None
    shape = tuple(draw(st.lists(st.integers(0, 13), max_size=4)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.hasobject:
        array = np.full(shape, None, dtype=object)
    else:
        array = np.zeros(shape, dtype=dtype)
        if dtype.kind == "f" and array.size:
            array.flat[draw(st.integers(0, array.size - 1))] = draw(st.floats(allow_nan=True, width=16))
    if draw(st.booleans()):
        array = np.asfortranarray(array)
    data = npy(array, allow_pickle=dtype.hasobject)
    if kind == "npy-prefix":
        data = data[: draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(
    replacements=st.lists(st.tuples(st.sampled_from(MEMBERS), member_contents()), min_size=1, max_size=3),
    compress=st.booleans(),
)
def test_fuzz_replaced_members(base, replacements, compress):
    path, valid = base
    path.write_bytes(valid)
    content = members(path)
    for name, data in replacements:
        if data is None:
            content.pop(name, None)
        else:
            content[name] = data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    load_or_refuse(path, buf.getvalue())


@FUZZ
@given(dtype=st.sampled_from(["<f8", ">f4", "<i4", ">u2"]), fortran=st.booleans())
def test_fuzz_well_formed_replacements_of_the_right_shape_load(base, dtype, fortran):
    """An X of the declared shape in any real dtype loads, with its values."""
    path, valid = base
    path.write_bytes(valid)
    content = members(path)
    declared = tuple(json.loads(content["session.json"])["shapes"]["X"])
    x = (np.arange(np.prod(declared)).reshape(declared) % 5).astype(dtype)
    content["X.npy"] = npy(np.asfortranarray(x) if fortran else x)
    rezip(path, content)
    assert np.array_equal(read_session(path).matrix("X"), x.astype(float))


def test_golden_v4_loads_rotary_positions_and_shared_key_value_heads():
    from make_golden_sessions import golden_state_v4

    session = read_session(DATA / "session_v4.qkv")
    want = golden_state_v4()
    assert_same_state(session.state(), want)
    assert session.rotary and session.rope_theta == 500.0
    assert (session.n_heads, session.n_kv_heads) == (4, 2) and session.matrix("b_K").shape == (2, 2)
    results = session.compute_layers()
    assert results[0].rotary == 500.0 and results[1].k.shape[0] == 2


def test_rotary_and_shared_heads_round_trip_and_plain_sessions_stay_version_2(tmp_path):
    import json
    import zipfile

    s = Session()
    s.resize(d_k=4)  # rotation turns pairs of coordinates
    s.set_rotary(True, theta=123.0)
    s.set_n_kv_heads(1)
    path = s.save(tmp_path / "rotary.qkv")
    back = read_session(path)
    assert back.rotary and back.rope_theta == 123.0 and back.n_kv_heads == 1
    np.testing.assert_array_equal(back.compute().weights, s.compute().weights)
    assert json.loads(zipfile.ZipFile(path).read("session.json"))["version"] == 4
    plain = Session().save(tmp_path / "plain.qkv")
    assert json.loads(zipfile.ZipFile(plain).read("session.json"))["version"] == 2
