"""HeatmapView: one static pyqtgraph figure of a 2-D attention matrix, with a colour bar, token ticks, cell numbers,
masked cells and linked-inspection highlights, configured by `kind` rather than subclassed per matrix."""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, QSize, QSizeF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QImage, QPainter, QPalette, QPen, QTransform
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsRectItem,
    QGraphicsWidget,
    QMenu,
    QSizePolicy,
    QStyleOptionGraphicsItem,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from qkvgui.core.attention import block_max
from qkvgui.core.format import format_number, readable_tokens

if TYPE_CHECKING:  # imported when the first view is built (see HeatmapView.build): the window paints before it
    import pyqtgraph as pg

#: Colour map per kind: CET-D1 is perceptually uniform and diverging (blue < 0 < red) around a light neutral 0;
#: CET-L17 runs white -> orange -> dark purple, so near-zero weights read as blank paper and strong ones as ink.
COLORMAPS = {"diverging": "CET-D1", "weights": "CET-L17"}

#: Numbers are drawn only on matrices up to this many rows and columns: beyond it they are noise, not information.
MAX_LABELLED_CELLS = 32
#: ...and only when a cell is at least this many screen pixels wide, so "−.37" fits at a legible size (the default
#: session's 6 × 6 weights on a 1280 × 800 screen have ~16 px cells)...
MIN_LABEL_CELL_PX = 15.0
#: ...and below this width the numbers are compact: no leading zero, one digit fewer (".37", "−1.4", "12").
COMPACT_CELL_PX = 22.0
#: Beyond this many tokens an axis shows every k-th tick (k also grows until the labels stop overlapping).
MAX_TICKS = 40
#: Longer tick labels (long tokens) are elided with "…" so one token cannot squeeze the image away.
MAX_TICK_CHARS = 12

#: A lazy view's title is painted this far below its top, where the built figure's title label puts it.
TITLE_TOP_PX = 8.0
#: the parts of a HeatmapView's figure, made by build() (see HeatmapView.__getattr__)
_FIGURE_PARTS = frozenset(
    {"_glw", "_plot", "_title_item", "_image", "_masked", "_labels", "_highlights", "_frame", "_bar"}
    | {"_cmap", "_lut", "_dark_lut"}
)

#: Masked (−inf) cells: a neutral mid-grey with a darker hatching, which no colour of either map resembles.
MASKED_COLOR = QColor(118, 118, 118)
MASKED_HATCH = QColor(80, 80, 80)


#: A matrix with more cells than this is drawn from a level-of-detail image prepared off the GUI thread
#: (a 4,096 × 4,096 head is 16.8 M cells: converting and colouring it all takes ~0.5 s per view).
LOD_CELLS = 1 << 20
#: ...at most this many image pixels along a side: more than a view at 1280 × 800 shows, even focused.
LOD_SIDE = 1024


def level_of_detail(data: np.ndarray, fy: int, fx: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """data [n, m] reduced over fy × fx blocks to ([⌈n/fy⌉, ⌈m/fx⌉] float32, masked bool of the same shape).

    kind "weights": each block's largest finite value, so a sharp attention line (one key that every query
    looks at) is never averaged away. kind "diverging": each block's value of largest magnitude, with its sign.
    Non-finite cells (masked scores) are left out; a block with nothing else is NaN and masked.
    Works a band of rows at a time (whole blocks), so its temporaries stay small beside a 4,096² matrix.
    """
    n, m = data.shape
    out = np.empty((-(-n // fy), -(-m // fx)), dtype=np.float64)
    band = max(1, LOD_BAND_CELLS // max(m, 1) // fy) * fy  # rows per band: a multiple of fy
    for a in range(0, n, band):
        b = min(n, a + band)
        out[a // fy : -(-b // fy)] = _reduce_blocks(data[a:b], fy, fx, kind)
    masked = ~np.isfinite(out)
    image = out.astype(np.float32)
    image[masked] = np.nan
    return image, masked


#: level_of_detail reduces bands of about this many cells at a time
LOD_BAND_CELLS = 1 << 18


def _reduce_blocks(data: np.ndarray, fy: int, fx: int, kind: str) -> np.ndarray:
    """level_of_detail's values (float64, −inf or NaN where a block has no finite value) of a band of rows."""
    finite = np.isfinite(data)
    any_hidden = not bool(finite.all())
    high = np.where(finite, data, -np.inf) if any_hidden else data
    top = block_max(high, fy, fx)  # [ry, rx]
    if kind == "weights":
        return top
    low = np.where(finite, -data, -np.inf) if any_hidden else -data
    bottom = -block_max(low, fy, fx)
    return np.where(np.abs(bottom) > np.abs(top), bottom, top)


@dataclass(frozen=True)
class Prepared:
    """What the GUI thread needs to draw a big matrix (or the part of it in view): made off the GUI thread."""

    image: np.ndarray  # float32 [ry, rx], NaN where masked
    masked: np.ndarray  # bool [ry, rx]
    levels: tuple[float, float]
    factor: tuple[int, int]  # cells per image pixel along y and x
    origin: tuple[int, int]  # the cell (row, column) at the image's top-left


def prepare(
    data: np.ndarray,
    kind: str,
    rows: tuple[int, int] | None = None,
    cols: tuple[int, int] | None = None,
    side: int = LOD_SIDE,
) -> Prepared:
    """The image of data[rows, cols] (all of it by default) at no more than side pixels along a side."""
    r0, r1 = rows or (0, data.shape[0])
    c0, c1 = cols or (0, data.shape[1])
    part = data[r0:r1, c0:c1]
    fy, fx = max(1, -(-part.shape[0] // side)), max(1, -(-part.shape[1] // side))
    image, masked = level_of_detail(part, fy, fx, kind)
    if kind == "weights":
        levels = (0.0, 1.0)
    else:  # the largest magnitude survives pooling, so the pooled image has the data's levels
        finite = image[~masked]
        m = nice_ceiling(float(np.abs(finite).max(initial=0.0))) if finite.size else 0.0
        levels = (-m, m) if m > 0 else (-1.0, 1.0)
    return Prepared(image, masked, levels, (fy, fx), (r0, c0))


_PREPARER: ThreadPoolExecutor | None = None
_PREPARER_LOCK = threading.Lock()


def _preparer() -> ThreadPoolExecutor:
    """One background thread shared by every view (made on first use): big images are prepared in turn."""
    global _PREPARER
    with _PREPARER_LOCK:
        if _PREPARER is None:
            _PREPARER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qkvgui-heatmap")
        return _PREPARER


class _Relay(QObject):
    """Carries a prepared image from the background thread to the view's (GUI) thread, as a queued signal."""

    ready = Signal(int, object)


def _device_scale(item: QGraphicsItem, painter: QPainter) -> tuple[float, float, float, float]:
    """How `item` is being painted: device pixels per item unit along x and y, the sign that makes y point down
    on the device, and the zoom of this paint relative to the screen (1 on screen, 2 for a 2× figure export)."""
    t = painter.transform()
    sx = math.hypot(t.m11(), t.m12())
    sy = math.hypot(t.m21(), t.m22())
    # Scene units are screen pixels (pyqtgraph's GraphicsView maps the scene 1:1 onto its viewport).
    screen = math.hypot(item.sceneTransform().m11(), item.sceneTransform().m12())
    return sx, sy, (1.0 if t.determinant() > 0 else -1.0), (sx / screen if screen > 0 else 1.0)


def _labels_fit(n_rows: int, n_cols: int, cell_px: float) -> bool:
    """The one rule deciding whether cell numbers are drawn (shared by paint() and labels_visible()): n_rows and
    n_cols count the cells in view (zoomed in, a big matrix shows numbers too)."""
    return 0 < n_rows <= MAX_LABELLED_CELLS and 0 < n_cols <= MAX_LABELLED_CELLS and cell_px >= MIN_LABEL_CELL_PX


def _as_index_set(value: int | Iterable[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int | np.integer):
        return (int(value),)
    return tuple(sorted({int(v) for v in value}))


def _runs(indices: tuple[int, ...]) -> list[tuple[int, int]]:
    """Consecutive indices merged into half-open runs, so rows 2 and 3 get one band, not two touching boxes."""
    runs: list[tuple[int, int]] = []
    for k in indices:
        if runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    return runs


#: the mantissas a diverging colour bar may end on: round numbers, close enough that little contrast is lost
#: a matrix more elongated than this gets stretched cells that fill the view rather than square hairlines
MAX_SQUARE_ASPECT = 2.0
NICE_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def nice_ceiling(m: float) -> float:
    """The smallest round number ≥ m (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten).

    A colour bar ending on it reads better, and it stays put while a user edits numbers below it, so the other
    cells keep their colours instead of shifting with every change of the maximum.
    """
    if not m > 0 or not math.isfinite(m):
        return 0.0
    scale = 10.0 ** math.floor(math.log10(m))
    for step in NICE_STEPS:
        if step * scale >= m * (1 - 1e-12):
            return step * scale
    return 10.0 * scale


def _no_dark_text(block: np.ndarray) -> np.ndarray:
    return np.zeros(block.shape, dtype=bool)


def _names_position(labels: list[str]) -> bool:
    """Labels that already say their position (d0, d1, …; h1.d0; L2h3): thinning them needs no tag."""
    return bool(labels) and all(label[-1:].isdigit() for label in labels) and len(set(labels)) == len(labels)


def tagged(position: int, label: str) -> str:
    """A thinned axis label names its position, counted from 1 as a reader counts: "3:the"."""
    return f"{position + 1}:{label}"


class CellLabels(QGraphicsItem):
    """Every cell's number, painted by this one item (a TextItem per cell costs seconds at 64 × 64).

    Lives in the ImageItem's pixel coordinates (cell (i, j) spans [j, j+1] × [i, i+1]) and draws the strings after
    undoing the view's scale, so the text is upright, crisp and sized in screen pixels whatever the zoom or export
    resolution, while the painter's transform chain stays intact for exporters. Strings are formatted at paint time
    (only when shown, at most 32 × 32), so nothing per cell is kept between paints.
    """

    def __init__(self, parent: QGraphicsItem | None = None) -> None:
        super().__init__(parent)
        self._values = np.zeros((0, 0))
        self._dark_text = _no_dark_text
        self._in_view = (0, 0)  # rows and columns of cells in view (the whole matrix unless zoomed in)
        # exposedRect lets paint() skip cells outside the repainted area.
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)

    def set_cells(self, values: np.ndarray, dark_text) -> None:
        """values (n, m) float64 as given; dark_text(values_block) -> bool block: black text where the cell
        colour is light (asked at paint time, for the cells painted only)."""
        self.prepareGeometryChange()
        self._values = values
        self._dark_text = dark_text
        self._in_view = values.shape
        self.update()

    def set_in_view(self, rows: int, cols: int) -> None:
        if (rows, cols) != self._in_view:
            self._in_view = (rows, cols)
            self.update()

    def boundingRect(self) -> QRectF:
        n, m = self._values.shape
        return QRectF(0.0, 0.0, float(m), float(n))

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        n, m = self._values.shape
        sx, sy, flip, zoom = _device_scale(self, painter)
        # Decide on the on-screen size, so an export shows exactly the numbers the screen shows.
        if not _labels_fit(*self._in_view, min(sx, sy) / zoom):
            return
        exposed = option.exposedRect if not option.exposedRect.isEmpty() else self.boundingRect()
        i0, i1 = max(0, math.floor(exposed.top())), min(n, math.ceil(exposed.bottom()))
        j0, j1 = max(0, math.floor(exposed.left())), min(m, math.ceil(exposed.right()))
        if i1 <= i0 or j1 <= j0:
            return
        dark_block = self._dark_text(self._values[i0:i1, j0:j1])  # [i1 - i0, j1 - j0] bool
        compact = min(sx, sy) / zoom < COMPACT_CELL_PX  # narrow cells: ".37" instead of "0.37"
        values = self._values
        cells = [
            (i, j, format_number(float(values[i, j]), "compact" if compact else "cell"))
            for i in range(i0, i1)
            for j in range(j0, j1)
        ]

        # One font for the whole matrix: ~30% of the on-screen cell height but at most 13 screen pixels (scaled
        # with an export's zoom), shrunk until the widest visible number fits its cell.
        font = QFont(painter.font())
        font.setPixelSize(max(1, round(zoom * max(7.0, min(13.0, sy / zoom * 0.32)))))
        widest = max(QFontMetricsF(font).horizontalAdvance(text) for _, _, text in cells)
        if widest > sx * 0.9:
            font.setPixelSize(max(1, int(font.pixelSize() * sx * 0.9 / widest)))
        dark, light = QPen(QColor(0, 0, 0)), QPen(QColor(255, 255, 255))

        painter.save()
        painter.setFont(font)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        # Undo the view's scale (and flip): 1 unit = 1 screen pixel, y down; cell (i, j) is then the box at
        # (j·sx, i·sy·flip). Text keeps its size and stays upright, and the exporters' transforms still apply.
        painter.scale(1.0 / sx, flip / sy)
        pen_dark: bool | None = None
        for i, j, text in cells:
            if bool(dark_block[i - i0, j - j0]) != pen_dark:  # set the pen only when it changes: measurable
                pen_dark = bool(dark_block[i - i0, j - j0])
                painter.setPen(dark if pen_dark else light)
            box = QRectF(j * sx, i * sy * flip, sx, sy * flip).normalized()
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()


class MaskedCells(QGraphicsItem):
    """Grey hatching under the masked cells, which the ImageItem holds as NaN and therefore leaves transparent."""

    def __init__(self, parent: QGraphicsItem | None = None) -> None:
        super().__init__(parent)
        self._shape = (0, 0)
        self._runs = np.zeros((0, 3), dtype=np.int64)  # [k, (row, first col, end col)]: one rect per masked run
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemStacksBehindParent)

    def set_mask(self, masked: np.ndarray | None, shape: tuple[int, int]) -> None:
        """masked (n, m) bool, or None when no cell is masked. Runs of masked cells along a row become one
        rectangle (a causal mask: one per row)."""
        self.prepareGeometryChange()
        self._shape = shape
        if masked is None:
            self._runs = np.zeros((0, 3), dtype=np.int64)
            self.update()
            return
        padded = np.zeros((masked.shape[0], masked.shape[1] + 2), dtype=np.int8)
        padded[:, 1:-1] = masked
        edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
        rows, starts = np.nonzero(edges == 1)
        _, ends = np.nonzero(edges == -1)  # same row-major order as the starts
        self._runs = np.stack([rows, starts, ends], axis=1) if rows.size else np.zeros((0, 3), dtype=np.int64)
        self.update()

    def boundingRect(self) -> QRectF:
        n, m = self._shape
        return QRectF(0.0, 0.0, float(m), float(n))

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if not len(self._runs):
            return
        sx, sy, flip, zoom = _device_scale(self, painter)
        hatch = QBrush(MASKED_HATCH, Qt.BrushStyle.BDiagPattern)
        # Pattern brushes scale with the painter; keep the hatching at a fixed on-screen pitch instead.
        hatch.setTransform(QTransform.fromScale(zoom / sx, zoom * flip / sy))
        for i, j0, j1 in self._runs:
            rect = QRectF(float(j0), float(i), float(j1 - j0), 1.0)
            painter.fillRect(rect, MASKED_COLOR)
            painter.fillRect(rect, hatch)


class CellHighlights(QGraphicsItem):
    """Outlines around highlighted rows, columns and one cell: one persistent item, repainted on change."""

    # A dark line with a light halo stays visible on every colour of both maps and on the masked grey.
    HALO = QColor(255, 255, 255, 230)
    CORE = QColor(0, 0, 0)

    def __init__(self, parent: QGraphicsItem | None = None) -> None:
        super().__init__(parent)
        self._shape = (0, 0)
        self._rows: tuple[int, ...] = ()
        self._cols: tuple[int, ...] = ()
        self._cell: tuple[int, int] | None = None

    def set_shape(self, shape: tuple[int, int]) -> None:
        self.prepareGeometryChange()
        self._shape = shape
        self.update()

    def set_highlight(self, rows: tuple[int, ...], cols: tuple[int, ...], cell: tuple[int, int] | None) -> None:
        self._rows, self._cols, self._cell = rows, cols, cell
        self.update()

    def highlighted(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int] | None]:
        return self._rows, self._cols, self._cell

    def boundingRect(self) -> QRectF:
        n, m = self._shape
        return QRectF(0.0, 0.0, float(m), float(n))

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        n, m = self._shape
        rects: list[tuple[QRectF, float]] = []
        rects += [(QRectF(0.0, a, m, b - a), 2.0) for a, b in _runs(tuple(r for r in self._rows if 0 <= r < n))]
        rects += [(QRectF(a, 0.0, b - a, n), 2.0) for a, b in _runs(tuple(c for c in self._cols if 0 <= c < m))]
        if self._cell is not None and 0 <= self._cell[0] < n and 0 <= self._cell[1] < m:
            rects.append((QRectF(self._cell[1], self._cell[0], 1.0, 1.0), 3.0))
        if not rects:
            return
        sx, sy, _, zoom = _device_scale(self, painter)
        painter.save()
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for rect, line in rects:
            width = line * zoom
            halo = width + 2.0 * zoom
            # Inset by half the halo (in item units) so the whole stroke stays inside the band, never clipped.
            dx, dy = min(halo / 2 / sx, rect.width() / 2), min(halo / 2 / sy, rect.height() / 2)
            inner = rect.adjusted(dx, dy, -dx, -dy)
            for color, w in ((self.HALO, halo), (self.CORE, width)):
                pen = QPen(color, w)
                pen.setCosmetic(True)  # widths in device pixels, whatever the view's scale
                pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
                painter.setPen(pen)
                painter.drawRect(inner)
        painter.restore()


class ImageFrame(QGraphicsRectItem):
    """The image's outline, a one-pixel line drawn just inside the image's edge: the view box clips at that edge,
    and a line centred on it lost whichever side fell on a half pixel."""

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        sx, sy, _, _ = _device_scale(self, painter)
        rect = self.rect()
        if sx <= 0 or sy <= 0 or rect.isEmpty():
            return
        dx, dy = min(0.5 / sx, rect.width() / 2), min(0.5 / sy, rect.height() / 2)
        painter.setPen(self.pen())
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(rect.adjusted(dx, dy, -dx, -dy))


class ColourBar(QGraphicsWidget):
    """The colour scale beside a heatmap: the colour map from low (bottom) to high (top) in a thin frame, with
    three exact ticks (both ends and the middle) labelled on its right. One light item, not a second pyqtgraph plot.
    """

    BAR_PX = 12.0  # the bar's width
    TICK_PX = 3.0  # tick marks, drawn inward from the bar's right edge
    GAP_PX = 2.0  # between the bar and its labels

    def __init__(self, lut: np.ndarray, font: QFont, parent: QGraphicsItem | None = None) -> None:
        super().__init__(parent)
        rgb = np.ascontiguousarray(lut[::-1].reshape(len(lut), 1, 3), dtype=np.uint8)  # high at the top
        self._gradient = QImage(rgb.data, 1, len(lut), 3, QImage.Format.Format_RGB888).copy()
        self._font = QFont(font)
        self._pen = QPen(QColor(0, 0, 0))
        self._levels = (0.0, 1.0)
        self._ticks: list[tuple[float, str]] = []
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self.set_levels(0.0, 1.0)

    def set_levels(self, lo: float, hi: float) -> None:
        """The values at the bottom and top of the bar; the ticks are lo, the middle and hi, without needless
        decimals ("40", "0.5"), as the figures write them."""
        self._levels = (lo, hi)
        self._ticks = [(v, format_number(v, "short")) for v in (lo, (lo + hi) / 2, hi)]
        fm = QFontMetricsF(self._font)
        # whole pixels, so the image beside it stays on the pixel grid (its outline is a one-pixel line)
        width = math.ceil(self.BAR_PX + self.GAP_PX + max(fm.horizontalAdvance(text) for _, text in self._ticks) + 4)
        self.setMinimumWidth(width)
        self.setMaximumWidth(width)
        self.setPreferredWidth(width)
        self.update()

    def levels(self) -> tuple[float, float]:
        return self._levels

    def tick_texts(self) -> list[str]:
        """The tick labels from low to high."""
        return [text for _, text in self._ticks]

    def set_pen(self, colour: QColor) -> None:
        self._pen = QPen(colour, 1.0)
        self._pen.setCosmetic(True)
        self.update()

    def boundingRect(self) -> QRectF:
        # the end labels are centred on the ends of the bar: half a line above and below it
        half = QFontMetricsF(self._font).height() / 2 + 1
        return self.rect().adjusted(0.0, -half, 0.0, half)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        h = self.rect().height()
        if h < 2:
            return
        bar = QRectF(0.5, 0.5, self.BAR_PX, h - 1.0)
        painter.drawImage(bar, self._gradient)
        painter.setPen(self._pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(bar)
        painter.setFont(self._font)
        fm = QFontMetricsF(self._font)
        lo, hi = self._levels
        for value, text in self._ticks:
            y = bar.bottom() - (value - lo) / (hi - lo) * bar.height() if hi > lo else bar.bottom()
            painter.drawLine(QPointF(bar.right() - self.TICK_PX, y), QPointF(bar.right(), y))
            box = QRectF(bar.right() + self.GAP_PX, y - fm.height() / 2, self.rect().width(), fm.height())
            painter.drawText(box, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), text)


@cache
def token_axis_class() -> type:
    """TokenAxis, an axis whose labels can stand upright (defined on first use: it subclasses pyqtgraph's)."""
    import pyqtgraph as pg

    class TokenAxis(pg.AxisItem):
        """An axis whose labels can stand upright (rotated a quarter turn), so a column per token keeps its label
        when the cells are narrower than the words."""

        def __init__(self, orientation: str) -> None:
            super().__init__(orientation)
            self.rotated = False
            # no units, so no SI prefix: without this every range change re-renders the (empty) label as HTML
            self.autoSIPrefix = False

        def drawPicture(self, p, axisSpec, tickSpecs, textSpecs) -> None:  # noqa: N802 - pyqtgraph's name
            if not self.rotated:
                super().drawPicture(p, axisSpec, tickSpecs, textSpecs)
                return
            p.setRenderHint(p.RenderHint.TextAntialiasing, True)
            if self.style["tickFont"] is not None:
                p.setFont(self.style["tickFont"])
            p.setPen(self.textPen())
            bounds = self.boundingRect()
            offset = self.style["tickTextOffset"][1]
            length = max(1.0, bounds.height() - offset)
            line = QFontMetricsF(p.font()).height()
            for rect, _flags, text in textSpecs:
                p.save()
                # Reads upward from the image's edge, centred on its column.
                p.translate(rect.center().x(), bounds.bottom() - offset)
                p.rotate(-90)
                align = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
                p.drawText(QRectF(0.0, -line / 2, length, line), int(align), text)
                p.restore()

    return TokenAxis


class HeatmapView(QWidget):
    """A static heatmap of one matrix: cell (i, j) is centred on (x=j, y=i), row 0 at the top.

    kind "diverging": signed values on CET-D1 with symmetric levels (−m, m), m = max |finite value| rounded up to a
    round number (see nice_ceiling; 1 if all are zero).
    kind "weights": values on CET-L17 with fixed levels (0, 1).
    Non-finite cells (−inf: masked scores) are drawn as hatched grey and labelled "−∞".

    Lazy (``lazy=True``): the view is laid out at once but its figure (pyqtgraph's scene, axes, colour bar) is
    built by ``build()``: when its owner builds it (see PipelineView.fill), or as soon as anything reaches for the
    figure (its image or levels, a zoom, ``graphics_widget()``). Until then set_data, set_title, highlight and
    set_context only keep what they are given (data and labels read back at once), and the view paints its
    background and its title where the figure's title will be.
    """

    #: (i, j) of the cell under the mouse, emitted when it changes; (−1, −1) when the mouse leaves the image.
    cell_hovered = Signal(int, int)
    #: (i, j) of a cell clicked with the left button.
    cell_clicked = Signal(int, int)
    #: any left click on the figure (a small multiple is one button), and a double click (focus the view)
    clicked = Signal()
    double_clicked = Signal()
    #: (first row, end row, first column, end column), half-open, of the cells in view: on zoom, pan and resize
    visible_changed = Signal(int, int, int, int)
    #: the zoom: True when zoomed or panned in, False after reset_zoom()
    zoomed_changed = Signal(bool)

    # the figure's parts, made by build() (a lazy view makes them when first needed: see __getattr__)
    _glw: pg.GraphicsLayoutWidget
    _plot: pg.PlotItem
    _title_item: pg.LabelItem
    _image: pg.ImageItem
    _masked: MaskedCells
    _labels: CellLabels
    _highlights: CellHighlights
    _frame: ImageFrame
    _bar: ColourBar | None
    _cmap: pg.ColorMap
    _lut: np.ndarray
    _dark_lut: np.ndarray

    def __init__(
        self, kind: str = "diverging", parent: QWidget | None = None, *, compact: bool = False, lazy: bool = False
    ) -> None:
        super().__init__(parent)
        self._built = False
        self._building = False
        self._compact = compact  # a small multiple: no colour bar, no tick labels, just the picture and its title
        self._context = False  # shown small beside a focused view: no tick labels either (see set_context)
        self._cols_rotated = False  # column labels upright when the columns are narrower than the words
        if kind not in COLORMAPS:
            raise ValueError(f"Unknown heatmap kind {kind!r}: use one of {', '.join(map(repr, COLORMAPS))}.")
        self._kind = kind
        self._data = np.zeros((0, 1))  # not the (0, 0) of the first set_data, so that one lays out
        self._bar_levels: tuple[float, float] | None = None
        self._row_labels: list[str] = []
        self._raw_labels: tuple[list[str], list[str]] = ([], [])  # the labels as given (raw tokens)
        self._col_labels: list[str] = []
        self._label_memo: dict[tuple[str, int, str], tuple[list[str], Any]] = {}  # see _per_labels
        self._shown_ticks: tuple[list, list] = ([], [])
        self._title = ""
        self._fg = QColor(0, 0, 0)
        self._background: QColor | None = None  # None: the palette's (see set_background)
        self._hover = (-1, -1)
        self._closed = False
        #: what a lazy view was given before it was built: (data, raw row labels, raw column labels), highlight
        self._unbuilt_data: tuple[np.ndarray, list[str], list[str]] | None = None
        self._unbuilt_highlight: tuple[tuple[int, ...], tuple[int, ...], tuple[int, int] | None] = ((), (), None)
        # Big matrices: images prepared off the GUI thread; a newer set_data or view range drops older ones.
        self._relay = _Relay(self)
        self._relay.ready.connect(self._apply_prepared)
        self._generation = 0
        self._preparing = False
        self._overview: Prepared | None = None  # the whole matrix at level of detail
        self._shown: tuple[int, int, int, int] = (1, 1, 0, 0)  # (fy, fx, row, col) of the image on screen
        #: the user's zoom: (first column, first row, screen pixels per cell) in view coordinates, None when the
        #: whole matrix is shown (the default, kept across resizes and new data of the same shape)
        self._zoom: tuple[float, float, float] | None = None
        self._visible = (0, 0, 0, 0)
        self._base_tip = ""
        self._image_shape: tuple[int, ...] = (-1, -1)
        #: callables (view, menu) adding entries to the right-click menu
        self.menu_hooks: list = []

        self.setMinimumSize(160, 140)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self._tick_font = QFont(self.font())
        self._tick_font.setPointSizeF(max(7.0, self._tick_font.pointSizeF() * 0.85))
        if not lazy:
            self.build()

    def __getattr__(self, name: str) -> Any:
        # A lazy view's figure is built the first time anything reaches for one of its parts.
        if name in _FIGURE_PARTS and not self.__dict__.get("_building", True) and not self.__dict__["_built"]:
            self.build()
            if name in self.__dict__:
                return self.__dict__[name]
            raise AttributeError(f"The heatmap {self.objectName()!r} was closed before its figure was built.")
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def built(self) -> bool:
        """Whether the figure has been built (always, unless made with lazy=True and not needed yet)."""
        return self._built

    def is_closed(self) -> bool:
        """Whether close_views() has run (the view is inert)."""
        return self._closed

    def build(self) -> None:
        """Build the figure now, with whatever the view was given meanwhile (idempotent; the first view built
        imports pyqtgraph). A closed view builds nothing: no scene is left alive at exit."""
        if self._built or self._building or self._closed:
            return
        self._building = True
        try:
            self._build()
        finally:
            self._building = False
        self._built = True
        # one code path sets up levels, ticks and layout, empty or not: set_data, once (each call that changes the
        # shape lays the view out again), with the data given meanwhile or with nothing
        data, rows, cols = self._unbuilt_data if self._unbuilt_data is not None else (np.zeros((0, 0)), None, None)
        self._unbuilt_data = None
        self._data, self._row_labels, self._col_labels = np.zeros((0, 1)), [], []  # nothing drawn yet: lay out
        self.set_data(data, rows, cols)
        if self._unbuilt_highlight != ((), (), None):
            self._highlights.set_highlight(*self._unbuilt_highlight)
        self._update_title()
        self.update()

    def _build(self) -> None:
        import pyqtgraph as pg

        compact = self._compact
        self._cmap = pg.colormap.get(COLORMAPS[self._kind])
        self._lut = self._cmap.getLookupTable(nPts=256, alpha=False)  # [256, 3] uint8, as the ImageItem uses
        self._dark_lut = self._lut_wants_dark_text(self._lut)  # [256] bool
        self._glw = pg.GraphicsLayoutWidget()
        layout = self.layout()
        assert layout is not None
        layout.addWidget(self._glw)
        self._glw.ci.setContentsMargins(4, 4, 4, 4)
        self._glw.ci.setSpacing(0)

        # Title, plot and colour bar all live in the one scene, so exporting the scene exports the whole figure.
        self._title_item = pg.LabelItem("", justify="center")
        self._glw.ci.addItem(self._title_item, row=0, col=0)
        # enableMenu=False: no pyqtgraph view menu is built (ours replaces it), a third of a view's making
        axes = {side: token_axis_class()(side) for side in ("left", "top", "right", "bottom")}
        self._plot = self._glw.ci.addPlot(row=1, col=0, axisItems=axes, enableMenu=False)
        # The plot shrinks to the image (see _fit_range): keep it centred under the title, spare height below.
        self._glw.ci.layout.setAlignment(self._plot, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        # ...while the layout itself still fills the view, whatever the plot's maximum size.
        self._glw.ci.setMaximumSize(QSizeF(1e6, 1e6))
        self._plot.setDefaultPadding(0.0)
        self._plot.invertY(True)  # row 0 at the top, as in the matrix
        # The wheel zooms (about the cursor), a drag pans, Home / right-click ▸ Reset zoom shows it all again.
        # A small multiple stays a static picture (a click there selects, it does not pan).
        self._plot.setMouseEnabled(x=not compact, y=not compact)
        self._plot.setMenuEnabled(False)  # our own menu instead (see _show_menu)
        self._plot.hideButtons()  # no auto-range button: Home does it
        self._plot.vb.disableAutoRange()
        self._plot.vb.setMouseMode(pg.ViewBox.PanMode)
        # Token names left and top, no axis lines or tick marks: the image has its own outline (see _frame).
        values = not (compact or self._context)
        self._plot.showAxes((True, True, False, False), showValues=(values, values, False, False))
        for side in ("left", "top"):
            # hideOverlappingLabels=40: an edge token may overhang the image by half its width instead of vanishing.
            self._plot.getAxis(side).setStyle(
                tickFont=self._tick_font,
                tickLength=0,
                tickTextOffset=4,
                autoExpandTextSpace=False,
                hideOverlappingLabels=40,
            )

        self._image = pg.ImageItem(axisOrder="row-major")
        # Shift by half a cell so cell (i, j) is centred on the integer tick (x=j, y=i).
        self._image.setTransform(QTransform.fromTranslate(-0.5, -0.5))
        self._plot.addItem(self._image)
        self._masked = MaskedCells(self._image)
        self._labels = CellLabels(self._image)
        self._highlights = CellHighlights(self._image)
        self._highlights.setZValue(1)  # over the numbers
        self._frame = ImageFrame(self._image)  # the image's outline: near-zero cells are near-white
        self._frame.setBrush(Qt.BrushStyle.NoBrush)

        lo, hi = self._fixed_levels(np.zeros((0, 0)))
        # A small multiple has no colour bar: not making one halves its cost (a new document's head strip is made
        # on the GUI thread, one view per event-loop turn).
        self._image.setColorMap(self._cmap)
        self._image.setLevels((lo, hi))
        self._bar = None
        if not compact:
            self._bar = ColourBar(self._lut, self._tick_font)
            self._bar.set_levels(lo, hi)
            self._plot.layout.addItem(self._bar, 2, 5)  # right of the view box (and its hidden right axis)
            self._plot.layout.setColumnFixedWidth(4, 5)  # a little room between the image and the bar
        self._apply_palette()

        scene = self._glw.scene()
        scene.sigMouseMoved.connect(self._on_mouse_moved)
        scene.sigMouseClicked.connect(self._on_mouse_clicked)
        # Square cells are kept by hand on every resize; tick density then follows the on-screen cell size.
        self._glw.ci.geometryChanged.connect(self._fit_range)
        self._plot.geometryChanged.connect(self._fit_range)
        self._plot.vb.sigResized.connect(self._fit_range)
        self._plot.vb.sigTransformChanged.connect(self._update_ticks)
        self._plot.vb.sigRangeChanged.connect(self._refine)
        self._plot.vb.sigRangeChangedManually.connect(self._on_user_zoom)
        self._plot.vb.sigRangeChanged.connect(self._on_range_changed)

    # ----------------------------------------------------------------------------------------------------- data

    def set_data(
        self, array2d: np.ndarray, row_labels: list[str] | None = None, col_labels: list[str] | None = None
    ) -> None:
        """Show `array2d` (n, m) float, with one label per row and per column (default: "0", "1", ...).

        −inf cells (masked scores) are drawn hatched grey and labelled "−∞"; NaN and +inf are shown the same way.
        Raises ValueError for a non-2-D array or a label count that does not match the shape.
        """
        if self._closed:
            return
        data = np.asarray(array2d, dtype=np.float64)
        if data.flags.writeable or data.base is not None and data.base.flags.writeable:
            data = data.copy()  # the caller may keep mutating theirs (a read-only result is kept as it is)
        if data.ndim != 2:
            raise ValueError(f"A heatmap shows a 2-D matrix, but got an array of shape {data.shape}.")
        n, m = data.shape
        raw_rows = self._check_labels(row_labels, n, "row")
        raw_cols = self._check_labels(col_labels, m, "column")
        # byte-level BPE tokens ("Ġthe") are shown as a reader reads them ("␣the"); the raw ones stay in the status
        rows, cols = readable_tokens(raw_rows), readable_tokens(raw_cols)
        data.flags.writeable = False
        if not self._built:  # kept for build(); what a script reads back is there at once
            self._data, self._row_labels, self._col_labels = data, rows, cols
            self._raw_labels = (raw_rows, raw_cols)
            self._unbuilt_data = (data, raw_rows, raw_cols)
            return
        # Most updates are new numbers in the same frame: only relayout when the shape or labels change,
        # since every axis change repaints the axis from scratch (the main cost of a redraw).
        relayout = data.shape != self._data.shape or rows != self._row_labels or cols != self._col_labels
        big = data.size > LOD_CELLS
        if (
            not relayout
            and data.size
            and (data is self._data or not big and np.array_equal(data, self._data, equal_nan=True))
        ):
            return  # the same picture (K and V when W_Q changed, say): no redraw, no repaint
        self._data, self._row_labels, self._col_labels = data, rows, cols
        self._raw_labels = (raw_rows, raw_cols)
        self._generation += 1  # whatever is being prepared for the previous data is stale now
        self._overview = None
        if big:
            # Nothing proportional to n × m on the GUI thread: the picture is prepared in the background
            # (_apply_prepared draws it); the axes, frame and labels follow now.
            self._labels.set_cells(data, _no_dark_text)
            self._request()
            self._after_set_data(n, m, relayout)
            return
        self._preparing = False
        self._set_cell_transform(1, 1, 0, 0)

        finite = np.isfinite(data)
        all_finite = bool(finite.all())
        image = data.astype(np.float32)  # [n, m]
        if not all_finite:
            image[~finite] = np.nan  # NaN is painted transparent, over the masked-cell hatching
        lo, hi = self._fixed_levels(data if all_finite else data[finite])
        if data.size:
            self._image.setImage(image, autoLevels=False, levels=(lo, hi))
        else:
            self._image.clear()
        self._set_levels(lo, hi)
        self._masked.set_mask(None if all_finite else ~finite, (n, m))
        self._labels.set_cells(data, partial(self._dark_text, lo=lo, hi=hi))
        self._after_set_data(n, m, relayout)

    def _set_levels(self, lo: float, hi: float) -> None:
        if (lo, hi) != self._bar_levels:
            self._bar_levels = (lo, hi)
            self._image.setLevels((lo, hi))
            if self._bar is not None:
                self._bar.set_levels(lo, hi)

    def _after_set_data(self, n: int, m: int, relayout: bool) -> None:
        if relayout:
            if (n, m) != self._image_shape:
                self._image_shape = (n, m)
                self._zoom = None  # a new shape: show all of it
                self._set_limits()
            self._highlights.set_shape((n, m))
            self._set_fixed_axis_space()
            self._frame.setRect(QRectF(0.0, 0.0, m, n))
            self._frame.setVisible(n * m > 0)
            self._fit_range()
            self._update_ticks()
        if self._hover != (-1, -1) and not (self._hover[0] < n and self._hover[1] < m):
            self._hover = (-1, -1)
            self.cell_hovered.emit(-1, -1)

    # ------------------------------------------------------------------------------------- big matrices (LOD)

    def preparing(self) -> bool:
        """True while the picture of a big matrix is being prepared in the background."""
        return self._preparing

    def _request(self, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> None:
        """Prepare the image of the data (or of rows × cols of it) in the background; _apply_prepared draws it."""
        self._generation += 1
        generation, data, kind = self._generation, self._data, self._kind
        self._preparing = True

        def task() -> Prepared | None:
            if generation != self._generation:
                return None  # stale before it started: skip the work
            return prepare(data, kind, rows, cols)

        def deliver(future) -> None:
            try:
                prepared = None if future.cancelled() or future.exception() else future.result()
                self._relay.ready.emit(generation, prepared)  # queued to the GUI thread
            except RuntimeError:
                pass  # the view is gone

        _preparer().submit(task).add_done_callback(deliver)

    def _apply_prepared(self, generation: int, prepared: Prepared | None) -> None:
        if self._closed or generation != self._generation:
            return
        self._preparing = False
        if prepared is None:
            return
        if (
            prepared.origin == (0, 0)
            and prepared.image.shape[0] * prepared.factor[0] >= self._data.shape[0]
            and prepared.image.shape[1] * prepared.factor[1] >= self._data.shape[1]
        ):
            self._overview = prepared
        self._show(prepared)
        self._refine()  # zoomed in meanwhile? then the part in view at full resolution follows

    def _show(self, p: Prepared) -> None:
        self._image.setImage(p.image, autoLevels=False, levels=p.levels)
        self._set_levels(*p.levels)
        self._set_cell_transform(*p.factor, *p.origin)
        self._masked.set_mask(p.masked if p.masked.any() else None, p.image.shape)

    def _set_cell_transform(self, fy: int, fx: int, r0: int, c0: int) -> None:
        """Place an image whose pixel is fy × fx cells, its top-left at cell (r0, c0); the cell-level items
        (numbers, highlights, frame) keep cell coordinates whatever the image's resolution."""
        if (fy, fx, r0, c0) == self._shown:
            return
        self._shown = (fy, fx, r0, c0)
        self._image.setTransform(QTransform(fx, 0.0, 0.0, fy, c0 - 0.5, r0 - 0.5))
        to_pixels = QTransform(1.0 / fx, 0.0, 0.0, 1.0 / fy, -c0 / fx, -r0 / fy)
        for item in (self._labels, self._highlights, self._frame):
            item.setTransform(to_pixels)

    def _refine(self, *_args) -> None:
        """Zoomed in on a big matrix: draw the cells in view (and a margin) at full resolution; zoomed out: the
        level-of-detail overview."""
        if self._closed or self._overview is None or self._data.size <= LOD_CELLS:
            return
        n, m = self._data.shape
        (x0, x1), (y0, y1) = self._plot.vb.viewRange()
        rows = (max(0, math.floor(y0 + 0.5)), min(n, math.ceil(y1 + 0.5)))
        cols = (max(0, math.floor(x0 + 0.5)), min(m, math.ceil(x1 + 0.5)))
        need = max(1, -(-max(rows[1] - rows[0], cols[1] - cols[0]) // LOD_SIDE))
        if need >= max(self._overview.factor):  # the overview is as fine as this zoom can show
            if self._shown != (*self._overview.factor, 0, 0):
                self._generation += 1
                self._preparing = False
                self._show(self._overview)
            return
        fy, fx, r0, c0 = self._shown
        shown_rows = (r0, r0 + self._image.image.shape[0] * fy) if self._image.image is not None else (0, 0)
        shown_cols = (c0, c0 + self._image.image.shape[1] * fx) if self._image.image is not None else (0, 0)
        if (
            max(fy, fx) <= need
            and shown_rows[0] <= rows[0]
            and rows[1] <= shown_rows[1]
            and shown_cols[0] <= cols[0]
            and cols[1] <= shown_cols[1]
        ):
            return  # what is on screen already covers the view at least as finely as needed
        # A margin of half the view on every side, so small pans need nothing new.
        dr, dc = (rows[1] - rows[0]) // 2, (cols[1] - cols[0]) // 2
        self._request((max(0, rows[0] - dr), min(n, rows[1] + dr)), (max(0, cols[0] - dc), min(m, cols[1] + dc)))

    def data(self) -> np.ndarray:
        """The last array given to set_data, as float64 (read-only)."""
        return self._data

    def image_array(self) -> np.ndarray | None:
        """Exactly what the ImageItem holds: float32 (n, m), NaN at masked cells (None before any non-empty data).

        For a matrix of more than LOD_CELLS cells: the level-of-detail image (see level_of_detail), or the part in
        view at full resolution when zoomed in, once prepared (see preparing())."""
        return self._image.image

    def levels(self) -> tuple[float, float]:
        """The colour levels (low, high) the image is drawn with."""
        levels = self._image.getLevels()
        if levels is None:
            levels = self._bar_levels or (0.0, 1.0)
        lo, hi = levels
        return float(lo), float(hi)

    def kind(self) -> str:
        return self._kind

    def row_labels(self) -> list[str]:
        return list(self._row_labels)

    def col_labels(self) -> list[str]:
        return list(self._col_labels)

    def shown_ticks(self) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """The (position, text) ticks currently on the row (left) and column (top) axes."""
        return list(self._shown_ticks[0]), list(self._shown_ticks[1])

    def set_title(self, text: str) -> None:
        """The text above the figure, e.g. "scores = Q·Kᵀ\nhead 1 · 5 × 7"; each line elided if the view is narrow."""
        if text != self._title:
            self._title = text
            self._update_title()

    def title(self) -> str:
        return self._title

    # ------------------------------------------------------------------------------------------------- highlights

    def highlight(
        self,
        rows: int | Iterable[int] | None = None,
        cols: int | Iterable[int] | None = None,
        cell: tuple[int, int] | None = None,
    ) -> None:
        """Outline whole rows, whole columns and/or one cell (i, j); call with no arguments to clear."""
        if self._closed:
            return
        wanted = (_as_index_set(rows), _as_index_set(cols), None if cell is None else (int(cell[0]), int(cell[1])))
        if not self._built:
            self._unbuilt_highlight = wanted
            return
        self._highlights.set_highlight(*wanted)

    def highlighted(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int] | None]:
        """The (rows, cols, cell) currently outlined."""
        return self._highlights.highlighted() if self._built else self._unbuilt_highlight

    # ------------------------------------------------------------------------------------------------ inspection

    def cell_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        """The (i, j) of the cell under a scene position, or None outside the image."""
        if self._closed or not self._data.size:
            return None
        p = self._highlights.mapFromScene(scene_pos)  # cell coordinates: cell (i, j) is [j, j+1] × [i, i+1]
        i, j = math.floor(p.y()), math.floor(p.x())
        n, m = self._data.shape
        return (i, j) if 0 <= i < n and 0 <= j < m else None

    def cell_scene_center(self, i: int, j: int) -> QPointF:
        """The scene position of the centre of cell (i, j) (view coordinates (x=j, y=i))."""
        return self._plot.vb.mapViewToScene(QPointF(j, i))

    def labels_visible(self) -> bool:
        """Whether cell numbers are drawn at the current size and zoom (≤ 32 × 32 cells in view, each at least
        MIN_LABEL_CELL_PX screen pixels wide)."""
        i0, i1, j0, j1 = self.visible_cells()
        return _labels_fit(i1 - i0, j1 - j0, self._cell_px())

    # ------------------------------------------------------------------------------------------- zoom and pan

    def visible_cells(self) -> tuple[int, int, int, int]:
        """(first row, end row, first column, end column), half-open: the cells at least partly in view.

        The whole matrix unless zoomed in; what a level-of-detail renderer needs to draw (see visible_changed)."""
        n, m = self._data.shape
        (x0, x1), (y0, y1) = self._plot.vb.viewRange()
        i0, i1 = max(0, math.floor(y0 + 0.5)), min(n, math.ceil(y1 + 0.5))
        j0, j1 = max(0, math.floor(x0 + 0.5)), min(m, math.ceil(x1 + 0.5))
        return (i0, max(i0, i1), j0, max(j0, j1))

    def set_context(self, on: bool) -> None:
        """Shown small as context beside a focused view: the picture, its title and colour bar, no tick labels
        (the status line and tooltip still name the cell under the mouse)."""
        if on == self._context or self._compact or self._closed:
            return
        self._context = on
        if on:
            self._cols_rotated = False
        if not self._built:  # build() lays it out so
            return
        self._plot.showAxes((True, True, False, False), showValues=(not on, not on, False, False))
        self._set_fixed_axis_space()
        self._shown_ticks = ([], [])
        self._update_ticks()
        self._fit_range()

    def is_zoomed(self) -> bool:
        return self._zoom is not None

    def zoom_to(self, rows: tuple[float, float], cols: tuple[float, float]) -> None:
        """Show the cells rows[0] ≤ i < rows[1], cols[0] ≤ j < cols[1] (square cells: the larger span wins)."""
        vb = self._plot.vb
        n, m = self._data.shape
        if not (n and m) or vb.width() < 1 or vb.height() < 1:
            return
        span_r, span_c = max(rows[1] - rows[0], 1.0), max(cols[1] - cols[0], 1.0)
        cell = min(vb.width() / span_c, vb.height() / span_r)
        self._set_zoom(cols[0] - 0.5, rows[0] - 0.5, cell)

    def zoom_by(self, factor: float, about: tuple[float, float] | None = None) -> None:
        """Zoom in (factor > 1) or out about a cell position (i, j) (the centre of the view by default)."""
        vb = self._plot.vb
        if vb.width() < 1 or vb.height() < 1 or not self._data.size:
            return
        (x0, x1), (y0, y1) = vb.viewRange()
        cy, cx = about if about is not None else ((y0 + y1) / 2, (x0 + x1) / 2)
        cell = self._cell_px() * factor
        self._set_zoom(cx - (cx - x0) / factor, cy - (cy - y0) / factor, cell)

    def reset_zoom(self) -> None:
        """Show the whole matrix again."""
        was = self._zoom is not None
        self._zoom = None
        self._set_limits()
        self._fit_range()
        if was:
            self.zoomed_changed.emit(False)

    def _set_limits(self) -> None:
        """Zoomed in, a drag or wheel turn stays inside the matrix; in the overview no limit may bend the square
        cells (the view box can be wider than the matrix while the layout settles)."""
        n, m = (max(k, 1) for k in self._data.shape)
        vb = self._plot.vb
        if self._zoom is None:
            vb.setLimits(xMin=None, xMax=None, yMin=None, yMax=None, minXRange=None, minYRange=None)
        else:
            vb.setLimits(xMin=-0.5, xMax=m - 0.5, yMin=-0.5, yMax=n - 0.5, minXRange=min(1.0, m), minYRange=min(1.0, n))

    def _set_zoom(self, x0: float, y0: float, cell: float) -> None:
        n, m = self._data.shape
        vb = self._plot.vb
        fit = min(vb.width() / m, vb.height() / n)
        if cell <= fit * 1.0001:  # zoomed out to (or past) the whole matrix: that is the overview
            self.reset_zoom()
            return
        # Keep the view inside the matrix.
        w, h = vb.width() / cell, vb.height() / cell
        x0 = min(max(x0, -0.5), max(-0.5, m - 0.5 - w))
        y0 = min(max(y0, -0.5), max(-0.5, n - 0.5 - h))
        was = self._zoom is not None
        self._zoom = (x0, y0, cell)
        if not was:
            self._set_limits()
        self._fit_range()
        if not was:
            self.zoomed_changed.emit(True)

    def _on_user_zoom(self, *_args) -> None:
        """A wheel turn or drag in the view box: remember it as the user's zoom (top-left corner and cell size)."""
        vb = self._plot.vb
        (x0, x1), (y0, y1) = vb.viewRange()
        if x1 <= x0 or vb.width() < 1:
            return
        self._set_zoom(x0, y0, vb.width() / (x1 - x0))

    def _on_range_changed(self, *_args) -> None:
        visible = self.visible_cells()
        if visible != self._visible:
            self._visible = visible
            self._labels.set_in_view(visible[1] - visible[0], visible[3] - visible[2])
            self.visible_changed.emit(*visible)

    def describe_cell(self, i: int, j: int) -> str:
        """What the status line says about cell (i, j): its row and column, named in full, and its value."""
        n, m = self._data.shape
        if not (0 <= i < n and 0 <= j < m):
            return ""
        raw_rows, raw_cols = self._raw_labels

        def named(k: int, shown: list[str], raw: list[str]) -> str:
            text = tagged(k, shown[k])
            return text if k >= len(raw) or raw[k] == shown[k] else f"{text} (token {raw[k]!r})"

        return (
            f"row {named(i, self._row_labels, raw_rows)} · column {named(j, self._col_labels, raw_cols)} = "
            f"{format_number(float(self._data[i, j]), 'cell')}"
        )

    def plot_item(self) -> pg.PlotItem:
        """The PlotItem holding the image (its ViewBox maps view coordinates: cell (i, j) at (x=j, y=i))."""
        return self._plot

    def graphics_widget(self) -> pg.GraphicsLayoutWidget:
        """The GraphicsLayoutWidget; its scene() holds the whole figure (title, axes, image, numbers, colour bar)."""
        return self._glw

    def close_views(self) -> None:
        """Release the pyqtgraph scene now; call before the application exits (Python 3.11 can crash otherwise).

        Idempotent, and also run by closeEvent. The view is inert afterwards: set_data and highlight do nothing.
        """
        if self._closed:
            return
        self._closed = True
        if not self._built:
            return  # nothing was made
        scene = self._glw.scene()
        scene.sigMouseMoved.disconnect(self._on_mouse_moved)
        scene.sigMouseClicked.disconnect(self._on_mouse_clicked)
        self._glw.ci.geometryChanged.disconnect(self._fit_range)
        self._plot.geometryChanged.disconnect(self._fit_range)
        self._plot.vb.sigResized.disconnect(self._fit_range)
        self._plot.vb.sigTransformChanged.disconnect(self._update_ticks)
        self._plot.vb.sigRangeChanged.disconnect(self._refine)
        self._generation += 1
        self._plot.vb.sigRangeChangedManually.disconnect(self._on_user_zoom)
        self._plot.vb.sigRangeChanged.disconnect(self._on_range_changed)
        self._glw.close()

    # ------------------------------------------------------------------------------------------------- Qt events

    def sizeHint(self) -> QSize:
        return QSize(320, 250)  # four across and three down fill a 1280 × 800 window

    def minimumSizeHint(self) -> QSize:
        return QSize(160, 140)

    def closeEvent(self, event) -> None:
        self.close_views()
        super().closeEvent(event)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        key = event.key()
        if key in (Qt.Key.Key_Home, Qt.Key.Key_0):
            self.reset_zoom()
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(1.5)
        elif key == Qt.Key.Key_Minus:
            self.zoom_by(1 / 1.5)
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def event(self, event) -> bool:
        """The tooltip names the cell under the cursor in full (long labels are elided on the axes)."""
        if event.type() == QEvent.Type.ToolTip and self._hover != (-1, -1):
            base = self.toolTip()
            text = self.describe_cell(*self._hover)
            QToolTip.showText(event.globalPos(), f"{text}\n\n{base}" if base else text, self)
            return True
        return super().event(event)

    def leaveEvent(self, event) -> None:
        self._set_hover(None)
        super().leaveEvent(event)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if not self._built:
            return  # paintEvent elides the title for the new width
        self._update_title()
        # The layout was fitted to the scene before the title was re-elided for the new width: fit it again,
        # or a title that was one long line keeps the layout (and the picture) wider than the view.
        if not self._closed and self._glw.ci.geometry().width() > self._glw.width() + 0.5:
            self._glw.ci.setGeometry(QRectF(0.0, 0.0, self._glw.width(), self._glw.height()))

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and not self._closed and self._built:
            self._apply_palette()

    # -------------------------------------------------------------------------------------------------- internals

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        self._set_hover(self.cell_at(scene_pos))

    def _on_mouse_clicked(self, event) -> None:
        if event.button() == Qt.MouseButton.RightButton:
            self._show_menu(event.screenPos().toPoint())
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if event.double():
            self.double_clicked.emit()
            return
        self.clicked.emit()
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            self.cell_clicked.emit(*cell)

    def _show_menu(self, at) -> None:
        menu = QMenu(self)
        menu.addAction("Zoom in", lambda: self.zoom_by(2.0))
        menu.addAction("Zoom out", lambda: self.zoom_by(0.5))
        reset = menu.addAction("Reset zoom  (Home)", self.reset_zoom)
        reset.setEnabled(self._zoom is not None)
        self.context_menu_about_to_show(menu)
        menu.exec(at)

    def context_menu_about_to_show(self, menu: QMenu) -> None:
        """Add entries to the right-click menu (the window adds "Focus this view")."""
        for hook in self.menu_hooks:
            hook(self, menu)

    def _set_hover(self, cell: tuple[int, int] | None) -> None:
        cell = (-1, -1) if cell is None else cell
        if cell != self._hover:
            self._hover = cell
            self.cell_hovered.emit(*cell)

    def _fixed_levels(self, data: np.ndarray) -> tuple[float, float]:
        if self._kind == "weights":
            return 0.0, 1.0
        # data: the finite values only (any shape)
        m = nice_ceiling(float(max(data.max(initial=0.0), -data.min(initial=0.0)))) if data.size else 0.0
        return (-m, m) if m > 0 else (-1.0, 1.0)

    def _dark_text(self, data: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """[n, m] bool for a block of cells: whether black text reads better than white on each cell's colour
        (WCAG luminance). Asked at paint time for the cells in view only (at most 32 × 32)."""
        finite = np.isfinite(data)
        t = np.clip((np.where(finite, data, lo) - lo) / (hi - lo), 0.0, 1.0)
        return self._dark_lut[np.rint(t * (len(self._lut) - 1)).astype(np.intp)] & finite

    @staticmethod
    def _lut_wants_dark_text(lut: np.ndarray) -> np.ndarray:
        """[256] bool per colour of the look-up table: black text reads better than white on it."""
        rgb = lut / 255.0
        linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
        # Black beats white in contrast above L ≈ 0.179 ((L + 0.05) / 0.05 > 1.05 / (L + 0.05)). Masked cells are
        # a tie on plain grey; their dark hatching tips it to white.
        return luminance > 0.179

    @staticmethod
    def _check_labels(labels: list[str] | None, count: int, what: str) -> list[str]:
        if labels is None:
            return [str(k) for k in range(count)]
        labels = [str(label) for label in labels]
        if len(labels) != count:
            raise ValueError(f"Got {len(labels)} {what} labels for a matrix with {count} {what}s.")
        return labels

    def _fit_range(self, *_args) -> None:
        """Show the whole matrix with square cells (stretched ones for a matrix more than MAX_SQUARE_ASPECT times
        wider than tall, or taller than wide), and shrink the plot so its view box is exactly the image.

        ViewBox.setAspectLocked would letterbox the image inside the view box, leaving gaps between the cells and
        their tick labels or the colour bar. Capping the plot's maximum size instead makes it hug the image, and
        the layout centres it. (Layout margins would do the same but raise the minimum size, which then overflows
        the widget when it shrinks.) Runs on every geometry change; once settled it changes nothing.
        """
        if self._closed:
            return
        try:
            self._fit_range_now()
        except RuntimeError:  # the scene is being torn down (a view nobody closed, at exit): a queued resize
            return  # of a layout Qt has already deleted; nothing is left to fit

    def _fit_range_now(self) -> None:
        n, m = (max(k, 1) for k in self._data.shape)
        vb, ci = self._plot.vb, self._glw.ci
        left, _, right, bottom = ci.layout.getContentsMargins()
        plot = self._plot.geometry()  # in the layout, below the title row
        # The plot's fixed parts (row labels, colour bar; column labels): all but the view box's column and row,
        # which the top and left axes span exactly.
        fixed_w = plot.width() - self._plot.getAxis("top").geometry().width()
        fixed_h = plot.height() - self._plot.getAxis("left").geometry().height()
        width = ci.geometry().width() - left - right - fixed_w
        height = ci.geometry().height() - bottom - plot.top() - fixed_h
        # A long thin matrix (13 × 384) would be a hairline with square cells: let its cells stretch instead
        # (until zoomed: a zoomed view has square cells).
        stretch = max(m / n, n / m) > MAX_SQUARE_ASPECT and self._zoom is None
        if width >= 1 and height >= 1:
            cell = min(width / m, height / n)  # pixels per cell
            cell_w, cell_h = (width / m, height / n) if stretch else (cell, cell)
            size = QSizeF(fixed_w + cell_w * m, fixed_h + cell_h * n)
            current = self._plot.maximumSize()
            if abs(size.width() - current.width()) > 0.5 or abs(size.height() - current.height()) > 0.5:
                self._plot.setMaximumSize(size)
        if vb.width() < 1 or vb.height() < 1:  # not laid out yet
            vb.setRange(QRectF(-0.5, -0.5, m, n), padding=0.0)
            return
        if self._zoom is not None:  # the user's zoom: same corner, same cells per pixel, whatever the size
            x0, y0, cell = self._zoom
            vb.setRange(xRange=(x0, x0 + vb.width() / cell), yRange=(y0, y0 + vb.height() / cell), padding=0.0)
            return
        if stretch:
            vb.setRange(QRectF(-0.5, -0.5, m, n), padding=0.0)
            return
        # Anchored top-left, so cells are square even while the layout is still settling.
        cell = min(vb.width() / m, vb.height() / n)
        vb.setRange(xRange=(-0.5, -0.5 + vb.width() / cell), yRange=(-0.5, -0.5 + vb.height() / cell), padding=0.0)

    def _cell_px(self) -> float:
        """Screen pixels per cell (cells are square: _fit_range keeps them so)."""
        px, py = self._plot.vb.viewPixelSize()
        return 1.0 / max(px, py) if px > 0 and py > 0 else 0.0

    @staticmethod
    def _elide(label: str) -> str:
        return label if len(label) <= MAX_TICK_CHARS else label[: MAX_TICK_CHARS - 1] + "…"

    def _per_labels(self, what: str, labels: list[str], compute):
        """compute(labels), once per label list and tick font: a pan or zoom step never walks 4,096 labels."""
        key = (what, id(labels), self._tick_font.key())
        hit = self._label_memo.get(key)
        if hit is not None and hit[0] is labels:  # set_data keeps its own copy of the labels: never mutated
            return hit[1]
        if len(self._label_memo) > 8:
            self._label_memo.clear()
        value = compute(labels)
        self._label_memo[key] = (labels, value)
        return value

    def _widest(self, labels: list[str]) -> float:
        """The width of the widest (elided) label in the tick font."""
        fm = QFontMetricsF(self._tick_font)
        return self._per_labels(
            "widest", labels, lambda ls: max((fm.horizontalAdvance(self._elide(s)) for s in ls), default=0.0)
        )

    def _set_fixed_axis_space(self) -> None:
        # Axis sizes come from all labels, not the ones shown, so thinning ticks never resizes the view
        # (which would re-trigger the thinning: a layout feedback loop).
        if self._compact or self._context:
            self._plot.getAxis("left").setWidth(1)
            self._plot.getAxis("top").setHeight(1)
            return
        fm = QFontMetricsF(self._tick_font)
        tag = fm.horizontalAdvance(tagged(len(self._row_labels) - 1, ""))  # room for "27:" when thinned
        widest = self._widest(self._row_labels) + tag
        self._plot.getAxis("left").setWidth(int(math.ceil(widest)) + 10)
        self._set_top_axis_space()

    def _set_top_axis_space(self) -> None:
        fm = QFontMetricsF(self._tick_font)
        axis = self._plot.getAxis("top")
        axis.rotated = self._cols_rotated
        if self._cols_rotated:  # upright labels are one per column, never thinned: no room for a "27:" tag
            widest = self._widest(self._col_labels)
            axis.setHeight(int(math.ceil(widest)) + 8)
        else:
            axis.setHeight(int(math.ceil(fm.height())) + 8)
        axis.picture = None  # redraw with the new orientation
        axis.update()

    def _update_ticks(self, *_args) -> None:
        if self._closed:
            return
        try:
            self._update_ticks_now()
        except RuntimeError:  # torn down at exit, as in _fit_range
            return

    def _update_ticks_now(self) -> None:
        fm = QFontMetricsF(self._tick_font)
        px, py = self._plot.vb.viewPixelSize()  # view units per screen pixel, per axis (cells may be stretched)
        cell_w, cell_h = (1.0 / px if px > 0 else 0.0), (1.0 / py if py > 0 else 0.0)

        i0, i1, j0, j1 = self.visible_cells()

        def ticks(labels: list[str], first: int, end: int, space_px: float, cell_px: float) -> list[tuple[int, str]]:
            # Thinned by position: every stride-th cell in view, named with its position ("3:the"), so a label
            # never stands for the cells between it and the next one. Not thinned: the plain labels.
            n = end - first
            stride = math.ceil(n / MAX_TICKS) if n > MAX_TICKS else 1
            if cell_px > 0:  # and thin further until neighbouring labels stop overlapping
                stride = max(stride, math.ceil(space_px / cell_px))
            if stride <= 1 or self._per_labels("names position", labels, _names_position):
                return [(k, self._elide(labels[k])) for k in range(first, end, stride)]
            start = -(-first // stride) * stride  # multiples of the stride stay put while panning
            return [(k, tagged(k, self._elide(labels[k]))) for k in range(start, end, stride)]

        tag = fm.horizontalAdvance(tagged(len(self._col_labels) - 1, ""))
        widest_col = self._widest(self._col_labels)
        if not (self._compact or self._context) and cell_w > 0:
            # Upright column labels when the words are wider than the columns; back to flat only with room to
            # spare, so the axis's own change of height cannot flip it back and forth.
            # Only when upright labels then fit one per column (else flat labels thinned by position read better),
            # with a margin both ways for the same reason.
            upright = fm.height() + 2
            if not self._cols_rotated:
                rotate = widest_col + 6 > cell_w and cell_w >= upright
            else:
                rotate = widest_col + 6 > cell_w * 0.8 and cell_w >= upright * 0.75
            if rotate != self._cols_rotated:
                self._cols_rotated = rotate
                self._set_top_axis_space()
        col_space = fm.height() + 2 if self._cols_rotated else widest_col + tag + 6
        shown = (
            ticks(self._row_labels, i0, i1, fm.height(), cell_h),
            ticks(self._col_labels, j0, j1, col_space, cell_w),
        )
        if shown != self._shown_ticks:
            self._shown_ticks = shown
            self._plot.getAxis("left").setTicks([shown[0], []])
            self._plot.getAxis("top").setTicks([shown[1], []])

    def _title_lines(self) -> tuple[QFont, list[str]]:
        """The title's font and lines as shown at the view's width: one line per line of the title (formula, then
        head and shape), each elided on its own, or all on one line when it fits."""
        font = QFont(self.font())
        font.setPointSizeF(9.0)
        available = max(40, self.width() - (6 if self._compact else 16))  # thumbnails: 'head 12' fits in 60 px
        metrics = QFontMetricsF(font)
        parts = self._title.split("\n")
        one_line = "  ·  ".join(parts)
        if len(parts) > 1 and metrics.horizontalAdvance(one_line) <= available:
            parts = [one_line]  # wide enough: one line, and the height goes to the cells
        return font, [metrics.elidedText(line, Qt.TextElideMode.ElideRight, available) for line in parts]

    def _update_title(self) -> None:
        if self._closed:
            return
        if not self._built:
            self.update()  # paintEvent draws it
            return
        _, lines = self._title_lines()
        # The label is HTML: escape tokens like "<pad>", and keep the caller's double spaces between parts.
        markup = "<br>".join(html.escape(line).replace("  ", "&nbsp; ") for line in lines)
        self._title_item.setText(markup, size="9pt", color=self._fg)

    def set_background(self, colour: QColor | None) -> None:
        """The figure's background (None: the palette's window colour), e.g. a head thumbnail's group tint."""
        self._background = None if colour is None else QColor(colour)
        if self._built:
            self._glw.setBackground(self._background_colour())
        else:
            self.update()

    def background(self) -> QColor:
        """The colour the figure is drawn on."""
        return self._background_colour()

    def _background_colour(self) -> QColor:
        return self._background or self.palette().color(QPalette.ColorRole.Window)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Before its figure is built, a lazy view shows its background and its title where the figure's title
        will be (the figure covers the whole view once built)."""
        if self._built:
            super().paintEvent(event)
            return
        painter = QPainter(self)
        painter.fillRect(self.rect(), self._background_colour())
        font, lines = self._title_lines()
        painter.setFont(font)
        painter.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        metrics = QFontMetricsF(font)
        top = TITLE_TOP_PX
        for line in lines:
            painter.drawText(QRectF(0.0, top, self.width(), metrics.height()), Qt.AlignmentFlag.AlignHCenter, line)
            top += metrics.lineSpacing()
        painter.end()

    def _apply_palette(self) -> None:
        """Follow the application's palette (light or dark) instead of pyqtgraph's global black background."""
        palette = self.palette()
        self._fg = palette.color(QPalette.ColorRole.WindowText)
        self._glw.setBackground(self._background_colour())
        for side in ("left", "top"):
            # No axis line, no tick marks: no pen at all (setPen(None) would fall back to the default grey).
            self._plot.getAxis(side).setPen(QPen(Qt.PenStyle.NoPen))
            self._plot.getAxis(side).setTextPen(self._fg)
        if self._bar is not None:
            self._bar.set_pen(self._fg)
        frame_pen = QPen(self._fg, 1.0)
        frame_pen.setCosmetic(True)
        self._frame.setPen(frame_pen)
        self._update_title()
