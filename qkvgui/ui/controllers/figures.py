"""Figures of the session: File ▸ Export figure (a dialog with a live preview), Copy figure, Export animation, and
View ▸ Step through. Everything is drawn by the figure renderer from the session, never copied from the views, so
any view exports whether or not it is on screen, with no hover or selection marks, in the theme asked for."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication

from qkvgui.core.errors import QkvError

if TYPE_CHECKING:  # the figure renderer and its dialogs are imported on first use: start-up does not need them
    from qkvgui.ui.export_dialog import ExportFigureDialog
    from qkvgui.ui.step_through import StepThroughDialog

if TYPE_CHECKING:
    from qkvgui.ui.main_window import MainWindow


class FigureController(QObject):
    message = Signal(str)

    def __init__(self, window: MainWindow, panel=None):
        super().__init__(window)
        self.window, self.panel = window, panel
        self.export_dialog: ExportFigureDialog | None = None
        self.step_dialog: StepThroughDialog | None = None
        self._jobs: list = []

    def figure_names(self) -> list[str]:
        """What can be exported: the whole pipeline, the circuits, then every view by its name."""
        from qkvgui.io.figure_views import view_names

        return view_names()

    def export_figure(self, name: str, path: str | Path, scale: float = 2.0) -> bool:
        """Write a figure ('pipeline', 'circuits' or a view) as PNG, SVG or PDF (by the file's suffix), laid out as
        last chosen in the export dialog; a PNG gets `scale` times the pixels (and DPI) of that size."""
        from qkvgui.io.figure_paint import Figure, write_figure_file
        from qkvgui.io.figure_views import figure_data
        from qkvgui.io.figures import FORMATS
        from qkvgui.ui.export_dialog import saved_choice

        path = Path(path)
        try:
            if path.suffix.lower().lstrip(".") not in FORMATS:
                raise QkvError(f"{path.name}: a figure is written as .png, .svg or .pdf.")
            _, options = saved_choice()
            if options.unit == "px":
                options = replace(
                    options, width=options.width * scale, height=options.height * scale, dpi=options.dpi * scale
                )
            else:
                options = replace(options, dpi=options.dpi * scale)
            written = write_figure_file(path, Figure(figure_data(self.window.session), name, options))
        except (QkvError, ValueError, OSError) as e:
            self.message.emit(f"Could not export {name}: {e}")
            return False
        self.message.emit(f"wrote {written}")
        return True

    def export_figure_dialog(self) -> None:
        """File ▸ Export figure: the dialog, beside the window (it follows edits while open)."""
        if self.export_dialog is not None and self.export_dialog.session is not self.window.session:
            self.export_dialog.close()
            self.export_dialog = None
        if self.export_dialog is None or not self.export_dialog.isVisible():
            from qkvgui.ui.export_dialog import ExportFigureDialog

            self.export_dialog = ExportFigureDialog(self.window.session, self.window)
            self.export_dialog.exported.connect(lambda path: self.message.emit(f"wrote {path}"))
        self.export_dialog.show()
        self.export_dialog.raise_()
        self.export_dialog.activateWindow()

    def copy_figure_dialog(self) -> None:
        """File ▸ Copy figure: the figure last chosen in the export dialog, as an image on the clipboard."""
        from qkvgui.io.figure_paint import Figure, figure_image
        from qkvgui.io.figure_views import figure_data
        from qkvgui.ui.export_dialog import saved_choice

        name, options = saved_choice()
        try:
            image = figure_image(Figure(figure_data(self.window.session), name, options))
        except (QkvError, ValueError, MemoryError) as e:
            self.message.emit(f"Could not copy the figure: {e}")
            return
        QApplication.clipboard().setImage(image)
        self.message.emit(
            f"copied the {name} figure ({image.width()} × {image.height()} px; "
            "File ▸ Export figure chooses which and how)"
        )

    def export_animation_dialog(self) -> None:
        """File ▸ Export animation: the steps of attention as a GIF or MP4, written off the GUI thread."""
        from qkvgui.ui.step_through import export_animation_dialog

        job = export_animation_dialog(self.window, self.window.session, self.message.emit)
        if job is not None:
            self._jobs = [j for j in self._jobs if j.dialog.isVisible()] + [job]

    def step_through(self) -> None:
        """View ▸ Step through: a window that walks the computation one step at a time."""
        if self.step_dialog is not None and self.step_dialog.session is not self.window.session:
            self.step_dialog.close()
            self.step_dialog = None
        if self.step_dialog is None or not self.step_dialog.isVisible():
            from qkvgui.ui.step_through import StepThroughDialog

            self.step_dialog = StepThroughDialog(self.window.session, self.window)
        self.step_dialog.show()
        self.step_dialog.raise_()
        self.step_dialog.activateWindow()

    def close_dialogs(self) -> None:
        for dialog in (self.export_dialog, self.step_dialog):
            if dialog is not None:
                dialog.close()
        for job in self._jobs:
            job.cancel()
            job.wait()
