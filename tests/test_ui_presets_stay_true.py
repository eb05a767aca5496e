"""A learner's preset stays true through the window: a sentence typed into the token field rebuilds the preset's
features for it, Ctrl+Z brings the old sentence and features back in one step, and an edit that breaks the
preset's claim is said in the description."""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from qkvgui.session import Session

DOG = "a dog saw the cat"


@pytest.fixture
def preset_window(qtbot):
    from qkvgui.ui.main_window import MainWindow

    w = MainWindow(Session.from_preset("previous-token"))
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    settle(qtbot, w)
    return w


def settle(qtbot, window):
    qtbot.waitUntil(lambda: not window.scheduler._turn.isActive() and window.scheduler._running is None, timeout=5000)
    qtbot.waitUntil(lambda: not window.pipeline.drawing(), timeout=5000)


def type_tokens(qtbot, edit, text):
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def column_names(window) -> list[str]:
    model = window.editors["X"].model
    return [model.headerData(j, Qt.Orientation.Horizontal) for j in range(model.columnCount())]


def test_typing_a_sentence_keeps_the_previous_token_head_in_the_view(qtbot, preset_window):
    w = preset_window
    old_columns = column_names(w)
    type_tokens(qtbot, w.tokens_edit, DOG)
    settle(qtbot, w)
    assert w.session.tokens == DOG.split()
    shown = w.views["weights"].image_array()  # what the weights view draws
    assert shown.shape == (5, 5)
    for i in range(1, 5):
        assert shown[i, i - 1] >= 0.9, (i, shown[i])
    names = column_names(w)  # the X editor's columns are named for the new tokens
    assert any("tok:dog" in str(n) for n in names) and not any("tok:mat" in str(n) for n in names)
    assert w.editors["X"].model.rowCount() == 5
    assert "may no longer hold" not in w.inspector.toPlainText()

    qtbot.keyClick(w.views["weights"], Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one step back
    settle(qtbot, w)
    assert w.session.tokens == "the cat sat on the mat".split()
    assert column_names(w) == old_columns
    assert w.views["weights"].image_array().shape == (6, 6)
    assert w.session.preset_changes() == []


def test_an_edit_that_breaks_the_claim_is_said_in_the_description(qtbot, preset_window):
    w = preset_window
    assert "previous-token head" in w.inspector.toPlainText()
    w.edit_block("W_K", 6, 1, np.array([[0.0]]))  # position 2 is no longer found where it is
    settle(qtbot, w)
    text = w.inspector.toPlainText()
    assert "previous-token head" in text and "W_K changed" in text and "may no longer hold" in text
    assert "may no longer hold" in w.last_message
    label = w.inspection.claim_label  # and it stays said in the status bar, whatever the inspector shows next
    assert label.isVisible() and "previous-token" in label.text() and "W_K changed" in label.toolTip()
    w.views["scores"].cell_hovered.emit(2, 1)
    assert label.isVisible()
    w.undo_stack.undo()
    settle(qtbot, w)
    assert "may no longer hold" not in w.inspector.toPlainText()
    assert "preset again" in w.last_message
    assert not label.isVisible()


def test_a_single_head_is_not_called_multi_query(preset_window):
    combo = preset_window.findChild(type(preset_window.scale_combo), "control.kv_heads")
    assert combo.currentText() == "1 (one per head)"
