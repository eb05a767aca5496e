"""File ▸ Export figure: choose what to draw and how (size in px, cm or in, DPI, font, numbers, colour bar, theme,
heads), see it live, and write PNG, SVG or PDF or copy it. The settings are remembered between exports and runs.

The figure is drawn by qkvgui.io.figure_paint from the session, never copied from the window, so any view can be
exported whether or not it is on screen, in any theme, without hover or selection marks.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QThreadPool, Signal
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qkvgui.io.figure_paint import THEMES, Figure, FigureOptions, figure_image, write_figure_file
from qkvgui.io.figure_views import FIGURE_VIEWS, FigureData, figure_data
from qkvgui.io.figures import FORMATS
from qkvgui.ui.figure_preview import FigurePreview, watch_session
from qkvgui.ui.figure_preview import named as _named

__all__ = ["ExportFigureDialog", "figure_choices", "saved_choice"]

#: sizes a teacher or writer usually wants: (label, width, height, unit, dpi)
PRESETS = (
    ("Slide 16:9", 1600, 900, "px", 96),
    ("Slide 4:3", 1200, 900, "px", 96),
    ("Paper, one column", 8.5, 6.5, "cm", 300),
    ("Paper, full width", 17, 10, "cm", 300),
    ("Poster panel", 12, 9, "in", 150),
)
DEFAULTS = {
    "view": "pipeline",
    "heads": "current",
    "width": 1600.0,
    "height": 1000.0,
    "unit": "px",
    "dpi": 96.0,
    "font_pt": 10.0,
    "numbers": True,
    "colorbar": True,
    "theme": "light",
    "format": "png",
    "folder": "",
}
#: settings kept for this process when there is no settings file (tests, QKVGUI_NO_SETTINGS)
_MEMORY: dict[str, object] = {}


def figure_choices(data: FigureData) -> list[tuple[str, str]]:
    """(name, readable text) of everything the dialog can export, the whole pipeline first."""
    out = [("pipeline", "Whole pipeline (every step)"), ("circuits", "Circuits of the head (QK, OV)")]
    for v in FIGURE_VIEWS:
        if v.name == "composition" and data.composition is None:
            continue
        if v.name == "block" and data.block is None:
            continue
        out.append((v.name, v.label[0].upper() + v.label[1:] + ("  (per head)" if v.per_head else "")))
    return out


class _Relay(QObject):
    done = Signal(str, str)  # path written, error


class ExportFigureDialog(QDialog):
    """The export dialog for one session. `export_to(path)` writes the figure as the dialog is set up."""

    exported = Signal(str)  # the path of a file written

    def __init__(
        self, session, parent: QWidget | None = None, *, settings: QSettings | None = None, view: str | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export figure")
        self.setObjectName("dialog.export_figure")
        self.session = session
        self._settings = settings if settings is not None else _default_settings()
        self._data: FigureData | None = None
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._relay = _Relay(self)
        self._relay.done.connect(self._on_written)

        self.view = _named(QComboBox(), "export.view")
        for name, text in figure_choices(self.data()):
            self.view.addItem(text, name)
        self.heads = _named(QComboBox(), "export.heads")
        self.heads.addItem(f"Current head ({session.head + 1})", "current")
        self.heads.addItem(f"All {session.n_heads} heads", "all")
        self.preset = _named(QComboBox(), "export.preset")
        self.preset.addItem("Custom size")
        for label, w, h, unit, dpi in PRESETS:
            self.preset.addItem(f"{label}: {w:g} × {h:g} {unit}", (w, h, unit, dpi))
        self.width_box = _named(QDoubleSpinBox(), "export.width", {"decimals": 2, "minimum": 0.1, "maximum": 20000})
        self.height_box = _named(QDoubleSpinBox(), "export.height", {"decimals": 2, "minimum": 0.1, "maximum": 20000})
        self.unit = _named(QComboBox(), "export.unit")
        self.unit.addItems(["px", "cm", "in"])
        self.dpi = _named(QSpinBox(), "export.dpi", {"minimum": 36, "maximum": 1200, "suffix": " dpi"})
        self.font_pt = _named(
            QDoubleSpinBox(), "export.font", {"decimals": 1, "minimum": 4, "maximum": 48, "suffix": " pt"}
        )
        self.numbers = _named(QCheckBox("Numbers in cells (where they fit)"), "export.numbers")
        self.colorbar = _named(QCheckBox("Colour bar"), "export.colorbar")
        self.theme = _named(QComboBox(), "export.theme")
        for name in THEMES:
            self.theme.addItem({"light": "Light", "dark": "Dark", "transparent": "Transparent background"}[name], name)
        self.format = _named(QComboBox(), "export.format")
        for fmt in FORMATS:
            self.format.addItem(
                {"png": "PNG image", "svg": "SVG (vector, text as text)", "pdf": "PDF (vector, text as text)"}[fmt], fmt
            )
        self.info = _named(QLabel(), "export.info")
        self.info.setWordWrap(True)
        self.preview = FigurePreview(self.figure, self)
        self.preview.setObjectName("export.preview")
        self.preview.failed.connect(self._show_problem)
        self.preview.rendered.connect(lambda: self._show_problem(""))

        size_row = QHBoxLayout()
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_box)
        size_row.addWidget(self.unit)
        form = QFormLayout()
        form.addRow("&Figure", self.view)
        form.addRow("&Heads", self.heads)
        form.addRow("Si&ze", self.preset)
        form.addRow("", _wrap(size_row))
        form.addRow("&Resolution", self.dpi)
        form.addRow("F&ont size", self.font_pt)
        form.addRow("", self.numbers)
        form.addRow("", self.colorbar)
        form.addRow("&Theme", self.theme)
        form.addRow("Fo&rmat", self.format)
        form.addRow(self.info)
        buttons = QDialogButtonBox()
        self.export_button = _named(QPushButton("&Export…"), "export.save")
        self.copy_button = _named(QPushButton("&Copy"), "export.copy")
        buttons.addButton(self.export_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.export_button.clicked.connect(self._export_clicked)
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        left = QVBoxLayout()
        left.addLayout(form)
        left.addStretch(1)
        left.addWidget(buttons)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 0)
        layout.addWidget(self.preview, 1)
        self.resize(1100, 620)

        self._load_settings(view)
        self._previous_unit = self.unit.currentText()
        for box in (self.view, self.heads, self.theme, self.format):
            box.currentIndexChanged.connect(self._changed)
        for spin in (self.width_box, self.height_box, self.dpi, self.font_pt):
            spin.valueChanged.connect(self._changed)
        self.width_box.valueChanged.connect(lambda *_: self._custom())
        self.height_box.valueChanged.connect(lambda *_: self._custom())
        self.unit.currentIndexChanged.connect(self._unit_changed)
        self.numbers.toggled.connect(self._changed)
        self.colorbar.toggled.connect(self._changed)
        self.preset.activated.connect(self._preset_chosen)
        self._watch_session()
        self._changed()

    # ---- what is drawn -----------------------------------------------------------------------------------
    def data(self) -> FigureData:
        if self._data is None:
            self._data = figure_data(self.session)
        return self._data

    def options(self) -> FigureOptions:
        return FigureOptions(
            width=self.width_box.value(),
            height=self.height_box.value(),
            unit=self.unit.currentText(),
            dpi=float(self.dpi.value()),
            font_pt=self.font_pt.value(),
            numbers=self.numbers.isChecked(),
            colorbar=self.colorbar.isChecked(),
            theme=self.theme.currentData(),
            heads=self.heads.currentData(),
        )

    def figure(self) -> Figure:
        return Figure(self.data(), self.view.currentData(), self.options())

    def export_format(self) -> str:
        return self.format.currentData()

    # ---- actions -----------------------------------------------------------------------------------------
    def export_to(self, path: str | Path) -> None:
        """Write the figure to `path` on a worker; `exported(path)` or a message in the dialog follows."""
        try:
            figure = self.figure()
        except Exception as e:
            self._show_problem(str(e))
            return
        fmt = Path(path).suffix.lower().lstrip(".")
        fmt = fmt if fmt in FORMATS else self.export_format()
        relay = self._relay

        def work() -> None:
            try:
                relay.done.emit(str(write_figure_file(path, figure, fmt)), "")
            except Exception as e:  # noqa: BLE001 - every failure becomes a message in the dialog
                relay.done.emit(str(path), f"Could not write {Path(path).name}: {e}")

        self.info.setText(f"Writing {Path(path).name}…")
        self._save_settings(folder=str(Path(path).parent))
        self._pool.start(work)

    def busy(self) -> bool:
        return self._pool.activeThreadCount() > 0

    def copy_to_clipboard(self) -> None:
        try:
            image = figure_image(self.figure())
        except Exception as e:
            self._show_problem(str(e))
            return
        QApplication.clipboard().setImage(image)
        self._save_settings()
        self.info.setText(f"Copied a {image.width()} × {image.height()} px image to the clipboard.")

    def _export_clicked(self) -> None:
        fmt = self.export_format()
        folder = str(self._get("folder") or Path.home())
        name = f"{self.view.currentData()}.{fmt}"
        filters = {"png": "PNG image (*.png)", "svg": "SVG drawing (*.svg)", "pdf": "PDF document (*.pdf)"}
        path, _ = QFileDialog.getSaveFileName(self, "Export figure", str(Path(folder) / name), filters[fmt])
        if path:
            if not Path(path).suffix:
                path += f".{fmt}"
            self.export_to(path)

    def _on_written(self, path: str, error: str) -> None:
        if error:
            self._show_problem(error)
            return
        self.info.setText(f"Wrote {path}")
        self.exported.emit(path)

    # ---- keeping the preview live ------------------------------------------------------------------------
    def _changed(self, *_args) -> None:
        try:
            options = self.options().check()
            fmt = self.export_format()
            self.info.setText(
                f"{options.describe()} · {fmt.upper()}"
                + (
                    " (the resolution only sets the size of text and PNG pixels)"
                    if fmt != "png" and options.unit != "px"
                    else ""
                )
            )
        except Exception as e:
            self._show_problem(str(e))
        self.preview.refresh()

    def _show_problem(self, message: str) -> None:
        if message:
            self.info.setText(f"⚠ {message}")

    def _custom(self) -> None:
        if self.preset.currentIndex() != 0 and not self._applying_preset:
            self.preset.setCurrentIndex(0)

    _applying_preset = False

    def _preset_chosen(self, index: int) -> None:
        value = self.preset.itemData(index)
        if not value:
            return
        w, h, unit, dpi = value
        self._applying_preset = True
        try:
            self.unit.blockSignals(True)
            self.unit.setCurrentText(unit)
            self._previous_unit = unit
            self.unit.blockSignals(False)
            self.width_box.setValue(w)
            self.height_box.setValue(h)
            self.dpi.setValue(dpi)
        finally:
            self._applying_preset = False
        self._changed()

    def _unit_changed(self) -> None:
        """Keep the physical size when the unit changes (px ↔ cm ↔ in through the DPI)."""
        old, new = self._previous_unit, self.unit.currentText()
        self._previous_unit = new
        inches = {"px": 1.0 / self.dpi.value(), "cm": 1 / 2.54, "in": 1.0}
        k = inches[old] / inches[new]
        for box in (self.width_box, self.height_box):
            box.blockSignals(True)
            box.setValue(round(box.value() * k, 0 if new == "px" else 2))
            box.blockSignals(False)
        self._changed()

    def _watch_session(self) -> None:
        self._unwatch = watch_session(self.session, self._session_changed)

    def _session_changed(self, *_args) -> None:
        self._data = None
        self.preview.refresh()

    # ---- settings ----------------------------------------------------------------------------------------
    def _get(self, key: str):
        return _setting(self._settings, key)

    def _load_settings(self, view: str | None) -> None:
        _select(self.view, view or self._get("view"))
        _select(self.heads, self._get("heads"))
        self.unit.setCurrentText(str(self._get("unit")) if self._get("unit") in ("px", "cm", "in") else "px")
        self.width_box.setValue(self._get("width"))
        self.height_box.setValue(self._get("height"))
        self.dpi.setValue(round(self._get("dpi")))
        self.font_pt.setValue(self._get("font_pt"))
        self.numbers.setChecked(self._get("numbers"))
        self.colorbar.setChecked(self._get("colorbar"))
        _select(self.theme, self._get("theme"))
        _select(self.format, self._get("format"))

    def _save_settings(self, **extra) -> None:
        values = {
            "view": self.view.currentData(),
            "heads": self.heads.currentData(),
            "width": self.width_box.value(),
            "height": self.height_box.value(),
            "unit": self.unit.currentText(),
            "dpi": float(self.dpi.value()),
            "font_pt": self.font_pt.value(),
            "numbers": self.numbers.isChecked(),
            "colorbar": self.colorbar.isChecked(),
            "theme": self.theme.currentData(),
            "format": self.export_format(),
            **extra,
        }
        for key, value in values.items():
            if self._settings is None:
                _MEMORY[key] = value
            else:
                self._settings.setValue(f"figure/{key}", value)

    def done(self, result: int) -> None:
        self._unwatch()
        self._save_settings()
        self.preview.shutdown()
        self._pool.waitForDone()
        super().done(result)


def _setting(settings: QSettings | None, key: str):
    """A remembered setting of the dialog, of its default's type (the default when missing or unreadable)."""
    default = DEFAULTS[key]
    if settings is None:
        return _MEMORY.get(key, default)
    value = settings.value(f"figure/{key}", default)
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() == "true"
        if isinstance(default, float):
            return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return value


def saved_choice(settings: QSettings | None = None) -> tuple[str, FigureOptions]:
    """The figure and the options last used in the export dialog (the defaults the first time)."""
    settings = settings if settings is not None else _default_settings()
    get = lambda key: _setting(settings, key)  # noqa: E731
    options = FigureOptions(
        width=get("width"),
        height=get("height"),
        unit=get("unit"),
        dpi=get("dpi"),
        font_pt=get("font_pt"),
        numbers=get("numbers"),
        colorbar=get("colorbar"),
        theme=get("theme"),
        heads=get("heads"),
    )
    try:
        options.check()
    except Exception:  # a settings file edited by hand: fall back to the defaults
        options = FigureOptions()
    return str(get("view")), options


def _select(box: QComboBox, data) -> None:
    index = box.findData(data)
    if index >= 0:
        box.setCurrentIndex(index)


def _wrap(layout) -> QWidget:
    w = QWidget()
    layout.setContentsMargins(0, 0, 0, 0)
    w.setLayout(layout)
    return w


def _default_settings() -> QSettings | None:
    """The app's settings file, or None (remember for this process only) when settings are switched off."""
    if os.environ.get("QKVGUI_NO_SETTINGS"):
        return None
    return QSettings("qkvgui", "qkvgui")
