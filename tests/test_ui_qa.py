"""Breakages a demanding user found by clicking through the app (QA), each reproduced as it was seen."""

import numpy as np
import pytest
from test_ui_main_window import settle, type_into

from qkvgui import MainWindow
from qkvgui.session import Session


@pytest.fixture
def gqa_window(qtbot):
    """6 query heads sharing 2 key/value heads (grouped-query attention, as in LLaMA-style models)."""
    s = Session()
    s.resize(n_heads=6)
    s.set_n_kv_heads(2)
    s.randomize_weights(seed=3)  # every head distinct, so a wrong head shows up as wrong numbers
    w = MainWindow(s)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


def test_selecting_a_query_head_past_the_kv_heads_shows_its_groups_w_k_and_pipeline(qtbot, gqa_window):
    w, s = gqa_window, gqa_window.session
    w.head_spin.setValue(6)  # query head 5 reads kv head 5 * 2 // 6 = 1; it used to raise IndexError (W_K[5])
    settle(qtbot, w)
    assert s.head == 5 and s.kv_head() == 1
    np.testing.assert_array_equal(w.editors["W_Q"].model.matrix(), s.matrix("W_Q")[5])
    np.testing.assert_array_equal(w.editors["W_K"].model.matrix(), s.matrix("W_K")[1])
    np.testing.assert_array_equal(w.editors["W_V"].model.matrix(), s.matrix("W_V")[1])
    # Independent reference: K and V of head 5 are X·W_K and X·W_V of its group.
    x = s.matrix("X")
    np.testing.assert_allclose(w.views["k"].image_array(), (x @ s.matrix("W_K")[1]).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(w.views["v"].image_array(), (x @ s.matrix("W_V")[1]).astype(np.float32), rtol=1e-6)
    q, k = x @ s.matrix("W_Q")[5], x @ s.matrix("W_K")[1]
    scores = q @ k.T * s.scale()
    if s.causal:
        scores = np.where(np.tri(*scores.shape, dtype=bool), scores, -np.inf)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        w.views["weights"].image_array(), (e / e.sum(axis=1, keepdims=True)).astype(np.float32), rtol=1e-5, atol=1e-6
    )
    assert "kv head 2" in w.editors["W_K"].title.text()


def test_typing_into_shared_w_k_edits_the_group_row(qtbot, gqa_window):
    w, s = gqa_window, gqa_window.session
    w.head_spin.setValue(6)
    settle(qtbot, w)
    type_into(qtbot, w, "W_K", 0, 0, "0.75")
    assert s.matrix("W_K")[1, 0, 0] == 0.75
    np.testing.assert_array_equal(w.editors["W_K"].model.matrix(), s.matrix("W_K")[1])


def test_head_thumbnails_of_a_12_head_layer_at_1280x800_are_labelled_in_full(qtbot):
    s = Session()
    s.resize(n_heads=12)
    w = MainWindow(s)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    qtbot.waitUntil(lambda: not w.pipeline.drawing())  # the thumbnails are made one per event-loop turn
    thumb = w.findChild(type(w.views["q"]), "view.weights.head12")
    qtbot.waitUntil(lambda: thumb.isVisible() and thumb.width() > 0)
    thumb._update_title()  # as on resize
    # Used to read "head…" for heads 10-12: the 60 px thumbnail lost 16 px of margin to the elision.
    assert "head 12" in thumb._title_item.text


def test_preset_titles_line_up_in_one_column():
    from test_cli import qkvgui

    out = qkvgui("presets")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    # Each title starts where the longest name's padding ends ("learn-previous-token" used to run into its title).
    starts = {len(line) - len(line.split(None, 1)[1]) for line in lines}
    assert len(starts) == 1, lines
