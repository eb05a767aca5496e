"""The window at real size, driven as a user drives it: a 27-token, 12-head layer on a 1280 × 800 screen."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QLabel, QMenu

from qkvgui.session import Session

SENTENCE = (
    "the quick brown fox jumps over the lazy dog while a small bird sings in the tall old tree near "
    "the river bank on a quiet sunny morning"
).split()


def real_size_session(n_tokens: int = 27, heads: int = 12) -> Session:
    """A BERT-base-like layer (12 heads, d_model 384, d_k 32) on a 27-token sentence, seeded."""
    s = Session()
    s.set_tokens((SENTENCE * 4)[:n_tokens])
    s.resize(d_model=384, n_heads=heads, d_k=32, d_v=32)
    s.generate("X", "random", seed=1)
    s.randomize_weights(seed=2)
    return s


@pytest.fixture
def big(qtbot):
    from qkvgui.ui.main_window import MainWindow

    w = MainWindow(real_size_session())
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    qtbot.waitUntil(lambda: w.result is not None and (w.result.n_heads, w.result.n_q) == (12, 27), timeout=10000)
    qtbot.waitUntil(lambda: not w.pipeline.drawing(), timeout=10000)
    qtbot.wait(50)
    return w


def viewport_point(view, i, j):
    glw = view.graphics_widget()
    return glw.viewport(), glw.mapFromScene(view.cell_scene_center(i, j))


def double_click(qtbot, view, i=0, j=0):
    viewport, pos = viewport_point(view, i, j)
    # what a real double click delivers: press, release, double-click, release
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=pos)


def test_double_clicking_the_weights_focuses_them_large_with_every_label_and_number(qtbot, big):
    view = big.views["weights"]
    assert view.width() < 400  # the overview: one view among eleven
    double_click(qtbot, view, 3, 4)
    qtbot.waitUntil(lambda: big.pipeline.focused() == "weights")
    qtbot.waitUntil(lambda: view.width() >= 600 and view.height() >= 500, timeout=3000)
    tokens = big.session.tokens

    def all_labels_and_numbers():
        rows, cols = view.shown_ticks()
        return rows == list(enumerate(tokens)) and cols == list(enumerate(tokens)) and view.labels_visible()

    qtbot.waitUntil(all_labels_and_numbers, timeout=3000)
    # the rest of the pipeline stays visible as context, still live
    for name in ("q", "scores", "masked", "residual"):
        assert big.views[name].isVisible()
    assert big.findChild(type(view), "view.weights.head3").isVisible()
    # Escape returns to the overview
    qtbot.keyClick(big, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: big.pipeline.focused() is None)
    qtbot.waitUntil(lambda: view.width() < 400)


def test_a_second_double_click_and_the_api_and_the_menu_focus_and_unfocus(qtbot, big):
    big.focus_view("scores")
    assert big.pipeline.focused() == "scores"
    double_click(qtbot, big.views["scores"])
    qtbot.waitUntil(lambda: big.pipeline.focused() is None)
    big.views["masked"].cell_hovered.emit(2, 1)  # the last view pointed at
    big.findChild(type(big.undo_action), "action.focus").trigger()
    assert big.pipeline.focused() == "masked"
    big.focus_view("weights.head5")  # a head thumbnail's name focuses the weights of that head
    assert big.pipeline.focused() == "weights" and big.session.head == 4
    assert big.head_spin.value() == 5
    big.focus_view(None)
    assert big.pipeline.focused() is None
    with pytest.raises(KeyError):
        big.focus_view("nonsense")


def test_clicking_a_head_thumbnail_selects_that_head(qtbot, big):
    thumb = big.findChild(type(big.views["weights"]), "view.weights.head7")
    big.pipeline.strip.ensureWidgetVisible(thumb)
    qtbot.wait(20)
    viewport, pos = viewport_point(thumb, 5, 5)
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: big.session.head == 6)
    assert big.head_spin.value() == 7
    assert thumb.title().startswith("▶ head 7")
    # the main weights view now shows head 7's pattern
    qtbot.waitUntil(lambda: np.allclose(big.views["weights"].image_array(), big.result.head(6).weights))


def test_the_thumbnails_never_squeeze_the_main_views(qtbot, big):
    # 12 thumbnails, and the main views keep the room they had with 2 heads
    strip = big.pipeline.strip
    assert strip.width() < 220
    thumbs = [big.findChild(type(big.views["weights"]), f"view.weights.head{k}") for k in range(1, 13)]
    assert all(t.width() == thumbs[0].width() and t.height() == thumbs[0].height() for t in thumbs)
    assert big.views["weights"].height() > 150 and big.views["q"].height() > 150


def test_a_switched_off_head_is_marked_on_its_thumbnail(qtbot, big):
    big.session.set_head(2)
    big.ablate_box.click()
    qtbot.waitUntil(lambda: "off" in big.findChild(type(big.views["q"]), "view.weights.head3").title())
    assert "off" not in big.findChild(type(big.views["q"]), "view.weights.head2").title()


def test_keys_step_through_heads_and_layers(qtbot, big):
    big.activateWindow()
    big.views["weights"].setFocus()
    qtbot.keyClick(big.views["weights"], Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    assert big.session.head == 1 and big.head_spin.value() == 2
    qtbot.keyClick(big.views["weights"], Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    qtbot.keyClick(big.views["weights"], Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    assert big.session.head == 11  # wraps around
    big.session.add_layer(seed=3)
    big.session.set_layer(0)
    qtbot.keyClick(big.views["weights"], Qt.Key.Key_Down, Qt.KeyboardModifier.AltModifier)
    assert big.session.layer == 1 and big.layer_spin.value() == 2


def test_wheel_zooms_about_the_cursor_home_resets_and_the_status_line_names_the_token(qtbot, big):
    view = big.views["weights"]
    assert view.visible_cells() == (0, 27, 0, 27)
    for _ in range(7):
        view.zoom_by(1.5, about=(20, 20))
    qtbot.waitUntil(view.is_zoomed)
    i0, i1, j0, j1 = view.visible_cells()
    assert i1 - i0 < 27 and j1 - j0 < 27 and i0 <= 20 < i1 and j0 <= 20 < j1
    # zoomed in, the numbers appear even in the overview-sized view
    qtbot.waitUntil(view.labels_visible)
    # hovering names the cell in full, with its 1-based positions
    viewport, pos = viewport_point(view, 20, 21)
    qtbot.mouseMove(viewport, pos)
    qtbot.waitUntil(lambda: "row 21:" in big.statusBar().currentMessage())
    assert f"column 22:{big.session.tokens[21]}" in big.statusBar().currentMessage()
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Home)
    assert not view.is_zoomed() and view.visible_cells() == (0, 27, 0, 27)


def test_a_real_wheel_turn_zooms(qtbot, big):
    view = big.views["scores"]
    viewport, pos = viewport_point(view, 10, 10)
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    for _ in range(3):
        event = QWheelEvent(
            QPointF(pos),
            QPointF(viewport.mapToGlobal(pos)),
            QPoint(0, 0),
            QPoint(0, 240),
            Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(viewport, event)
    qtbot.waitUntil(view.is_zoomed)
    i0, i1, j0, j1 = view.visible_cells()
    assert i1 - i0 < 27 and i0 <= 10 < i1 and j0 <= 10 < j1


def test_thinned_labels_name_their_position(qtbot):
    from qkvgui.ui.main_window import MainWindow

    w = MainWindow(real_size_session(n_tokens=60, heads=2))
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    qtbot.waitUntil(lambda: w.result is not None and w.result.n_q == 60, timeout=10000)
    rows, _ = w.views["weights"].shown_ticks()
    qtbot.waitUntil(lambda: len(w.views["weights"].shown_ticks()[0]) < 60)
    rows, cols = w.views["weights"].shown_ticks()
    tokens = w.session.tokens
    for k, text in rows + cols:
        assert text == f"{k + 1}:{tokens[k]}"  # never a label standing for the wrong token


def test_every_key_is_bound_once_and_redo_has_ctrl_shift_z(qtbot, big):
    seen = {}
    for action in big.findChildren(type(big.undo_action)):
        if isinstance(action.parent(), QMenu):
            continue  # an editor's context menu shows Copy and Paste keys that its table handles itself
        for key in action.shortcuts():
            assert key.toString() not in seen, f"{key.toString()} is bound to {seen.get(key.toString())} too"
            seen[key.toString()] = action.text()
    assert QKeySequence("Ctrl+Shift+Z") in big.redo_action.shortcuts()
    assert QKeySequence("Ctrl+Shift+Z") not in big.undo_action.shortcuts()


def test_ctrl_z_in_a_spin_box_undoes_the_session_and_ctrl_shift_z_redoes(qtbot, window):
    spin = window.heads_spin
    spin.setFocus()
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "3")
    qtbot.keyClick(spin.lineEdit(), Qt.Key.Key_Return)
    assert window.session.n_heads == 3
    qtbot.keyClick(spin.lineEdit(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.session.n_heads == 2 and spin.value() == 2
    qtbot.keyClick(
        spin.lineEdit(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    assert window.session.n_heads == 3 and spin.value() == 3


def test_help_lists_every_shortcut(qtbot, window):
    from qkvgui.ui.controllers.keys import ShortcutsDialog

    dialog = ShortcutsDialog(window)
    qtbot.addWidget(dialog)
    rows = dialog.rows()
    redo = [r for r in rows if r[1] == "Redo"]
    assert redo and "Ctrl+Shift+Z" in redo[0][2]
    assert any(r[1] == "Back to every step" and r[2] == "Esc" for r in rows)
    assert any(r[1] == "Next head" for r in rows)
    assert any("Reset zoom" in r[1] for r in rows)


def test_reset_layout_restores_the_splitters_and_leaves_focus(qtbot, window):
    window.main_splitter.setSizes([700, 580])
    window.focus_view("weights")
    window.findChild(type(window.undo_action), "action.reset_layout").trigger()
    assert window.pipeline.focused() is None
    left, right = window.main_splitter.sizes()
    from qkvgui.ui.controllers.layout import default_sizes

    assert abs(left - max(default_sizes(window.width(), window.height())[0][0], 340)) < 40


def test_the_dark_theme_reaches_the_heatmaps(qtbot, window):
    from PySide6.QtGui import QPalette

    window.findChild(type(window.undo_action), "action.theme_dark").trigger()
    try:
        qtbot.waitUntil(lambda: window.views["weights"].graphics_widget().backgroundBrush().color().lightness() < 80)
        assert window.palette().color(QPalette.ColorRole.Window).lightness() < 80
    finally:
        window.findChild(type(window.undo_action), "action.theme_system").trigger()
    qtbot.waitUntil(lambda: window.views["weights"].graphics_widget().backgroundBrush().color().lightness() > 150)


def test_big_circuits_are_computed_off_the_gui_thread_and_match_the_core(qtbot, big):
    from qkvgui.core import composition_scores, qk_circuit

    s = big.session
    s.add_layer(seed=5)  # two layers of 12 heads, d_model 384: SVDs and 144 composition scores per edit
    qtbot.waitUntil(lambda: len(big.results) == 2, timeout=10000)
    big.right_tabs.setCurrentWidget(big.circuits)
    # the tab is drawn at once; the numbers follow from the worker
    assert "computing" in big.circuits.rank_label.text()
    qtbot.waitUntil(lambda: "rank W_QK" in big.circuits.rank_label.text(), timeout=60000)
    layer, head = s.layer, s.head
    np.testing.assert_allclose(
        big.views["qk_circuit"].data(),
        qk_circuit(s.matrix("W_Q")[head : head + 1], s.matrix("W_K")[head : head + 1])[0],
    )
    later = max(layer, 1)
    c = composition_scores(
        *(s.matrix(n, layer=later) for n in ("W_Q", "W_K", "W_V", "W_O")),
        s.matrix("W_V", layer=later - 1),
        s.matrix("W_O", layer=later - 1),
    )
    np.testing.assert_allclose(big.views["composition"].data()[12:24], c["K"])


def test_pad_tokens_typed_into_the_source_are_flagged_as_padding(qtbot, window):
    window.cross_box.click()
    edit = window.source_edit
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, "le chat dort <pad> <pad>")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert list(window.session.key_padding) == [False, False, False, True, True]
    items = [window.padding_list.item(i) for i in range(window.padding_list.count())]
    assert [i.checkState() == Qt.CheckState.Checked for i in items] == [False, False, False, True, True]
    window.undo_stack.undo()  # one step: the tokens and their flags
    assert window.session.source_tokens != ["le", "chat", "dort", "<pad>", "<pad>"]


def test_cross_attention_with_the_causal_mask_warns(qtbot, window):
    warning = window.findChild(QLabel, "control.cross_warning")
    window.show_editor("X")
    if window.causal_box.isChecked():
        window.causal_box.click()
    window.cross_box.click()
    assert not warning.isVisible()
    window.causal_box.click()
    assert warning.isVisible() and "do not mask cross-attention" in warning.text()
    window.causal_box.click()
    assert not warning.isVisible()


def test_the_undo_menu_counts_rows_and_columns_from_one(qtbot, window):
    window.edit_block("W_Q", 3, 1, np.array([[0.5]]))
    assert window.undo_action.text().endswith("row 4, column 2")


def test_the_inspector_follows_a_setting_change_under_a_pinned_cell(qtbot, window):
    view = window.views["weights"]
    glw = view.graphics_widget()
    pos = glw.mapFromScene(view.cell_scene_center(4, 2))
    qtbot.mouseClick(glw.viewport(), Qt.MouseButton.LeftButton, pos=pos)  # pin weights[4, 2]
    before = window.inspector.toPlainText()
    assert before
    window.scale_combo.setCurrentIndex(1)  # scale: none (1)
    qtbot.waitUntil(lambda: window.inspector.toPlainText() != before, timeout=5000)
    assert window.session.scale_mode == "none"


def test_the_default_session_at_1280_by_800_shows_numbers_in_scores_weights_and_head_outputs(qtbot, window):
    from test_ui_heatmap import cell_interior_colours

    window.resize(1280, 800)
    window.layout_control.default_layout()
    qtbot.waitUntil(lambda: window.result is not None and not window.pipeline.drawing(), timeout=5000)
    qtbot.wait(100)
    assert window.width() == 1280 and window.height() == 800
    for name in ("scores", "scaled", "masked", "weights", "head_outputs"):
        qtbot.waitUntil(window.views[name].labels_visible, timeout=3000)
    weights = window.views["weights"]
    # the pixels: a weights cell holds its number (cell colour, text colour, anti-aliasing between)
    qtbot.waitUntil(lambda: len(cell_interior_colours(weights, 3, 1)) >= 3, timeout=3000)
    assert len(cell_interior_colours(weights, 5, 0)) >= 3


def test_narrow_cells_get_compact_numbers():
    from qkvgui.core.format import format_number

    def format_cell(value: float, compact: bool = False) -> str:
        return format_number(value, "compact" if compact else "cell")

    assert format_cell(0.37, compact=True) == ".37"
    assert format_cell(-0.05, compact=True) == "\u2212.05"
    assert format_cell(1.43, compact=True) == "1.4"
    assert format_cell(-12.4, compact=True) == "\u221212"
    assert format_cell(-0.001, compact=True) == "0"
    assert format_cell(1.0, compact=True) == "1.0"
    assert format_cell(0.37) == "0.37"  # wide cells keep two decimals


def test_a_first_window_takes_most_of_the_screen_centred_or_all_of_a_small_one():
    from PySide6.QtCore import QRect

    from qkvgui.ui.controllers.layout import first_geometry

    rect, maximized = first_geometry(QRect(0, 0, 1920, 1040))
    assert not maximized and (rect.width(), rect.height()) == (1728, 936)
    assert rect.center() == QRect(0, 0, 1920, 1040).center()
    rect, maximized = first_geometry(QRect(0, 27, 1280, 773))
    assert maximized and rect == QRect(0, 27, 1280, 773)


def test_a_first_window_is_fitted_to_the_screen_and_a_saved_geometry_comes_back(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    from qkvgui.ui.controllers import layout
    from qkvgui.ui.controllers.layout import first_geometry
    from qkvgui.ui.main_window import MainWindow

    store = QSettings(str(tmp_path / "qkvgui.ini"), QSettings.Format.IniFormat)
    monkeypatch.setattr(layout, "settings", lambda: store)
    w = MainWindow()
    qtbot.addWidget(w)
    expected, maximized = first_geometry(w.screen().availableGeometry())
    assert maximized == bool(w.windowState() & Qt.WindowState.WindowMaximized)
    if not maximized:
        assert (w.width(), w.height()) == (expected.width(), expected.height())
    w.setWindowState(Qt.WindowState.WindowNoState)
    w.setGeometry(40, 50, 600, 450)  # inside the offscreen screen (restoreGeometry keeps a window on screen)
    w.layout_control.save()
    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert (w2.width(), w2.height()) == (600, 450)


def test_a_script_that_exits_with_the_window_open_prints_no_error(tmp_path):
    """A script that shows the window, resizes it and ends without closing it: the queued resize reaches views
    whose layout Qt has already deleted (it printed RuntimeError tracebacks from heatmap._fit_range)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "show_and_exit.py"
    script.write_text(
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from qkvgui.ui.app import show_window\n"
        "app = QApplication(sys.argv)\n"
        "w = show_window()\n"
        "for _ in range(20):\n"
        "    app.processEvents()\n"
        "w.resize(900, 700)\n"
        "print('shown')\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QKVGUI_NO_SETTINGS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "shown" in done.stdout
    assert "Traceback" not in done.stderr and "RuntimeError" not in done.stderr, done.stderr


def test_colour_bar_ticks_have_no_needless_decimals(qtbot):
    from qkvgui.ui.heatmap import HeatmapView

    view = HeatmapView("diverging")
    qtbot.addWidget(view)
    view.set_data(np.array([[-31.0, 2.0], [0.0, 40.0]]))
    ticks = view._bar.tick_texts()
    assert ticks == ["\u221240", "0", "40"]


def test_a_circuits_view_is_focused_by_double_click_and_escape_brings_the_tab_back(qtbot, window):
    window.resize(1280, 800)
    window.right_tabs.setCurrentWidget(window.circuits)
    view = window.views["qk_circuit"]
    qtbot.waitUntil(lambda: view.isVisible() and view.data().size > 0, timeout=5000)
    others = [window.views["ov_circuit"], window.views["composition"], window.circuits.spectra]
    shown_before = [w.isVisible() for w in others]
    size_before = (view.width(), view.height())
    double_click(qtbot, view, 0, 0)
    qtbot.waitUntil(lambda: window.layout_control.focused() == "qk_circuit", timeout=3000)
    qtbot.waitUntil(lambda: view.width() >= 600 and view.height() >= 500, timeout=3000)
    assert view.width() > size_before[0] and not window.views["ov_circuit"].isVisible()
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: window.layout_control.focused() is None, timeout=3000)
    assert [w.isVisible() for w in others] == shown_before
    qtbot.waitUntil(lambda: abs(view.width() - size_before[0]) < 40, timeout=3000)


def test_the_learn_views_and_the_model_block_can_be_focused_by_name(qtbot, window):
    window.resize(1280, 800)
    window.focus_view("learn_weights")
    learn = window.layout_control.tab_view("learn_weights")
    assert window.right_tabs.currentWidget().isAncestorOf(learn)
    qtbot.waitUntil(lambda: learn.width() >= 600 and learn.height() >= 450, timeout=3000)
    assert not window.layout_control.tab_view("learn_target").isVisible()
    window.focus_view(None)
    qtbot.waitUntil(lambda: window.layout_control.tab_view("learn_target").isVisible(), timeout=3000)
    window.focus_view("weights")  # and the pipeline's focus still works after it
    assert window.pipeline.focused() == "weights" and window.layout_control.focused() == "weights"
    window.focus_view(None)
    assert window.layout_control.focused() is None
