"""The Model tab inside the window: a whole imported model at a glance, a click opens a head, edits flow through,
Repeat random tokens is one undo step; and qkvgui.show() from a notebook."""

import numpy as np
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("scipy")

from tiny_gpt2 import write_tiny_gpt2  # noqa: E402

import qkvgui  # noqa: E402
from qkvgui import Session  # noqa: E402


def settle(qtbot, window):
    """The recomputation done, the views drawn (new head thumbnails one per turn) and the Model tab's overview
    (thumbnails, scores: on the worker) drawn."""
    qtbot.waitUntil(
        lambda: (
            not window.scheduler._turn.isActive()
            and window.scheduler._running is None
            and not window.pipeline.drawing()
            and not window.model_tab.busy()
        ),
        timeout=10000,
    )


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return write_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


def show_model_tab(qtbot, window):
    tab = window.model_tab
    window.right_tabs.setCurrentWidget(tab.panel)
    settle(qtbot, window)
    return tab


def test_a_whole_model_in_the_model_tab_and_a_click_opens_the_head(qtbot, window, gpt2):
    window.show_imported(Session.from_checkpoint(gpt2, None, "the cat sat on the mat and it was happy"))
    settle(qtbot, window)
    tab = show_model_tab(qtbot, window)
    panel = tab.panel
    assert panel.table.rowCount() == 12 and panel.grid._shape == (3, 4)
    scores = window.session.head_scores()
    assert f"{scores['previous-token'][2, 1]:.3f}" in panel._tooltip(2, 1)
    qtbot.mouseClick(panel.grid, qtbot_left(), pos=panel.grid.cell_rect(2, 1).center())
    assert (window.session.layer, window.session.head) == (2, 1)
    assert window.right_tabs.currentIndex() == 0  # the step-by-step view, showing layer 3 head 2
    settle(qtbot, window)
    np.testing.assert_array_equal(window.result.weights, window.session.compute_layers()[2].weights)


def test_the_models_own_block_is_shown_read_only_after_each_layer(qtbot, window, gpt2):
    window.show_imported(Session.from_checkpoint(gpt2, None, "a dog ran and it was happy"))
    tab = show_model_tab(qtbot, window)
    qtbot.waitUntil(lambda: tab.afters is not None, timeout=10000)
    window.session.set_layer(1)
    expected = window.session.compute_model()[1][2]
    assert tab.panel.block_box.isVisibleTo(tab.panel)
    assert (
        "After layer 2: the model's own block, read-only (s′ = r + MLP[gelu_new](LN(r)))"
        in tab.panel.block_label.text()
    )
    np.testing.assert_allclose(tab.panel.block_view._data, expected)


def test_an_edit_in_layer_1_redraws_every_later_layers_thumbnails(qtbot, window, gpt2):
    window.show_imported(Session.from_checkpoint(gpt2, None, "the cat sat on the mat"))
    tab = show_model_tab(qtbot, window)
    before = tab.panel.grid._buffer.copy()
    window.session.set_layer(0)
    window.edit_block("W_V", 0, 0, np.array([[25.0]]))  # changes what layer 1 writes, so what layers 2 and 3 read
    settle(qtbot, window)
    after = tab.panel.grid._buffer
    rows = after.shape[0] // 3
    assert np.array_equal(after[:rows], before[:rows])  # layer 1's own patterns are unchanged (V is not in them)
    assert not np.array_equal(after[rows:], before[rows:])


def test_repeat_random_tokens_lights_up_the_induction_head_and_undoes(qtbot, window):
    window.replace_session(Session.from_preset("induction"), None)
    tab = show_model_tab(qtbot, window)
    old = window.session.tokens
    tab.panel.repeat_button.click()
    settle(qtbot, window)
    tokens = window.session.tokens
    half = (len(tokens) - 1) // 2
    assert tokens != old and tokens[1 : 1 + half] == tokens[1 + half :]
    assert tab.panel.sort_by("induction")[0] == (1, 0)
    window.undo_stack.undo()
    assert window.session.tokens == old


def test_repeat_random_tokens_rereads_an_imported_model(qtbot, window, gpt2):
    window.show_imported(Session.from_checkpoint(gpt2, None, "the cat sat"))
    tab = show_model_tab(qtbot, window)
    tab.panel.repeat_button.click()
    qtbot.waitUntil(lambda: tab._job is None and len(window.session.tokens) > 3, timeout=15000)
    tokens = window.session.tokens
    assert len(tokens) % 2 == 0 and tokens[: len(tokens) // 2] == tokens[len(tokens) // 2 :]
    source = window.session.extra["checkpoint"]
    assert source["layer"] is None and len(source["ids"]) == len(tokens)
    # the same ids through the model again give the same patterns (Reset to model weights keeps the tokens)
    again = Session.from_checkpoint(source["path"], None, source["text"], ids=source["ids"])
    np.testing.assert_array_equal(again.compute_layers()[2].weights, window.session.compute_layers()[2].weights)


def test_show_opens_a_live_window_without_blocking(qtbot):
    s = Session.from_preset("previous-token")
    window = qkvgui.show(s)
    qtbot.addWidget(window)
    assert window.isVisible() and window.session is s
    # drawn when it returns (not filled in later as `qkvgui` starts): a notebook's next cell reads its pixels
    assert window.is_constructed() and all(view.built() for view in window.pipeline.shown_views())
    settle(qtbot, window)
    before = window.result.weights.copy()
    s.set_matrix("W_Q", np.zeros_like(s.matrix("W_Q")))  # changed from code, as in a notebook
    settle(qtbot, window)
    assert not np.array_equal(window.result.weights, before)
    np.testing.assert_allclose(
        window.result.weights[0], np.tri(len(s.tokens)) / np.tri(len(s.tokens)).sum(1, keepdims=True)
    )


def qtbot_left():
    from PySide6.QtCore import Qt

    return Qt.LeftButton


def test_the_overview_is_computed_on_the_worker_from_pooled_weights(qtbot, window, gpt2, monkeypatch):
    import threading

    from qkvgui.ui.panels import model as model_panel

    threads = []
    real = model_panel.model_overview

    def spy(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(model_panel, "model_overview", spy)
    window.show_imported(Session.from_checkpoint(gpt2, None, "the cat sat on the mat and the cat ran"))
    tab = show_model_tab(qtbot, window)
    assert threads and all(t is not threading.main_thread() for t in threads)
    # no layer's every-head weights [h, n, n] were built for it, on any thread: thumbnails read weights_pooled
    assert all("weights" not in r._cache.fields for r in window.scheduler.results)
    expected = window.session.head_scores()
    for name, values in expected.items():
        np.testing.assert_allclose(tab.panel.scores[name], values, equal_nan=True)
