"""GUI benchmark: edit-to-pixels latency and the longest GUI-thread stall while a big layer recomputes.

Run with `python -m qkvgui.bench gui` (offscreen unless a display is set).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np


def _layer_state(base, n: int, d_model: int, h: int, d: int, seed: int = 0, n_layers: int = 1):
    """A state of one seeded random layer of the given size (self-attention, n tokens), settings from base."""
    from qkvgui.state import Layer, SessionState

    rng = np.random.default_rng(seed)
    layers = [
        Layer(
            w_q=rng.standard_normal((h, d_model, d)) / np.sqrt(d_model),
            w_k=rng.standard_normal((h, d_model, d)) / np.sqrt(d_model),
            w_v=rng.standard_normal((h, d_model, d)) / np.sqrt(d_model),
            w_o=rng.standard_normal((h * d, d_model)) / np.sqrt(h * d),
        )
        for _ in range(n_layers)
    ]
    return SessionState(
        **{
            **base.__dict__,
            "tokens": [f"t{i}" for i in range(n)],
            "padding": np.zeros(n, bool),
            "x": rng.standard_normal((n, d_model)),
            "layers": layers,
            "layer": 0,
            "x_residual": None,
            "x_kv": rng.standard_normal((4, d_model)),
            "source_tokens": ["a", "b", "c", "d"],
            "source_padding": np.zeros(4, bool),
            "cross": False,
            "head": 0,
            "features": [],
        }
    )


def _edit_latency(app, window, repeats: int) -> list[float]:
    """Seconds from a W_Q cell's setData to the weights view repainted with the new values."""
    view = window.views["weights"]
    model = window.editors["W_Q"].model
    times = []
    for k in range(repeats + 1):
        old = window.result
        index = model.index(k % model.rowCount(), 0)
        t0 = time.perf_counter()
        model.setData(index, f"{0.1 * (k % 7) + 0.05:.3f}")
        deadline = t0 + 30
        while window.result is old and time.perf_counter() < deadline:
            app.processEvents()
        view.graphics_widget().viewport().repaint()  # synchronous paint of the new image
        elapsed = time.perf_counter() - t0
        if k:  # the first edit warms caches
            times.append(elapsed)
    return times


def _longest_stall(app, window, n: int) -> tuple[float, float]:
    """(longest gap between GUI-thread timer ticks, total seconds) while a layer of n tokens recomputes."""
    from PySide6.QtCore import QTimer

    ticks = []
    timer = QTimer(interval=1)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    old = window.result
    window.editors["W_Q"].model.setData(window.editors["W_Q"].model.index(0, 0), "0.321")
    ticks.append(time.perf_counter())
    while window.result is old and time.perf_counter() - t0 < 60:
        app.processEvents()
    while window.pipeline.drawing():  # the big views are drawn one per event-loop turn
        app.processEvents()
    timer.stop()
    gaps = np.diff(ticks)
    return float(gaps.max()) if len(gaps) else 0.0, time.perf_counter() - t0


def run_gui_bench(repeats: int = 15) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QKVGUI_NO_SETTINGS", "1")
    from PySide6.QtWidgets import QApplication

    from qkvgui.ui.app import freeze_startup_objects, install_safe_gc
    from qkvgui.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    install_safe_gc(app)  # as the app does
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    app.processEvents()
    freeze_startup_objects()  # as the app does after start-up

    print(f"gui: edit-to-pixels latency (median of {repeats} W_Q edits, weights view repainted)")
    small = _edit_latency(app, window, repeats)
    print(f"  default session (6 tokens, d_model 12, 2 heads): {statistics.median(small) * 1e3:7.2f} ms (target <= 16)")
    window.session.set_state(_layer_state(window.session.state(), 128, 768, 12, 64))
    while window.result is None or window.result.n_q != 128:
        app.processEvents()
    big = _edit_latency(app, window, repeats)
    print(
        f"  GPT-2-size layer, n = 128 (d_model 768, 12 heads of 64): {statistics.median(big) * 1e3:7.2f} ms "
        f"(target <= 100)"
    )
    window.session.set_state(_layer_state(window.session.state(), 1024, 768, 12, 64))
    while window.result is None or window.result.n_q != 1024 or window.pipeline.drawing():
        app.processEvents()
    stalls = [_longest_stall(app, window, 1024) for _ in range(3)]
    worst = max(s for s, _ in stalls)
    print(
        f"  n = 1024 recompute: longest GUI-thread stall {worst * 1e3:7.2f} ms over 3 edits "
        f"(each edit to drawn result {statistics.median(t for _, t in stalls):.2f} s) (target <= 50)"
    )
    # two layers of 12 heads, d_model 384 (MiniLM's size): 144 composition scores and two SVDs per edit
    window.session.set_state(_layer_state(window.session.state(), 27, 384, 12, 32, n_layers=2))
    window.right_tabs.setCurrentWidget(window.circuits)
    while len(window.results) != 2 or window.scheduler.side_busy() or window.pipeline.drawing():
        app.processEvents()
    circuits = [_circuits_stall(app, window) for _ in range(3)]
    worst = max(s for s, _ in circuits)
    print(
        f"  circuits tab, 2 layers x 12 heads, d_model 384: longest GUI-thread stall {worst * 1e3:7.2f} ms over "
        f"3 edits (each edit to drawn circuits {statistics.median(t for _, t in circuits):.2f} s) (target <= 50)"
    )
    window.close()
    return 0


def model_tab_draw_seconds(results, tokens: list[str], repeats: int = 5) -> tuple[float, int, float]:
    """(median seconds for the Model tab to draw a finished overview on the GUI thread, offscreen: every thumbnail
    and the score table painted; how many thumbnails; median seconds of the overview's own computation, which the
    window runs on its worker: pooled thumbnails and every head's scores)."""
    import statistics
    import time

    from PySide6.QtWidgets import QApplication

    from qkvgui.ui.panels.model import ModelPanel, model_overview

    app = QApplication.instance() or QApplication([])
    panel = ModelPanel()
    panel.resize(1280, 760)
    panel.show()
    app.processEvents()
    times, worker = [], []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        overview = model_overview(results, tokens, False, panel.grid._lut)
        t1 = time.perf_counter()
        panel.show_overview(overview)
        panel.grid.repaint()
        panel.table.viewport().repaint()
        times.append(time.perf_counter() - t1)
        worker.append(t1 - t0)
    panel.close()
    count = len(results) * results[0].n_heads
    panel.deleteLater()
    app.processEvents()
    return statistics.median(times[1:]), count, statistics.median(worker[1:])


def _circuits_stall(app, window) -> tuple[float, float]:
    """(longest gap between GUI-thread timer ticks, total seconds) from a W_Q edit to the circuits tab redrawn."""
    from PySide6.QtCore import QTimer

    ticks = []
    timer = QTimer(interval=1)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    old = window.views["qk_circuit"].data()
    model = window.editors["W_Q"].model
    value = float(model.matrix()[0, 0]) + 0.125  # a new value every time
    model.setData(model.index(0, 0), f"{value:.3f}")
    ticks.append(time.perf_counter())
    while (window.views["qk_circuit"].data() is old or window.scheduler.side_busy()) and time.perf_counter() - t0 < 60:
        app.processEvents()
    timer.stop()
    gaps = np.diff(ticks)
    return float(gaps.max()) if len(gaps) else 0.0, time.perf_counter() - t0
