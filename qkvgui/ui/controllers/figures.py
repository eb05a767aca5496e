"""Figures of the window's views: File ▸ Export figure and File ▸ Copy figure."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QSizeF, Signal
from PySide6.QtWidgets import QApplication, QFileDialog, QInputDialog, QWidget

from qkvgui.io.figures import figure_to_image
from qkvgui.ui.figure_export import copy_view_to_clipboard, export_pipeline, export_view, pipeline_panels
from qkvgui.ui.panels.views import ViewsPanel


class FigureController(QObject):
    message = Signal(str)

    def __init__(self, window: QWidget, panel: ViewsPanel):
        super().__init__(window)
        self.window, self.panel = window, panel

    def figure_names(self) -> list[str]:
        """What can be exported: the whole pipeline, then every view by its name."""
        return ["pipeline", *self.panel.views]

    def export_figure(self, name: str, path: str | Path, scale: float = 2.0) -> bool:
        """Write a view (or 'pipeline', the whole figure) as PNG, SVG or PDF, chosen by the file's suffix."""
        try:
            if name == "pipeline":
                written = export_pipeline(self.panel.pipeline, path, None, scale)
            else:
                written = export_view(self.panel.views[name], path, None, scale)
        except (ValueError, OSError) as e:
            self.message.emit(f"Could not export {name}: {e}")
            return False
        self.message.emit(f"wrote {written}")
        return True

    def _pick_figure(self, verb: str) -> str | None:
        name, ok = QInputDialog.getItem(self.window, f"{verb} figure", "Which figure?", self.figure_names(), 0, False)
        return name if ok else None

    def export_figure_dialog(self) -> None:
        name = self._pick_figure("Export")
        if name is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self.window, f"Export {name}", f"{name}.png", "PNG image (*.png);;SVG vector (*.svg);;PDF document (*.pdf)"
        )
        if path:
            self.export_figure(name, path)

    def copy_figure_dialog(self) -> None:
        name = self._pick_figure("Copy")
        if name is None:
            return
        pipeline = self.panel.pipeline
        if name == "pipeline":
            QApplication.clipboard().setImage(figure_to_image(pipeline_panels(pipeline), QSizeF(pipeline.size()), 2.0))
        else:
            copy_view_to_clipboard(self.panel.views[name])
        self.message.emit(f"copied the {name} figure")
