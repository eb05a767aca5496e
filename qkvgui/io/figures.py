"""Figures: graphics scenes (or parts of them) laid out on one page and written as PNG, SVG or PDF, atomically.

Sizes are in figure pixels at 96 dpi, the unit of the screen: a view 400 pixels wide on screen is 400 px in an SVG,
400 × 72/96 = 300 pt in a PDF, and 400 × scale pixels in a PNG (whose resolution metadata keeps the printed size).
Scenes are rendered with ``QGraphicsScene.render``, never through a widget or pyqtgraph's SVGExporter (broken on
PySide6 6.11+, pyqtgraph #3485), so vector formats keep text as text and every format is scaled exactly once.
"""

from __future__ import annotations

import base64
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMarginsF, QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPageLayout, QPageSize, QPainter, QPdfWriter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QGraphicsScene

from qkvgui.io.atomic import atomic_write

__all__ = ["DPI", "FORMATS", "Panel", "figure_format", "figure_to_image", "render_figure", "write_figure"]

FORMATS = ("png", "svg", "pdf")
#: the image format name for QImage.save/fromData: PySide6 takes a str here, though its stubs say bytes
PNG = cast(bytes, "PNG")
#: figure pixels per inch: the screen's logical resolution, so exported sizes equal on-screen sizes
DPI = 96
#: the largest PNG we try to allocate (pixels): beyond it QImage fails, and the file would be useless anyway
MAX_IMAGE_PIXELS = 400_000_000

WHITE = QColor(255, 255, 255)


@dataclass
class Panel:
    """One scene region on the figure: `source` (scene coordinates) is drawn into `target` (figure pixels)."""

    scene: QGraphicsScene
    source: QRectF
    target: QRectF
    background: QColor = field(default_factory=lambda: QColor(WHITE))


def figure_format(path: str | Path, fmt: str | None = None) -> str:
    """The format to write: `fmt` if given, else the file's suffix; anything but png, svg or pdf is a ValueError."""
    name = fmt if fmt is not None else Path(path).suffix
    key = str(name).lower().lstrip(".")
    if key not in FORMATS:
        what = f"format {fmt!r}" if fmt is not None else f"the file name {Path(path).name!r}"
        raise ValueError(
            f"Cannot write a figure in {what}: use one of {', '.join(FORMATS)} "
            f"(e.g. figure.png, figure.svg or figure.pdf)."
        )
    return key


def render_figure(painter: QPainter, panels: Sequence[Panel], size: QSizeF, background: QColor | None = None) -> None:
    """Paint the figure with `painter`, whose coordinates are figure pixels (0, 0)–(size).

    The figure is filled with `background` (white by default), then each panel's target with its own background
    (a pyqtgraph view's background is its brush, not part of its scene), then the panel's scene region, which
    QGraphicsScene.render clips to the target.
    """
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
    # PDF: store images losslessly. Qt's default, JPEG, smears a heatmap's colours between neighbouring cells
    # (a 4 × 12 image has chroma for 2 × 6 blocks), tinting white cells with their neighbours' colours.
    painter.setRenderHint(QPainter.RenderHint.LosslessImageRendering, True)
    painter.fillRect(QRectF(0.0, 0.0, size.width(), size.height()), background or WHITE)
    for panel in panels:
        if panel.target.isEmpty() or panel.source.isEmpty():
            continue
        painter.fillRect(panel.target, panel.background)
        painter.save()
        # Same size in, same size out: IgnoreAspectRatio avoids a sub-pixel letterbox from rounding.
        panel.scene.render(painter, panel.target, panel.source, Qt.AspectRatioMode.IgnoreAspectRatio)
        painter.restore()


def _check(panels: Sequence[Panel], size: QSizeF, scale: float = 1.0) -> None:
    if not (size.width() > 0 and size.height() > 0):
        raise ValueError(f"A figure needs a positive size, not {size.width():g} × {size.height():g} px.")
    if not scale > 0:
        raise ValueError(f"The scale of a figure must be positive, not {scale!r}.")
    if not panels:
        raise ValueError("A figure needs at least one panel to draw.")


def figure_to_image(
    panels: Sequence[Panel], size: QSizeF, scale: float = 2.0, background: QColor | None = None
) -> QImage:
    """The figure as an ARGB32 image of round(scale × size) pixels (for PNG files and the clipboard).

    Its resolution metadata is scale × 96 dpi, so a 2× image prints at the same size as the screen shows it.
    """
    _check(panels, size, scale)
    pixels = QSize(max(1, round(size.width() * scale)), max(1, round(size.height() * scale)))
    if pixels.width() * pixels.height() > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"A {pixels.width()} × {pixels.height()} image is too large to export: use a smaller scale than {scale:g}."
        )
    image = QImage(pixels, QImage.Format.Format_ARGB32)
    if image.isNull():
        raise MemoryError(f"Could not allocate a {pixels.width()} × {pixels.height()} image for the figure.")
    image.fill(background or WHITE)
    # Paint at the screen's 96 dpi: fonts given in points (axis ticks) get their on-screen pixel size, then the
    # painter's scale enlarges everything once. (A 2× dpi while painting would enlarge those fonts twice.)
    image.setDotsPerMeterX(round(DPI / 0.0254))
    image.setDotsPerMeterY(round(DPI / 0.0254))
    painter = QPainter(image)
    try:
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # cells stay crisp squares
        painter.scale(pixels.width() / size.width(), pixels.height() / size.height())
        render_figure(painter, panels, size, background)
    finally:
        painter.end()
    # Only now record the resolution, for viewers and print: scale × 96 dpi, the on-screen physical size.
    image.setDotsPerMeterX(round(DPI * scale / 0.0254))
    image.setDotsPerMeterY(round(DPI * scale / 0.0254))
    return image


def _png_bytes(panels, size, scale, background, title: str) -> bytes:
    image = figure_to_image(panels, size, scale, background)
    if title:
        image.setText("Title", title)
    image.setText("Software", "qkvgui")
    return _to_bytes(lambda buffer: image.save(buffer, PNG), "PNG")


def _paint_on(device, panels, size, background) -> bool:
    """Render the figure onto a paint device (an SVG generator, a PDF writer); False if it cannot be painted."""
    painter = QPainter()
    if not painter.begin(device):
        return False
    try:
        render_figure(painter, panels, size, background)
    finally:
        painter.end()
    return True


def _svg_bytes(panels, size, background, title: str) -> bytes:
    def paint(buffer: QBuffer) -> bool:
        generator = QSvgGenerator()
        generator.setOutputDevice(buffer)
        generator.setResolution(DPI)  # the default is 72, which would make the figure 4/3 too small
        generator.setSize(QSize(round(size.width()), round(size.height())))
        generator.setViewBox(QRectF(0.0, 0.0, size.width(), size.height()))
        generator.setTitle(title or "qkvgui figure")
        generator.setDescription("Made with qkvgui, the attention explorer.")
        return _paint_on(generator, panels, size, background)

    return _portable_svg(_to_bytes(paint, "SVG"), size)


SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
#: embedded images are enlarged to about this many image pixels per figure pixel (see _sharpen_image)...
IMAGE_OVERSAMPLING = 2.0
#: ...up to this many pixels per image, which keeps a 64 × 64 heatmap's SVG small
MAX_SVG_IMAGE_PIXELS = 4_000_000
_MATRIX = re.compile(r"matrix\(([^)]*)\)")


def _portable_svg(data: bytes, size: QSizeF) -> bytes:
    """Qt's SVG, made to look the same in every viewer (browsers, Inkscape, librsvg/pandoc, Illustrator).

    - Qt states the size in millimetres (size / resolution): state it in px, the figure's own unit.
    - Cosmetic (one-pixel) pens become vector-effect="non-scaling-stroke", which librsvg and Illustrator ignore,
      drawing the heatmap's 1 px outline one *cell* wide: give them the width that means 1 px in the figure.
    - Each heatmap is a tiny image (one pixel per cell) scaled up; viewers smooth it into a blur whatever
      image-rendering says (librsvg ignores it). Enlarge the embedded image by repeating pixels, so cells stay
      sharp squares everywhere.
    - Qt drops a pattern brush's transform, so the masked cells' hatching (kept at a fixed pitch on the page by
      its brush transform) comes out scaled up with the heatmap, as grey blocks: see _unscale_patterns.
    - Fills drawn in cell units (masked cells: one rectangle per row) are antialiased edge to edge, leaving pale
      hairlines between rows: render them with crisp edges.
    - Qt names the UI font only (e.g. "Sans Serif", no generic SVG family): add sans-serif as the fallback.
    """
    # Write SVG elements unprefixed, as Qt did (ElementTree's namespace map is global: these two are standard).
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(data)
    root.set("width", f"{size.width():g}px")
    root.set("height", f"{size.height():g}px")
    for group in root.iter(f"{{{SVG_NS}}}g"):
        a, b, c, d = _linear_part(group.get("transform", ""))
        sx, sy = math.hypot(a, b), math.hypot(c, d)
        if group.get("stroke") == "none" and min(sx, sy) > 1.5:
            group.set("shape-rendering", "crispEdges")  # cells filled side by side: no hairline seams between
        for child in group:
            if child.get("vector-effect") == "none":  # the default: says nothing, and some viewers mind it
                del child.attrib["vector-effect"]
            # A stretched group (a heatmap with non-square cells) cannot have a uniform 1 px stroke: scale by the
            # larger factor, so the line is 1 px one way and thinner the other, rather than a cell wide.
            if child.get("vector-effect") == "non-scaling-stroke" and min(sx, sy) > 0:
                del child.attrib["vector-effect"]
                width = float(child.get("stroke-width", group.get("stroke-width", "1")) or 1)
                child.set("stroke-width", f"{width / max(sx, sy):.6g}")
            if child.tag == f"{{{SVG_NS}}}image":
                _sharpen_image(child, sx, sy)
    _unscale_patterns(root)
    for parent in root.iter():  # Qt opens a group per state change, most of them empty: a third of the file
        for empty in [g for g in parent if g.tag == f"{{{SVG_NS}}}g" and len(g) == 0 and not (g.text or "").strip()]:
            parent.remove(empty)
    for element in root.iter():
        family = element.get("font-family")
        if family is not None and "sans-serif" not in family:
            element.set("font-family", f"{family}, sans-serif")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _repeat_pixels(image: QImage, kx: int, ky: int) -> QImage:
    """Each pixel as a kx × ky block, exactly (QImage.scaled's fast mode puts some block edges off by one)."""
    argb = image.convertToFormat(QImage.Format.Format_ARGB32)
    rows = np.frombuffer(argb.constBits(), np.uint8).reshape(argb.height(), argb.bytesPerLine())
    pixels = rows[:, : argb.width() * 4].view(np.uint32)  # [h, w]
    large = np.ascontiguousarray(np.repeat(np.repeat(pixels, ky, axis=0), kx, axis=1))  # [h·ky, w·kx]
    out = QImage(large.data, large.shape[1], large.shape[0], large.shape[1] * 4, QImage.Format.Format_ARGB32)
    return out.copy()  # own the pixels before `large` goes away


def _unscale_patterns(root: ET.Element) -> None:
    """Draw each pattern fill at figure-pixel pitch: a copy of the pattern per scaled group that uses it, with the
    inverse of the group's scale as its patternTransform (what QBrush.setTransform does on screen, PNG and PDF)."""
    defs = root.find(f"{{{SVG_NS}}}defs")
    if defs is None:
        return
    patterns = {p.get("id"): p for p in defs.iter(f"{{{SVG_NS}}}pattern")}
    copies: dict[tuple, str] = {}
    for group in root.iter(f"{{{SVG_NS}}}g"):
        match = re.fullmatch(r"url\(#([^)]+)\)", group.get("fill", ""))
        if not match or match.group(1) not in patterns:
            continue
        a, b, c, d = _linear_part(group.get("transform", ""))
        det = a * d - b * c
        if det == 0 or (a, b, c, d) == (1.0, 0.0, 0.0, 1.0):
            continue
        key = (match.group(1), round(a, 4), round(b, 4), round(c, 4), round(d, 4))
        if key not in copies:
            copy = deepcopy(patterns[match.group(1)])
            copies[key] = f"{match.group(1)}_px{len(copies)}"
            copy.set("id", copies[key])
            copy.set("patternTransform", f"matrix({d / det:.6g},{-b / det:.6g},{-c / det:.6g},{a / det:.6g},0,0)")
            defs.append(copy)
        group.set("fill", f"url(#{copies[key]})")


def _linear_part(transform: str) -> tuple[float, float, float, float]:
    """(m11, m12, m21, m22) of an SVG transform="matrix(a,b,c,d,e,f)" (Qt writes only this form); identity else."""
    match = _MATRIX.fullmatch(transform.strip())
    if not match:
        return 1.0, 0.0, 0.0, 1.0
    values = [float(v) for v in re.split(r"[ ,]+", match.group(1).strip())]
    return (values[0], values[1], values[2], values[3]) if len(values) == 6 else (1.0, 0.0, 0.0, 1.0)


def _sharpen_image(element: ET.Element, sx: float, sy: float) -> None:
    """Replace an embedded PNG shown at (sx, sy) figure pixels per image pixel by a nearest-neighbour enlargement
    of about IMAGE_OVERSAMPLING image pixels per figure pixel; its place and size in the SVG stay the same."""
    key = f"{{{XLINK_NS}}}href"
    href = element.get(key, "")
    prefix = "data:image/png;base64,"
    if not href.startswith(prefix):
        return
    image = QImage.fromData(base64.b64decode(href[len(prefix) :]), PNG)
    if image.isNull():
        return
    # An image drawn into a rectangle (drawImage(rect, image)) is stretched by its width/height attributes too.
    try:
        sx *= float(element.get("width", image.width())) / image.width()
        sy *= float(element.get("height", image.height())) / image.height()
    except ValueError:
        pass
    kx = max(1, math.ceil(sx * IMAGE_OVERSAMPLING))
    ky = max(1, math.ceil(sy * IMAGE_OVERSAMPLING))
    too_big = image.width() * kx * image.height() * ky / MAX_SVG_IMAGE_PIXELS
    if too_big > 1:
        kx = max(1, int(kx / math.sqrt(too_big)))
        ky = max(1, int(ky / math.sqrt(too_big)))
    if kx == ky == 1:
        return
    large = _repeat_pixels(image, kx, ky)
    png = QByteArray()
    buffer = QBuffer(png)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    large.save(buffer, PNG)
    buffer.close()
    element.set(key, prefix + base64.b64encode(bytes(png.data())).decode("ascii"))
    element.set("style", "image-rendering:pixelated")  # browsers: sharp even when zoomed far in


def _pdf_bytes(panels, size, background, title: str) -> bytes:
    def paint(buffer: QBuffer) -> bool:
        writer = QPdfWriter(buffer)
        writer.setResolution(DPI)  # painter units = figure pixels
        points = QSizeF(size.width() * 72 / DPI, size.height() * 72 / DPI)
        # ExactMatch: a size close to A4 or Letter must not snap to it.
        page = QPageSize(points, QPageSize.Unit.Point, "", QPageSize.SizeMatchPolicy.ExactMatch)
        writer.setPageLayout(
            QPageLayout(page, QPageLayout.Orientation.Portrait, QMarginsF(0, 0, 0, 0), QPageLayout.Unit.Point)
        )
        writer.setTitle(title or "qkvgui figure")
        writer.setCreator("qkvgui")
        return _paint_on(writer, panels, size, background)

    return _to_bytes(paint, "PDF")


def _to_bytes(paint: Callable[[QBuffer], bool], what: str) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    ok = paint(buffer)
    buffer.close()
    if not ok or data.isEmpty():
        raise OSError(f"Qt could not render the figure as {what}.")
    return bytes(data.data())


def write_figure(
    path: str | Path,
    panels: Sequence[Panel],
    size: QSizeF,
    fmt: str | None = None,
    scale: float = 2.0,
    title: str = "",
    *,
    background: QColor | None = None,
) -> Path:
    """Write the panels as one figure of `size` figure pixels (96 dpi) to `path`, atomically; return the path.

    fmt: "png", "svg" or "pdf" (default: from the suffix). scale: PNG pixels per figure pixel (vector formats
    ignore it). title: stored in the file's metadata. background: the figure's colour around the panels (white).
    The figure is rendered completely in memory first, then written beside `path` and moved into place, so a
    failure at any point leaves an existing file untouched. Raises ValueError for an unknown format, an empty
    figure or one too large for memory, FileNotFoundError (an OSError) for a missing folder, and OSError when the
    file cannot be written.
    """
    path = Path(path)
    kind = figure_format(path, fmt)
    _check(panels, size, scale)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write the figure {path.name}: the folder {path.parent} does not exist.")
    if kind == "png":
        data = _png_bytes(panels, size, scale, background, title)
    elif kind == "svg":
        data = _svg_bytes(panels, size, background, title)
    else:
        data = _pdf_bytes(panels, size, background, title)
    return atomic_write(path, lambda f: f.write(data))
