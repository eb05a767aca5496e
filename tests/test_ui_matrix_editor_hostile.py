"""Hostile typing and pasting (issue 11, item 7): linear number parsing, one parse per typed cell, and a pasted
block's shape checked before any number in it is parsed."""

import numpy as np
import pytest
from test_ui_matrix_editor import Recorder, select, type_into

import qkvgui.ui.matrix_editor as matrix_editor
from qkvgui.ui.matrix_editor import MAX_NUMBER_CHARS, MatrixEditor, block_shape, parse_block, parse_number


@pytest.fixture
def editor(qtbot):
    widget = MatrixEditor("W_Q (head 1)")
    qtbot.addWidget(widget)
    widget.set_matrix(np.zeros((12, 3)))
    widget.resize(400, 300)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


@pytest.fixture
def parses(monkeypatch):
    """Counts calls of parse_number made by the editor."""
    calls = []
    real = matrix_editor.parse_number

    def counting(text):
        calls.append(text)
        return real(text)

    monkeypatch.setattr(matrix_editor, "parse_number", counting)
    return calls


def test_a_long_run_of_digits_is_refused_at_once():
    """parse_number("1" * 32766 + "x") took 11 s: the number pattern backtracked quadratically."""
    with pytest.raises(ValueError, match="too long to be a number"):
        parse_number("1" * 32766 + "x")
    # The pattern itself is linear: a quadratic one would take minutes on 200,000 digits.
    assert matrix_editor._NUMBER.fullmatch("1" * 200_000 + "x") is None
    assert matrix_editor._NUMBER.fullmatch("1" * 200_000 + ".5e-3") is not None
    assert parse_number("1" * 300) == float("1" * 300)
    with pytest.raises(ValueError, match="too large"):
        parse_number("1" * 400)
    assert parse_number(" " * 10 + "0.5") == 0.5
    with pytest.raises(ValueError, match="too long"):
        parse_number("0" * (MAX_NUMBER_CHARS + 1))


def test_a_typed_cell_is_parsed_once(qtbot, editor, parses):
    seen = Recorder(editor)
    type_into(qtbot, editor, 1, 1, "0.5")
    assert parses == ["0.5"] and seen.edits[0][2][0, 0] == 0.5
    parses.clear()
    type_into(qtbot, editor, 2, 1, "abc")
    assert parses == ["abc"] and "'abc' is not a number" in seen.messages[-1]
    assert editor.table.currentIndex().row() == 2  # a refused entry keeps the cursor on its cell


def test_a_huge_paste_into_a_small_editor_is_refused_before_parsing(qtbot, editor, parses):
    """Pasting a 10,000 × 10,000 TSV into a 12 × 3 editor parsed every number first (70 s, 8.8 GB)."""
    seen = Recorder(editor)
    select(qtbot, editor, 0, 0, 0, 0)
    row = "\t".join(["1.5"] * 2000) + "\n"
    assert not editor.paste_text(row * 2000)
    assert parses == [] and seen.edits == []
    assert seen.messages == [  # 8 MB of text: only its first 13 lines were looked at
        "The pasted block is more than 12 × 2000 but only 12 × 3 cells fit below and right of (row 0, d0) in W_Q "
        "(head 1)"
    ]
    assert not editor.paste_text("1\t2\n" * 13)  # too many rows, too few columns
    assert parses == [] and "13 × 2 but only 12 × 3" in seen.messages[-1]


def test_a_pasted_cell_of_a_million_characters_is_refused_without_parsing_it(qtbot, editor, parses):
    seen = Recorder(editor)
    select(qtbot, editor, 0, 0, 0, 0)
    assert not editor.paste_text("1\t" + "9" * 1_000_000 + "\t3")
    assert parses == [] and seen.edits == []
    assert f"longer than {MAX_NUMBER_CHARS} characters" in seen.messages[-1]
    assert len(seen.messages[-1]) < 300


def test_block_shape_reads_only_the_line_count_and_the_first_line():
    assert block_shape("1\t2\t3\n4\t5\t6\n\n") == (2, 3)
    assert block_shape("1,2\r\n3,4\r\n") == (2, 2)
    assert block_shape("1 2\r3 4") == (2, 2)
    assert block_shape(" \n\t\n") == (0, 0)
    np.testing.assert_array_equal(parse_block("1\t2\r\n3\t4\r\n", fits=(2, 2)), [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="cancelled"):
        parse_block("1\n" * 600, progress=lambda done, total: False)
