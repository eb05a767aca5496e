"""The Model tab: every layer × head pattern as a thumbnail, click to open, hover for scores, heads sorted by score."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QToolTip

from qkvgui.core.heads import SCORES
from qkvgui.session import Session
from qkvgui.ui.panels.model import ModelPanel, mosaic


@pytest.fixture
def panel(qtbot):
    p = ModelPanel()
    qtbot.addWidget(p)
    p.resize(1280, 760)
    p.show()
    return p


def big_session() -> Session:
    """6 layers × 12 heads over 30 tokens with repeats (the size the tab is for), seeded random weights."""
    rng = np.random.default_rng(0)
    n, d, h, dk = 30, 48, 12, 4
    tokens = [f"w{t}" for t in rng.integers(0, 10, size=n)]
    s = Session.from_arrays(
        rng.normal(size=(n, d)),
        rng.normal(size=(h, d, dk)),
        rng.normal(size=(h, d, dk)),
        rng.normal(size=(h, d, dk)),
        rng.normal(size=(h * dk, d)) * 0.1,
        tokens=tokens,
        causal=True,
    )
    for seed in range(5):
        s.add_layer(seed=seed + 1)
    return s


def test_every_head_is_a_thumbnail_whose_pixels_are_its_weights(panel):
    s = big_session()
    results = s.compute_layers()
    panel.show_results(results, s.tokens)
    image = panel.grid.grab().toImage()
    lut = panel.grid._lut
    for layer, head in ((0, 0), (2, 7), (5, 11)):
        w = results[layer].weights[head]  # [n, n]
        rect = panel.grid.cell_rect(layer, head)
        for i, j in ((0, 0), (5, 3), (29, 29), (29, 0)):
            x = rect.x() + int((j + 0.5) * rect.width() / 30)
            y = rect.y() + int((i + 0.5) * rect.height() / 30)
            c = image.pixelColor(x, y)
            want = lut[int(np.clip(w[i, j] * 255 + 0.5, 0, 255))]
            assert abs(c.red() - int(want[0])) <= 2 and abs(c.green() - int(want[1])) <= 2, (layer, head, i, j)


def test_clicking_a_thumbnail_opens_that_layer_and_head(panel, qtbot):
    s = big_session()
    panel.show_results(s.compute_layers(), s.tokens)
    rect = panel.grid.cell_rect(4, 9)
    with qtbot.waitSignal(panel.head_chosen) as signal:
        qtbot.mouseClick(panel.grid, Qt.LeftButton, pos=rect.center())
    assert signal.args == [4, 9]


def test_hovering_a_thumbnail_shows_its_scores(panel, qtbot):
    s = big_session()
    panel.show_results(s.compute_layers(), s.tokens)
    scores = s.head_scores()
    rect = panel.grid.cell_rect(3, 5)
    qtbot.mouseMove(panel.grid, rect.center())
    qtbot.waitUntil(lambda: QToolTip.isVisible() or panel.grid._tooltip_text, timeout=2000)
    text = panel.grid._tooltip_text
    assert text.startswith("layer 4, head 6")
    assert f"induction: {scores['induction'][3, 5]:.3f}" in text
    assert f"previous-token: {scores['previous-token'][3, 5]:.3f}" in text
    qtbot.mouseMove(panel.grid, QPoint(1, 1))


def test_the_table_lists_every_head_and_sorts_by_any_score(panel):
    s = big_session()
    panel.show_results(s.compute_layers(), s.tokens)
    scores = s.head_scores()
    assert panel.table.rowCount() == 72
    for name in SCORES:
        order = panel.sort_by(name)
        values = [scores[name][layer, head] for layer, head in order]
        finite = [v for v in values if not np.isnan(v)]
        assert finite == sorted(finite, reverse=True), name
        assert order[0] == np.unravel_index(np.nanargmax(scores[name]), scores[name].shape)


def test_double_clicking_a_row_opens_its_head(panel, qtbot):
    s = big_session()
    panel.show_results(s.compute_layers(), s.tokens)
    top = panel.sort_by("previous-token")[0]
    with qtbot.waitSignal(panel.head_chosen) as signal:
        panel.table.cellDoubleClicked.emit(0, 2)
    assert tuple(signal.args) == top


def test_mosaic_pools_long_sentences_keeping_sharp_patterns():
    lut = np.stack([np.arange(256)] * 3, axis=1).astype(np.uint8)
    w = np.zeros((1, 1, 200, 200))
    w[0, 0, np.arange(200), np.arange(200)] = 1.0  # one-hot diagonal: must survive shrinking
    image, tq, tk = mosaic(w, lut, thumb=48)
    assert (tq, tk) == (48, 48)
    tile = image[:48, :48, 0]
    assert (np.diag(tile) == 255).all() and tile[0, 40] == 0
