"""`qkvgui export` without a window: each requested figure of a session written in each format, and the animation.

Everything is drawn by the figure renderer from the session (qkvgui.io.figure_paint), so no window is built and
no view has to be shown first; Qt needs only a (headless) QGuiApplication, which `ensure_gui_app` provides.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from qkvgui.io.animation import write_animation
from qkvgui.io.figure_paint import Figure, FigureOptions, write_figure_file
from qkvgui.io.figure_views import figure_data

__all__ = ["ensure_gui_app", "export_figures"]


def ensure_gui_app():
    """The running Qt application, or a new headless QGuiApplication (fonts and painting need one)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    return QGuiApplication.instance() or QGuiApplication(sys.argv[:1])


def export_figures(
    session,
    out: str | Path,
    views: Sequence[str],
    formats: Sequence[str],
    options: FigureOptions | None = None,
    animate: Sequence[str] = (),
    *,
    animation_size: bool = True,
) -> list[Path]:
    """Write every view ('pipeline', 'circuits' or one view) in every format into `out`, then the animation in
    each of `animate` ('gif', 'mp4'), at the options' size if animation_size (else 1280 × 720); returns the paths
    written, in order. Raises FigureError for a figure that cannot be made (checked for all of them before
    anything is written) and OSError when writing fails."""
    ensure_gui_app()
    out = Path(out)
    options = (options or FigureOptions()).check()
    data = figure_data(session)
    figures = [(name, Figure(data, name, options)) for name in views]
    written = []
    for name, figure in figures:
        for fmt in formats:
            written.append(write_figure_file(out / f"{name}.{fmt}", figure, fmt))
    for fmt in animate:
        frames = _animation_options(options) if animation_size else None
        written.append(write_animation(session, out / f"steps.{fmt}", fmt, frames, data=data))
    return written


def _animation_options(options: FigureOptions) -> FigureOptions:
    from dataclasses import replace

    return replace(options, heads="current")
