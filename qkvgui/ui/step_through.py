"""View ▸ Step through: the pipeline one step at a time (X → Q, K, V → scores → … → residual), the inputs of the
step framed in blue, its result in orange, later steps still hidden, and a paragraph about the step written from
the current numbers. File ▸ Export animation writes the same steps as a GIF or MP4, off the GUI thread.

The pictures come from the figure renderer, as the exported figures and animations do; the window follows the
session, so an edit in the editors retells the current step at once.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThreadPool, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressDialog,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from qkvgui.io.animation import STEPS, AnimationCancelled, narrate, step_figure, write_animation
from qkvgui.io.figure_paint import Figure, FigureOptions
from qkvgui.io.figure_views import FigureData, figure_data
from qkvgui.ui.figure_preview import FigurePreview, watch_session
from qkvgui.ui.figure_preview import named as _named

__all__ = ["AnimationExport", "StepThroughDialog", "export_animation_dialog"]


class StepThroughDialog(QDialog):
    """A window beside the main one that walks through the steps (←/→, Home/End, or the list)."""

    def __init__(self, session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Step through attention")
        self.setObjectName("dialog.step_through")
        self.setModal(False)
        self.session = session
        self._data: FigureData | None = None
        self.steps = _named(QListWidget(), "step.list")
        for k, step in enumerate(STEPS):
            self.steps.addItem(f"{k + 1}. {step.title}")
        self.steps.setMaximumWidth(240)
        self.figure_view = FigurePreview(self.figure, self)
        self.figure_view.setObjectName("step.figure")
        self.narration = _named(QLabel(), "step.narration")
        self.narration.setWordWrap(True)
        self.narration.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.narration.setMinimumHeight(64)
        self.back = _named(QPushButton("◀ &Back"), "step.back")
        self.next = _named(QPushButton("&Next ▶"), "step.next")
        self.export_button = _named(QPushButton("Export &animation…"), "step.export")
        self.back.clicked.connect(lambda: self.go(self.current() - 1))
        self.next.clicked.connect(lambda: self.go(self.current() + 1))
        self.export_button.clicked.connect(lambda: export_animation_dialog(self, self.session))
        for keys, delta in ((("Right", "PgDown", "Space"), 1), (("Left", "PgUp", "Backspace"), -1)):
            for key in keys:
                QShortcut(QKeySequence(key), self, lambda d=delta: self.go(self.current() + d))
        QShortcut(QKeySequence("Home"), self, lambda: self.go(0))
        QShortcut(QKeySequence("End"), self, lambda: self.go(len(STEPS) - 1))
        self.steps.currentRowChanged.connect(self._show)

        buttons = QHBoxLayout()
        buttons.addWidget(self.back)
        buttons.addWidget(self.next)
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        right = QVBoxLayout()
        right.addWidget(self.figure_view, 1)
        right.addWidget(self.narration)
        right.addLayout(buttons)
        layout = QHBoxLayout(self)
        layout.addWidget(self.steps)
        layout.addLayout(right, 1)
        self.resize(1180, 760)
        self._unwatch = watch_session(session, self._session_changed)
        self.steps.setCurrentRow(0)

    def current(self) -> int:
        return max(0, self.steps.currentRow())

    def go(self, index: int) -> None:
        self.steps.setCurrentRow(min(max(index, 0), len(STEPS) - 1))

    def data(self) -> FigureData:
        if self._data is None:
            self._data = figure_data(self.session)
        return self._data

    def figure(self) -> Figure:
        """The current step as the renderer draws it, laid out for the window's picture area (no caption: the
        narration is the text below it)."""
        size = self.figure_view.contentsRect().size()
        options = FigureOptions(max(size.width(), 320), max(size.height(), 200), font_pt=9)
        figure = step_figure(self.data(), self.current(), options)
        figure.caption = ""
        return figure

    def _show(self, *_args) -> None:
        k = self.current()
        step = STEPS[k]
        try:
            text = narrate(step, self.data())
        except Exception as e:  # a session the story cannot be told for: say so, keep the window
            text = f"(No narration: {e})"
        self.narration.setText(f"<b>Step {k + 1} of {len(STEPS)}: {step.title}.</b> {_html(text)}")
        self.back.setEnabled(k > 0)
        self.next.setEnabled(k < len(STEPS) - 1)
        self.figure_view.refresh()

    def _session_changed(self, *_args) -> None:
        self._data = None
        self._show()

    def done(self, result: int) -> None:
        self._unwatch()
        self.figure_view.shutdown()
        super().done(result)

    def closeEvent(self, event) -> None:
        self._unwatch()
        self.figure_view.shutdown()
        super().closeEvent(event)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Relay(QObject):
    progress = Signal(int, int)
    done = Signal(str, str)


class AnimationExport(QObject):
    """Writes an animation on a worker thread with a progress dialog and Cancel; `finished(path, error)`."""

    finished = Signal(str, str)

    def __init__(
        self, session, path: str | Path, parent: QWidget | None = None, options: FigureOptions | None = None
    ) -> None:
        super().__init__(parent)
        self.path = Path(path)
        self._data = figure_data(session)  # a snapshot: later edits do not reach the worker
        self._options = options
        self._cancelled = False
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._relay = _Relay(self)
        self.dialog = QProgressDialog(f"Writing {self.path.name}…", "Cancel", 0, 2 * len(STEPS), parent)
        self.dialog.setWindowTitle("Export animation")
        self.dialog.setMinimumDuration(300)
        self.dialog.canceled.connect(self.cancel)
        self._relay.progress.connect(lambda done, total: self.dialog.setValue(done))
        self._relay.done.connect(self._finish)

    def start(self) -> None:
        relay, data, path, options = self._relay, self._data, self.path, self._options

        def progress(done: int, total: int) -> bool:
            relay.progress.emit(done, total)
            return not self._cancelled

        def work() -> None:
            try:
                written = write_animation(None, path, options=options, progress=progress, data=data)
                relay.done.emit(str(written), "")
            except AnimationCancelled:
                relay.done.emit(str(path), "cancelled")
            except Exception as e:  # noqa: BLE001 - every failure becomes one message
                relay.done.emit(str(path), f"Could not write {path.name}: {e}")

        self._pool.start(work)

    def cancel(self) -> None:
        self._cancelled = True

    def wait(self) -> None:
        self._pool.waitForDone()

    def _finish(self, path: str, error: str) -> None:
        self.dialog.reset()
        self.finished.emit(path, error)


def export_animation_dialog(parent: QWidget, session, report=None) -> AnimationExport | None:
    """Ask for a .gif or .mp4 file and write the step-by-step animation there; report(message) says how it went."""
    path, chosen = QFileDialog.getSaveFileName(
        parent, "Export animation", str(Path.home() / "attention.gif"), "Animated GIF (*.gif);;MP4 video (*.mp4)"
    )
    if not path:
        return None
    if Path(path).suffix.lower() not in (".gif", ".mp4"):
        path += ".mp4" if "mp4" in chosen else ".gif"
    job = AnimationExport(session, path, parent)

    def finished(written: str, error: str) -> None:
        message = (
            "Animation export cancelled: nothing was written."
            if error == "cancelled"
            else error or f"Wrote the animation {written}"
        )
        if report is not None:
            report(message)
        elif hasattr(parent, "show_message"):
            parent.show_message(message)

    job.finished.connect(finished)
    job.start()
    return job
