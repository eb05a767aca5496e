"""The pipeline grid (qkvgui.ui.pipeline.PipelineView): every step of attention as a named view, its shape in its
title, the numbers of the selected head, a thumbnail per head that selects it, and focus.

At real size: one layer of 12 heads over 30 tokens, the pipeline at 1280 × 800."""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from qkvgui.core import multi_head_attention
from qkvgui.ui.heatmap import HeatmapView
from qkvgui.ui.pipeline import ROTARY_VIEWS, SPECS, PipelineView

N, HEADS, D_MODEL, D_K, D_V = 30, 12, 48, 8, 6
TOKENS = [f"tok{i}" for i in range(N)]
HEAD = 5  # the selected head (0-based): the titles say "head 6"
GRID_STEPS = list(PipelineView.GRID)  # every view of the grid, in the order of the computation


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((N, D_MODEL))
    w_q, w_k = rng.standard_normal((2, HEADS, D_MODEL, D_K)) * 0.4
    w_v = rng.standard_normal((HEADS, D_MODEL, D_V)) * 0.4
    w_o = rng.standard_normal((HEADS * D_V, D_MODEL)) * 0.2
    return x, w_q, w_k, w_v, w_o


@pytest.fixture
def pipeline(qtbot, layer):
    view = PipelineView()
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    qtbot.waitExposed(view)
    r = multi_head_attention(*layer, causal=True)
    view.show_result(r, HEAD, TOKENS, TOKENS, ablated=[i == 2 for i in range(HEADS)])
    qtbot.waitUntil(lambda: not view.drawing() and len(view.head_views) == HEADS, timeout=10000)
    qtbot.wait(20)
    view.result = r
    return view


def reference_weights(layer, h):
    """Head h's causal attention weights by plain loops: q_i·k_j / √d_k, −∞ above the diagonal, softmax by row."""
    x, w_q, w_k, _, _ = layer
    q, k = x @ w_q[h], x @ w_k[h]
    weights = np.zeros((N, N))
    for i in range(N):
        scores = [sum(q[i, d] * k[j, d] for d in range(D_K)) / np.sqrt(D_K) for j in range(i + 1)]
        top = max(scores)
        e = [np.exp(s - top) for s in scores]
        weights[i, : i + 1] = [v / sum(e) for v in e]
    return weights


def test_every_step_is_shown_named_by_its_formula_with_its_shape(pipeline):
    shapes = {
        "q": f"{N} × {D_K}",
        "k": f"{N} × {D_K}",
        "v": f"{N} × {D_V}",
        "scores": f"{N} × {N}",
        "scaled": f"{N} × {N}",
        "masked": f"{N} × {N}",
        "weights": f"{N} × {N}",
        "head_outputs": f"{N} × {D_V}",
        "concat": f"{N} × {HEADS * D_V}",
        "output": f"{N} × {D_MODEL}",
        "residual": f"{N} × {D_MODEL}",
    }
    shown = [name for name in GRID_STEPS if pipeline.views[name].isVisible()]
    assert shown == list(shapes)  # eleven steps in the order of the computation; no rotary row without RoPE
    for name, shape in shapes.items():
        formula, where = pipeline.views[name].title().split("\n")
        expected = SPECS[name].formula.replace("X_kv", "X")  # self-attention: K and V are read from X
        assert formula == (expected if name != "scaled" else f"scaled = scores × {1 / np.sqrt(D_K):.4g}")
        assert where.endswith(shape), (name, where)
        per_head = name in ("q", "k", "v", "scores", "scaled", "masked", "weights", "head_outputs")
        assert where.startswith("head 6 · ") == per_head, (name, where)
    assert pipeline.views["v"].title().startswith("V = X·W_V")


def test_titles_can_be_read_at_1280_by_800(pipeline):
    """What the label draws (elided to the view's width) is the whole title: formula and shape."""
    for name in ("q", "weights", "head_outputs", "concat", "residual"):
        view = pipeline.views[name]
        formula, where = view.title().split("\n")
        drawn = view._title_item.text.replace("&nbsp;", " ")
        assert formula.split("=")[0] in drawn and where in drawn, (name, drawn)


def test_the_views_hold_the_selected_heads_numbers(pipeline, layer):
    r = pipeline.result
    np.testing.assert_allclose(pipeline.views["weights"].data(), reference_weights(layer, HEAD), atol=1e-12)
    assert np.isneginf(pipeline.views["masked"].data()[0, 1])  # causal: the first token cannot see the second
    x, w_q, _, w_v, _ = layer
    np.testing.assert_allclose(pipeline.views["q"].data(), x @ w_q[HEAD], atol=1e-12)
    np.testing.assert_allclose(pipeline.views["head_outputs"].data(), reference_weights(layer, HEAD) @ (x @ w_v[HEAD]))
    np.testing.assert_array_equal(pipeline.views["residual"].data(), r.residual)
    assert pipeline.views["weights"].row_labels() == TOKENS and pipeline.views["weights"].col_labels() == TOKENS
    assert pipeline.views["concat"].col_labels()[D_V] == "h2.d0"  # head 2's first column, after head 1's


def test_a_thumbnail_per_head_marks_the_selected_and_the_switched_off_head(pipeline, layer):
    titles = [view.title() for view in pipeline.head_views]
    assert titles[HEAD] == "▶ head 6"
    assert titles[2] == "head 3 · off"
    assert [t for i, t in enumerate(titles) if i not in (2, HEAD)] == [
        f"head {i + 1}" for i in range(HEADS) if i not in (2, HEAD)
    ]
    assert pipeline.head_views[HEAD].property("selected") and not pipeline.head_views[0].property("selected")
    assert "(off)" not in pipeline.views["weights"].title()
    # each thumbnail is its own head's weights (exact at 30 tokens: no pooling)
    np.testing.assert_allclose(pipeline.head_views[9].data(), reference_weights(layer, 9), atol=1e-12)


def click(qtbot, view: HeatmapView, i=0, j=0, double=False):
    glw = view.graphics_widget()
    viewport, pos = glw.viewport(), glw.mapFromScene(view.cell_scene_center(i, j))
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=pos)
    if double:
        qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=pos)
        qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=pos)


def test_a_click_on_a_thumbnail_asks_for_its_head(pipeline, qtbot):
    pipeline.strip.ensureWidgetVisible(pipeline.head_views[10])
    qtbot.wait(20)
    with qtbot.waitSignal(pipeline.head_clicked) as clicked:
        click(qtbot, pipeline.head_views[10], 4, 4)
    assert clicked.args == [10]


def test_a_double_click_asks_to_focus_and_focus_puts_the_view_large(pipeline, qtbot):
    with qtbot.waitSignal(pipeline.focus_requested) as asked:
        pipeline.views["scores"].double_clicked.emit()  # what the view emits on a double click
    assert asked.args == ["scores"]
    overview_width = pipeline.views["scores"].width()
    in_overview = [name for name in GRID_STEPS if pipeline.views[name].isVisible()]
    pipeline.focus("scores")
    qtbot.waitUntil(lambda: pipeline.views["scores"].width() > 2 * overview_width, timeout=15000)
    assert pipeline.focused() == "scores"
    # the other steps stay visible beside it as context, small; the hidden ones (rotary, block) stay hidden
    for name in GRID_STEPS:
        if name != "scores":
            assert pipeline.views[name].isVisible() == (name in in_overview), name
            assert name not in in_overview or pipeline.views[name].width() <= PipelineView.CONTEXT.width()
    # a double-click on the focused view asks to go back; focus(None) is the overview again
    with qtbot.waitSignal(pipeline.focus_requested) as asked:
        pipeline.views["scores"].double_clicked.emit()
    assert asked.args == [""]
    pipeline.focus(None)
    qtbot.waitUntil(lambda: pipeline.views["scores"].width() < 2 * overview_width, timeout=15000)
    with pytest.raises(KeyError, match="no view called 'attention'"):
        pipeline.focus("attention")


def test_cross_attention_and_rotary_positions_are_named(qtbot, layer):
    x, w_q, w_k, w_v, w_o = layer
    view = PipelineView()
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    source = [f"src{j}" for j in range(7)]
    r = multi_head_attention(x, w_q, w_k, w_v, w_o, x_kv=x[:7], rotary=10000.0)
    view.show_result(r, 0, TOKENS, source, cross=True)
    qtbot.waitUntil(lambda: not view.drawing(), timeout=10000)
    assert view.views["k"].title().startswith("K = X_kv·W_K") and view.views["k"].title().endswith("7 × 8")
    assert view.views["scores"].title().split("\n") == ["scores = Q_rope·K_ropeᵀ", f"head 1 · {N} × 7"]
    assert view.views["weights"].col_labels() == source
    for name in ROTARY_VIEWS:
        assert view.views[name].isVisible(), name
    assert view.views["angles"].title().startswith("angle = position · 10000^(−2i/8)")
