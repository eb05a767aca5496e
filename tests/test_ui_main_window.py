"""The explorer window, driven as a user drives it: typing, pasting, toggling, undoing, and what the views show."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QPushButton

from qkvgui import MainWindow
from qkvgui.core import multi_head_attention
from qkvgui.session import Session
from qkvgui.ui.pipeline import VIEW_SPECS


def independent_weights(s: Session, head: int) -> np.ndarray:
    """The weights the core gives for the session's matrices, computed here from the raw arrays."""
    r = multi_head_attention(
        s.matrix("X"),
        s.matrix("W_Q"),
        s.matrix("W_K"),
        s.matrix("W_V"),
        s.matrix("W_O"),
        x_kv=s.matrix("X_kv") if s.cross else None,
        causal=s.causal,
        key_padding_mask=s.key_padding if s.key_padding.any() else None,
        scale=s.scale(),
    )
    return r.weights[head]


def type_into(qtbot, window, name, row, col, text):
    """Select a cell of a matrix editor, type text as a user does, press Enter."""
    table = window.show_editor(name).table
    qtbot.waitUntil(lambda: table.isVisible() and table.viewport().width() > 0)
    index = table.model().index(row, col)
    table.setCurrentIndex(index)
    table.setFocus()
    table.edit(index)
    line = table.indexWidget(index)
    assert line is not None, "no cell editor opened"
    line.selectAll()
    qtbot.keyClicks(line, text)
    qtbot.keyClick(line, Qt.Key_Return)
    qtbot.waitUntil(lambda: table.state() == table.State.NoState)  # Qt commits the edit on the next turn


def settle(qtbot, window):
    """Let the scheduler's end-of-turn recomputation run."""
    qtbot.waitUntil(
        lambda: (
            not window.scheduler._turn.isActive()
            and window.scheduler._running is None
            and not window.pipeline.drawing()
        ),  # new head thumbnails are made one per event-loop turn
        timeout=5000,
    )


def test_every_editor_and_view_has_its_object_name(window):
    for name in ("X", "X_kv", "W_Q", "W_K", "W_V", "W_O"):
        assert window.findChild(type(window.editors["X"]), f"editor.{name}") is window.editors[name]
    for spec in VIEW_SPECS:
        assert window.findChild(type(window.views["q"]), f"view.{spec.name}") is window.views[spec.name]


def test_views_show_the_core_result_at_start(window):
    s = window.session
    np.testing.assert_allclose(window.views["weights"].image_array(), independent_weights(s, 0).astype(np.float32))
    assert window.views["concat"].image_array().shape == (6, 6)


def test_typing_into_w_q_reaches_the_weights_view(qtbot, window):
    s = window.session
    s.set_head(1)
    before = window.views["weights"].image_array().copy()
    type_into(qtbot, window, "W_Q", 3, 1, "2.5")
    settle(qtbot, window)
    assert s.matrix("W_Q")[1, 3, 1] == 2.5
    after = window.views["weights"].image_array()
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after, independent_weights(s, 1).astype(np.float32))
    # Undo restores the old value and the old picture.
    window.undo_stack.undo()
    settle(qtbot, window)
    np.testing.assert_array_equal(window.views["weights"].image_array(), before)
    window.undo_stack.redo()
    settle(qtbot, window)
    assert s.matrix("W_Q")[1, 3, 1] == 2.5


def test_a_word_in_a_cell_is_refused_with_a_message(qtbot, window):
    s = window.session
    old = s.matrix("W_K").copy()
    type_into(qtbot, window, "W_K", 0, 0, "abc")
    settle(qtbot, window)
    np.testing.assert_array_equal(s.matrix("W_K"), old)
    assert "abc" in window.last_message
    assert "abc" in window.statusBar().currentMessage()
    assert window.undo_stack.count() == 0


def test_pasting_a_tsv_block_edits_the_block_as_one_undo_step(qtbot, window):
    s = window.session
    editor = window.editors["X"]
    editor.table.setCurrentIndex(editor.table.model().index(1, 2))
    QApplication.clipboard().setText("1.5\t-2\n0.25\t4e-1\n")
    editor.paste_from_clipboard()
    settle(qtbot, window)
    np.testing.assert_array_equal(s.matrix("X")[1:3, 2:4], [[1.5, -2.0], [0.25, 0.4]])
    np.testing.assert_allclose(window.views["weights"].image_array(), independent_weights(s, 0).astype(np.float32))
    assert window.undo_stack.count() == 1
    window.undo_stack.undo()
    assert s.matrix("X")[1, 2] == 0.0


def test_causal_switch_zeroes_the_weights_above_the_diagonal(qtbot, window):
    box = window.causal_box
    box.setChecked(False)
    settle(qtbot, window)
    w = window.views["weights"].image_array()
    assert np.any(np.triu(w, 1) > 0)
    qtbot.mouseClick(box, Qt.LeftButton)
    settle(qtbot, window)
    assert window.session.causal
    w = window.views["weights"].image_array()
    assert np.all(np.triu(w, 1) == 0)
    assert np.all(np.isneginf(window.views["masked"].data()[np.triu_indices(6, 1)]))


def type_tokens(qtbot, edit, text):
    """Replace a token field's text by typing, then press Enter, as a user does."""
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def test_cross_attention_shapes_follow_the_source(qtbot, window):
    window.cross_box.setChecked(True)
    settle(qtbot, window)
    assert window.editors["X_kv"].isVisible()
    assert window.views["weights"].image_array().shape == (6, 5)
    type_tokens(qtbot, window.source_edit, "ein zwei drei")
    settle(qtbot, window)
    assert window.session.matrix("X_kv").shape == (3, 12)
    assert window.views["scores"].image_array().shape == (6, 3)
    assert window.views["k"].image_array().shape == (3, 3)
    assert window.editors["X_kv"].model.rowCount() == 3
    window.undo_stack.undo()
    settle(qtbot, window)
    assert window.views["scores"].image_array().shape == (6, 5)


def test_padding_a_key_hides_it_from_every_query(qtbot, window):
    window.causal_box.setChecked(False)
    item = window.padding_list.item(2)
    item.setCheckState(Qt.Checked)
    settle(qtbot, window)
    assert window.session.padding.tolist() == [False, False, True, False, False, False]
    assert np.all(window.views["weights"].image_array()[:, 2] == 0)


def test_resizing_heads_keeps_values_and_views_follow(qtbot, window):
    s = window.session
    w_q = s.matrix("W_Q").copy()
    window.heads_spin.setValue(3)
    settle(qtbot, window)
    assert s.n_heads == 3
    np.testing.assert_array_equal(s.matrix("W_Q")[:2], w_q)
    assert window.views["concat"].image_array().shape == (6, 9)
    assert len(window.pipeline.head_views) == 3
    window.undo_stack.undo()
    settle(qtbot, window)
    assert s.n_heads == 2 and window.heads_spin.value() == 2


def test_tokens_line_edits_rows_of_x(qtbot, window):
    type_tokens(qtbot, window.tokens_edit, "the cat sat")
    settle(qtbot, window)
    assert window.session.tokens == ["the", "cat", "sat"]
    assert window.editors["X"].model.rowCount() == 3
    assert window.views["weights"].image_array().shape == (3, 3)


def test_hovering_a_score_explains_it_and_highlights_q_and_k_rows(qtbot, window):
    window.views["scores"].cell_hovered.emit(4, 2)
    html = window.inspector.toPlainText()
    r = window.result
    assert "Query 5" in html and "key 3" in html  # counted from 1, as the window counts tokens
    assert f"{r.scores[0, 4, 2]:.4g}".replace("-", "−") in html
    window.views["head_outputs"].cell_hovered.emit(3, 0)
    assert "output for query 4" in window.inspector.toPlainText()


def test_head_selector_switches_the_per_head_views(qtbot, window):
    window.head_spin.setValue(2)
    assert window.session.head == 1
    np.testing.assert_allclose(
        window.views["weights"].image_array(), independent_weights(window.session, 1).astype(np.float32)
    )
    np.testing.assert_array_equal(window.editors["W_V"].model.matrix(), window.session.matrix("W_V")[1])


def test_generator_fills_x_and_undo_restores(qtbot, window):
    s = window.session
    x = s.matrix("X").copy()
    window.gen_combo.setCurrentText("sinusoidal")
    window._generate()
    settle(qtbot, window)
    assert not np.array_equal(s.matrix("X"), x)
    window.undo_stack.undo()
    np.testing.assert_array_equal(s.matrix("X"), x)


def test_big_layer_is_computed_off_the_gui_thread(qtbot):
    from qkvgui.ui.bench_gui import _layer_state

    n, h = 256, 4
    w = MainWindow()
    qtbot.addWidget(w)
    w.scheduler.threshold = 1e5
    with qtbot.waitSignal(w.scheduler.busy, timeout=5000):
        w.session.set_state(_layer_state(w.session.state(), n, 256, h, 64))
    qtbot.waitUntil(lambda: w.result is not None and w.result.weights.shape == (h, n, n), timeout=10000)
    qtbot.waitUntil(lambda: not w.pipeline.drawing(), timeout=10000)  # big results are drawn view by view
    np.testing.assert_allclose(w.views["weights"].image_array(), independent_weights(w.session, 0).astype(np.float32))
    w.close()


@pytest.mark.slow  # ~17 s; runs by default and in CI (deselect locally with -m 'not slow')
def test_window_survives_thousands_of_drawn_edits(qtbot):
    """PySide6 6.12.0 on Python 3.11 aborts a window of pyqtgraph views within a few hundred edits
    (none_dealloc); this drives the real window through 2,000 drawn edits so the version pin cannot go silently."""
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    model = w.editors["W_Q"].model
    app = QApplication.instance()
    for k in range(2000):
        model.setData(model.index(k % model.rowCount(), k % model.columnCount()), f"{(k % 13) / 7 - 0.9:.3f}")
        app.processEvents()  # recompute and paint every view
    settle(qtbot, w)
    np.testing.assert_allclose(w.views["weights"].image_array(), independent_weights(w.session, 0).astype(np.float32))
    assert w.undo_stack.count() == 2000


def test_circuit_views_match_the_core_and_follow_edits(qtbot, window):
    from qkvgui.core import ov_circuit, qk_circuit

    s = window.session
    window.right_tabs.setCurrentIndex(1)
    s.set_head(1)
    qk = window.views["qk_circuit"].data()
    np.testing.assert_allclose(qk, qk_circuit(s.matrix("W_Q"), s.matrix("W_K"))[1])
    np.testing.assert_allclose(window.views["ov_circuit"].data(), ov_circuit(s.matrix("W_V"), s.matrix("W_O"))[1])
    # the token-level QK circuit equals the scores (no biases here)
    np.testing.assert_allclose(window.views["token_qk"].data(), window.result.scores[1], atol=1e-12)
    assert "rank W_QK = 3" in window.circuits.rank_label.text()
    type_into(qtbot, window, "W_K", 2, 0, "3.5")
    settle(qtbot, window)
    np.testing.assert_allclose(window.views["qk_circuit"].data(), qk_circuit(s.matrix("W_Q"), s.matrix("W_K"))[1])
    assert not np.allclose(window.views["qk_circuit"].data(), qk)


def test_a_preset_says_what_it_demonstrates(qtbot):
    from qkvgui import Session

    w = MainWindow(Session.from_preset("previous-token"))
    qtbot.addWidget(w)
    assert "previous-token head" in w.inspector.toPlainText().lower()
    w.open_preset("translation")
    settle(qtbot, w)
    assert w.session.cross and "Cross-attention" in w.inspector.toPlainText()
    assert w.views["weights"].image_array().shape == (4, 6)


def test_hovering_q_explains_its_formula_with_shapes(qtbot, window):
    window.views["q"].cell_hovered.emit(1, 2)
    text = window.inspector.toPlainText()
    assert "Q = X·W_Q: (6×12)·(12×3) = 6×3" in text
    assert "row 2 ‘cat’" in text


def test_import_and_export_a_matrix(qtbot, window, tmp_path):
    from qkvgui.io.matrix_file import write_matrix

    s = window.session
    s.set_head(1)
    assert window.export_matrix("W_V", tmp_path / "wv.csv")
    new = np.arange(36.0).reshape(12, 3) / 7
    write_matrix(tmp_path / "new.npy", new)
    assert window.import_matrix("W_V", tmp_path / "new.npy")
    np.testing.assert_array_equal(s.matrix("W_V")[1], new)
    window.undo_stack.undo()
    assert window.import_matrix("W_V", tmp_path / "wv.csv") is True  # the exported head reads back the same
    write_matrix(tmp_path / "bad.npy", np.zeros((4, 4)))
    before = s.matrix("W_V").copy()
    assert not window.import_matrix("W_V", tmp_path / "bad.npy")
    assert "4 × 4" in window.last_message and "12 × 3" in window.last_message
    np.testing.assert_array_equal(s.matrix("W_V"), before)


def test_save_quit_reopen_finds_everything_as_it_was(qtbot, tmp_path):
    w = MainWindow()
    qtbot.addWidget(w)
    w.cross_box.setChecked(True)
    w.heads_spin.setValue(3)
    w.head_spin.setValue(2)
    w.edit_block("W_K", 1, 2, np.array([[0.125]]))
    settle(qtbot, w)
    assert w.isWindowModified() and "untitled" in w.windowTitle()
    path = tmp_path / "lesson.qkv"
    w.right_tabs.setCurrentIndex(1)  # the circuits view is selected when saving
    assert w.save_to(path)
    assert not w.isWindowModified() and "lesson.qkv" in w.windowTitle()
    saved = w.session.state()
    weights = w.views["weights"].image_array().copy()
    w.close()

    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert w2.open_path(path)
    settle(qtbot, w2)
    s = w2.session
    assert s.cross and s.n_heads == 3 and s.head == 1 and s.matrix("W_K")[1, 1, 2] == 0.125
    for name, attr in {"X": "x", "X_kv": "x_kv"}.items():
        assert np.array_equal(s.matrix(name), getattr(saved, attr))
    for name in ("W_Q", "W_K", "W_V", "W_O"):
        assert np.array_equal(s.matrix(name), getattr(saved.layers[0], name.lower()))
    np.testing.assert_array_equal(w2.views["weights"].image_array(), weights)
    assert w2.head_spin.value() == 2 and w2.cross_box.isChecked()
    assert w2.right_tabs.currentWidget() is w2.circuits
    assert w2.undo_stack.count() == 0 and not w2.isWindowModified()


def test_a_bad_file_is_refused_and_the_session_kept(qtbot, window, tmp_path):
    window.edit_block("X", 0, 0, np.array([[7.0]]))
    bad = tmp_path / "broken.qkv"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    assert not window.open_path(bad, ask=False)
    assert window.session.matrix("X")[0, 0] == 7.0
    assert "broken.qkv" in window.last_message or "zip" in window.last_message.lower()
    assert window.undo_stack.count() == 1


def test_unsaved_changes_are_asked_about_and_autosaved(qtbot, window, tmp_path):
    from qkvgui import Session
    from qkvgui.ui.main_window import recovery_folder

    window.edit_block("X", 0, 0, np.array([[3.0]]))
    path = window.autosave()
    assert path.parent == recovery_folder() and Session.load(path).matrix("X")[0, 0] == 3.0
    window.ask_unsaved = lambda: "cancel"
    window.new_session()
    assert window.session.matrix("X")[0, 0] == 3.0  # cancel keeps the work
    window.ask_unsaved = lambda: "discard"
    window.new_session()
    assert window.session.matrix("X")[0, 0] == 1.0 and window.undo_stack.count() == 0


def test_layers_edits_in_layer_one_flow_through_layer_two(qtbot, window):
    s = window.session
    window.findChild(QPushButton, "control.add_layer").click()
    settle(qtbot, window)
    assert s.n_layers == 2 and window.layer_spin.value() == 2 and "layer 2" in window.editors["W_Q"].title.text()
    assert len(window.pipeline.residual_views) == 2
    qtbot.waitUntil(lambda: window.pipeline.residual_views[0].isVisible())
    second = window.results[1].residual.copy()
    np.testing.assert_array_equal(window.views["residual"].data(), second)
    window.layer_spin.setValue(1)
    type_into(qtbot, window, "W_V", 0, 0, "4")
    settle(qtbot, window)
    assert not np.array_equal(window.results[1].residual, second)  # live through layer 2
    ref = window.session.compute_layers()
    np.testing.assert_array_equal(window.pipeline.residual_views[1].data(), ref[1].residual)
    window.undo_stack.undo()
    window.undo_stack.undo()
    settle(qtbot, window)
    assert s.n_layers == 1 and not window.pipeline.residuals_box.isVisible()


def test_switching_a_head_off_removes_its_output(qtbot, window):
    window.head_spin.setValue(2)
    window.ablate_box.setChecked(True)
    settle(qtbot, window)
    r = window.result
    assert not r.head_outputs[1].any() and window.session.ablated()[1]
    np.testing.assert_allclose(window.views["output"].data(), r.head_outputs[0] @ window.session.matrix("W_O")[:3])
    window.undo_stack.undo()
    settle(qtbot, window)
    assert window.result.head_outputs[1].any() and not window.ablate_box.isChecked()


def test_the_induction_preset_and_its_composition_view(qtbot):
    from qkvgui import Session
    from qkvgui.core import composition_scores

    w = MainWindow(Session.from_preset("induction"))
    qtbot.addWidget(w)
    w.show()
    w.right_tabs.setCurrentIndex(1)
    w.layer_spin.setValue(2)
    settle(qtbot, w)
    s = w.session
    c = composition_scores(
        *(s.matrix(n, layer=1) for n in ("W_Q", "W_K", "W_V", "W_O")),
        s.matrix("W_V", layer=0),
        s.matrix("W_O", layer=0),
    )
    np.testing.assert_allclose(w.views["composition"].data(), np.concatenate([c["Q"], c["K"], c["V"]]))
    assert w.views["composition"].row_labels()[1] == "K: L2h1"
    # the weights view of layer 2 shows the induction pattern
    weights = w.views["weights"].image_array()
    assert weights[6, 2] > 0.8 and weights[10, 6] > 0.8


def test_token_qk_circuit_of_a_later_layer_reads_the_residual_stream(qtbot):
    from qkvgui import Session

    w = MainWindow(Session.from_preset("induction"))
    qtbot.addWidget(w)
    w.right_tabs.setCurrentIndex(1)
    w.layer_spin.setValue(2)
    settle(qtbot, w)
    np.testing.assert_allclose(w.views["token_qk"].data(), w.results[1].scores[0], atol=1e-9)


def test_export_figures_from_the_window(qtbot, window, tmp_path):
    """Figures are drawn from the session at the size last chosen in the export dialog, not copied from the views:
    a circuit view never shown exports too, and nothing of the screen (hover marks) gets in."""
    from PySide6.QtGui import QImage

    from qkvgui.ui.export_dialog import saved_choice

    _, options = saved_choice()
    window.views["weights"].highlight(rows=(1,), cols=(2,))  # a hovered row on screen
    assert window.export_figure("weights", tmp_path / "w.png", scale=2)
    image = QImage(str(tmp_path / "w.png"))
    width, height = options.pixel_size()
    assert (image.width(), image.height()) == (2 * width, 2 * height)
    assert window.export_figure("ov_circuit", tmp_path / "ov.png", scale=1)  # the circuits tab was never shown
    a = np.frombuffer(
        QImage(str(tmp_path / "ov.png")).convertToFormat(QImage.Format.Format_RGB888).constBits(), np.uint8
    )
    assert a.std() > 20
    assert window.export_figure("pipeline", tmp_path / "all.pdf")
    assert (tmp_path / "all.pdf").read_bytes()[:4] == b"%PDF"
    assert not window.export_figure("weights", tmp_path / "w.gif")
    assert "png" in window.last_message and "svg" in window.last_message


def test_figure_menus_open_the_export_dialog_and_the_step_through(qtbot, window):
    from PySide6.QtGui import QAction

    from qkvgui.ui.export_dialog import ExportFigureDialog
    from qkvgui.ui.step_through import StepThroughDialog

    actions = {a.objectName(): a for a in window.findChildren(QAction)}
    for name in ("action.export_figure", "action.copy_figure", "action.export_animation", "action.step_through"):
        assert name in actions, name
    actions["action.export_figure"].trigger()
    dialog = window.figures.export_dialog
    assert isinstance(dialog, ExportFigureDialog) and dialog.isVisible()
    qtbot.waitUntil(lambda: not dialog.preview.busy() and not dialog.preview.image().isNull(), timeout=10000)
    actions["action.step_through"].trigger()
    steps = window.figures.step_dialog
    assert isinstance(steps, StepThroughDialog) and steps.isVisible()
    actions["action.copy_figure"].trigger()
    assert "copied the" in window.last_message
    window.figures.close_dialogs()
    assert not dialog.isVisible() and not steps.isVisible()


def test_import_a_model_layer_edit_it_and_reset(qtbot, window, tmp_path):
    pytest.importorskip("safetensors")
    from tiny_gpt2 import write_tiny_gpt2

    from qkvgui.ui.import_dialog import ImportLayerDialog

    folder = write_tiny_gpt2(tmp_path / "tiny-gpt2")
    dialog = ImportLayerDialog(window)
    qtbot.addWidget(dialog)
    dialog.folder_edit.setText(str(folder))
    dialog._folder_changed()
    assert dialog.layer_spin.maximum() == 3 and "GPT-2, 3 layers" in dialog.info.text()
    dialog.text_edit.setText("the cat sat on the mat")
    assert dialog.all_button.isChecked() and not dialog.layer_spin.isEnabled()  # the whole model by default
    dialog.one_button.setChecked(True)
    dialog.layer_spin.setValue(2)
    dialog.imported.connect(window.show_imported)
    dialog.start()
    assert dialog.busy() and dialog.progress.isVisibleTo(dialog)
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=10000)
    settle(qtbot, window)
    s = window.session
    assert s.tokens == ["the", "cat", "sat", "on", "the", "mat"] and s.n_heads == 4 and s.causal
    model = s.matrix("W_Q").copy()
    imported = window.result.weights.copy()
    window.edit_block("W_Q", 0, 0, np.array([[9.0]]))
    window.ablate_box.setChecked(True)
    settle(qtbot, window)
    assert not np.array_equal(window.result.weights, imported)
    assert window.reset_to_model()
    settle(qtbot, window)
    np.testing.assert_array_equal(s.matrix("W_Q"), model)
    np.testing.assert_array_equal(window.result.weights, imported)
    window.undo_stack.undo()  # the reset is one undo step
    assert s.matrix("W_Q")[0, 0, 0] == 9.0


def test_import_refusals_are_shown_in_the_dialog(qtbot, window, tmp_path):
    from qkvgui.ui.import_dialog import ImportLayerDialog

    dialog = ImportLayerDialog(window)
    qtbot.addWidget(dialog)
    dialog.folder_edit.setText(str(tmp_path))
    dialog.start()
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=10000)
    assert "needs config.json" in dialog.info.text()
    assert window.session.title == "the cat sat on the mat"  # the session is untouched
    assert not window.reset_to_model() and "not imported" in window.last_message
