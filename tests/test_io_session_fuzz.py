"""Seeded fuzzing of session files (issue 11): every mutated file loads as a valid session or is refused with a
SessionError, within 2 s and 1 GB, each case in a forked child with a memory limit.

The valid files come from several presets (the two-layer ``induction`` among them) and two whole-model sessions
with their own blocks (the golden files of formats 3 and 4); the mutations damage the ZIP
structure (bytes, central directory fields, members), the JSON (values, types, nesting, raw text) and the ``.npy``
headers (text, version, length). The seed is fixed, so a failure is reproduced by its case number.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qkvgui import Session
from qkvgui.core import QkvError, SessionError
from qkvgui.state import validate_state

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not Path("/proc/self/status").exists(),
    reason="forked children with memory limits need Linux",
)

PRESETS = ("induction", "translation", "previous-token", "two-heads")
#: whole-model sessions with their own blocks (norms, MLPs between the layers): the golden files of format 3, and
#: of format 4 (rotary positions and shared key/value heads too)
WHOLE_MODELS = {"whole-model": "session_v3.qkv", "whole-model-rotary-gqa": "session_v4.qkv"}
SOURCES = (*PRESETS, *WHOLE_MODELS)
CASES_PER_PRESET = 60
SEED = 11


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def zipped(content: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---- ZIP structure -----------------------------------------------------------------------------------------------
def _central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory's file headers."""
    out, at = [], data.find(b"PK\x01\x02")
    while at >= 0:
        out.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    return out


def mutate_zip(rng: np.random.Generator, data: bytes) -> bytes:
    kind = rng.integers(9)
    b = bytearray(data)
    if kind == 0:  # flipped bytes anywhere
        for _ in range(rng.integers(1, 9)):
            b[rng.integers(len(b))] ^= int(rng.integers(1, 256))
    elif kind == 1:  # truncated
        del b[rng.integers(len(b)) :]
    elif kind == 2:  # a central directory field set to something else
        entries = _central_entries(data)
        at = entries[rng.integers(len(entries))]
        field, fmt = [(10, "<H"), (8, "<H"), (20, "<I"), (24, "<I"), (42, "<I"), (28, "<H"), (30, "<H")][
            rng.integers(7)
        ]
        value = int(rng.choice([0, 1, 8, 9, 12, 14, 99, 0xFFFF, 0xFFFFFFFF, 2**31, 2**24, int(rng.integers(2**16))]))
        size = struct.calcsize(fmt)
        b[at + field : at + field + size] = struct.pack(fmt, value & (2 ** (8 * size) - 1))
    elif kind == 3:  # the end-of-central-directory record's counts and offsets
        at = data.rfind(b"PK\x05\x06")
        field = int(rng.choice([8, 10, 12, 16, 20]))
        size = 2 if field in (8, 10, 20) else 4
        b[at + field : at + field + size] = int(rng.integers(2 ** (8 * size))).to_bytes(size, "little")
    elif kind == 4:  # a member removed, duplicated, renamed or added
        content = members(data)
        names = list(content)
        name = names[rng.integers(len(names))]
        action = rng.integers(4)
        if action == 0:
            del content[name]
        elif action == 1:
            content["layers/0/W_Q.npy" if name != "layers/0/W_Q.npy" else "X.npy"] = content[name]
        elif action == 2:
            content[name[::-1]] = content.pop(name)
        else:
            content["../../evil.npy"] = content[name]
        return zipped(content)
    elif kind == 5:  # every member deflated (as another tool might write it), then damaged inside
        z = bytearray(zipped(members(data), zipfile.ZIP_DEFLATED))
        for _ in range(rng.integers(0, 3)):
            z[rng.integers(len(z))] ^= int(rng.integers(1, 256))
        return bytes(z)
    elif kind == 6:  # a local header's sizes or method changed
        heads = [i for i in range(len(data)) if data.startswith(b"PK\x03\x04", i)]
        at = heads[rng.integers(len(heads))]
        field = int(rng.choice([8, 18, 22, 26, 28]))
        size = 2 if field in (8, 26, 28) else 4
        b[at + field : at + field + size] = int(rng.integers(2 ** (8 * size))).to_bytes(size, "little")
    elif kind == 7:  # bytes inserted
        at = rng.integers(len(b))
        b[at:at] = rng.bytes(int(rng.integers(1, 64)))
    else:  # a ZIP inside the ZIP, as session.json
        content = members(data)
        content["session.json"] = data
        return zipped(content)
    return bytes(b)


# ---- JSON --------------------------------------------------------------------------------------------------------
def _nested(depth: int, kind: str):
    value: object = 0
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def _hostile_value(rng: np.random.Generator):
    choices = [
        None,
        True,
        False,
        0,
        -1,
        1,
        2**31,
        10**30,
        -(10**30),
        1e308,
        1e-320,
        float("inf"),
        float("nan"),
        0.5,
        "",
        "x" * 100_000,
        "\ud800",
        "\x00",
        [],
        {},
        [1, 2, 3],
        [[4096, 8192]],
        [-1, 3],
        [0, 0],
        [2**40, 2**40],
        [1.5, 2],
        ["a"],
        {"mode": "sqrt", "custom": 1e309},
        _nested(int(rng.choice([50, 500, 5000])), "list"),
        _nested(int(rng.choice([50, 500, 5000])), "dict"),
    ]
    return choices[rng.integers(len(choices))]


def _paths(value, prefix=()) -> list[tuple]:
    out = [prefix]
    if len(prefix) > 5:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):
            out += _paths(v, (*prefix, i))
    return out


def mutate_json(rng: np.random.Generator, data: bytes) -> bytes:
    content = members(data)
    kind = rng.integers(4)
    if kind == 3:  # the raw text: damaged bytes, unbalanced brackets, invalid UTF-8, a BOM, duplicate keys
        text = bytearray(content["session.json"])
        damage = rng.integers(5)
        if damage == 0:
            del text[rng.integers(len(text)) :]
        elif damage == 1:
            text[rng.integers(len(text))] = int(rng.choice([0x7B, 0x5B, 0x22, 0xFF, 0xC3, 0x00]))
        elif damage == 2:
            text = bytearray(b"\xef\xbb\xbf") + text
        elif damage == 3:
            text = bytearray(b'{"format": "qkvgui-session", "version": 2, "version": 999, ') + text[1:]
        else:
            text = bytearray(b"[" * 100_000 + b"]" * 100_000)
        content["session.json"] = bytes(text)
        return zipped(content)
    doc = json.loads(content["session.json"])
    if rng.integers(4) == 0:  # a top-level field (extra, title, tokens...) replaced whole
        keys = list(doc)
        key = "extra" if rng.integers(2) else keys[rng.integers(len(keys))]
        deep = {"deep": _nested(int(rng.choice([100, 300, 500, 900])), "list" if rng.integers(2) else "dict")}
        doc[key] = deep if key == "extra" and rng.integers(2) else _hostile_value(rng)
    for _ in range(rng.integers(1, 4)):
        paths = [p for p in _paths(doc) if p]
        path = paths[rng.integers(len(paths))]
        holder = doc
        for step in path[:-1]:
            holder = holder[step]
        if kind == 0 or not isinstance(holder, dict):
            holder[path[-1]] = _hostile_value(rng)
        elif kind == 1:
            del holder[path[-1]]
        else:  # a shape made larger, smaller or swapped
            value = holder[path[-1]]
            if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
                holder[path[-1]] = [int(v * rng.choice([0, 2, 1000, 10**6])) or -1 for v in value]
            else:
                holder[path[-1]] = _hostile_value(rng)
    try:
        text = json.dumps(doc).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        text = b'{"extra": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    content["session.json"] = text
    return zipped(content)


# ---- .npy headers ------------------------------------------------------------------------------------------------
def _npy(header: bytes, data: bytes, version: bytes = b"\x01\x00") -> bytes:
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    length = len(header).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    return b"\x93NUMPY" + version + length + header + data


def mutate_npy(rng: np.random.Generator, data: bytes) -> bytes:
    content = members(data)
    names = [n for n in content if n.endswith(".npy")]
    name = names[rng.integers(len(names))]
    old = content[name]
    shape = np.lib.format.read_array_header_1_0(io.BytesIO(old[8:]))[0]
    body = old[old.index(b"\n") + 1 :]
    shape_text = str(tuple(shape)).encode()
    headers = [
        b"{'descr': '<f8', 'fortran_order': False, 'shape': " + shape_text[:-1],  # unbalanced: tokenize.TokenError
        b"{'descr': '<f8', 'fortran_order': False, 'shape': " + shape_text,
        b"{'descr': '<f8', 'fortran_order': False, 'shape': " + shape_text + b"}}",
        b"{'descr': 'O', 'fortran_order': False, 'shape': " + shape_text + b"}",
        b"{'descr': '<c16', 'fortran_order': False, 'shape': " + shape_text + b"}",
        b"{'descr': '|V8', 'fortran_order': False, 'shape': " + shape_text + b"}",
        b"{'descr': '<f16', 'fortran_order': False, 'shape': " + shape_text + b"}",
        b"{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': " + shape_text + b"}",
        b"{'descr': '|u1', 'fortran_order': False, 'shape': " + shape_text + b"}",
        b"{'descr': '<f8', 'fortran_order': 'yes', 'shape': " + shape_text + b"}",
        b"{'descr': '<f8', 'fortran_order': True, 'shape': (" + str(2**62).encode() + b", 2)}",
        b"{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 4)}",
        b"{'descr': '<f8', 'fortran_order': False, 'shape': (1.5, 2)}",
        b"{'descr': '<f8', 'fortran_order': False, 'shape': " + b"(" * 300 + b")" * 300 + b"}",
        b"{'descr': '<f8', 'fortran_order': False}",
        b"{'descr': '<f8', 'fortran_order': False, 'shape': " + shape_text + b", 'x': __import__('os')}",
        b"\xff\xfe" + rng.bytes(40),
        b"",
    ]
    header = headers[rng.integers(len(headers))]
    kind = rng.integers(4)
    if kind == 0:
        content[name] = _npy(header, body)
    elif kind == 1:  # another version, or a length field that lies
        content[name] = _npy(header, body, version=bytes([int(rng.integers(0, 5)), int(rng.integers(0, 2))]))
    elif kind == 2:
        content[name] = old[:8] + int(rng.choice([0, 1, 0xFFFF, 70000 & 0xFFFF])).to_bytes(2, "little") + old[10:]
    else:  # the right header over the wrong amount of data
        content[name] = (
            old[: len(old) - len(body)] + body[: rng.integers(len(body) + 1)] + rng.bytes(int(rng.integers(0, 16)))
        )
    return zipped(content)


MUTATIONS = (mutate_zip, mutate_json, mutate_npy)


def cases() -> list[tuple[str, int]]:
    return [(source, i) for source in SOURCES for i in range(CASES_PER_PRESET)]


@pytest.fixture(scope="module")
def valid_files() -> dict[str, bytes]:
    out = {}
    for preset in PRESETS:
        buf = io.BytesIO()
        s = Session.from_preset(preset)
        s.set_extra("note", {"kept": [1, 2, 3]})
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"qkvgui-fuzz-{os.getpid()}-{preset}.qkv"
        try:
            s.save(path)
            buf.write(path.read_bytes())
        finally:
            path.unlink(missing_ok=True)
        out[preset] = buf.getvalue()
    for name, golden in WHOLE_MODELS.items():
        out[name] = (Path(__file__).parent / "data" / golden).read_bytes()
        with zipfile.ZipFile(io.BytesIO(out[name])) as zf:
            assert any(n.startswith("model/") for n in zf.namelist())  # the blocks are there to be fuzzed
    return out


def load_and_check(path: Path) -> None:
    """What the child runs: a load that must give a valid session (checked again here) or raise SessionError."""
    try:
        session = Session.load(path)
    except SessionError:
        raise
    except QkvError as e:  # a clear message, but of the wrong family: the file boundary must say "session"
        raise AssertionError(f"not a SessionError: {type(e).__name__}: {e}") from None
    validate_state(session.state())
    for name in ("X", "X_kv", "W_Q", "W_K", "W_V", "W_O"):
        assert session.matrix(name).dtype == np.float64


def test_fuzzed_sessions_load_or_are_refused_with_a_session_error(valid_files, tmp_path):
    from qkvgui.bench_hostile import forked

    rng = np.random.default_rng(SEED)
    failures, kinds = [], {"ok": 0, "refused": 0}
    refused_by = dict.fromkeys(SOURCES, 0)
    for preset, i in cases():
        mutate = MUTATIONS[i % len(MUTATIONS)]
        data = mutate(rng, valid_files[preset])
        path = tmp_path / f"{preset}-{i}.qkv"
        path.write_bytes(data)
        # 2 CPU-seconds each (so other work on the machine cannot fail a case), and a wall-clock kill for a hang
        outcome = forked(lambda path=path: load_and_check(path), timeout=2.0, memory=1 << 30, wall=30.0)
        if outcome.kind in kinds:
            kinds[outcome.kind] += 1
            if outcome.kind == "refused":
                refused_by[preset] += 1
                assert "Traceback" not in outcome.message and outcome.message.strip()
            path.unlink()
        else:
            first = outcome.message.splitlines()[0] if outcome.message else ""
            failures.append(
                f"{preset} case {i} ({mutate.__name__}): {outcome.kind} after {outcome.seconds:.2f} s "
                f"({outcome.cpu_seconds:.2f} CPU-s), "
                f"{outcome.peak_bytes >> 20} MiB: {first[:300]}"
            )
            (tmp_path / f"{preset}-{i}.txt").write_text(outcome.message)  # the whole traceback, beside the file
    assert not failures, f"{len(failures)} of {len(cases())} cases (files in {tmp_path}):\n" + "\n".join(failures)
    assert kinds["refused"] > len(cases()) // 2  # the mutations do reach the reader's checks
    assert kinds["ok"] > 0  # and some harmless ones load
    assert min(refused_by.values()) > CASES_PER_PRESET // 3, refused_by  # every source, whole models included


def test_the_harness_catches_what_it_must(tmp_path):
    """The fork harness itself: a crash, a hang and a runaway allocation are reported, not survived by luck."""
    import time

    from qkvgui.bench_hostile import forked

    assert forked(lambda: 1 / 0).kind == "crash"
    assert forked(lambda: time.sleep(10), timeout=0.2).kind == "timeout"  # blocked: the wall-clock kill
    assert forked(lambda: time.sleep(0.5), timeout=0.2, wall=5).kind == "ok"  # waiting costs no CPU budget
    spin = forked(lambda: sum(range(10**9)), timeout=0.2, wall=1.5)  # a runaway loop: killed, or over its budget
    assert spin.kind == "timeout"
    assert forked(lambda: bytearray(3 << 30), memory=1 << 30).kind == "memory"
    assert forked(lambda: Session.load(tmp_path / "missing.qkv")).kind == "refused"
    ok = forked(lambda: Session.from_preset("induction"))
    assert ok.kind == "ok" and ok.seconds < 2
