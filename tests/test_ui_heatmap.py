"""HeatmapView tests: what a user sees — colours, levels, token ticks, cell numbers, masked cells, hover, clicks."""

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtWidgets import QApplication

from qkvgui.core.format import format_number
from qkvgui.ui.heatmap import ColourBar, HeatmapView

TOKENS = ["The", "cat", "sat", "on", "the", "mat", "."]


def make_view(qtbot, kind="diverging", size=(400, 320)):
    view = HeatmapView(kind)
    qtbot.addWidget(view)
    view.resize(*size)
    view.show()
    qtbot.waitExposed(view)
    return view


def causal_scores(n=5, m=7, seed=0):
    scores = np.random.default_rng(seed).normal(size=(n, m)) * 1.5  # [n_q, n_k]
    scores[np.triu_indices(n, 1, m)] = -np.inf  # key j > query i is hidden
    return scores


def image_items(view):
    return [item for item in view.plot_item().items if isinstance(item, pg.ImageItem)]


def settle(qtbot):
    """Let the layout passes that fit the margins to the image run (several event-loop turns: under load one
    turn of 20 ms was not always enough and the test failed at random)."""
    for _ in range(5):
        qtbot.wait(20)


def test_image_holds_the_data_as_float32_with_masked_cells_as_nan(qtbot):
    view = make_view(qtbot)
    scores = causal_scores()
    view.set_data(scores, row_labels=TOKENS[:5], col_labels=TOKENS)

    image = view.image_array()
    finite = np.isfinite(scores)
    assert image.dtype == np.float32
    assert image.shape == (5, 7)
    np.testing.assert_array_equal(image[finite], scores[finite].astype(np.float32))
    assert np.isnan(image[~finite]).all()
    # data() is the caller's array as given, −inf included, and not the caller's object
    np.testing.assert_array_equal(view.data(), scores)
    assert view.data() is not scores


def test_diverging_levels_are_symmetric_around_zero_from_the_largest_finite_magnitude(qtbot):
    view = make_view(qtbot)
    view.set_data(np.array([[0.5, -3.0], [-np.inf, 2.0]]))
    assert view.levels() == (-3.0, 3.0)
    bar = [item for item in view.graphics_widget().scene().items() if isinstance(item, ColourBar)]
    assert len(bar) == 1 and tuple(bar[0].levels()) == (-3.0, 3.0)

    view.set_data(np.zeros((2, 2)))  # all zero: a unit range instead of a degenerate one
    assert view.levels() == (-1.0, 1.0)

    # The ends are round numbers just above the largest magnitude, and stay put while it moves below them.
    view.set_data(np.array([[1.81, -0.2]]))
    assert view.levels() == (-2.0, 2.0)
    view.set_data(np.array([[1.95, -0.2]]))
    assert view.levels() == (-2.0, 2.0)
    view.set_data(np.array([[0.0, -0.0042]]))
    assert view.levels() == pytest.approx((-0.005, 0.005))


def test_weights_levels_are_fixed_to_zero_one(qtbot):
    view = make_view(qtbot, kind="weights")
    view.set_data(np.array([[0.1, 0.2], [0.3, 0.4]]))
    assert view.levels() == (0.0, 1.0)


def test_unknown_kind_and_bad_shapes_are_refused_with_a_message(qtbot):
    with pytest.raises(ValueError, match="kind"):
        HeatmapView("rainbow")
    view = make_view(qtbot)
    with pytest.raises(ValueError, match="2-D"):
        view.set_data(np.zeros(3))
    with pytest.raises(ValueError, match="2 row labels"):
        view.set_data(np.zeros((3, 3)), row_labels=["a", "b"])


def test_ticks_show_the_given_labels(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores(), row_labels=TOKENS[:5], col_labels=TOKENS)
    settle(qtbot)
    rows, cols = view.shown_ticks()
    assert rows == list(enumerate(TOKENS[:5]))
    assert cols == list(enumerate(TOKENS))
    # and they are what the axes actually draw (pyqtgraph's own draw specs, through its public API)
    assert drawn_labels(view.plot_item().getAxis("left")) == [label for _, label in rows]
    assert drawn_labels(view.plot_item().getAxis("top")) == [label for _, label in cols]


def drawn_labels(axis) -> list[str]:
    """The tick texts an axis paints, in order."""
    from PySide6.QtGui import QImage, QPainter

    image = QImage(16, 16, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _, _, text in specs[2]] if specs else []


def test_default_labels_are_indices_and_many_labels_are_thinned(qtbot):
    view = make_view(qtbot)
    view.set_data(np.zeros((3, 2)))
    assert view.shown_ticks() == ([(0, "0"), (1, "1"), (2, "2")], [(0, "0"), (1, "1")])

    words = ["the", "cat", "sat", "on", "mat"]
    tokens = [words[k % 5] for k in range(64)]
    view.set_data(np.zeros((64, 64)), row_labels=tokens, col_labels=[f"d{k}" for k in range(64)])
    settle(qtbot)
    rows, cols = view.shown_ticks()
    assert 1 < len(rows) <= 40 and 1 < len(cols) <= 40
    stride = rows[1][0]
    # thinned by position, and each token label says which position it names (counted from 1): "17:cat"
    assert rows == [(k, f"{k + 1}:{tokens[k]}") for k in range(0, 64, stride)]
    # labels that already name their position (d0, d1, …) need no tag
    assert cols == [(k, f"d{k}") for k in range(0, 64, cols[1][0])]


def test_changing_shape_updates_everything_on_the_same_image_item(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores(), row_labels=TOKENS[:5], col_labels=TOKENS)
    (item,) = image_items(view)

    new = np.arange(12.0).reshape(3, 4) - 6.0
    view.set_data(new, row_labels=["a", "b", "c"], col_labels=["d0", "d1", "d2", "d3"])
    settle(qtbot)
    assert image_items(view) == [item]
    np.testing.assert_array_equal(view.image_array(), new.astype(np.float32))
    assert view.levels() == (-6.0, 6.0)
    assert view.shown_ticks() == (list(enumerate("abc")), list(enumerate(["d0", "d1", "d2", "d3"])))
    assert view.cell_at(view.cell_scene_center(2, 3)) == (2, 3)
    assert view.cell_at(view.cell_scene_center(4, 6)) is None  # that cell no longer exists


@pytest.mark.parametrize("i, j", [(0, 0), (0, 6), (4, 0), (2, 3), (4, 6)])
def test_cell_at_maps_each_cell_centre_to_its_indices(qtbot, i, j):
    view = make_view(qtbot)
    view.set_data(causal_scores())
    settle(qtbot)
    image = image_items(view)[0]
    # ImageItem pixel (j, i) is the top-left corner of cell (i, j): the item is shifted by half a cell.
    centre = image.mapToScene(QPointF(j + 0.5, i + 0.5))
    assert view.cell_at(centre) == (i, j)
    assert view.cell_scene_center(i, j) == centre


def test_row_zero_is_at_the_top(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores())
    settle(qtbot)
    assert view.cell_scene_center(0, 0).y() < view.cell_scene_center(4, 0).y()
    assert view.cell_scene_center(0, 0).x() < view.cell_scene_center(0, 6).x()


@pytest.mark.parametrize("sizes", [[(600, 250)], [(250, 600), (1000, 200)], [(1000, 200), (300, 300), (160, 140)]])
def test_cells_stay_square_and_the_whole_matrix_stays_in_view_across_resizes(qtbot, sizes):
    view = make_view(qtbot, size=sizes[0])
    view.set_data(causal_scores())
    for size in sizes:
        view.resize(*size)
        settle(qtbot)

        def fills() -> bool:  # the layout pass runs on a timer: on a loaded machine it may take a few turns
            view_box = view.plot_item().vb.sceneBoundingRect()
            image = image_items(view)[0].sceneBoundingRect()
            return abs(image.width() - view_box.width()) < 2 and abs(image.height() - view_box.height()) < 2

        # the image fills its view box (no letterbox gap before the colour bar), and the view box is on screen
        qtbot.waitUntil(fills, timeout=3000)
        a, right, down = (view.cell_scene_center(*ij) for ij in [(0, 0), (0, 1), (1, 0)])
        assert right.x() - a.x() == pytest.approx(down.y() - a.y(), rel=0.02)
        view_box = view.plot_item().vb.sceneBoundingRect()
        assert view_box.bottom() <= size[1] and view_box.right() <= size[0]


def test_hover_emits_the_cell_once_and_minus_one_on_leaving(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores())
    settle(qtbot)
    seen = []
    view.cell_hovered.connect(lambda i, j: seen.append((i, j)))

    view._on_mouse_moved(view.cell_scene_center(1, 2))
    view._on_mouse_moved(view.cell_scene_center(1, 2) + QPointF(1, 1))  # same cell: no new signal
    view._on_mouse_moved(view.cell_scene_center(3, 4))
    view._on_mouse_moved(QPointF(-1000, -1000))  # off the image
    assert seen == [(1, 2), (3, 4), (-1, -1)]

    view._on_mouse_moved(view.cell_scene_center(0, 0))
    QApplication.sendEvent(view, QEvent(QEvent.Type.Leave))  # the mouse leaves the widget altogether
    assert seen[-2:] == [(0, 0), (-1, -1)]


def test_real_mouse_move_over_a_cell_emits_cell_hovered(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores())
    settle(qtbot)
    glw = view.graphics_widget()
    target = glw.mapFromScene(view.cell_scene_center(2, 1))
    with qtbot.waitSignal(view.cell_hovered, timeout=1000) as blocker:
        qtbot.mouseMove(glw.viewport(), target)
    assert blocker.args == [2, 1]


def test_click_on_a_cell_emits_cell_clicked(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores())
    settle(qtbot)
    glw = view.graphics_widget()
    target = glw.mapFromScene(view.cell_scene_center(3, 0))
    with qtbot.waitSignal(view.cell_clicked, timeout=1000) as blocker:
        qtbot.mouseClick(glw.viewport(), Qt.MouseButton.LeftButton, pos=target)
    assert blocker.args == [3, 0]


def test_numbers_are_shown_on_a_small_matrix_and_hidden_on_a_large_one(qtbot):
    view = make_view(qtbot)
    view.set_data(np.random.default_rng(1).normal(size=(5, 5)))
    settle(qtbot)
    assert view.labels_visible()

    view.set_data(np.random.default_rng(1).normal(size=(64, 64)))
    settle(qtbot)
    assert not view.labels_visible()


def cell_interior_colours(view, i, j, margin=0.3):
    """The distinct pixel colours in the middle of cell (i, j) of a grab of the view."""
    image = view.grab().toImage()
    glw = view.graphics_widget()
    centre = glw.mapTo(view, glw.mapFromScene(view.cell_scene_center(i, j)))
    half = int((view.cell_scene_center(i, j + 1).x() - view.cell_scene_center(i, j).x()) * margin)
    return {
        image.pixelColor(x, y).rgb()
        for x in range(centre.x() - half, centre.x() + half + 1)
        for y in range(centre.y() - half, centre.y() + half + 1)
    }


def test_numbers_are_painted_in_the_cells_when_shown(qtbot):
    view = make_view(qtbot, kind="weights")
    view.set_data(np.full((5, 5), 0.3))
    settle(qtbot)
    assert view.labels_visible()
    assert len(cell_interior_colours(view, 2, 2)) >= 3  # cell colour, text colour, anti-aliasing between


def test_numbers_are_hidden_when_cells_are_too_small_on_screen(qtbot):
    view = make_view(qtbot, size=(160, 140))
    view.set_data(np.zeros((12, 12)))
    settle(qtbot)
    assert not view.labels_visible()
    assert len(cell_interior_colours(view, 5, 5)) == 1  # a plain cell, no text


def test_cell_text_is_compact_and_marks_masked_cells():
    assert format_number(0.1234, "cell") == "0.12"
    assert format_number(-1.5, "cell") == "\u22121.50"
    assert format_number(-0.001, "cell") == "0.00"
    assert format_number(-np.inf, "cell") == "\u2212∞"
    assert format_number(1234.4, "cell") == "1234"


def test_highlight_sets_and_clears(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores())
    view.highlight(rows=[3, 1], cols=2, cell=(4, 0))
    assert view.highlighted() == ((1, 3), (2,), (4, 0))
    view.highlight()
    assert view.highlighted() == ((), (), None)


def test_grab_renders_a_coloured_figure(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores(), row_labels=TOKENS[:5], col_labels=TOKENS)
    view.set_title("scores = Q·Kᵀ  (head 1)  5 × 7")
    view.highlight(rows=[1], cell=(2, 2))
    settle(qtbot)
    image = view.grab().toImage()
    assert image.width() >= 400 and image.height() >= 320

    # Sample the centre of every cell: masked cells are grey, the rest take distinct map colours.
    glw = view.graphics_widget()
    colours = set()
    for i in range(5):
        for j in range(7):
            p = glw.mapTo(view, glw.mapFromScene(view.cell_scene_center(i, j)))
            colours.add(image.pixelColor(p.x() - 12, p.y() - 12).rgb())  # off the centre, away from the number
    assert len(colours) >= 5


@pytest.mark.parametrize("kind", ["diverging", "weights"])
def test_the_colour_bar_runs_from_the_low_colour_at_the_bottom_to_the_high_colour_at_the_top(qtbot, kind):
    view = make_view(qtbot, kind)
    view.set_data(np.array([[0.5, -3.0], [0.25, 1.0]]) if kind == "diverging" else np.array([[0.2, 0.8]]))
    qtbot.wait(20)
    (bar,) = [item for item in view.graphics_widget().scene().items() if isinstance(item, ColourBar)]
    lo, hi = (-3.0, 3.0) if kind == "diverging" else (0.0, 1.0)
    assert bar.levels() == (lo, hi)
    assert bar.tick_texts() == [format_number(v, "short") for v in (lo, (lo + hi) / 2, hi)]
    image = view.grab().toImage()
    glw = view.graphics_widget()
    height = bar.rect().height()
    assert height > 50  # as tall as the image beside it

    def colour_at(y: float) -> np.ndarray:  # y in the bar's own coordinates, 0 at its top
        p = glw.mapTo(view, glw.mapFromScene(bar.mapToScene(QPointF(ColourBar.BAR_PX / 2, y))))
        c = image.pixelColor(p.x(), p.y())
        return np.array([c.red(), c.green(), c.blue()])

    lut = view._lut.astype(int)  # the heatmap's own colours, low to high

    def expected(y: float) -> np.ndarray:  # the map's colour that far down from its high end
        return lut[round((1 - y / height) * (len(lut) - 1))]

    for y in (3, height / 4, height / 2, 3 * height / 4, height - 3):  # top: the high end; bottom: the low end
        assert np.abs(colour_at(y) - expected(y)).max() <= 12, y


def test_scene_holds_the_whole_figure_for_export(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores())
    view.set_title("scores")
    items = view.graphics_widget().scene().items()
    assert any(isinstance(item, ColourBar) for item in items)
    assert any(isinstance(item, pg.LabelItem) and "scores" in item.text for item in items)
    assert view.plot_item().scene() is view.graphics_widget().scene()


def test_close_views_is_idempotent_and_later_updates_are_ignored(qtbot):
    view = make_view(qtbot)
    view.set_data(causal_scores())
    view.close_views()
    view.close_views()
    view.set_data(np.zeros((2, 2)))  # a late recompute after shutdown must not crash
    view.highlight(rows=[0])
    assert view.cell_at(QPointF(0, 0)) is None


def test_size_hints_fit_a_grid_of_twelve_in_a_laptop_window(qtbot):
    view = HeatmapView()
    qtbot.addWidget(view)
    hint, minimum = view.sizeHint(), view.minimumSizeHint()
    assert 4 * hint.width() <= 1280 and 3 * hint.height() <= 800
    assert 0 < minimum.width() <= hint.width() and 0 < minimum.height() <= hint.height()
    # a view squeezed to its minimum still shows its cells: the plot keeps most of the widget
    view.resize(minimum)
    view.show()
    qtbot.waitExposed(view)
    settle(qtbot)
    plot = view.plot_item().vb.sceneBoundingRect()
    assert plot.width() >= 0.4 * minimum.width() and plot.height() >= 0.4 * minimum.height()
