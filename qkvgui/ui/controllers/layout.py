"""The window's layout as a user shapes it: focus one view (the rest stays as context), reset and remember the
splitters, step through heads and layers by key, and the light or dark theme."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QObject, Qt
from PySide6.QtGui import QAction, QActionGroup, QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QMenu

from qkvgui.ui.controllers.document import settings

#: the splitters' default sizes (left | right; views / inspector), and the sizes while a view is focused
DEFAULT_MAIN = (380, 900)
DEFAULT_RIGHT = (600, 170)
FOCUS_LEFT = 300
FOCUS_INSPECTOR = 64
THEMES = ("system", "light", "dark")


class LayoutController(QObject):
    """Focus, layout and theme for a MainWindow (given as ``window``)."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self._before_focus: tuple[list[int], list[int]] | None = None
        self.last_view = "weights"  # what View ▸ Focus brings forward: the view last hovered or clicked
        self.theme = "system"
        app = QApplication.instance()
        self._system_palette = QPalette(app.palette()) if isinstance(app, QApplication) else QPalette()

    # ---- focus and context ---------------------------------------------------------------------------------
    def focus_view(self, name: str | None) -> None:
        """Bring a view into focus by name (the part after ``view.``: "weights", "scores", "weights.head3" also
        selects head 3), or back to the overview with None or ""."""
        w = self.window
        pipeline = w.pipeline
        name = (name or "").removeprefix("view.") or None
        if name is not None and name.startswith("weights.head"):
            head = int(name.removeprefix("weights.head")) - 1
            if not 0 <= head < w.session.n_heads:
                raise KeyError(f"There is no head {head + 1}: this layer has {w.session.n_heads}.")
            w.session.set_head(head)
            name = "weights"
        if name is not None and name not in pipeline.views:
            raise KeyError(f"{name!r} cannot be focused: use one of {', '.join(pipeline.views)}.")
        if name is not None:
            w.right_tabs.setCurrentWidget(pipeline)
            if self._before_focus is None:  # remember the user's sizes, give the focused view the room
                main, right = w.main_splitter.sizes(), w.right_splitter.sizes()
                self._before_focus = (main, right)
                total_main, total_right = sum(main), sum(right)
                w.main_splitter.setSizes([min(main[0], FOCUS_LEFT), total_main - min(main[0], FOCUS_LEFT)])
                w.right_splitter.setSizes([total_right - FOCUS_INSPECTOR, FOCUS_INSPECTOR])
            self.last_view = name
        elif self._before_focus is not None:
            main, right = self._before_focus
            self._before_focus = None
            w.main_splitter.setSizes(main)
            w.right_splitter.setSizes(right)
        pipeline.focus(name)
        w.overview_action.setEnabled(name is not None)
        if name is not None:
            w.show_message(f"{name} in focus: Esc or double-click it to see every step again")

    def focus_last(self) -> None:
        """View ▸ Focus: the view last hovered (or the weights), or back to the overview when one is focused."""
        self.focus_view(None if self.window.pipeline.focused() else self.last_view)

    # ---- heads and layers by key ---------------------------------------------------------------------------
    def step_head(self, by: int) -> None:
        s = self.window.session
        s.set_head((s.head + by) % s.n_heads)

    def step_layer(self, by: int) -> None:
        s = self.window.session
        s.set_layer(min(max(s.layer + by, 0), s.n_layers - 1))

    # ---- layout --------------------------------------------------------------------------------------------
    def reset_layout(self) -> None:
        """View ▸ Reset layout: the default splitter sizes, every view in the overview, the first tabs."""
        w = self.window
        self.focus_view(None)
        for splitter, sizes in ((w.main_splitter, DEFAULT_MAIN), (w.right_splitter, DEFAULT_RIGHT)):
            total = sum(splitter.sizes()) or sum(sizes)
            splitter.setSizes([round(total * k / sum(sizes)) for k in sizes])
        w.show_message("layout reset")

    def restore(self) -> None:
        store = settings()
        if store is None:
            return
        w = self.window
        geometry = store.value("geometry")
        if isinstance(geometry, QByteArray):
            w.restoreGeometry(geometry)
        for key, splitter in (("main_splitter", w.main_splitter), ("right_splitter", w.right_splitter)):
            state = store.value(key)
            if isinstance(state, QByteArray):
                splitter.restoreState(state)
        theme = store.value("theme")
        if theme in THEMES:
            self.set_theme(str(theme))

    def save(self) -> None:
        store = settings()
        if store is None:
            return
        w = self.window
        self.focus_view(None)  # remember the user's own sizes, not the focus mode's
        store.setValue("geometry", w.saveGeometry())
        store.setValue("main_splitter", w.main_splitter.saveState())
        store.setValue("right_splitter", w.right_splitter.saveState())
        store.setValue("theme", self.theme)

    # ---- theme ---------------------------------------------------------------------------------------------
    def set_theme(self, theme: str) -> None:
        """Follow the system's light or dark palette ("system"), or force one; heatmaps follow the palette."""
        if theme not in THEMES:
            raise ValueError(f"Unknown theme {theme!r}: use one of {', '.join(THEMES)}.")
        self.theme = theme
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "setColorScheme"):  # Qt ≥ 6.8: tell the platform too (native dialogs, title bars)
            hints.setColorScheme(
                {"system": Qt.ColorScheme.Unknown, "light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}[theme]
            )
        app = QApplication.instance()
        if isinstance(app, QApplication):
            palettes = {"system": self._system_palette, "light": light_palette(), "dark": dark_palette()}
            app.setPalette(palettes[theme])
        for action in self.window.theme_actions.actions():
            action.setChecked(action.data() == theme)


def build_view_menu(window, layout: LayoutController) -> None:
    """View ▸ Focus, Back to every step, heads and layers, Reset layout, Theme."""
    add = window.menus.add
    add(
        "View",
        "&Focus the view under the mouse",
        layout.focus_last,
        "Ctrl+Shift+F",
        "focus",
        "Bring the last view you pointed at (the weights at first) into the large pane; again to go back.",
    )
    focus_menu = window.menu("View").addMenu("Focus &view")
    for name in window.pipeline.views:
        focus_menu.addAction(name, lambda n=name: layout.focus_view(n))
    window.overview_action = add(
        "View", "&Back to every step", lambda: layout.focus_view(None), "Escape", "back_to_overview"
    )
    window.overview_action.setEnabled(False)
    window.menu("View").addSeparator()
    add("View", "&Next head", lambda: layout.step_head(1), "Alt+Right", "next_head")
    add("View", "&Previous head", lambda: layout.step_head(-1), "Alt+Left", "previous_head")
    add("View", "Next &layer", lambda: layout.step_layer(1), "Alt+Down", "next_layer")
    add("View", "Previous l&ayer", lambda: layout.step_layer(-1), "Alt+Up", "previous_layer")
    window.menu("View").addSeparator()
    add("View", "&Reset layout", layout.reset_layout, None, "reset_layout")
    theme_menu: QMenu = window.menu("View").addMenu("&Theme")
    window.theme_actions = QActionGroup(window)
    for theme in THEMES:
        action = QAction(theme.capitalize() if theme != "system" else "Follow the system", window, checkable=True)
        action.setData(theme)
        action.setObjectName(f"action.theme_{theme}")
        action.setChecked(theme == layout.theme)
        action.triggered.connect(lambda _=False, t=theme: layout.set_theme(t))
        window.theme_actions.addAction(action)
        theme_menu.addAction(action)


def light_palette() -> QPalette:
    return _palette(
        window="#efefef", text="#1a1a1a", base="#ffffff", alt="#f4f4f4", button="#e6e6e6", disabled="#8a8a8a"
    )


def dark_palette() -> QPalette:
    return _palette(
        window="#2b2b2b", text="#e8e8e8", base="#1f1f1f", alt="#282828", button="#383838", disabled="#7a7a7a"
    )


def _palette(window: str, text: str, base: str, alt: str, button: str, disabled: str) -> QPalette:
    p = QPalette()
    role = QPalette.ColorRole
    for r, c in (
        (role.Window, window),
        (role.WindowText, text),
        (role.Base, base),
        (role.AlternateBase, alt),
        (role.Text, text),
        (role.Button, button),
        (role.ButtonText, text),
        (role.ToolTipBase, base),
        (role.ToolTipText, text),
        (role.Highlight, "#2f6fd0"),
        (role.HighlightedText, "#ffffff"),
        (role.PlaceholderText, disabled),
        (role.Link, "#4a90e2"),
    ):
        p.setColor(r, QColor(c))
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, r, QColor(disabled))
    return p
