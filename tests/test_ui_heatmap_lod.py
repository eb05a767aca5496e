"""Heatmaps of big matrices: a level-of-detail picture that never loses a sharp line, prepared off the GUI thread,
and full resolution where zoomed in."""

import numpy as np
import pytest
from PySide6.QtCore import QRectF

from qkvgui.ui.heatmap import LOD_CELLS, HeatmapView, level_of_detail


def loop_lod(data, fy, fx, kind):
    rows, cols = -(-data.shape[0] // fy), -(-data.shape[1] // fx)
    out = np.full((rows, cols), np.nan, dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            block = data[i * fy : (i + 1) * fy, j * fx : (j + 1) * fx]
            values = block[np.isfinite(block)]
            if values.size:
                out[i, j] = values.max() if kind == "weights" else values[np.argmax(np.abs(values))]
    return out


@pytest.mark.parametrize("kind", ["weights", "diverging"])
def test_level_of_detail_keeps_each_blocks_extreme_and_leaves_masked_cells_out(kind):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((23, 17)) if kind == "diverging" else rng.random((23, 17))
    data[np.triu_indices(23, 1, 17)] = -np.inf  # a causal mask: some blocks are entirely hidden
    image, masked = level_of_detail(data, 4, 3, kind)
    expected = loop_lod(data, 4, 3, kind)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(masked, np.isnan(expected))
    assert masked.any() and not masked.all()


def test_a_one_key_attention_line_survives_at_full_strength():
    weights = np.zeros((2000, 2000))
    weights[:, 1234] = 1.0  # every query looks at key 1234 only
    image, _ = level_of_detail(weights, 2, 2, "weights")
    assert image.shape == (1000, 1000)
    assert np.all(image[:, 617] == 1.0) and image.sum() == 1000


def _settle(qtbot, view):
    qtbot.waitUntil(lambda: not view.preparing(), timeout=20000)


def test_a_big_weights_view_is_drawn_from_a_prepared_level_of_detail_image(qtbot):
    n, m = 2048, 1500
    assert n * m > LOD_CELLS
    data = np.zeros((n, m))
    data[:, 700] = 1.0
    data[np.triu_indices(n, 1, m)] = -np.inf
    data.flags.writeable = False
    view = HeatmapView("weights")
    qtbot.addWidget(view)
    view.resize(600, 500)
    view.show()
    view.set_data(data)
    assert view.data() is data  # kept as given: no copy of 3 M numbers
    _settle(qtbot, view)
    image = view.image_array()
    assert image.shape == (1024, 750)  # 2 × 2 cells per pixel
    assert np.all(image[350:, 350] == 1.0)  # the line, at full strength below the diagonal
    assert np.isnan(image[0, 600])  # hidden above the diagonal
    # The cell under the mouse is still the real cell, not the pooled pixel.
    assert view.cell_at(view.cell_scene_center(1500, 700)) == (1500, 700)
    assert view.cell_at(view.cell_scene_center(3, 1499)) == (3, 1499)


def test_zooming_in_on_a_big_matrix_draws_the_cells_in_view_at_full_resolution(qtbot):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((2100, 2100))
    data.flags.writeable = False
    view = HeatmapView("diverging")
    qtbot.addWidget(view)
    view.resize(600, 500)
    view.show()
    view.set_data(data)
    _settle(qtbot, view)
    assert view.image_array().shape == (700, 700)  # 3 × 3 cells per pixel
    view.plot_item().vb.setRange(QRectF(1000, 400, 300, 300), padding=0.0)  # x = columns, y = rows
    qtbot.waitUntil(lambda: not view.preparing() and view.image_array().shape[0] < 700, timeout=20000)
    image = view.image_array()
    # Full resolution around the view: the exact values, cell for cell.
    (fy, fx, r0, c0) = view._shown
    assert (fy, fx) == (1, 1)
    assert r0 <= 400 and c0 <= 1000
    np.testing.assert_array_equal(image, data[r0 : r0 + image.shape[0], c0 : c0 + image.shape[1]].astype(np.float32))
    assert view.cell_at(view.cell_scene_center(500, 1100)) == (500, 1100)
    # Zoomed out again: the overview comes back at once.
    view.plot_item().vb.setRange(QRectF(-0.5, -0.5, 2100, 2100), padding=0.0)
    assert view.image_array().shape == (700, 700)


def test_new_data_drops_a_picture_still_being_prepared(qtbot):
    view = HeatmapView("weights")
    qtbot.addWidget(view)
    first, second = np.zeros((1100, 1100)), np.ones((1100, 1100))
    view.set_data(first)
    view.set_data(second)
    _settle(qtbot, view)
    assert view.data() is not first
    assert np.all(view.image_array() == 1.0)
