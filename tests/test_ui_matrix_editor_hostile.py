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


@pytest.mark.parametrize("sep", ["\t", ",", " , ", "  "])
def test_a_large_paste_is_read_piece_by_piece_bit_for_bit(sep):
    """A big paste is parsed in pieces (progress after each, Cancel between them), every number exactly as
    Python's float reads it: edge forms, subnormals, the largest double, 30-digit integers."""
    rng = np.random.default_rng(3)
    forms = ["0.5", "-1e-3", "+3", "1.", ".5", "5e-324", "1.7976931348623157e308", "-0.0", "1" * 30, "1E+05"]
    rows = [
        [
            str(rng.choice(forms))
            if rng.random() < 0.3
            else repr(float(rng.standard_normal() * 10.0 ** rng.integers(-30, 30)))
            for _ in range(40)
        ]
        for _ in range(300)
    ]
    text = "\n".join(sep.join(row) for row in rows) + "\n"
    seen = []
    block = parse_block(text, fits=(300, 40), progress=lambda done, total: seen.append((done, total)))
    expected = np.array([[float(v) for v in row] for row in rows])
    assert block.shape == (300, 40)
    assert np.array_equal(block.view(np.int64), expected.view(np.int64))  # bit for bit, -0.0 included
    assert len(seen) > 3 and seen[-1] == (300, 300) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_bad_entry_deep_in_a_large_paste_is_named_and_cancel_stops_between_pieces():
    row = "\t".join(["0.25"] * 50)
    lines = [row] * 2000
    lines[1500] = row[:-4] + "−0.5"  # the minus sign a formatted cell shows reads as a number
    lines[1700] = "\t".join(["0.25"] * 20 + ["0.2x5"] + ["0.25"] * 29)
    with pytest.raises(ValueError, match=r"Row 1701, column 21 of the pasted text, '0\.2x5', is not a number"):
        parse_block("\n".join(lines))
    lines[1700] = row
    assert parse_block("\n".join(lines))[1500, 49] == -0.5
    calls = []
    with pytest.raises(ValueError, match="cancelled"):
        parse_block("\n".join(lines), progress=lambda done, total: calls.append(done) or len(calls) < 2)
    assert len(calls) == 2 and calls[-1] < 2000  # stopped after the second piece, not at the end
