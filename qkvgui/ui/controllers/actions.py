"""The menu bar: File, Edit, View, Presets, Help, and a place for everyone else's entries (``menu(title)``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu, QMessageBox

from qkvgui.core.presets import make_preset, preset_names
from qkvgui.ui.controllers.keys import ShortcutsDialog, unique_keys

T = TypeVar("T")


def bind(fn: Callable[[T], object], arg: T) -> Callable[[], None]:
    """``fn(arg)`` as a slot taking no arguments: one per menu entry made in a loop, each with its own arg."""

    def slot() -> None:
        fn(arg)

    return slot


class Menus:
    """Builds the standard menus on ``window``'s menu bar; ``menu("View")`` returns (or adds, before Help) a menu."""

    ORDER = ("&File", "&Edit", "&View", "&Presets", "&Help")

    def __init__(self, window: QMainWindow):
        self.window = window
        self.menus: dict[str, QMenu] = {}
        for title in self.ORDER:
            self.menus[_plain(title)] = window.menuBar().addMenu(title)

    def menu(self, title: str) -> QMenu:
        """The menu called title ("File", "View", ...), made (before Help) when it does not exist yet."""
        key = _plain(title)
        if key not in self.menus:
            menu = QMenu(title, self.window)
            self.window.menuBar().insertMenu(self.menus["Help"].menuAction(), menu)
            self.menus[key] = menu
        return self.menus[key]

    def add(
        self,
        menu: str,
        text: str,
        triggered: Callable[[], object],
        shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
        name: str | None = None,
        tip: str | None = None,
    ) -> QAction:
        """Add one entry to a menu; name becomes the action's objectName (``action.<name>``)."""
        action = QAction(text, self.window)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if name:
            action.setObjectName(f"action.{name}")
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.triggered.connect(lambda _=False: triggered())
        self.menu(menu).addAction(action)
        return action


def build_standard_menus(window, menus: Menus) -> None:
    """The entries every window has; window is the MainWindow (its document, figures and undo stack)."""
    doc, figures = window.document, window.figures
    add = menus.add
    add("File", "&New", doc.new_session, QKeySequence.StandardKey.New, "new")
    add("File", "&Open…", doc.open_dialog, QKeySequence.StandardKey.Open, "open")
    window.recent_menu = menus.menu("File").addMenu("Open &Recent")
    window.recent_menu.aboutToShow.connect(lambda: doc.fill_recent(window.recent_menu))
    # the menu's saves write on the worker (a large document took 75 ms and more on the GUI thread)
    add("File", "&Save", lambda: doc.save(background=True), QKeySequence.StandardKey.Save, "save")
    add("File", "Save &As…", lambda: doc.save_as(background=True), QKeySequence.StandardKey.SaveAs, "save_as")
    menus.menu("File").addSeparator()
    add("File", "&Import model…", doc.import_layer_dialog, "Ctrl+I", "import_layer")
    window.reset_action = add("File", "Reset to &model weights", doc.reset_to_model, None, "reset_to_model")
    menus.menu("File").addSeparator()
    add("File", "&Export figure…", figures.export_figure_dialog, "Ctrl+E", "export_figure")
    add("File", "&Copy figure to clipboard", figures.copy_figure_dialog, "Ctrl+Shift+C", "copy_figure")
    add("File", "Export &animation…", figures.export_animation_dialog, None, "export_animation")
    add("View", "&Step through…", figures.step_through, "Ctrl+T", "step_through")
    menus.menu("File").addSeparator()
    add("File", "&Quit", window.close, QKeySequence.StandardKey.Quit, "quit")

    edit = menus.menu("Edit")
    undo = window.undo_stack.createUndoAction(window, "&Undo")
    undo.setShortcuts(unique_keys(QKeySequence.StandardKey.Undo))
    redo = window.undo_stack.createRedoAction(window, "&Redo")
    # Once each: on X11 QKeySequence.Redo already holds Ctrl+Shift+Z, and a key bound twice is ambiguous (dead).
    redo.setShortcuts(unique_keys(QKeySequence.StandardKey.Redo, "Ctrl+Shift+Z", "Ctrl+Y"))
    edit.addAction(undo)
    edit.addAction(redo)
    window.undo_action, window.redo_action = undo, redo

    presets = menus.menu("Presets")
    for name in preset_names():
        preset = make_preset(name)
        action = presets.addAction(f"{preset.title}  ({name})", bind(doc.open_preset, name))
        action.setToolTip(preset.description)
    presets.setToolTipsVisible(True)

    add("Help", "&Keyboard shortcuts", lambda: ShortcutsDialog(window).exec(), "F1", "shortcuts")
    add(
        "Help",
        "&About qkvgui",
        lambda: QMessageBox.about(
            window, "About qkvgui", "qkvgui: edit Q, K, V and O and watch every step of attention."
        ),
        None,
        "about",
    )


def _plain(title: str) -> str:
    return title.replace("&", "")
