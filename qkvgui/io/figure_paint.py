"""The figure renderer: lays views of a session out for a chosen page size and paints them with a QPainter.

Nothing is copied from the screen: the figure is drawn from a `FigureData` snapshot (qkvgui.io.figure_views), so
any view (circuit views included) exports whether or not it was ever shown, with no hover or selection marks, in
the theme asked for, whatever the window's. One `Figure` paints the same way on a QImage (PNG, animation frames,
the dialog's preview), a QSvgGenerator and a QPdfWriter (text stays text, subscripts are real).

Units: the painter works in *canvas pixels* at 96 per inch (CSS pixels). A size of 16 × 10 cm is a 605 × 378 canvas;
a PNG of it at 300 dpi has 1890 × 1181 pixels; a font of 10 pt is 13.3 canvas pixels wherever it is drawn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QMarginsF, QPointF, QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QImage,
    QPageLayout,
    QPageSize,
    QPainter,
    QPdfWriter,
    QPen,
)
from PySide6.QtSvg import QSvgGenerator

from qkvgui.core.format import MINUS, format_number
from qkvgui.io.atomic import atomic_write
from qkvgui.io.figure_views import GROUPS, VIEWS, FigureData, FigureError, Matrix, ViewFigure, rich_runs
from qkvgui.io.figures import FORMATS, MAX_IMAGE_PIXELS, _portable_svg, _to_bytes, figure_format

__all__ = ["THEMES", "Figure", "FigureOptions", "figure_image", "figure_bytes", "parse_size", "write_figure_file"]

CANVAS_DPI = 96.0
UNITS = {"px": None, "cm": 2.54, "in": 1.0}
THEMES = ("light", "dark", "transparent")
#: numbers are written in cells only up to this many rows and columns per matrix
MAX_NUMBER_CELLS = 32
#: labels longer than this many characters are elided with "…"
MAX_LABEL_CHARS = 12
MASKED = QColor(118, 118, 118)
PNG_QUALITY = 80


@dataclass(frozen=True)
class Theme:
    background: QColor | None  # None: transparent
    ink: QColor
    faint: QColor
    input: QColor = field(default_factory=lambda: QColor(31, 119, 180))  # the inputs of the current step
    current: QColor = field(default_factory=lambda: QColor(230, 126, 34))  # the current step


def theme(name: str) -> Theme:
    if name == "dark":
        return Theme(QColor(30, 31, 34), QColor(232, 232, 232), QColor(150, 150, 150), QColor(90, 170, 240))
    if name == "transparent":
        return Theme(None, QColor(26, 26, 26), QColor(110, 110, 110))
    if name == "light":
        return Theme(QColor(255, 255, 255), QColor(26, 26, 26), QColor(110, 110, 110))
    raise FigureError(f"Unknown theme {name!r}: choose light, dark or transparent.")


_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*[x×*]\s*([0-9]*\.?[0-9]+)\s*(px|cm|in|mm)?\s*", re.IGNORECASE)


def parse_size(text: str) -> tuple[float, float, str]:
    """'1600x1000', '16x10cm', '6.5x4in', '160x100mm' → (width, height, unit) with unit px, cm or in."""
    m = _SIZE.fullmatch(text or "")
    if not m:
        raise FigureError(
            f"Cannot read the size {text!r}: write WIDTHxHEIGHT with px, cm or in, e.g. 1600x1000, 16x10cm or 6.5x4in."
        )
    w, h, unit = float(m.group(1)), float(m.group(2)), (m.group(3) or "px").lower()
    if unit == "mm":
        w, h, unit = w / 10, h / 10, "cm"
    return w, h, unit


@dataclass(frozen=True)
class FigureOptions:
    """How a figure is laid out: its size (in px, cm or in) and resolution, font size, what is drawn, the theme.

    heads: "current", "all", or a 0-based head. dpi: the resolution of a PNG (and what a px size means in print).
    """

    width: float = 1600.0
    height: float = 1000.0
    unit: str = "px"
    dpi: float = 96.0
    font_pt: float = 10.0
    numbers: bool = True
    colorbar: bool = True
    theme: str = "light"
    heads: str | int = "current"

    def check(self) -> FigureOptions:
        if self.unit not in UNITS:
            raise FigureError(f"Unknown unit {self.unit!r}: use px, cm or in.")
        if not (self.width > 0 and self.height > 0 and math.isfinite(self.width) and math.isfinite(self.height)):
            raise FigureError(f"A figure needs a positive size, not {self.width:g} × {self.height:g} {self.unit}.")
        if not 10 <= self.dpi <= 2400:
            raise FigureError(f"The resolution must be between 10 and 2400 dpi, not {self.dpi:g}.")
        if not 3 <= self.font_pt <= 72:
            raise FigureError(f"The font size must be between 3 and 72 pt, not {self.font_pt:g}.")
        theme(self.theme)
        w, h = self.pixel_size()
        if w * h > MAX_IMAGE_PIXELS:
            raise FigureError(f"A {w} × {h} pixel figure is too large: choose a smaller size or resolution.")
        if min(self.canvas().width(), self.canvas().height()) < 48:
            raise FigureError(
                f"A {self.width:g} × {self.height:g} {self.unit} figure at {self.dpi:g} dpi is too "
                "small to draw anything readable."
            )
        return self

    def inches(self) -> tuple[float, float]:
        per_inch = UNITS[self.unit]
        if per_inch is None:
            return self.width / self.dpi, self.height / self.dpi
        return self.width / per_inch, self.height / per_inch

    def canvas(self) -> QSizeF:
        """The size the painter draws on, in canvas pixels (96 per inch)."""
        w, h = self.inches()
        return QSizeF(w * CANVAS_DPI, h * CANVAS_DPI)

    def pixel_size(self) -> tuple[int, int]:
        """The pixels of a PNG (exactly the size asked for in px)."""
        if self.unit == "px":
            return max(1, round(self.width)), max(1, round(self.height))
        w, h = self.inches()
        return max(1, round(w * self.dpi)), max(1, round(h * self.dpi))

    def describe(self) -> str:
        w, h = self.pixel_size()
        if self.unit == "px":
            return f"{w} × {h} px at {self.dpi:g} dpi"
        return f"{self.width:g} × {self.height:g} {self.unit} ({w} × {h} px at {self.dpi:g} dpi)"


_LUTS: dict[str, np.ndarray] = {}


def lut(kind: str) -> np.ndarray:
    """[256, 3] uint8: the colour map of a kind, the same as the window's heatmaps (CET-D1, CET-L17)."""
    if kind not in _LUTS:
        import pyqtgraph as pg

        name = {"diverging": "CET-D1", "weights": "CET-L17"}[kind]
        _LUTS[kind] = np.ascontiguousarray(pg.colormap.get(name).getLookupTable(nPts=256, alpha=False), np.uint8)
    return _LUTS[kind]


def _luminance(rgb: np.ndarray) -> np.ndarray:
    c = rgb / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


def _colour_indices(values: np.ndarray, levels: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = levels
    finite = np.isfinite(values)
    t = np.clip((np.where(finite, values, lo) - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    return np.rint(t * 255).astype(np.intp), finite


def heat_image(values: np.ndarray, levels: tuple[float, float], kind: str) -> QImage:
    """One pixel per cell, coloured by the kind's map; hidden (non-finite) cells grey."""
    idx, finite = _colour_indices(values, levels)
    table = lut(kind).astype(np.uint32)
    argb = (0xFF000000 | (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]).astype(np.uint32)  # [256]
    pixels = argb[idx]  # [n, m]
    pixels[~finite] = 0xFF000000 | (MASKED.red() << 16) | (MASKED.green() << 8) | MASKED.blue()
    pixels = np.ascontiguousarray(pixels)
    # Opaque, so ARGB32 is also premultiplied: the format painters draw fastest.
    image = QImage(
        pixels.data, pixels.shape[1], pixels.shape[0], pixels.shape[1] * 4, QImage.Format.Format_ARGB32_Premultiplied
    )
    return image.copy()


def _widest(metrics: QFontMetricsF, labels: Sequence[str]) -> float:
    """The widest label's width, measuring only the longest few (thousands of feature names cost milliseconds)."""
    if not labels:
        return 0.0
    longest = sorted(labels, key=len, reverse=True)[:8]
    return max(metrics.horizontalAdvance(s) for s in longest)


def _font(px: float, bold: bool = False) -> QFont:
    font = QFont()
    font.setStyleHint(QFont.StyleHint.SansSerif)
    # Whole canvas pixels: Qt measures a fractional size as the next whole one, and SVG viewers, which render the
    # fraction, would then show gaps between a W and its subscript.
    font.setPixelSize(max(1, round(px)))
    font.setBold(bold)
    return font


def _elide(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


class RichText:
    """A line of title markup (W_Q, K^T) measured and painted as runs: each run is a text element in SVG/PDF."""

    def __init__(self, text: str, px: float, bold: bool = False):
        self.runs = rich_runs(text)
        self.px = px
        self.bold = bold
        self._fonts = {lvl: _font(px * (0.72 if lvl else 1.0), bold) for lvl in (-1, 0, 1)}
        self._metrics = {lvl: QFontMetricsF(f) for lvl, f in self._fonts.items()}

    def width(self) -> float:
        return sum(self._metrics[lvl].horizontalAdvance(t) for t, lvl in self.runs)

    def height(self) -> float:
        m = self._metrics[0]
        return m.height() + self.px * 0.2  # room for a subscript's descent

    def ascent(self) -> float:
        return self._metrics[0].ascent()

    def paint(self, painter: QPainter, x: float, baseline: float) -> None:
        for text, lvl in self.runs:
            painter.setFont(self._fonts[lvl])
            shift = 0.22 * self.px if lvl < 0 else -0.38 * self.px if lvl > 0 else 0.0
            painter.drawText(QPointF(x, baseline + shift), text)
            x += self._metrics[lvl].horizontalAdvance(text)


@dataclass
class Highlight:
    """Marks for the animation: the views that feed the current step, the step itself, and those not reached."""

    inputs: Sequence[str] = ()
    current: Sequence[str] = ()
    hidden: Sequence[str] = ()


def _grid_shape(n: int, width: float, height: float, target: float = 1.0) -> tuple[int, int]:
    """(rows, cols) for n panels in width × height whose panels come closest to the aspect `target`."""
    best, best_score = (1, n), math.inf
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        if (rows - 1) * cols >= n:
            continue
        aspect = (width / cols) / (height / rows)
        score = abs(math.log(aspect / target)) + 0.35 * (rows * cols - n)  # empty cells waste the page
        if score < best_score:
            best, best_score = (rows, cols), score
    return best


PIPELINE_GRID = (
    ("x", "q", "k", "v"),
    ("scores", "scaled", "masked", "weights"),
    ("head_outputs", "concat", "output", "residual"),
)


class Figure:
    """Views of one layer laid out on a canvas of the options' size, painted by `paint(painter)`.

    views: view names, or a group ('pipeline', 'circuits'). caption: a paragraph under the views (the animation's
    narration). highlight: marks for the animation.
    """

    def __init__(
        self,
        data: FigureData,
        views: Sequence[str] | str,
        options: FigureOptions | None = None,
        *,
        caption: str = "",
        highlight: Highlight | None = None,
    ):
        self.data = data
        self.options = (options or FigureOptions()).check()
        names = [views] if isinstance(views, str) else list(views)
        expanded: list[str] = []
        for name in names:
            if name in GROUPS:
                expanded.extend(v for v in GROUPS[name] if v != "composition" or data.composition is not None)
            elif name in VIEWS:
                expanded.append(name)
            else:
                from qkvgui.io.figure_views import view_names

                raise FigureError(f"There is no view {name!r}: choose from {', '.join(view_names())}.")
        if not expanded:
            raise FigureError("A figure needs at least one view.")
        self.names = expanded
        self.group = names[0] if len(names) == 1 and names[0] in GROUPS else None
        self.views = [data.view(n, self.options.heads) for n in expanded]
        self.caption = caption
        self.highlight = highlight or Highlight()
        self.theme = theme(self.options.theme)
        self.size = self.options.canvas()
        self.em = self.options.font_pt * CANVAS_DPI / 72.0  # the font size in canvas pixels
        self._two_line_titles = False

    @property
    def title(self) -> str:
        if self.group == "pipeline":
            return "attention, step by step"
        if self.group == "circuits":
            return "the circuits of a head"
        return ", ".join(v.info.label for v in self.views)

    # ---- layout --------------------------------------------------------------------------------------------
    def _grid(self, area: QRectF) -> list[tuple[ViewFigure, QRectF]]:
        n = len(self.views)
        gap = self.em * 1.2
        if self.group == "pipeline" and n == 12 and area.width() >= area.height() * 0.9:
            rows, cols = 3, 4
            order = [v for row in PIPELINE_GRID for v in row]
            by_name = {v.info.name: v for v in self.views}
            views = [by_name[name] for name in order]
        else:
            rows, cols = _grid_shape(n, area.width(), area.height(), 1.15)
            views = self.views
        w = (area.width() - gap * (cols - 1)) / cols
        h = (area.height() - gap * (rows - 1)) / rows
        out = []
        for k, view in enumerate(views):
            r, c = divmod(k, cols)
            out.append((view, QRectF(area.left() + c * (w + gap), area.top() + r * (h + gap), w, h)))
        return out

    # ---- painting ------------------------------------------------------------------------------------------
    def paint(self, painter: QPainter) -> None:
        """Paint the whole figure; the painter's coordinates are canvas pixels (0, 0)–(size)."""
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # cells stay crisp squares
        painter.setRenderHint(QPainter.RenderHint.LosslessImageRendering, True)  # PDF: no JPEG smearing
        full = QRectF(0, 0, self.size.width(), self.size.height())
        if self.theme.background is not None:
            painter.fillRect(full, self.theme.background)
        margin = self.em * 0.8
        area = full.adjusted(margin, margin, -margin, -margin)
        if self.caption:
            font = _font(self.em * 1.05)
            painter.setFont(font)
            metrics = QFontMetricsF(font)
            flags = int(Qt.TextFlag.TextWordWrap) | int(Qt.AlignmentFlag.AlignLeft) | int(Qt.AlignmentFlag.AlignTop)
            box = metrics.boundingRect(QRectF(0, 0, area.width(), 10 * area.height()), flags, self.caption)
            height = min(box.height(), area.height() * 0.4)
            text_rect = QRectF(area.left(), area.bottom() - height, area.width(), height)
            painter.setPen(self.theme.ink)
            painter.drawText(text_rect, flags, self.caption)
            area.setBottom(text_rect.top() - self.em * 0.8)
        placed = self._grid(area)
        self._two_line_titles = any(RichText(v.title, self.em, bold=True).width() > r.width() for v, r in placed)
        for view, rect in placed:
            self._paint_view(painter, view, rect)

    def _state(self, name: str) -> str:
        if name in self.highlight.current:
            return "current"
        if name in self.highlight.inputs:
            return "input"
        if name in self.highlight.hidden:
            return "hidden"
        return ""

    def _paint_view(self, painter: QPainter, view: ViewFigure, rect: QRectF) -> None:
        em, t = self.em, self.theme
        state = self._state(view.info.name)
        painter.save()
        painter.setClipRect(rect.adjusted(-em * 0.5, -em * 0.5, em * 0.5, em * 0.5))
        if state in ("current", "input"):
            colour = t.current if state == "current" else t.input
            pen = QPen(colour, max(1.5, em * 0.22))
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(rect.adjusted(-em * 0.35, -em * 0.35, em * 0.35, em * 0.35), em * 0.4, em * 0.4)
        ink = t.faint if state == "hidden" else t.ink
        # Title: the readable name and the formula on one line when every panel's fits, else on two lines (the
        # formula shrunk to fit); anything still too wide is clipped to the panel: titles never overlap.
        painter.save()
        painter.setClipRect(QRectF(rect.left(), rect.top() - em, rect.width(), em * 4))
        painter.setPen(ink)
        if not self._two_line_titles:
            title = RichText(view.title, em, bold=True)
            title.paint(painter, rect.left(), rect.top() + title.ascent())
            y = rect.top() + title.height()
        else:
            label_font = _font(em, bold=True)
            metrics = QFontMetricsF(label_font)
            painter.setFont(label_font)
            painter.drawText(
                QPointF(rect.left(), rect.top() + metrics.ascent()),
                metrics.elidedText(view.label, Qt.TextElideMode.ElideRight, rect.width()),
            )
            y = rect.top() + metrics.height()
            formula = RichText(view.formula, em * 0.9)
            if formula.width() > rect.width():
                formula = RichText(view.formula, max(em * 0.6, em * 0.9 * rect.width() / formula.width()))
            formula.paint(painter, rect.left(), y + formula.ascent())
            y += RichText(view.formula, em * 0.9).height()
        painter.restore()
        sub_font = _font(em * 0.85)
        sub_metrics = QFontMetricsF(sub_font)
        painter.setFont(sub_font)
        painter.setPen(t.faint)
        subtitle = sub_metrics.elidedText(view.subtitle, Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(QPointF(rect.left(), y + sub_metrics.ascent()), subtitle)
        y += sub_metrics.height() + em * 0.4
        body = QRectF(rect.left(), y, rect.width(), rect.bottom() - y)
        if body.height() > em and body.width() > em:
            if state == "hidden":
                pen = QPen(t.faint, 1.0, Qt.PenStyle.DashLine)
                painter.setPen(pen)
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawRect(body.adjusted(em, em * 0.2, -em, -em * 0.2))
                painter.setFont(_font(em * 1.6))
                painter.drawText(body, int(Qt.AlignmentFlag.AlignCenter), "?")
            else:
                self._paint_matrices(painter, view, body)
        painter.restore()

    def _paint_matrices(self, painter: QPainter, view: ViewFigure, body: QRectF) -> None:
        em, t = self.em, self.theme
        mats = view.matrices
        n_rows, n_cols = mats[0].values.shape
        label_px = em * 0.85
        label_font = _font(label_px)
        lm = QFontMetricsF(label_font)
        line = lm.height()
        gap = em * 0.6
        # Colour bar: a bar, tick marks and the widest tick label.
        ticks = _bar_ticks(mats[0].levels, view.kind)
        bar_w = 0.0
        if self.options.colorbar:
            bar_w = em * 0.9 + em * 0.3 + max(lm.horizontalAdvance(format_number(v)) for v in ticks) + em * 0.6
        k = len(mats)
        captions = k > 1
        cap_h = line * 1.05 if captions else 0.0

        def tagged(labels: Sequence[str], tokens: bool) -> list[str]:
            return [f"{i + 1}:{_elide(s)}" for i, s in enumerate(labels)] if tokens else [_elide(s) for s in labels]

        row_plain = [_elide(s) for s in mats[0].row_labels]
        row_tagged = tagged(mats[0].row_labels, mats[0].row_tokens)
        col_plain = [_elide(s) for s in mats[0].col_labels]
        col_tagged = tagged(mats[0].col_labels, mats[0].col_tokens)
        widest_row = _widest(lm, row_tagged)
        widest_col = _widest(lm, col_plain)
        widest_col_tagged = _widest(lm, col_tagged)
        left = min(widest_row + em * 0.4, body.width() * 0.3)

        def cells(gc: int, top: float) -> tuple[float, float]:
            gr = math.ceil(k / gc)
            aw = body.width() - left - bar_w - gap * (gc - 1)
            ah = body.height() - top - gr * cap_h - gap * (gr - 1)
            cw, ch = aw / gc / n_cols, ah / gr / n_rows
            if cw <= 0 or ch <= 0:
                return 0.0, 0.0
            elongated = max(n_rows, n_cols) / min(n_rows, n_cols) > 4
            limit = 6.0 if elongated else 1.25  # long thin matrices stretch their cells to fill; others stay square
            cw, ch = min(cw, ch * limit), min(ch, cw * limit)
            return cw, ch

        def column_labels(gc: int) -> tuple[float, float, bool, int, float]:
            """(cw, ch, upright, step, top) of the best column labelling with gc small multiples per row: every
            label across, else every label upright, else every k-th upright, else every k-th across."""
            flat = line + em * 0.2
            cw, ch = cells(gc, flat)
            if cw > 0 and widest_col <= cw * 0.95:
                return cw, ch, False, 1, flat
            room = body.height() * 0.35
            tall = widest_col + em * 0.3
            if tall <= room:
                cw2, ch2 = cells(gc, tall)
                if cw2 >= line * 0.9:
                    return cw2, ch2, True, 1, tall
            tall = widest_col_tagged + em * 0.3
            if tall <= room:
                cw2, ch2 = cells(gc, tall)
                if cw2 > 0:
                    return cw2, ch2, True, math.ceil(line * 1.05 / cw2), tall
            return cw, ch, False, (math.ceil((widest_col_tagged + em * 0.6) / cw) if cw > 0 else n_cols), flat

        best: tuple[int, float, float, bool, int, float] | None = None
        for gc in range(1, k + 1):
            if math.ceil(k / gc) * gc - k >= gc:
                continue
            cw, ch, upright, col_step, top = column_labels(gc)
            if best is None or min(cw, ch) > min(best[1], best[2]):
                best = (gc, cw, ch, upright, col_step, top)
        if best is None:
            return
        gc, cw, ch, upright, col_step, top = best
        if cw <= 0.02 or ch <= 0.02:  # below a pixel is fine (768 features across a panel): the image averages
            return
        gr = math.ceil(k / gc)
        block_w = left + gc * n_cols * cw + (gc - 1) * gap
        block_h = top + gr * (cap_h + n_rows * ch) + (gr - 1) * gap
        x0 = body.left() + max(0.0, (body.width() - bar_w - block_w) / 2)
        y0 = body.top()
        row_step = 1 if ch >= line * 0.9 else math.ceil(line * 1.05 / ch)
        rows_shown = row_plain if row_step == 1 else row_tagged
        cols_shown = col_plain if col_step == 1 else col_tagged
        numbers = self._number_font(n_rows, n_cols, cw, ch)
        frame = QPen(t.ink, 1.0)
        frame.setCosmetic(True)
        for idx, mat in enumerate(mats):
            r, c = divmod(idx, gc)
            mx = x0 + left + c * (n_cols * cw + gap)
            my = y0 + top + r * (cap_h + n_rows * ch + gap)
            target = QRectF(mx, my, n_cols * cw, n_rows * ch)
            if captions:  # "head 3" under its small multiple
                painter.setFont(label_font)
                painter.setPen(t.ink)
                painter.drawText(
                    QRectF(mx, target.bottom(), target.width(), cap_h),
                    int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                    lm.elidedText(mat.caption, Qt.TextElideMode.ElideRight, target.width()),
                )
            painter.drawImage(target, heat_image(mat.values, mat.levels, view.kind))
            painter.setPen(frame)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(target)
            if numbers is not None:
                self._paint_numbers(painter, mat, target, cw, ch, numbers, view.kind)
            painter.setFont(label_font)
            painter.setPen(t.ink)
            if c == 0:  # row labels on the left of the first column of small multiples
                for i in range(0, n_rows, row_step):
                    cell = QRectF(x0, my + i * ch + ch / 2 - line / 2, left - em * 0.4, line)
                    painter.drawText(
                        cell, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), rows_shown[i]
                    )
            if r == 0:  # column labels above the first row
                label_top = y0 + cap_h * 0
                for j in range(0, n_cols, col_step):
                    cx = mx + j * cw + cw / 2
                    if upright:
                        painter.save()
                        painter.translate(cx, label_top + top - em * 0.3)
                        painter.rotate(-90)
                        painter.drawText(
                            QRectF(0, -line / 2, top, line),
                            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                            lm.elidedText(cols_shown[j], Qt.TextElideMode.ElideRight, top - em * 0.3),
                        )
                        painter.restore()
                    else:
                        painter.drawText(
                            QRectF(cx - cw / 2 - em, label_top, cw + 2 * em, line),
                            int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter),
                            cols_shown[j],
                        )
        if self.options.colorbar:
            bar_x = x0 + block_w + gap
            bar_top = y0 + top
            bar_h = min(block_h - top - cap_h, max(em * 4, (n_rows * ch)))
            bar_h = max(bar_h, min(em * 4, body.bottom() - bar_top))
            self._paint_bar(
                painter, QRectF(bar_x, bar_top, em * 0.9, bar_h), mats[0].levels, view.kind, ticks, label_font
            )

    def _number_font(self, n_rows: int, n_cols: int, cw: float, ch: float) -> QFont | None:
        """The font for numbers in cells, or None when they are off or would not be legible."""
        if not self.options.numbers or n_rows > MAX_NUMBER_CELLS or n_cols > MAX_NUMBER_CELLS:
            return None
        px = self.em * 0.8
        width = QFontMetricsF(_font(px)).horizontalAdvance(f"{MINUS}0.00")
        px = min(px, px * cw * 0.9 / width, ch * 0.62)
        if px < self.em * 0.6 or px < 6:
            return None
        return _font(px)

    def _paint_numbers(
        self, painter: QPainter, mat: Matrix, target: QRectF, cw: float, ch: float, font: QFont, kind: str
    ) -> None:
        idx, finite = _colour_indices(mat.values, mat.levels)
        dark = _luminance(lut(kind)[idx].astype(float)) > 0.179
        dark &= finite  # grey masked cells read better with white text
        painter.setFont(font)
        black, white = QColor(20, 20, 20), QColor(250, 250, 250)
        flags = int(Qt.AlignmentFlag.AlignCenter)
        values = mat.values
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                painter.setPen(black if dark[i, j] else white)
                painter.drawText(
                    QRectF(target.left() + j * cw, target.top() + i * ch, cw, ch),
                    flags,
                    format_number(float(values[i, j]), "cell"),
                )

    def _paint_bar(
        self, painter: QPainter, rect: QRectF, levels: tuple[float, float], kind: str, ticks: list[float], font: QFont
    ) -> None:
        table = lut(kind)[::-1]  # top = high
        strip = np.ascontiguousarray(np.concatenate([table, np.full((256, 1), 255, np.uint8)], axis=1)[:, None, :])
        image = QImage(strip.data, 1, 256, 4, QImage.Format.Format_RGBA8888).copy()
        painter.drawImage(rect, image)
        pen = QPen(self.theme.ink, 1.0)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(rect)
        painter.setFont(font)
        metrics = QFontMetricsF(font)
        lo, hi = levels
        for v in ticks:
            y = rect.bottom() - (v - lo) / ((hi - lo) or 1.0) * rect.height()
            painter.drawLine(QPointF(rect.right(), y), QPointF(rect.right() + self.em * 0.3, y))
            painter.drawText(QPointF(rect.right() + self.em * 0.45, y + metrics.ascent() * 0.35), format_number(v))


def _bar_ticks(levels: tuple[float, float], kind: str) -> list[float]:
    lo, hi = levels
    if kind == "weights":
        return [0.0, 0.5, 1.0]
    return [lo, lo / 2, 0.0, hi / 2, hi]


# ---- output ------------------------------------------------------------------------------------------------
def figure_image(figure: Figure, pixels: tuple[int, int] | None = None) -> QImage:
    """The figure as an ARGB32 image of the options' pixel size (or `pixels`), its DPI stored in the image."""
    w, h = pixels or figure.options.pixel_size()
    image = QImage(QSize(w, h), QImage.Format.Format_ARGB32_Premultiplied)
    if image.isNull():
        raise MemoryError(f"Could not allocate a {w} × {h} image for the figure.")
    image.fill(Qt.GlobalColor.transparent)
    per_meter = round(CANVAS_DPI / 0.0254)  # paint at 96 dpi: point sizes mean canvas pixels
    image.setDotsPerMeterX(per_meter)
    image.setDotsPerMeterY(per_meter)
    painter = QPainter(image)
    try:
        painter.scale(w / figure.size.width(), h / figure.size.height())
        figure.paint(painter)
    finally:
        painter.end()
    dpi = figure.options.dpi if pixels is None else CANVAS_DPI * w / figure.size.width()
    image.setDotsPerMeterX(round(dpi / 0.0254))
    image.setDotsPerMeterY(round(dpi / 0.0254))
    return image


def _paint_device(device, figure: Figure) -> bool:
    painter = QPainter()
    if not painter.begin(device):
        return False
    try:
        figure.paint(painter)
    finally:
        painter.end()
    return True


def figure_bytes(figure: Figure, fmt: str) -> bytes:
    """The figure as the bytes of a PNG, SVG or PDF file."""
    size = figure.size
    if fmt == "png":
        image = figure_image(figure)
        image.setText("Title", figure.title)
        image.setText("Software", "qkvgui")

        # Quality 80 is zlib's fast end: a tenth of the time of the default for a file ~1.3× as large.
        def save(buffer) -> bool:
            return image.save(buffer, "PNG", PNG_QUALITY)  # type: ignore[call-overload]

        return _to_bytes(save, "PNG")
    if fmt == "svg":

        def paint_svg(buffer) -> bool:
            generator = QSvgGenerator()
            generator.setOutputDevice(buffer)
            generator.setResolution(round(CANVAS_DPI))
            generator.setSize(QSize(round(size.width()), round(size.height())))
            generator.setViewBox(QRectF(0.0, 0.0, size.width(), size.height()))
            generator.setTitle(figure.title)
            generator.setDescription("Made with qkvgui, the attention explorer.")
            return _paint_device(generator, figure)

        data = _portable_svg(_to_bytes(paint_svg, "SVG"), size)
        o = figure.options
        if o.unit != "px":  # state the physical size the user asked for; the viewBox keeps the canvas units
            text = data.decode("utf-8")
            text = re.sub(r'width="[^"]*px"', f'width="{o.width:g}{o.unit}"', text, count=1)
            text = re.sub(r'height="[^"]*px"', f'height="{o.height:g}{o.unit}"', text, count=1)
            data = text.encode("utf-8")
        return data
    if fmt == "pdf":

        def paint_pdf(buffer) -> bool:
            writer = QPdfWriter(buffer)
            writer.setResolution(round(CANVAS_DPI))  # painter units = canvas pixels
            points = QSizeF(size.width() * 72 / CANVAS_DPI, size.height() * 72 / CANVAS_DPI)
            page = QPageSize(points, QPageSize.Unit.Point, "", QPageSize.SizeMatchPolicy.ExactMatch)
            writer.setPageLayout(
                QPageLayout(page, QPageLayout.Orientation.Portrait, QMarginsF(0, 0, 0, 0), QPageLayout.Unit.Point)
            )
            writer.setTitle(figure.title)
            writer.setCreator("qkvgui")
            return _paint_device(writer, figure)

        return _to_bytes(paint_pdf, "PDF")
    raise FigureError(f"Cannot write a figure as {fmt!r}: use one of {', '.join(FORMATS)}.")


def write_figure_file(path: str | Path, figure: Figure, fmt: str | None = None) -> Path:
    """Render the figure completely in memory, then write it atomically (an old file survives any failure)."""
    path = Path(path)
    kind = figure_format(path, fmt)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write the figure {path.name}: the folder {path.parent} does not exist.")
    data = figure_bytes(figure, kind)
    return atomic_write(path, lambda f: f.write(data))


def with_options(figure: Figure, **changes) -> Figure:
    """The same views of the same data with other options."""
    return Figure(
        figure.data,
        figure.names,
        replace(figure.options, **changes),
        caption=figure.caption,
        highlight=figure.highlight,
    )
