"""The window's layout as a user shapes it: focus one view (the rest stays as context), reset and remember the
splitters, step through heads and layers by key, and the light or dark theme."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QObject, QRect, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QGridLayout, QMenu, QWidget

from qkvgui.ui.controllers.document import settings
from qkvgui.ui.heatmap import HeatmapView
from qkvgui.ui.pipeline import QWIDGETSIZE_MAX

#: the splitters' default sizes (left | right; views / inspector) on a large window, and the sizes while a view is
#: focused; on a window below LARGE the left panel and the inspector give the views room (see default_sizes)
DEFAULT_MAIN = (380, 900)
DEFAULT_RIGHT = (600, 170)
LARGE = (1500, 950)
SMALL_LEFT = 330  # the editors' own minimum width holds it at ~350
SMALL_INSPECTOR = 120
#: a first window (no saved geometry) takes this fraction of the screen, centred, or the whole screen when that
#: would be smaller than FIRST_MIN
FIRST_FRACTION = 0.9
FIRST_MIN = (1280, 760)


def default_sizes(width: int, height: int) -> tuple[list[int], list[int]]:
    """The splitters' default sizes for a window of this size: (left, right) and (views, inspector). Below LARGE
    the left panel and the inspector shrink, so that at 1280 × 800 the default session's scores, weights and head
    outputs are big enough for their numbers."""
    left = DEFAULT_MAIN[0] if width >= LARGE[0] else SMALL_LEFT
    inspector = DEFAULT_RIGHT[1] if height >= LARGE[1] else SMALL_INSPECTOR
    return [left, max(1, width - left)], [max(1, height - inspector), inspector]


def first_geometry(available: QRect) -> tuple[QRect, bool]:
    """Where a first window goes on a screen with this available geometry: (rectangle, maximized). A fraction of
    the screen, centred; the whole screen (maximized) when that fraction would be cramped."""
    w, h = round(available.width() * FIRST_FRACTION), round(available.height() * FIRST_FRACTION)
    if w < FIRST_MIN[0] or h < FIRST_MIN[1]:
        return QRect(available), True
    rect = QRect(0, 0, w, h)
    rect.moveCenter(available.center())
    return rect, False


#: a heatmap of another tab in focus: its name, the widgets hidden for it, its (minimum, maximum) sizes, and the
#: stretch factors (rows, columns) of the grids around it, to put back when it leaves the focus
TabFocus = tuple[str, list[QWidget], tuple[QSize, QSize], list[tuple[QGridLayout, list[int], list[int]]]]

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
        #: a heatmap of another tab (circuits, Learn, Model) in focus: (name, the widgets hidden for it, its sizes,
        #: the stretch factors of the grids around it, to put back)
        self._tab_focus: TabFocus | None = None
        # after the tab is built (a lazy tab builds on showing); the context object cancels it with the window
        window.right_tabs.currentChanged.connect(lambda _: QTimer.singleShot(0, self, self.hook_tab_views))
        QTimer.singleShot(0, self, self.hook_tab_views)

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
        self._unfocus_tab()
        if name is not None and name not in pipeline.views:
            view = self.tab_view(name)
            if view is None:
                raise KeyError(f"{name!r} cannot be focused: use one of {', '.join(pipeline.views)}.")
            self._focus_tab_view(name, view)
            return
        if name is not None:
            w.right_tabs.setCurrentWidget(pipeline)
            self._make_room()
            self.last_view = name
        else:
            self._give_room_back()
        pipeline.focus(name)
        w.overview_action.setEnabled(name is not None)
        if name is not None:
            w.show_message(f"{name} in focus: Esc or double-click it to see every step again")

    # ---- focus in the other tabs: circuits, Learn, Model -----------------------------------------------------
    def tab_view(self, name: str) -> HeatmapView | None:
        """The heatmap called ``view.<name>`` in a tab other than the pipeline's, or None."""
        pipeline = self.window.pipeline
        for _ in range(2):  # again after building the tabs not shown yet: one of them may hold it
            for view in self.window.right_tabs.findChildren(HeatmapView, f"view.{name}"):
                if not pipeline.isAncestorOf(view):
                    return view
            if not self.window.right_tabs.build_all():
                break
        return None

    def hook_tab_views(self) -> None:
        """Every heatmap of the tabs beside the pipeline is focused by a double-click (and its menu offers it);
        run when a tab is shown, so that a tab built late (lazily) is hooked too."""
        pipeline = self.window.pipeline
        for view in self.window.right_tabs.findChildren(HeatmapView):
            name = view.objectName().removeprefix("view.")
            # marked on the view itself (an id() of a deleted view can come back for a new one)
            if view.property("focus_hooked") or pipeline.isAncestorOf(view) or not name:
                continue
            view.setProperty("focus_hooked", True)
            view.double_clicked.connect(lambda name=name: self.focus_view(None if self.focused() else name))
            view.menu_hooks.append(self._tab_view_menu)

    def focused(self) -> str | None:
        """The view in focus, in any tab, or None."""
        return self._tab_focus[0] if self._tab_focus else self.window.pipeline.focused()

    def _tab_view_menu(self, view: HeatmapView, menu: QMenu) -> None:
        name = view.objectName().removeprefix("view.")
        focused = self.focused() == name
        menu.addAction(
            "Back to the whole tab  (Esc)" if focused else "Focus this view",
            lambda: self.focus_view(None if focused else name),
        )

    def _focus_tab_view(self, name: str, view: HeatmapView) -> None:
        """Give one heatmap of a tab all of the tab: everything around it is hidden (and shown again by
        _unfocus_tab), its fixed size lifted; the left panel and the inspector make room as for the pipeline."""
        w = self.window
        tabs = w.right_tabs
        tab = next((tabs.widget(i) for i in range(tabs.count()) if tabs.widget(i).isAncestorOf(view)), None)
        if tab is None:
            raise KeyError(f"{name!r} is not in a tab.")
        tabs.setCurrentWidget(tab)
        hidden: list[QWidget] = []
        grids: list[tuple[QGridLayout, list[int], list[int]]] = []
        child: QWidget = view
        parent = child.parentWidget()
        while child is not tab and parent is not None:
            for sibling in parent.findChildren(QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly):
                if sibling is not child and not sibling.isWindow() and sibling.isVisibleTo(parent):
                    sibling.hide()
                    hidden.append(sibling)
            grid = parent.layout()
            if isinstance(grid, QGridLayout) and grid.indexOf(child) >= 0:  # a grid's stretch keeps empty rows
                rows = [grid.rowStretch(r) for r in range(grid.rowCount())]
                cols = [grid.columnStretch(c) for c in range(grid.columnCount())]
                grids.append((grid, rows, cols))
                position: tuple[int, int, int, int] = grid.getItemPosition(grid.indexOf(child))  # type: ignore[assignment]
                row, col, row_span, col_span = position
                for r in range(grid.rowCount()):
                    grid.setRowStretch(r, 1 if row <= r < row + row_span else 0)
                for c in range(grid.columnCount()):
                    grid.setColumnStretch(c, 1 if col <= c < col + col_span else 0)
            child, parent = parent, parent.parentWidget()
        sizes = (view.minimumSize(), view.maximumSize())
        view.setMinimumSize(QSize(0, 0))
        view.setMaximumSize(QSize(QWIDGETSIZE_MAX, QWIDGETSIZE_MAX))
        self._tab_focus = (name, hidden, sizes, grids)
        self._make_room()
        self.last_view = name
        w.overview_action.setEnabled(True)
        w.show_message(f"{name} in focus: Esc or double-click it to see the whole tab again")

    def _unfocus_tab(self) -> None:
        if self._tab_focus is None:
            return
        name, hidden, (smallest, largest), grids = self._tab_focus
        self._tab_focus = None
        for widget in hidden:
            widget.show()
        for grid, rows, cols in grids:
            for r, stretch in enumerate(rows):
                grid.setRowStretch(r, stretch)
            for c, stretch in enumerate(cols):
                grid.setColumnStretch(c, stretch)
        view = self.tab_view(name)
        if view is not None:
            view.setMinimumSize(smallest)
            view.setMaximumSize(largest)
        self._give_room_back()
        self.window.overview_action.setEnabled(False)

    def _make_room(self) -> None:
        w = self.window
        if self._before_focus is None:  # remember the user's sizes, give the focused view the room
            main, right = w.main_splitter.sizes(), w.right_splitter.sizes()
            self._before_focus = (main, right)
            total_main, total_right = sum(main), sum(right)
            w.main_splitter.setSizes([min(main[0], FOCUS_LEFT), total_main - min(main[0], FOCUS_LEFT)])
            w.right_splitter.setSizes([total_right - FOCUS_INSPECTOR, FOCUS_INSPECTOR])

    def _give_room_back(self) -> None:
        w = self.window
        if self._before_focus is not None:
            main, right = self._before_focus
            self._before_focus = None
            w.main_splitter.setSizes(main)
            w.right_splitter.setSizes(right)

    def focus_last(self) -> None:
        """View ▸ Focus: the view last hovered (or the weights), or back to the overview when one is focused."""
        self.focus_view(None if self.focused() else self.last_view)

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
        self.default_layout()
        w.show_message("layout reset")

    def default_layout(self) -> None:
        """The splitters' default sizes for the window's present size (``default_sizes``)."""
        w = self.window
        main, right = default_sizes(w.width(), w.height())
        for splitter, sizes in ((w.main_splitter, main), (w.right_splitter, right)):
            total = sum(splitter.sizes()) if splitter.isVisible() and sum(splitter.sizes()) else sum(sizes)
            first = min(sizes[0], total - 1)
            splitter.setSizes([first, total - first] if splitter is w.main_splitter else [total - sizes[1], sizes[1]])

    def fit_to_screen(self) -> None:
        """A first window (no saved geometry): 90% of the screen's available area, centred, or maximized on a
        small screen (``first_geometry``)."""
        w = self.window
        screen = w.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        rect, maximized = first_geometry(screen.availableGeometry())
        w.setGeometry(rect)
        if maximized:
            w.setWindowState(w.windowState() | Qt.WindowState.WindowMaximized)

    def restore(self) -> None:
        """The saved window geometry, splitters and theme; a first window is fitted to the screen instead, and the
        splitters get the default sizes for its size. (Without settings, in tests, the window keeps its size.)"""
        store = settings()
        w = self.window
        geometry = store.value("geometry") if store is not None else None
        restored = isinstance(geometry, QByteArray) and w.restoreGeometry(geometry)
        if store is not None and not restored:
            self.fit_to_screen()
        self.default_layout()
        if store is None:
            return
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
