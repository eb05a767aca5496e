"""Hostile input, measured: the files issue 11 reported, each loaded in a forked child with a memory limit.

``python -m qkvgui.bench hostile`` prints, for each reported hostile file, how long the load took, how much memory
it added, and how it ended (refused with a message, or loaded); then the worst time and peak. ``forked(fn)`` is
the harness (also used by the fuzz test): it runs ``fn`` in a child process under an address-space limit and a
time budget, so that a hang or a runaway allocation is measured and stopped instead of taking the machine down.
"""

from __future__ import annotations

import io
import json
import os
import signal
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Outcome", "forked", "hostile_cases", "bench_hostile"]


@dataclass(frozen=True)
class Outcome:
    """How one forked call ended: "ok", "refused" (a QkvError), "crash" (any other exception), "memory"
    (MemoryError: the limit was hit), "timeout" or "killed"; with its message, seconds and added memory."""

    kind: str
    message: str
    seconds: float  # wall-clock seconds of the call
    peak_bytes: int  # the child's peak resident memory above what it started with
    cpu_seconds: float = 0.0  # CPU seconds of the call, every thread of the child counted


def _vm_bytes(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def forked(
    fn: Callable[[], object], *, timeout: float = 2.0, memory: int = 1 << 30, wall: float | None = None
) -> Outcome:
    """Run ``fn()`` in a forked child allowed ``memory`` more bytes of address space and ``timeout`` seconds. POSIX
    only.

    The budget is counted in the child's CPU seconds, so that a machine busy with other work does not turn a
    fast load into a "timeout"; a child still running after ``wall`` seconds of wall-clock time (default
    ``timeout`` + 1) is killed and reported as a timeout: that catches a call blocked without using the CPU (a read
    from a FIFO) as well as a runaway loop. Give ``wall`` some room on a loaded machine."""
    import resource

    from qkvgui.core.errors import QkvError

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns, never runs the parent's cleanup
        code = 0
        try:
            os.close(read_end)
            start_rss = _vm_bytes("VmRSS")
            limit = _vm_bytes("VmSize") + memory
            if limit > memory:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                fn()
                kind, message = "ok", ""
            except QkvError as e:
                kind, message = "refused", str(e)
            except MemoryError:
                kind, message = "memory", traceback.format_exc(limit=-8)
            except BaseException as e:  # noqa: BLE001 - this is what the harness is for
                kind, message = "crash", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-8)}"
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            peak = max(0, _vm_bytes("VmHWM") - start_rss)
            report = json.dumps(
                {"kind": kind, "message": message[:4000], "seconds": seconds, "cpu": cpu, "peak": peak},
                ensure_ascii=True,
            ).encode()
            os.write(write_end, report[:60000])
        except BaseException:  # noqa: BLE001
            code = 70
        finally:
            os._exit(code)
    os.close(write_end)
    wall = timeout + 1.0 if wall is None else wall
    deadline = time.monotonic() + wall
    status = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            return Outcome("timeout", f"still running after {wall:.1f} s: killed", wall, 0)
        time.sleep(0.002)
    with os.fdopen(read_end, "rb") as f:
        raw = f.read()
    if not raw:
        return Outcome("killed", f"the child died (wait status {status})", 0.0, 0)
    r = json.loads(raw)
    kind = "timeout" if r["kind"] in ("ok", "refused") and r["cpu"] > timeout else r["kind"]
    return Outcome(kind, r["message"], r["seconds"], r["peak"], r["cpu"])


# ---- the reported hostile files ----------------------------------------------------------------------------------
def _widened_bomb(path: Path) -> Path:
    """Issue 11, item 5: a small session whose deflated |u1 members, each under the per-member limit, widen to
    1.7 GiB of float64 (a 4096-token X and X_kv and six 256-head layers of |u1 zeros)."""
    from qkvgui import Session

    base = Session.from_preset("previous-token")
    base.save(path)
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("session.json"))
    n, d_model, heads, d_k = 4096, 3968, 1, 3968  # each W is 15.7 M cells: just under 16 MiB as |u1
    doc["tokens"] = doc["source_tokens"] = [f"t{i}" for i in range(n)]
    doc["padding"] = doc["source_padding"] = [False] * n
    doc["features"] = []
    doc["shapes"] = {"X": [n, d_model], "X_kv": [n, d_model]}
    zeros: dict[tuple[int, ...], bytes] = {}

    def npy(shape: tuple[int, ...]) -> bytes:
        if shape not in zeros:
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
            zeros[shape] = buf.getvalue() + bytes(int(np.prod(shape)))
        return zeros[shape]

    layer_shapes = {
        "W_Q": [heads, d_model, d_k],
        "W_K": [heads, d_model, d_k],
        "W_V": [heads, d_model, d_k],
        "W_O": [heads * d_k, d_model],
        "b_Q": [heads, d_k],
        "b_K": [heads, d_k],
        "b_V": [heads, d_k],
        "b_O": [d_model],
    }
    doc["layers"] = [
        {
            "ablated": [False] * heads,
            "shapes": layer_shapes,
            "matrices": {m: f"layers/{i}/{m}.npy" for m in layer_shapes},
        }
        for i in range(3)
    ]
    doc["layer"] = doc["head"] = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("session.json", json.dumps(doc))
        for name in ("X", "X_kv"):
            zf.writestr(f"{name}.npy", npy((n, d_model)))
        for i in range(3):
            for m, shape in layer_shapes.items():
                zf.writestr(f"layers/{i}/{m}.npy", npy(tuple(shape)))
    return path


def _rewrite_json(path: Path, change: Callable[[dict], None], preset: str = "induction") -> Path:
    from qkvgui import Session

    Session.from_preset(preset).save(path)
    with zipfile.ZipFile(path) as zf:
        content = {i.filename: zf.read(i) for i in zf.infolist()}
    doc = json.loads(content["session.json"])
    change(doc)
    content["session.json"] = json.dumps(doc).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return path


def _deep_extra(path: Path) -> Path:
    """Issue 11, item 1: an `extra` that is a list nested 500 deep (copy.deepcopy raised RecursionError)."""

    def change(doc: dict) -> None:
        deep: list = []
        for _ in range(500):
            deep = [deep]
        doc["extra"] = {"deep": deep}

    return _rewrite_json(path, change)


def _huge_title(path: Path, size: int = 15 * 1024**2) -> Path:
    """Issue 11, item 6: a one-word 15 MiB description (minutes to lay out)."""
    return _rewrite_json(path, lambda doc: doc.update(title="W" * 1000, description="w" * size))


def _bad_npy_header(path: Path) -> Path:
    """Issue 11, item 2: a .npy member whose header has an unbalanced bracket (tokenize.TokenError)."""
    from qkvgui import Session

    Session.from_preset("induction").save(path)
    with zipfile.ZipFile(path) as zf:
        content = {i.filename: zf.read(i) for i in zf.infolist()}
    text = b"{'descr': '<f8', 'fortran_order': False, 'shape': (6, 12"
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    content["X.npy"] = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(6 * 12 * 8)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return path


def hostile_cases(folder: Path) -> dict[str, Callable[[], object]]:
    """name -> a call that loads one reported hostile input (its files are written into folder now)."""
    from qkvgui import Session
    from qkvgui.io.checkpoint import checkpoint_info
    from qkvgui.io.matrix_file import read_matrix
    from qkvgui.ui import matrix_editor  # noqa: F401 - imported before the timed calls fork

    folder = Path(folder)
    bomb = _widened_bomb(folder / "widened.qkv")
    deep = _deep_extra(folder / "deep-extra.qkv")
    title = _huge_title(folder / "huge-title.qkv")
    header = _bad_npy_header(folder / "bad-header.qkv")
    fifo = folder / "pipe.csv"
    os.mkfifo(fifo)
    zero = folder / "zero.csv"
    zero.symlink_to("/dev/zero")
    npy = folder / "bad.npy"
    npy.write_bytes(_bad_npy_header_bytes())
    model = folder / "model"
    model.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (model / name).write_bytes(b"{}")
    deep_model = folder / "deep-model"
    deep_model.mkdir()
    (deep_model / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for name in ("model.safetensors", "tokenizer.json"):
        (deep_model / name).write_bytes(b"{}")
    (model / "config.json").write_text(
        '{"model_type": "gpt2", "n_head": 4, "n_embd": 16, "n_layer": Infinity, "n_positions": 1e10}'
    )
    paste = ("\t".join(["1.5"] * 10_000) + "\n") * 10_000  # 10,000 × 10,000, 400 MB of text, made before forking
    return {
        "1.7 GiB widened session (248 KB)": lambda: Session.load(bomb),
        "extra nested 500 deep": lambda: Session.load(deep),
        "15 MiB one-word description": lambda: Session.load(title),
        "unbalanced .npy header in a session": lambda: Session.load(header),
        "unbalanced .npy header in a matrix": lambda: read_matrix(npy),
        "a .csv that is a FIFO": lambda: read_matrix(fifo),
        "a .csv linked to /dev/zero": lambda: read_matrix(zero),
        "parse '1' * 32766 + 'x'": _parse_long_number,
        "paste 10,000 × 10,000 into 12 × 3": lambda: _paste(paste, (12, 3)),
        "config.json: n_layer Infinity": lambda: checkpoint_info(model),
        "config.json nested 100,000 deep": lambda: checkpoint_info(deep_model),
    }


def _paste(text: str, fits: tuple[int, int]) -> None:
    from qkvgui.ui.matrix_editor import parse_block

    try:
        parse_block(text, fits=fits)
    except ValueError:
        return


def _bad_npy_header_bytes() -> bytes:
    text = b"{'descr': '<f8', 'fortran_order': False, 'shape': (6, 12"
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(6 * 12 * 8)


def _parse_long_number() -> None:
    from qkvgui.ui.matrix_editor import parse_number  # imported by hostile_cases already: not timed here

    try:
        parse_number("1" * 32766 + "x")
    except ValueError:
        return


def bench_hostile(timeout: float = 30.0, memory: int = 4 << 30) -> int:
    """Print each reported hostile input's load time, added memory and outcome, then the worst of each."""
    if not hasattr(os, "fork"):
        print("hostile: needs os.fork (POSIX)")
        return 1
    print(f"hostile: each reported input loaded in a forked child (limit {memory >> 30} GiB, {timeout:.0f} s)")
    worst_time, worst_peak, bad = 0.0, 0, 0
    with tempfile.TemporaryDirectory(prefix="qkvgui-hostile-") as tmp:
        for name, call in hostile_cases(Path(tmp)).items():
            r = forked(call, timeout=timeout, memory=memory)
            worst_time, worst_peak = max(worst_time, r.seconds), max(worst_peak, r.peak_bytes)
            bad += r.kind not in ("refused", "ok")
            first = r.message.splitlines()[0] if r.message else ""
            print(f"  {name:38} {r.seconds * 1e3:8.1f} ms {r.peak_bytes / 2**20:8.1f} MiB  {r.kind}: {first[:90]}")
    print(
        f"bench hostile: worst load {worst_time * 1e3:.1f} ms, peak memory {worst_peak / 2**20:.1f} MiB, "
        f"{bad} not refused cleanly (targets: <= 2000 ms, <= 1024 MiB, 0)"
    )
    return 0 if bad == 0 else 1
