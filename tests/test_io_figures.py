"""Figure export, checked as a reader of the files would: sizes, colours where the screen shows them, text that stays
text, one figure for the whole pipeline, and old files that survive a failed export."""

import base64
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPalette
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication, QGraphicsScene

from qkvgui.io import figures
from qkvgui.io.figures import FORMATS, Panel, figure_to_image, write_figure
from qkvgui.ui.figure_export import copy_view_to_clipboard, export_pipeline, export_view, panel_for_view
from qkvgui.ui.heatmap import HeatmapView

SVG = "{http://www.w3.org/2000/svg}"


def pixels(image: QImage) -> np.ndarray:
    """[h, w] uint32 ARGB values of an image."""
    image = image.convertToFormat(QImage.Format.Format_ARGB32)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 4].copy().view(np.uint32)


def rgb_array(image: QImage) -> np.ndarray:
    """[h, w, 3] int red, green, blue."""
    a = pixels(image)
    return np.stack([(a >> 16) & 255, (a >> 8) & 255, a & 255], axis=-1).astype(int)


def distinct_colours(image: QImage) -> int:
    return len(np.unique(pixels(image)))


def rgb(image: QImage, x: float, y: float) -> tuple[int, int, int]:
    c = image.pixelColor(int(x), int(y))
    return c.red(), c.green(), c.blue()


def close(a, b, tolerance=10) -> bool:
    return all(abs(p - q) <= tolerance for p, q in zip(a, b, strict=True))


def cell_point(view, i: int, j: int, within) -> QPoint:
    """A point inside cell (i, j) of a view, in the coordinates of `within` (off-centre: away from its number)."""
    scene_pos = view.cell_scene_center(i, j)
    corner = view.cell_scene_center(i + 1, j + 1)
    scene_pos = scene_pos + (corner - scene_pos) * 0.3
    glw = view.graphics_widget()
    return glw.viewport().mapTo(within, glw.mapFromScene(scene_pos))


def svg_length_px(text: str) -> float:
    """An SVG width or height in CSS pixels (96 dpi), whatever unit it is written in."""
    number, unit = re.fullmatch(r"([0-9.]+)\s*([a-z]*)", text.strip()).groups()
    per_unit = {"": 1.0, "px": 1.0, "pt": 96 / 72, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
    return float(number) * per_unit[unit]


def svg_texts(path) -> list[str]:
    root = ET.parse(path).getroot()
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def media_box(path) -> tuple[float, float]:
    boxes = re.findall(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", path.read_bytes())
    assert len(boxes) == 1, "one page"
    x0, y0, x1, y1 = (float(v) for v in boxes[0])
    return x1 - x0, y1 - y0


# ----------------------------------------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("scale", [1, 2])
def test_png_of_a_view_is_the_view_at_scale_with_its_colours(window, tmp_path, scale):
    view = window.views["weights"]
    size = view.graphics_widget().viewport().size()
    path = export_view(view, tmp_path / "weights.png", scale=scale)

    image = QImage(str(path))
    assert not image.isNull()
    assert (image.width(), image.height()) == (size.width() * scale, size.height() * scale)
    assert distinct_colours(image) > 50  # a heatmap, a colour bar and text, not a blank page
    # printed, a 2× image is as large as the view on screen
    assert image.dotsPerMeterX() == pytest.approx(96 * scale / 0.0254, abs=1)

    screen = view.grab().toImage()
    weights = window.result.weights[window.session.head]
    for i, j in [(0, 0), (1, 1), (5, 0), (5, 4), (0, 5), (3, 2)]:  # strong, medium, weak and zero weights
        p = cell_point(view, i, j, view)
        on_screen = rgb(screen, p.x(), p.y())
        exported = rgb(image, p.x() * scale, p.y() * scale)
        assert close(exported, on_screen), f"cell ({i}, {j}) = {weights[i, j]:.2f}: {exported} vs {on_screen}"
    # and as a whole: brought back to screen size, the figure is the screen up to text antialiasing (an export
    # whose point-sized tick fonts were scaled twice differed by ~15 on average, at 2×)
    shrunk = image.scaled(screen.width(), screen.height(), Qt.AspectRatioMode.IgnoreAspectRatio,
                          Qt.TransformationMode.SmoothTransformation)
    assert np.abs(rgb_array(shrunk) - rgb_array(screen)).mean() < (3 if scale == 1 else 9)
    # the colours are the data's: the strongest cell is much darker than a zero one
    strong, zero = cell_point(view, 0, 0, view), cell_point(view, 0, 5, view)
    assert sum(rgb(image, strong.x() * scale, strong.y() * scale)) < sum(rgb(image, zero.x() * scale,
                                                                                 zero.y() * scale)) - 200


def test_background_of_the_view_is_filled_not_transparent(window, tmp_path):
    view = window.views["q"]
    image = QImage(str(export_view(view, tmp_path / "q.png", scale=1)))
    expected = view.palette().color(view.backgroundRole())
    corner = image.pixelColor(1, image.height() - 2)  # below the image, left of the colour bar: background
    assert corner.alpha() == 255
    assert close((corner.red(), corner.green(), corner.blue()), (expected.red(), expected.green(), expected.blue()), 2)


def test_a_dark_palette_exports_a_dark_background(qtbot, tmp_path):
    view = HeatmapView("weights")
    qtbot.addWidget(view)
    view.resize(300, 240)
    palette = view.palette()
    palette.setColor(QPalette.ColorRole.Window, QColor(32, 32, 32))
    palette.setColor(QPalette.ColorRole.WindowText, QColor(230, 230, 230))
    view.setPalette(palette)
    view.set_data(np.eye(4), list("abcd"), list("abcd"))
    view.set_title("dark")
    view.show()
    qtbot.waitExposed(view)
    image = QImage(str(export_view(view, tmp_path / "dark.png", scale=1)))
    assert rgb(image, 2, image.height() - 2) == (32, 32, 32)
    renderer = QSvgRenderer(str(export_view(view, tmp_path / "dark.svg")))
    svg = QImage(view.width(), view.height(), QImage.Format.Format_ARGB32)
    svg.fill(QColor("white"))
    painter = QPainter(svg)
    renderer.render(painter)
    painter.end()
    assert rgb(svg, 2, svg.height() - 2) == (32, 32, 32)


def test_copy_to_clipboard_puts_a_sharp_image_of_the_view_there(window):
    view = window.views["scores"]
    image = copy_view_to_clipboard(view)
    size = view.graphics_widget().viewport().size()
    assert (image.width(), image.height()) == (2 * size.width(), 2 * size.height())
    pasted = QApplication.clipboard().image()
    assert not pasted.isNull() and pasted.size() == image.size()
    assert distinct_colours(pasted) > 50


# ----------------------------------------------------------------------------------------------------------- SVG


def test_svg_of_a_view_has_its_pixel_size_and_keeps_text_as_text(window, tmp_path):
    view = window.views["weights"]
    size = view.graphics_widget().viewport().size()
    path = export_view(view, tmp_path / "weights.svg")

    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    # 96 dpi: the numbers are the on-screen pixels, not 0.75× of them
    assert svg_length_px(root.get("width")) == pytest.approx(size.width(), abs=0.5)
    assert svg_length_px(root.get("height")) == pytest.approx(size.height(), abs=0.5)
    assert [float(v) for v in root.get("viewBox").split()] == [0, 0, size.width(), size.height()]
    texts = svg_texts(path)
    assert "cat" in texts and "mat" in texts  # token labels
    assert "weights = softmax(masked)" in texts  # the title
    assert "1.00" in texts  # the colour bar's ticks
    # no stroke that only some viewers draw thin (librsvg ignores vector-effect and drew a cell-wide outline)
    assert "vector-effect" not in path.read_text(encoding="utf-8")

    renderer = QSvgRenderer(str(path))
    assert renderer.isValid()
    image = QImage(size.width(), size.height(), QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    assert distinct_colours(image) > 50


def test_svg_heatmap_cells_stay_sharp_squares(window, tmp_path):
    """A heatmap is one tiny image scaled up; the SVG carries it enlarged so no viewer blurs the cells."""
    view = window.views["scores"]
    path = export_view(view, tmp_path / "scores.svg")
    root = ET.parse(path).getroot()
    hrefs = [e.get("{http://www.w3.org/1999/xlink}href") for e in root.iter(f"{SVG}image")]
    images = [QImage.fromData(base64.b64decode(href.split(",", 1)[1])) for href in hrefs]
    n_q, n_k = view.data().shape
    heatmap = [im for im in images if im.width() % n_k == 0 and im.height() % n_q == 0 and im.width() > n_k]
    assert heatmap, f"no enlarged {n_q} × {n_k} heatmap image among {[im.size() for im in images]}"
    im = heatmap[0]
    k = im.width() // n_k
    assert im.height() // n_q == k  # square cells
    a = pixels(im)
    for i in range(n_q):
        for j in range(n_k):
            cell = a[i * k:(i + 1) * k, j * k:(j + 1) * k]
            assert (cell == cell[0, 0]).all(), f"cell ({i}, {j}) is not one flat colour"


@pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="librsvg's rsvg-convert is not installed")
def test_svg_renders_in_librsvg_like_on_screen(window, tmp_path):
    view = window.views["weights"]
    path = export_view(view, tmp_path / "weights.svg")
    out = tmp_path / "weights_rsvg.png"
    subprocess.run(["rsvg-convert", str(path), "-o", str(out)], check=True, capture_output=True)
    image, screen = QImage(str(out)), view.grab().toImage()
    assert image.size() == screen.size()
    for i, j in [(0, 0), (2, 1), (5, 5)]:
        p = cell_point(view, i, j, view)
        assert close(rgb(image, p.x(), p.y()), rgb(screen, p.x(), p.y()), 12), (i, j)


# ----------------------------------------------------------------------------------------------------------- PDF


def test_pdf_of_a_view_is_one_page_of_its_size_in_points(window, tmp_path):
    view = window.views["weights"]
    size = view.graphics_widget().viewport().size()
    path = export_view(view, tmp_path / "weights.pdf")

    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    # heatmaps stored losslessly: JPEG (Qt's default) tints each cell with its neighbours' colours
    assert b"/DCTDecode" not in data
    width_pt, height_pt = media_box(path)
    # 96 dpi: px × 72/96 points (Qt rounds a page to whole points)
    assert width_pt == pytest.approx(size.width() * 72 / 96, abs=1)
    assert height_pt == pytest.approx(size.height() * 72 / 96, abs=1)

    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler's pdftoppm is not installed: the page itself was not looked at")
    subprocess.run(["pdftoppm", "-png", "-r", "96", "-f", "1", "-l", "1", "-singlefile", str(path),
                    str(tmp_path / "page")], check=True, capture_output=True)
    page = QImage(str(tmp_path / "page.png"))
    assert abs(page.width() - size.width()) <= 2 and abs(page.height() - size.height()) <= 2
    assert distinct_colours(page) > 50
    screen = view.grab().toImage()
    for i, j in [(0, 0), (2, 1), (5, 0), (5, 5), (0, 5)]:
        p = cell_point(view, i, j, view)
        assert close(rgb(page, p.x(), p.y()), rgb(screen, p.x(), p.y()), 6), (i, j)
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
        assert "cat" in text and "softmax" in text  # text stays text


# ------------------------------------------------------------------------------------------------------ pipeline


def test_pipeline_png_is_one_figure_with_every_view_where_it_sits(window, tmp_path):
    pipeline = window.pipeline
    path = export_pipeline(pipeline, tmp_path / "pipeline.png", scale=2)
    image = QImage(str(path))
    assert (image.width(), image.height()) == (2 * pipeline.width(), 2 * pipeline.height())
    screen = pipeline.grab().toImage()
    shrunk = image.scaled(screen.width(), screen.height(), Qt.AspectRatioMode.IgnoreAspectRatio,
                          Qt.TransformationMode.SmoothTransformation)
    assert np.abs(rgb_array(shrunk) - rgb_array(screen)).mean() < 9  # nothing misplaced, missing or doubled
    for name, view in [*window.views.items(), *((f"head {k + 1}", v) for k, v in enumerate(pipeline.head_views))]:
        p = cell_point(view, 0, 0, pipeline)
        assert close(rgb(image, 2 * p.x(), 2 * p.y()), rgb(screen, p.x(), p.y())), name


def test_pipeline_svg_and_pdf_hold_every_view_title(window, tmp_path):
    pipeline = window.pipeline
    svg = export_pipeline(pipeline, tmp_path / "pipeline.svg")
    texts = " | ".join(svg_texts(svg))
    for view in window.views.values():
        assert view.title().split("\n")[0] in texts
    for expected in ("scores = Q·Kᵀ", "residual = X + output", "weights of every head", "head 1", "head 2"):
        assert expected in texts
    root = ET.parse(svg).getroot()
    assert svg_length_px(root.get("width")) == pytest.approx(pipeline.width())
    assert svg_length_px(root.get("height")) == pytest.approx(pipeline.height())

    pdf = export_pipeline(pipeline, tmp_path / "pipeline.pdf")
    width_pt, height_pt = media_box(pdf)
    assert width_pt == pytest.approx(pipeline.width() * 0.75, abs=1)
    assert height_pt == pytest.approx(pipeline.height() * 0.75, abs=1)


def test_format_comes_from_the_suffix_or_is_given(window, tmp_path):
    view = window.views["q"]
    assert QImage(str(export_view(view, tmp_path / "UPPER.PNG", scale=1))).width() > 0
    path = export_view(view, tmp_path / "figure.out", fmt="svg")
    assert ET.parse(path).getroot().tag == f"{SVG}svg"
    assert export_view(view, tmp_path / "figure.bin", fmt="PDF").read_bytes().startswith(b"%PDF")


# -------------------------------------------------------------------------------------------------------- errors


def simple_panel(qtbot) -> Panel:
    """A scene of its own, for tests of the file handling."""
    scene = QGraphicsScene()
    scene.addRect(QRectF(0, 0, 40, 30), brush=QColor("red"))
    scene.addText("hello")
    return Panel(scene, QRectF(0, 0, 80, 60), QRectF(10, 10, 80, 60), QColor("white"))


@pytest.mark.parametrize("name, fmt", [("figure.gif", None), ("figure", None), ("figure.png", "jpeg")])
def test_unknown_format_is_refused_naming_the_formats(qtbot, tmp_path, name, fmt):
    with pytest.raises(ValueError) as error:
        write_figure(tmp_path / name, [simple_panel(qtbot)], QSizeF(100, 80), fmt)
    for known in FORMATS:
        assert known in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_a_clear_error(window, tmp_path):
    missing = tmp_path / "no such folder" / "figure.png"
    with pytest.raises(OSError, match="does not exist"):
        export_view(window.views["q"], missing)
    assert not missing.parent.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_render_leaves_the_old_file_untouched(qtbot, tmp_path, monkeypatch, fmt):
    path = tmp_path / f"figure.{fmt}"
    path.write_bytes(b"the figure from yesterday")

    def broken(*args, **kwargs):
        raise RuntimeError("renderer crashed half-way")

    monkeypatch.setattr(figures, "render_figure", broken)
    with pytest.raises(RuntimeError):
        write_figure(path, [simple_panel(qtbot)], QSizeF(100, 80))
    assert path.read_bytes() == b"the figure from yesterday"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_failed_write_leaves_the_old_file_untouched(qtbot, tmp_path, monkeypatch):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    from qkvgui.io import atomic

    monkeypatch.setattr(atomic.os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        write_figure(path, [simple_panel(qtbot)], QSizeF(100, 80))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_a_figure_too_large_for_memory_is_refused_before_writing(qtbot, tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="too large"):
        write_figure(path, [simple_panel(qtbot)], QSizeF(1000, 800), scale=100)
    assert path.read_bytes() == b"old"


@pytest.mark.parametrize("size, scale", [(QSizeF(0, 10), 1.0), (QSizeF(10, 10), 0.0)])
def test_empty_size_or_scale_is_refused(qtbot, tmp_path, size, scale):
    with pytest.raises(ValueError):
        write_figure(tmp_path / "f.png", [simple_panel(qtbot)], size, scale=scale)


def test_panels_go_where_their_targets_say(qtbot):
    panel = simple_panel(qtbot)
    image = figure_to_image([panel], QSizeF(100, 80), scale=2, background=QColor("blue"))
    assert image.size().width() == 200 and image.size().height() == 160
    assert rgb(image, 5, 5) == (0, 0, 255)  # outside the panel: the figure's background
    assert rgb(image, 2 * 10 + 4, 2 * 10 + 4) == (255, 0, 0)  # the red rectangle starts at the target's corner
    assert rgb(image, 2 * 85, 2 * 65) == (255, 255, 255)  # inside the panel, outside the rectangle: its background


def test_panel_for_view_is_the_visible_scene_at_its_on_screen_size(window):
    view = window.views["k"]
    panel = panel_for_view(view, QPointF(30, 40))
    viewport = view.graphics_widget().viewport()
    assert panel.scene is view.graphics_widget().scene()
    assert (panel.source.width(), panel.source.height()) == (viewport.width(), viewport.height())
    assert panel.target == QRectF(30, 40, viewport.width(), viewport.height())
