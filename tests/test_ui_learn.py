"""The Learn tab, driven as a user drives it: paint the target, press Start or Step, watch the views, undo the fit."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QApplication, QCheckBox

from qkvgui import Session
from qkvgui.core import multi_head_attention, target_preset
from qkvgui.ui.learn_panel import LearnPanel
from qkvgui.ui.main_window import MainWindow


@pytest.fixture
def learn_window(qtbot):
    """The window on the guided example, as a newcomer opens it (1280 × 800)."""
    w = MainWindow(Session.from_preset("learn-previous-token"))
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    qtbot.wait(50)
    yield w
    w.learn.pause()
    w.undo_stack.setClean()  # no "save changes?" question when the test closes it


def session_weights(s: Session, head: int) -> np.ndarray:
    """The head's attention weights computed here from the session's raw arrays."""
    r = multi_head_attention(
        s.matrix("X"),
        s.matrix("W_Q"),
        s.matrix("W_K"),
        s.matrix("W_V"),
        s.matrix("W_O"),
        causal=s.causal,
        scale=s.scale(),
    )
    return r.weights[head]


def cell_point(view, i: int, j: int) -> QPoint:
    """Where cell (i, j) of a heatmap is on its graphics view's viewport."""
    gv = view.graphics_widget()
    return gv.mapFromScene(view.cell_scene_center(i, j))


def press_undo(qtbot, window) -> None:
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier)


def wait_for_fit(qtbot, panel, timeout=20000) -> None:
    """Until the fit has stopped and the window has recomputed from its last weights."""
    window = panel.window()
    qtbot.waitUntil(
        lambda: not panel.running and panel._job is None and not window.scheduler.busy_now(), timeout=timeout
    )


def test_the_guided_example_opens_the_learn_tab_on_the_previous_token_target(learn_window):
    w = learn_window
    panel = w.learn
    assert w.right_tabs.currentWidget() is panel
    n = len(w.session.tokens)
    np.testing.assert_array_equal(panel.target_view.data(), target_preset("previous-token", n, n))
    np.testing.assert_allclose(panel.current_view.data(), session_weights(w.session, 0))
    assert panel.d_k_box.value() == 1
    text = panel.explain.toPlainText()
    assert "bilinear form" in text and "rank at most d_k = 1" in text
    assert "Why it cannot be matched" in text and "favourite" in text
    assert f"at least {3 * np.log(2) / 6:.4g}" in text  # three of six rows must lose log 2 each


def test_painting_the_target_with_the_mouse_renormalises_rows_and_undoes_per_stroke(qtbot, learn_window):
    w = learn_window
    panel = w.learn
    viewport = panel.target_view.graphics_widget().viewport()
    before = panel.target()
    # drag along row 3 from key 0 to key 2: three marked cells share the row
    qtbot.mousePress(viewport, Qt.LeftButton, pos=cell_point(panel.target_view, 3, 0))
    qtbot.mouseMove(viewport, cell_point(panel.target_view, 3, 1))
    qtbot.mouseMove(viewport, cell_point(panel.target_view, 3, 2))
    qtbot.mouseRelease(viewport, Qt.LeftButton, pos=cell_point(panel.target_view, 3, 2))
    shown = panel.target_view.data()
    np.testing.assert_allclose(shown[3], [1 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    np.testing.assert_array_equal(shown[[0, 1, 2, 4, 5]], before[[0, 1, 2, 4, 5]])
    assert w.undo_stack.count() == 1 and w.isWindowModified()
    # the right button erases
    qtbot.mouseClick(viewport, Qt.RightButton, pos=cell_point(panel.target_view, 3, 0))
    np.testing.assert_allclose(panel.target_view.data()[3], [0, 0.5, 0.5, 0, 0, 0])
    assert w.undo_stack.count() == 2
    press_undo(qtbot, w)
    press_undo(qtbot, w)
    np.testing.assert_array_equal(panel.target_view.data(), before)


def test_a_hidden_key_cannot_be_painted(qtbot, learn_window):
    w = learn_window
    w.findChild(QCheckBox, "control.causal").click()  # switch the mask on
    panel = w.learn
    assert w.session.causal
    viewport = panel.target_view.graphics_widget().viewport()
    before = panel.target_view.data().copy()
    qtbot.mouseClick(viewport, Qt.LeftButton, pos=cell_point(panel.target_view, 1, 4))
    np.testing.assert_array_equal(panel.target_view.data(), before)
    assert "mask hides it" in w.last_message
    assert np.isneginf(before[1, 4])  # drawn as hidden


def test_step_takes_one_adam_step_on_the_selected_head(qtbot, learn_window):
    w = learn_window
    panel = w.learn
    w_q0 = w.session.matrix("W_Q")[0].copy()
    with qtbot.waitSignal(panel.burst_written, timeout=5000):
        qtbot.mouseClick(panel.step_button, Qt.LeftButton)
    change = np.abs(w.session.matrix("W_Q")[0] - w_q0)
    # Adam's first step moves every entry by lr·|g|/(|g| + 1e-8): the learning rate, for a real gradient
    lr = panel.lr_box.value()
    assert change.max() <= lr and change.max() == pytest.approx(lr, rel=1e-4)
    assert panel.fitter.steps_taken == 1
    assert w.undo_stack.count() == 1


def test_start_learns_the_head_every_view_follows_and_one_ctrl_z_undoes_the_fit(qtbot, learn_window):
    w = learn_window
    panel = w.learn
    # raise d_k to 2 in the Learn tab, as the lesson says
    panel.d_k_box.setFocus()
    panel.d_k_box.selectAll()
    qtbot.keyClicks(panel.d_k_box, "2")
    qtbot.keyClick(panel.d_k_box, Qt.Key_Return)
    assert w.session.d_k == 2 and w.undo_stack.count() == 1
    assert "It can be matched" in panel.explain.toPlainText()
    w_q0, w_k0 = w.session.matrix("W_Q").copy(), w.session.matrix("W_K").copy()
    weights0 = w.views["weights"].data().copy()
    panel.max_steps = 1500
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    assert panel.running and panel.start_button.text() == "&Pause"
    wait_for_fit(qtbot, panel)
    s = w.session
    p = session_weights(s, 0)
    n = len(s.tokens)
    for i in range(2, n):
        assert p[i, i - 1] >= 0.9, (i, p[i])
    # every view redrew from the learned weights: the step-by-step weights view and the Learn tab's
    np.testing.assert_allclose(w.views["weights"].data(), p, atol=1e-12)
    np.testing.assert_allclose(panel.current_view.data(), p, atol=1e-12)
    assert not np.allclose(w.views["weights"].data(), weights0)
    x, log_y = panel.loss_curve.getData()  # the loss axis is logarithmic
    assert len(x) == 1500 and 10 ** log_y[-1] < 10 ** log_y[0] / 10
    assert len(panel.sv_curves) == 2
    assert w.undo_stack.count() == 2  # d_k, then the whole fit
    press_undo(qtbot, w)
    np.testing.assert_array_equal(s.matrix("W_Q"), w_q0)
    np.testing.assert_array_equal(s.matrix("W_K"), w_k0)
    assert s.d_k == 2
    w.undo_stack.redo()
    np.testing.assert_allclose(session_weights(s, 0), p)


def test_with_d_k_1_the_fit_stays_above_the_floor_it_shows(qtbot, learn_window):
    panel = learn_window.learn
    panel.max_steps = 800
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    wait_for_fit(qtbot, panel)
    floor = panel._floor.loss
    assert floor > 0.3
    assert 10 ** min(panel.loss_curve.getData()[1]) >= floor  # the loss axis is logarithmic
    assert panel.floor_line.isVisible() and panel.floor_line.value() == pytest.approx(np.log10(floor))


def test_pause_stops_and_an_edit_elsewhere_pauses_the_fit(qtbot, learn_window):
    w = learn_window
    panel = w.learn
    panel.max_steps = 10**9
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    qtbot.waitSignal(panel.burst_written, timeout=5000)
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)  # Pause
    assert not panel.running and panel.start_button.text() == "&Start"
    qtbot.waitUntil(lambda: panel._job is None, timeout=5000)
    steps = panel.fitter.steps_taken
    qtbot.wait(100)
    assert panel.fitter.steps_taken == steps  # nothing runs after Pause
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)  # carry on: the same fit, the same undo step
    qtbot.waitSignal(panel.burst_written, timeout=5000)
    assert w.undo_stack.count() == 1
    w.session.set_causal(True)  # any change to the document stops the fit
    assert not panel.running


def test_reset_gives_fresh_random_weights_as_one_undo_step(qtbot, learn_window):
    w = learn_window
    w_q0 = w.session.matrix("W_Q").copy()
    qtbot.mouseClick(w.learn.reset_button, Qt.LeftButton)
    assert not np.array_equal(w.session.matrix("W_Q"), w_q0)
    assert w.undo_stack.count() == 1
    press_undo(qtbot, w)
    np.testing.assert_array_equal(w.session.matrix("W_Q"), w_q0)


def test_a_target_preset_and_the_painted_target_are_saved_with_the_session(qtbot, learn_window, tmp_path):
    w = learn_window
    panel = w.learn
    box = panel.preset_box
    box.setCurrentIndex(box.findData("first-token"))
    box.activated.emit(box.currentIndex())
    n = len(w.session.tokens)
    np.testing.assert_array_equal(panel.target_view.data(), target_preset("first-token", n, n))
    assert w.save_to(tmp_path / "learn.qkv")
    other = MainWindow(Session.load(tmp_path / "learn.qkv"))
    qtbot.addWidget(other)
    np.testing.assert_array_equal(other.learn.target(), target_preset("first-token", n, n))
    assert other.right_tabs.currentWidget() is other.learn
    other.undo_stack.setClean()
    other.close()


def test_learning_one_head_of_a_30_token_12_head_layer(qtbot):
    rng = np.random.default_rng(0)
    n, h, d_model, d_k = 30, 12, 64, 8
    s = Session.from_arrays(
        rng.standard_normal((n, d_model)),
        rng.standard_normal((h, d_model, d_k)) * 0.2,
        rng.standard_normal((h, d_model, d_k)) * 0.2,
        rng.standard_normal((h, d_model, d_k)),
        rng.standard_normal((h * d_k, d_model)) / 8,
        tokens=[f"t{i}" for i in range(n)],
        causal=True,
    )
    w = MainWindow(s)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    w.right_tabs.setCurrentWidget(w.learn)
    w.session.set_head(4)
    panel = w.learn
    assert panel.target().shape == (n, n)
    w_q0 = w.session.matrix("W_Q").copy()
    panel.max_steps = 300
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    wait_for_fit(qtbot, panel)
    w_q1 = w.session.matrix("W_Q")
    changed = [k for k in range(h) if not np.array_equal(w_q1[k], w_q0[k])]
    assert changed == [4]
    p = session_weights(w.session, 4)
    assert np.mean([p[i, i - 1] for i in range(1, n)]) > 0.5  # well on its way after 300 steps
    w.undo_stack.setClean()
    w.close()
    QApplication.processEvents()


def test_learning_a_head_with_rotary_positions(qtbot):
    # LLaMA-style rotary positions: the fit turns Q and K by their positions exactly as the window's attention does
    rng = np.random.default_rng(1)
    n, h, d_model, d_k = 8, 2, 16, 4
    x = np.eye(n, d_model) + np.eye(n, d_model, k=8)
    s = Session.from_arrays(
        x,
        rng.standard_normal((h, d_model, d_k)) * 0.3,
        rng.standard_normal((h, d_model, d_k)) * 0.3,
        rng.standard_normal((h, d_model, 2)),
        rng.standard_normal((h * 2, d_model)),
        tokens=list("abcdefgh"),
        causal=True,
        rotary=100.0,
    )
    w = MainWindow(s)
    qtbot.addWidget(w)
    w.show()
    w.right_tabs.setCurrentWidget(w.learn)
    w.session.set_head(1)
    panel = w.learn
    panel.max_steps = 1500
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    wait_for_fit(qtbot, panel)
    weights = w.result.head(1).weights  # the window's own attention, with rotary positions
    assert all(weights[i, i - 1] >= 0.9 for i in range(2, n))
    np.testing.assert_allclose(panel.current_view.data(), np.where(w.result.visible, weights, -np.inf))
    w.undo_stack.setClean()
    w.close()


def test_a_head_sharing_its_keys_fits_its_group_s_w_k(qtbot):
    # 4 query heads share 2 key/value heads (GQA): head 3 reads, and so learns, W_K of key head 1
    rng = np.random.default_rng(2)
    n, h, h_kv, d_model, d_k = 6, 4, 2, 12, 2
    x = np.eye(n, d_model) + np.eye(n, d_model, k=6)
    s = Session.from_arrays(
        x,
        rng.standard_normal((h, d_model, d_k)) * 0.3,
        rng.standard_normal((h_kv, d_model, d_k)) * 0.3,
        rng.standard_normal((h_kv, d_model, 2)),
        rng.standard_normal((h * 2, d_model)),
        tokens=list("abcdef"),
    )
    stack = QUndoStack()
    panel = LearnPanel(s, stack)
    qtbot.addWidget(panel)
    s.set_head(3)
    w_q0, w_k0 = s.matrix("W_Q").copy(), s.matrix("W_K").copy()
    panel.max_steps = 1000
    panel.start()
    qtbot.waitUntil(lambda: not panel.running and panel._job is None, timeout=20000)
    assert [k for k in range(h) if not np.array_equal(s.matrix("W_Q")[k], w_q0[k])] == [3]
    assert [k for k in range(h_kv) if not np.array_equal(s.matrix("W_K")[k], w_k0[k])] == [1]
    weights = (
        multi_head_attention(x, s.matrix("W_Q"), s.matrix("W_K"), s.matrix("W_V"), s.matrix("W_O"), scale=s.scale())
        .head(3)
        .weights
    )
    assert all(weights[i, i - 1] >= 0.9 for i in range(2, n))
    assert stack.count() == 1
    panel.close_views()


def test_also_learning_w_v_w_o_makes_the_head_copy_what_the_target_attends_to(qtbot, learn_window):
    w = learn_window
    panel = w.learn
    w.session.resize(d_k=2)
    qtbot.mouseClick(panel.fit_ov_box, Qt.LeftButton)
    assert panel.fit_ov_box.isChecked()
    panel.max_steps = 2500
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    wait_for_fit(qtbot, panel)
    s = w.session
    x = s.matrix("X")
    wanted = panel.target() @ x  # each row: the embedding of the token the target attends to
    r = multi_head_attention(x, s.matrix("W_Q"), s.matrix("W_K"), s.matrix("W_V"), s.matrix("W_O"), scale=s.scale())
    assert np.linalg.norm(r.output - wanted) < 0.1 * np.linalg.norm(wanted)
    assert "output error" in panel.loss_plot.getPlotItem().titleLabel.text


def test_also_learning_x_moves_the_embeddings_and_one_undo_restores_them(qtbot, learn_window):
    w = learn_window
    panel = w.learn
    x0 = w.session.matrix("X").copy()
    qtbot.mouseClick(panel.fit_x_box, Qt.LeftButton)
    panel.max_steps = 200
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    wait_for_fit(qtbot, panel)
    assert not np.array_equal(w.session.matrix("X"), x0)
    s = w.session
    np.testing.assert_allclose(w.views["q"].data(), s.matrix("X") @ s.matrix("W_Q")[0])  # the views follow X
    assert w.undo_stack.count() == 1
    press_undo(qtbot, w)
    np.testing.assert_array_equal(w.session.matrix("X"), x0)
