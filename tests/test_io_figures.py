"""The figure writer (qkvgui.io.figures): panels placed where their targets say, formats by suffix, and old files that
survive a failed export. What the figures show is tested in test_io_figure_render.py."""

import numpy as np
import pytest
from PySide6.QtCore import QRectF, QSizeF
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QGraphicsScene

from qkvgui.io import figures
from qkvgui.io.figures import FORMATS, Panel, figure_to_image, write_figure


def pixels(image: QImage) -> np.ndarray:
    """[h, w] uint32 ARGB values of an image."""
    image = image.convertToFormat(QImage.Format.Format_ARGB32)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 4].copy().view(np.uint32)


def rgb(image: QImage, x: float, y: float) -> tuple[int, int, int]:
    c = image.pixelColor(int(x), int(y))
    return c.red(), c.green(), c.blue()


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


def test_missing_folder_is_a_clear_error(qtbot, tmp_path):
    missing = tmp_path / "no such folder" / "figure.png"
    with pytest.raises(OSError, match="does not exist"):
        write_figure(missing, [simple_panel(qtbot)], QSizeF(100, 80))
    assert not missing.parent.exists()
