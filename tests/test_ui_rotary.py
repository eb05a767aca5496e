"""Rotary positions and shared key/value heads in the window: the rotary views, group colours on the head
thumbnails, the QK circuit of a query head built from its group's W_K, controls that undo, the inspector's words."""

import numpy as np
import pytest

from qkvgui import Session


def real_size_session():
    """30 tokens, 12 query heads sharing 4 key/value heads, rotary positions with θ = 500."""
    rng = np.random.default_rng(4)
    n, d_model, h, h_kv, d_k = 30, 48, 12, 4, 8
    s = Session.from_arrays(
        rng.standard_normal((n, d_model)),
        rng.standard_normal((h, d_model, d_k)) / 3,
        rng.standard_normal((h_kv, d_model, d_k)) / 3,
        rng.standard_normal((h_kv, d_model, d_k)),
        rng.standard_normal((h * d_k, d_model)) / 5,
        causal=True,
        rotary=500.0,
        tokens=[f"w{i}" for i in range(n)],
    )
    return s


@pytest.fixture
def window(qtbot):
    from qkvgui.ui.main_window import MainWindow

    w = MainWindow(session=real_size_session())
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    qtbot.waitUntil(lambda: w.result is not None, timeout=5000)
    return w


def settle(qtbot, window):
    qtbot.waitUntil(
        lambda: (
            not window.scheduler._turn.isActive()
            and window.scheduler._running is None
            and not window.pipeline.drawing()
        ),  # new head thumbnails are made one per event-loop turn
        timeout=5000,
    )
    qtbot.wait(20)


def test_rotary_views_show_the_rotated_q_and_k_of_the_selected_heads(qtbot, window):
    s = window.session
    s.set_head(7)  # query head 8 reads key/value head 3
    settle(qtbot, window)
    r = window.result
    views = window.pipeline.views
    assert views["q_rope"].isVisible() and views["k_rope"].isVisible() and views["angles"].isVisible()
    np.testing.assert_array_equal(views["q_rope"].data(), r.q_rope[7])
    np.testing.assert_array_equal(views["k_rope"].data(), r.k_rope[2])
    np.testing.assert_array_equal(views["k"].data(), r.k[2])
    assert "kv head 3 (heads 7–9)" in views["k_rope"].title()
    assert "Q_rope·K_ropeᵀ" in views["scores"].title()
    angles = views["angles"].data()
    assert angles.shape == (30, 4) and np.isclose(angles[2, 0], 2.0) and np.all(np.abs(angles) <= np.pi)
    np.testing.assert_allclose(views["scores"].data(), r.q_rope[7] @ r.k_rope[2].T)


def test_head_thumbnails_carry_one_colour_per_group(qtbot, window):
    settle(qtbot, window)
    colours = [v.property("group_colour") for v in window.pipeline.head_views]
    assert len(colours) == 12 and len(set(colours)) == 4
    assert colours[0] == colours[2] != colours[3] == colours[5]
    assert window.pipeline.head_views[4].title() == "head 5 · kv 2"


def test_qk_circuit_of_a_query_head_uses_its_groups_w_k(qtbot, window):
    from qkvgui.core import qk_circuit

    s = window.session
    window.right_tabs.setCurrentIndex(1)
    s.set_head(10)
    settle(qtbot, window)
    expected = qk_circuit(s.matrix("W_Q")[10:11], s.matrix("W_K")[3:4])[0]
    np.testing.assert_allclose(window.views["qk_circuit"].data(), expected)
    assert "kv head 4" in window.views["qk_circuit"].title()
    assert window.editors["W_K"].title.text().startswith("W_K (kv head 4, shared")


def test_controls_switch_rope_and_share_heads_undoably(qtbot, window):
    s, controls = window.session, window.controls.rotary_controls
    rotated = window.result.weights.copy()
    controls.rotary_box.click()
    settle(qtbot, window)
    assert not s.rotary and not window.pipeline.views["q_rope"].isVisible()
    assert not np.allclose(window.result.weights, rotated)
    window.undo_stack.undo()
    settle(qtbot, window)
    assert s.rotary
    np.testing.assert_array_equal(window.result.weights, rotated)
    controls.kv_combo.activated.emit(controls.kv_combo.findData(1))  # multi-query
    settle(qtbot, window)
    assert s.n_kv_heads == 1 and len({v.property("group_colour") for v in window.pipeline.head_views}) == 1
    window.undo_stack.undo()
    assert s.n_kv_heads == 4
    controls.theta_spin.setValue(20000.0)
    assert s.rope_theta == 20000.0


def test_the_inspector_writes_the_score_of_rotated_vectors(qtbot, window):
    settle(qtbot, window)
    window.views["scores"].cell_hovered.emit(9, 4)
    text = window.inspector.toPlainText()
    assert "RoPE" in text and "i − j = 5" in text and "(rotated)" in text
    r = window.result
    assert f"{r.head(0).scores[9, 4]:.4g}".replace("-", "−") in text
