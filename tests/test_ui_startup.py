"""Start-up builds what is visible: the hidden tabs are built when first shown (or asked for by a script), and
`qkvgui` paints its window before it draws the heatmaps in."""

import os
import subprocess
import sys

import numpy as np
from PySide6.QtGui import QImage

from qkvgui.ui.heatmap import HeatmapView

#: the steps a user sees without RoPE or a whole model, in reading order
SHOWN_STEPS = ("q", "k", "v", "scores", "scaled", "masked", "weights", "head_outputs", "concat", "output", "residual")


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


def _colours(widget) -> int:
    """How many distinct colours a widget's pixels hold (a blank frame with a title has a handful)."""
    image = widget.grab().toImage()
    return len({image.pixel(x, y) for x in range(0, image.width(), 3) for y in range(0, image.height(), 3)})


def test_qkvgui_paints_its_window_first_and_then_draws_every_view_with_its_data(qtbot):
    # `qkvgui` makes its window so: painted at once with its menus, editors, controls and every view's frame
    # and title, the heatmaps drawn in over the next event-loop turns
    from qkvgui.ui.main_window import MainWindow

    w = MainWindow(progressive=True)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    pipeline = w.pipeline
    shown = pipeline.shown_views()
    assert [v.objectName() for v in shown[:11]] == [f"view.{n}" for n in SHOWN_STEPS]
    assert not any(view.built() for view in shown)  # nothing is drawn before the window is painted...
    head = w.result.head(0)
    # ...but every view already holds its data and title (what a script reads back)
    assert w.views["weights"].data() is head.weights and w.views["q"].title().startswith("Q = X·W_Q")

    w.show()
    qtbot.waitUntil(w.is_constructed, timeout=60_000)
    assert all(view.built() for view in pipeline.shown_views())
    for name in SHOWN_STEPS:  # each view shows the picture of its own step, not a blank frame
        view = w.views[name]
        data = head.weights if name == "weights" else view.data()
        np.testing.assert_array_equal(view.image_array(), np.where(np.isfinite(data), data, np.nan).astype(np.float32))
    np.testing.assert_array_equal(w.views["scores"].data(), head.scores)
    np.testing.assert_array_equal(w.views["residual"].data(), w.result.residual)
    qtbot.wait(50)
    assert min(_colours(w.views[name]) for name in SHOWN_STEPS) > 20
    assert _colours(pipeline.head_views[0]) > 10
    # the views that do not apply (RoPE's, a whole model's block) are not built at all
    assert not any(w.views[name].built() for name in ("q_rope", "k_rope", "angles", "block"))


def test_a_progressive_window_looks_the_same_as_one_made_at_once(qtbot):
    from qkvgui.ui.main_window import MainWindow

    windows = []
    for progressive in (False, True):
        w = MainWindow(progressive=progressive)
        qtbot.addWidget(w)
        w.resize(1280, 800)
        w.show()
        qtbot.waitUntil(w.is_constructed, timeout=60_000)
        windows.append(w)
    at_once, progressive = windows

    def pixels(view) -> np.ndarray:
        image = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
        return np.frombuffer(image.constBits(), np.uint32, image.width() * image.height()).copy()

    def same() -> bool:  # pixel for pixel, but for a glyph or two antialiased differently by the font cache and
        # an image edge a fraction of a pixel apart (a blank view or a shifted layout differs in thousands of pixels)
        for name in SHOWN_STEPS:
            a, b = pixels(at_once.views[name]), pixels(progressive.views[name])
            if a.shape != b.shape or np.count_nonzero(a != b) > 0.01 * a.size:
                return False
        return True

    qtbot.waitUntil(same, timeout=10_000)


def test_a_script_can_finish_a_progressive_window_at_once(qtbot):
    from qkvgui.ui.main_window import MainWindow

    w = MainWindow(progressive=True)
    qtbot.addWidget(w)
    assert not w.is_constructed()
    w.views["k"].image_array()  # whatever needs a figure builds it on the spot
    assert w.views["k"].built() and not w.views["q"].built()
    w.finish_construction()
    assert w.is_constructed() and all(view.built() for view in w.pipeline.shown_views())
    w.focus_view("weights")
    assert w.pipeline.focused() == "weights"
    np.testing.assert_array_equal(w.views["weights"].image_array(), w.result.head(0).weights.astype(np.float32))


def test_the_rotary_views_are_built_when_rope_is_switched_on(window, qtbot):
    rotary = [window.views[name] for name in ("q_rope", "k_rope", "angles")]
    assert not any(view.built() or view.isVisible() for view in rotary)  # no RoPE: not made at all

    window.dk_spin.setValue(4)  # rotary positions turn pairs of coordinates: d_k even first
    qtbot.waitUntil(lambda: window.session.d_k == 4, timeout=10_000)
    window.controls.rotary_controls.rotary_box.click()  # the user ticks "RoPE"
    qtbot.waitUntil(lambda: window.result is not None and window.result.rotary is not None, timeout=10_000)
    # built one per event-loop turn once they are shown (each takes 25-40 ms), drawn when the window has settled
    qtbot.waitUntil(lambda: all(view.isVisible() for view in rotary) and not window.pipeline.drawing(), timeout=10_000)
    assert all(view.built() for view in rotary)
    r = window.result
    np.testing.assert_array_equal(window.views["q_rope"].image_array(), r.q_rope[0].astype(np.float32))
    np.testing.assert_array_equal(window.views["k_rope"].image_array(), r.k_rope[0].astype(np.float32))
    qtbot.wait(50)
    assert min(_colours(view) for view in rotary) > 20


def test_qkvgui_imports_pyqtgraph_only_after_its_window_is_painted(tmp_path):
    # a fresh process, as `qkvgui` starts: what the first paint needs does not include pyqtgraph (the heatmaps')
    script = """
import sys
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv[:1])
class Watch(QObject):
    window = None
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint and self.window is None and isinstance(obj, QMainWindow):
            self.window = obj
            print("FIRST PAINT", "pyqtgraph" in sys.modules, obj.is_constructed(), flush=True)
            obj.constructed.connect(self.done)
        return False
    def done(self):
        views = self.window.pipeline.shown_views()
        print("DRAWN", "pyqtgraph" in sys.modules, all(v.built() for v in views), len(views), flush=True)
        QTimer.singleShot(0, app.quit)
watch = Watch(); app.installEventFilter(watch)
from qkvgui.cli import main
main([])
"""
    env = {**os.environ, "QKVGUI_NO_SETTINGS": "1", "QKVGUI_AUTOSAVE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith(("FIRST PAINT", "DRAWN"))]
    assert lines == ["FIRST PAINT False False", "DRAWN True True 13"], out.stderr[-2000:]


def test_the_heatmaps_are_drawn_in_one_view_per_event_loop_turn(qtbot):
    # the window stays responsive while it fills in: never all the views in one go (a turn of ~10 ms each)
    from PySide6.QtCore import QTimer

    from qkvgui.ui.main_window import MainWindow

    w = MainWindow(progressive=True)
    qtbot.addWidget(w)
    counts: list[int] = []
    probe = QTimer(interval=0)  # runs between the fill's turns
    probe.timeout.connect(lambda: counts.append(sum(view.built() for view in w.pipeline.shown_views())))
    probe.start()
    w.show()
    qtbot.waitUntil(w.is_constructed, timeout=60_000)
    probe.stop()
    shown = w.pipeline.shown_views()
    assert len(shown) == 13 and all(view.built() for view in shown)
    # seen between turns: none built, then one more each turn (the last one may come just before constructed)
    steps = sorted(set(counts))
    assert steps == list(range(len(steps))) and len(steps) >= len(shown), counts


def test_a_window_closed_while_it_fills_in_builds_nothing_more(qtbot):
    from PySide6.QtCore import QTimer

    from qkvgui.ui.main_window import MainWindow

    w = MainWindow(progressive=True)
    qtbot.addWidget(w)
    seen: list[list[bool]] = []

    def close_after_the_first() -> None:
        built = [view.built() for view in w.pipeline.shown_views()]
        if any(built) and not seen:
            seen.append(built)
            w.close()  # the user closes the window while it is still filling in

    probe = QTimer(interval=0)
    probe.timeout.connect(close_after_the_first)
    probe.start()
    w.show()
    qtbot.waitUntil(lambda: bool(seen), timeout=60_000)
    probe.stop()
    qtbot.wait(300)  # the fill's turns would have built the rest by now
    assert [view.built() for view in w.pipeline.shown_views()] == seen[0] and not all(seen[0])
