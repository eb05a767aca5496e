"""The window as others extend it: a tab and a menu entry in a few lines, each working as a user sees it."""

from PySide6.QtWidgets import QLabel

from qkvgui.ui.heatmap import HeatmapView


def test_a_new_tab_and_its_views_join_the_window(qtbot, window):
    view = HeatmapView("weights")
    view.setObjectName("view.extra")
    index = window.add_tab(view, "Extra", views={"extra": view})
    assert window.right_tabs.tabText(index) == "Extra"
    assert window.views["extra"] is view
    # figures are drawn from the session by the renderer (qkvgui.io.figure_paint), not copied from tab widgets
    window.right_tabs.setCurrentIndex(index)
    assert view.isVisible()


def test_a_new_menu_goes_before_help_and_its_entry_runs(qtbot, window):
    hits = []
    action = window.menus.add("Model", "Overview", lambda: hits.append(1), "Ctrl+Alt+M", name="model_overview")
    titles = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert titles.index("Model") == titles.index("Help") - 1
    assert window.menu("View") is window.menu("&View")
    action.trigger()
    assert hits == [1]
    assert window.findChild(type(action), "action.model_overview") is action


def test_a_new_editor_tab_sits_beside_the_weights(qtbot, window):
    label = QLabel("learn")
    index = window.add_editor_tab(label, "Learn")
    assert window.tabs.tabText(index) == "Learn"
