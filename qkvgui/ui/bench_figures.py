"""`python -m qkvgui.bench figures`: how long a slide-sized figure of a real layer and the default animation take."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def bench_session(n: int = 32, h: int = 12, d_model: int = 768, d_head: int = 64):
    """A GPT-2-sized layer of h heads reading n tokens, with seeded random weights."""
    from qkvgui.session import Session

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d_model))
    w_q, w_k, w_v = (rng.standard_normal((h, d_model, d_head)) / np.sqrt(d_model) for _ in range(3))
    w_o = rng.standard_normal((h * d_head, d_model)) / np.sqrt(h * d_head)
    tokens = (("the quick brown fox jumps over the lazy dog " * 4).split())[:n]
    return Session.from_arrays(x, w_q, w_k, w_v, w_o, tokens=tokens, causal=True)


def run_figures_bench(repeats: int = 3) -> int:
    from qkvgui.io.animation import write_animation
    from qkvgui.io.figure_files import ensure_gui_app
    from qkvgui.io.figure_paint import Figure, FigureOptions, write_figure_file
    from qkvgui.io.figure_views import figure_data
    from qkvgui.session import Session

    _app = ensure_gui_app()  # headless: `bench figures` needs no display
    session = bench_session()
    print(
        "figures: 12 heads × 32 tokens (d_model 768, d_head 64), whole pipeline, 1600×1000 PNG "
        f"(best of {repeats}; target <= 1 s)"
    )
    # The machine may be shared: CPU time (this process) says what the figure costs, wall time what a user waits.
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for heads in ("current", "all"):
            times, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                data = figure_data(session)
                options = FigureOptions(1600, 1000, heads=heads)
                write_figure_file(out / "pipeline.png", Figure(data, "pipeline", options))
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            label = "current head" if heads == "current" else "all 12 heads"
            print(
                f"  {label:14} {min(times) * 1e3:6.0f} ms wall, {min(cpu) * 1e3:5.0f} ms CPU (session to file, "
                "computation included)"
            )
        for fmt in ("gif", "mp4"):
            t0, c0 = time.perf_counter(), time.process_time()
            path = write_animation(Session(), out / f"steps.{fmt}")
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print(
                f"animation: default session as {fmt.upper()}, 1280×720, 10 steps in 20 frames: {dt:5.2f} s wall, "
                f"{dc:5.2f} s CPU (+ ffmpeg's own for MP4), {path.stat().st_size / 1024:.0f} KiB"
                + ("  (target <= 10 s)" if fmt == "gif" else "")
            )
    return 0
