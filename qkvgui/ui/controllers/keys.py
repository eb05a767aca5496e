"""Keyboard: Undo and Redo reach the session from every widget, and Help ▸ Keyboard shortcuts lists every key."""

from __future__ import annotations

from typing import cast

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLineEdit,
    QMainWindow,
    QMenu,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

#: keys that are not menu entries: the heatmaps' and the editors' own
OTHER_KEYS = (
    ("Heatmaps", "Zoom in / out", "Wheel, + / −"),
    ("Heatmaps", "Pan", "Drag"),
    ("Heatmaps", "Reset zoom", "Home or 0"),
    ("Heatmaps", "Focus a view / back to every step", "Double-click"),
    ("Heatmaps", "Select a head", "Click its thumbnail"),
    ("Heatmaps", "Pin a cell in the inspector", "Click"),
    ("Editors", "Edit a cell, then move down / right", "Type, Enter / Tab"),
    ("Editors", "Clear the selected cells", "Delete"),
    ("Editors", "Copy / paste a tab-separated block", "Ctrl+C / Ctrl+V"),
    ("Tokens", "Apply the typed tokens", "Enter"),
)


def unique_keys(*sequences: QKeySequence | QKeySequence.StandardKey | str) -> list[QKeySequence]:
    """The key sequences once each: QKeySequence.Redo already holds Ctrl+Shift+Z on X11, and a sequence bound
    twice to one action is ambiguous there and does nothing."""
    keys: list[QKeySequence] = []
    for seq in sequences:
        options = QKeySequence.keyBindings(seq) if isinstance(seq, QKeySequence.StandardKey) else [QKeySequence(seq)]
        for key in options:
            if not key.isEmpty() and key not in keys:
                keys.append(key)
    return keys


class UndoEverywhere(QObject):
    """An application event filter: a text field with no typing of its own to undo lets Ctrl+Z (and Redo) go to
    the window's Undo; a spin box always does (its text is not what the user means to undo)."""

    def __init__(self, undo: QAction, redo: QAction, parent: QObject | None = None):
        super().__init__(parent)
        self.undo, self.redo = undo, redo

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.ShortcutOverride or not isinstance(watched, QLineEdit | QAbstractSpinBox):
            return False
        assert isinstance(event, QKeyEvent)
        pressed = QKeySequence(event.keyCombination())
        # A spin box hands the event to its line edit itself, so the spin box is the one to watch.
        in_spin = isinstance(watched, QAbstractSpinBox) or isinstance(watched.parent(), QAbstractSpinBox)
        if isinstance(watched, QAbstractSpinBox):
            return pressed in self.undo.shortcuts() or pressed in self.redo.shortcuts()
        if pressed in self.undo.shortcuts():
            if in_spin or not watched.isUndoAvailable():
                return True  # not accepted by the field: the window's shortcut runs
        elif pressed in self.redo.shortcuts() and (in_spin or not watched.isRedoAvailable()):
            return True
        return False


def install_undo_everywhere(window: QWidget, undo: QAction, redo: QAction) -> UndoEverywhere:
    filt = UndoEverywhere(undo, redo, window)
    app = QApplication.instance()
    if app is not None:
        app.installEventFilter(filt)
        window.destroyed.connect(lambda *_: app.removeEventFilter(filt))
    return filt


def menu_shortcuts(window: QMainWindow) -> list[tuple[str, str, str]]:
    """(menu, entry, keys) for every menu entry with a key, in menu order."""
    rows: list[tuple[str, str, str]] = []

    def walk(menu: QMenu, path: str) -> None:
        for action in menu.actions():
            submenu = action.menu()
            if isinstance(submenu, QMenu):
                walk(submenu, f"{path} ▸ {action.text().replace('&', '')}")
            elif action.shortcuts():
                keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts())
                rows.append((path, action.text().replace("&", "").split("\t")[0], keys))

    for top in window.menuBar().actions():
        menu = top.menu()
        if isinstance(menu, QMenu):
            walk(menu, top.text().replace("&", ""))
    return rows


class ShortcutsDialog(QDialog):
    """Help ▸ Keyboard shortcuts: every menu key, then the heatmaps' and editors' own keys."""

    def __init__(self, window: QMainWindow):
        super().__init__(window)
        self.setObjectName("dialog.shortcuts")
        self.setWindowTitle("Keyboard shortcuts")
        rows = [*menu_shortcuts(window), *OTHER_KEYS]
        self.table = QTableWidget(len(rows), 3)
        self.table.setObjectName("shortcuts.table")
        self.table.setHorizontalHeaderLabels(["Where", "What", "Keys"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(560, 520)

    def rows(self) -> list[tuple[str, str, str]]:
        t = self.table
        texts = [[cast(QTableWidgetItem, t.item(r, c)).text() for c in range(3)] for r in range(t.rowCount())]
        return [(a, b, c) for a, b, c in texts]
