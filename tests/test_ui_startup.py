"""Start-up builds what is visible: the hidden tabs are built when first shown (or asked for by a script)."""

from qkvgui.ui.heatmap import HeatmapView


def test_hidden_tabs_are_built_when_first_shown(window, qtbot):
    from qkvgui.ui.circuits_panel import CircuitsPanel
    from qkvgui.ui.learn_panel import LearnPanel

    tabs = window.right_tabs
    assert [tabs.tabText(i) for i in range(tabs.count())] == [
        "Attention, step by step",
        "QK and OV circuits",
        "Learn",
        "Model",
    ]
    assert not window.findChildren(CircuitsPanel) and not window.findChildren(LearnPanel)
    assert tabs.built("circuits") is None and "qk_circuit" not in window.views
    heatmaps = len(window.findChildren(HeatmapView))

    tabs.setCurrentIndex(1)  # the user selects the circuits tab: built, shown and drawn at once
    qtbot.wait(20)
    circuits = tabs.currentWidget()
    assert (
        isinstance(circuits, CircuitsPanel) and circuits is window.circuits and tabs.tabText(1) == "QK and OV circuits"
    )
    assert window.views["qk_circuit"].data().shape == (window.session.d_model, window.session.d_model)
    assert len(window.findChildren(HeatmapView)) > heatmaps

    tabs.setCurrentIndex(0)
    learn = window.learn  # a script's accessor builds it without showing it
    assert isinstance(learn, LearnPanel) and tabs.currentIndex() == 0 and tabs.widget(2) is learn
    tabs.setCurrentWidget(window.model_tab.panel)
    qtbot.waitUntil(lambda: window.model_tab.panel.isVisible())
    assert tabs.shown_tab() == "model"


def test_a_session_saved_on_a_hidden_tab_opens_on_it(qtbot, tmp_path):
    from qkvgui import Session
    from qkvgui.ui.circuits_panel import CircuitsPanel
    from qkvgui.ui.main_window import MainWindow

    s = Session()
    s.set_extra("view", "circuits")
    w = MainWindow(s)
    qtbot.addWidget(w)
    w.show()
    assert isinstance(w.right_tabs.currentWidget(), CircuitsPanel)
    qtbot.waitUntil(lambda: w.views["qk_circuit"].data().size > 0)
