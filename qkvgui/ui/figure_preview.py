"""A widget that shows a figure of the renderer (qkvgui.io.figure_paint) at its own size, drawn off the GUI thread.

The export dialog's live preview and the step-through window both use it: the same renderer as the files, so what
is previewed is what is written. Each request gets a generation number; a result that arrives after a newer
request is dropped, and the widget waits for its worker before it goes away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from PySide6.QtCore import QObject, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

from qkvgui.io.figure_paint import Figure, figure_image

__all__ = ["FigurePreview", "fit_pixels", "watch_session"]


def watch_session(session, callback: Callable[..., object]) -> Callable[[], None]:
    """Call `callback` on every change the session announces (content or selection); returns a disconnect."""
    events = getattr(session, "events", None)
    signal = getattr(events, "all", None) if events is not None else getattr(session, "changed", None)
    if signal is None:
        return lambda: None
    signal.connect(callback)

    def disconnect() -> None:
        try:
            signal.disconnect(callback)
        except (ValueError, RuntimeError, TypeError):
            pass

    return disconnect


def fit_pixels(figure: Figure, box: QSize) -> tuple[int, int]:
    """The largest pixel size with the figure's aspect that fits in box."""
    w, h = figure.size.width(), figure.size.height()
    k = min(max(box.width(), 16) / w, max(box.height(), 16) / h)
    return max(1, round(w * k)), max(1, round(h * k))


class _Relay(QObject):
    done = Signal(int, QImage, str)


class FigurePreview(QLabel):
    """Shows `make()` (a Figure, or raises) scaled to fit; call `refresh()` when what it shows changes.

    Signals: rendered() after each picture is shown; failed(str) with the message when making it failed.
    """

    rendered = Signal()
    failed = Signal(str)

    def __init__(self, make: Callable[[], Figure], parent: QWidget | None = None, *, delay_ms: int = 60) -> None:
        super().__init__(parent)
        self._make = make
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(240, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._relay = _Relay(self)
        self._relay.done.connect(self._on_done)
        self._generation = 0
        self._shown_generation = -1
        self._image = QImage()
        self._timer = QTimer(self, singleShot=True, interval=delay_ms)
        self._timer.timeout.connect(self._render)

    def refresh(self) -> None:
        """Draw again soon (changes within the delay are merged into one drawing)."""
        self._generation += 1
        self._timer.start()

    def busy(self) -> bool:
        return self._timer.isActive() or self._shown_generation != self._generation

    def image(self) -> QImage:
        """The last picture drawn (at the widget's size)."""
        return self._image

    def _render(self) -> None:
        generation = self._generation
        try:
            figure = self._make()
        except Exception as e:  # a figure that cannot be made: say why, keep the last picture
            self._shown_generation = generation
            self.failed.emit(str(e))
            return
        pixels = fit_pixels(figure, self.contentsRect().size())
        relay = self._relay

        def work() -> None:
            try:
                relay.done.emit(generation, figure_image(figure, pixels), "")
            except Exception as e:  # noqa: BLE001 - reported in the window, never lost on a worker
                relay.done.emit(generation, QImage(), str(e) or type(e).__name__)

        self._pool.start(work)

    def _on_done(self, generation: int, image: QImage, error: str) -> None:
        if generation != self._generation:
            return  # a newer request is on its way
        self._shown_generation = generation
        if error:
            self.failed.emit(error)
            return
        self._image = image
        pixmap = QPixmap.fromImage(image)
        pixmap.setDevicePixelRatio(1.0)
        self.setPixmap(pixmap)
        self.rendered.emit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.refresh()

    def sizeHint(self) -> QSize:
        return QSize(640, 420)

    def shutdown(self) -> None:
        """Stop drawing and wait for the worker (call before the widget goes away)."""
        self._timer.stop()
        self._generation += 1
        self._pool.waitForDone()


W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str, props: dict[str, object] | None = None) -> W:
    """The widget with its objectName (for scripts and tests) and properties set (the figure dialogs' helper)."""
    widget.setObjectName(name)
    for key, value in (props or {}).items():
        getattr(widget, "set" + key[0].upper() + key[1:])(value)
    return widget
