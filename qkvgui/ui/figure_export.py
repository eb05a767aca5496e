"""Figure export from the window: a heatmap view, or the whole pipeline as laid out on screen, to PNG, SVG, PDF or
the clipboard. The widgets only say which scene regions go where; qkvgui.io.figures draws and writes them."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QApplication, QGraphicsScene, QGraphicsTextItem, QLabel, QWidget

from qkvgui.io.figures import Panel, figure_to_image, write_figure
from qkvgui.ui.heatmap import HeatmapView
from qkvgui.ui.pipeline import PipelineView

__all__ = ["copy_view_to_clipboard", "export_pipeline", "export_view", "panel_for_view", "view_figure_image"]


def _background(widget: QWidget) -> QColor:
    """What is behind a widget on screen: its palette's window colour."""
    return QColor(widget.palette().color(QPalette.ColorRole.Window))


def _view_background(view: HeatmapView) -> QColor:
    """What a view paints behind its scene: its background brush (the palette's window colour, see HeatmapView)."""
    brush = view.graphics_widget().backgroundBrush()
    return QColor(brush.color()) if brush.style() != Qt.BrushStyle.NoBrush else _background(view)


def panel_for_view(view: HeatmapView, offset: QPointF | None = None) -> Panel:
    """The visible part of the view's scene (title, axes, image, numbers, colour bar), placed at `offset` in
    figure pixels at its on-screen size."""
    glw = view.graphics_widget()
    # The viewport in scene coordinates (pyqtgraph maps the scene 1:1 onto it), as a float rectangle.
    transform, _ = glw.viewportTransform().inverted()
    source = transform.mapRect(QRectF(glw.viewport().rect()))
    at = offset if offset is not None else QPointF(0.0, 0.0)
    target = QRectF(at, QSizeF(glw.viewport().width(), glw.viewport().height()))
    return Panel(glw.scene(), source, target, _view_background(view))


def _view_size(view: HeatmapView) -> QSizeF:
    viewport = view.graphics_widget().viewport()
    return QSizeF(viewport.width(), viewport.height())


def _figure_title(view: HeatmapView) -> str:
    return " — ".join(line for line in view.title().split("\n") if line) or view.objectName() or "qkvgui figure"


def export_view(view: HeatmapView, path: str | Path, fmt: str | None = None, scale: float = 2.0) -> Path:
    """Write one view as it looks on screen (PNG at `scale`× its pixels, or SVG or PDF at its size)."""
    return write_figure(path, [panel_for_view(view)], _view_size(view), fmt, scale, _figure_title(view),
                        background=_view_background(view))


def view_figure_image(view: HeatmapView, scale: float = 2.0) -> QImage:
    """The view's figure as an image, `scale`× its on-screen pixels."""
    return figure_to_image([panel_for_view(view)], _view_size(view), scale, _view_background(view))


def copy_view_to_clipboard(view: HeatmapView, scale: float = 2.0) -> QImage:
    """Put the view's figure on the clipboard as an image (2× by default, sharp on slides); return the image."""
    image = view_figure_image(view, scale)
    QApplication.clipboard().setImage(image)
    return image


def _label_panel(label: QLabel, offset: QPointF) -> Panel:
    """A caption of the pipeline (e.g. "weights of every head") as a text panel, so it stays text in SVG and PDF."""
    scene = QGraphicsScene()
    item = QGraphicsTextItem()
    item.setFont(label.font())
    item.setDefaultTextColor(label.palette().color(QPalette.ColorRole.WindowText))
    item.setPlainText(label.text())
    item.document().setDocumentMargin(0)
    item.setTextWidth(label.width())
    scene.addItem(item)
    # Place the text as the label's alignment does (QLabel: vertically centred, left-aligned by default).
    top = max(0.0, (label.height() - item.boundingRect().height()) / 2)
    source = QRectF(0.0, -top, label.width(), label.height())
    return Panel(scene, source, QRectF(offset, QSizeF(label.width(), label.height())), _background(label))


def pipeline_panels(pipeline: PipelineView) -> list[Panel]:
    """Every visible view and caption of the pipeline, each placed where it sits in the pipeline widget."""
    panels: list[Panel] = []
    for view in pipeline.findChildren(HeatmapView):  # every view, whatever list holds it (steps, heads, layers)
        viewport = view.graphics_widget().viewport()  # the scene's on-screen area (inside any view frame)
        if view.isVisibleTo(pipeline) and viewport.width() > 0 and viewport.height() > 0:
            panels.append(panel_for_view(view, QPointF(viewport.mapTo(pipeline, QPoint(0, 0)))))
    for label in pipeline.findChildren(QLabel):
        if label.isVisibleTo(pipeline) and label.text() and label.width() > 0:
            panels.append(_label_panel(label, QPointF(label.mapTo(pipeline, QPoint(0, 0)))))
    return panels


def export_pipeline(pipeline: PipelineView, path: str | Path, fmt: str | None = None, scale: float = 2.0) -> Path:
    """Write every step of the pipeline, and the small multiples, as one figure laid out as on screen."""
    size = QSizeF(pipeline.width(), pipeline.height())
    return write_figure(path, pipeline_panels(pipeline), size, fmt, scale, "qkvgui: attention, step by step",
                        background=_background(pipeline))
