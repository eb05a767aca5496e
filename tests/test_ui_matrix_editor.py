"""The matrix editor, used as a learner would: typing, pasting, copying and filling cells, and reading the table."""

import numpy as np
import pytest
from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QAbstractItemView, QLineEdit

from qkvgui.core.errors import ShapeError
from qkvgui.ui.matrix_editor import MatrixEditor, MatrixTableModel, parse_number

W = np.arange(20, dtype=np.float64).reshape(5, 4) / 4 - 2  # [5, 4]: -2.0 ... 2.75, with 0.0 at (2, 0)


class Recorder:
    """Collects what an editor emits, as the main window would receive it."""

    def __init__(self, editor: MatrixEditor) -> None:
        self.edits: list[tuple[int, int, np.ndarray]] = []
        self.messages: list[str] = []
        editor.edit_requested.connect(lambda r, c, block: self.edits.append((r, c, block)))
        editor.message.connect(self.messages.append)


@pytest.fixture
def editor(qtbot):
    widget = MatrixEditor("W_Q (head 1)")
    qtbot.addWidget(widget)
    widget.set_matrix(W)
    widget.resize(400, 300)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def select(qtbot, editor: MatrixEditor, top: int, left: int, bottom: int, right: int) -> None:
    """Select the cells (top, left)..(bottom, right), inclusive, with the mouse: a click, then a shift-click."""
    table = editor.table
    for index, modifier in (
        (editor.model.index(top, left), Qt.KeyboardModifier.NoModifier),
        (editor.model.index(bottom, right), Qt.KeyboardModifier.ShiftModifier),
    ):
        qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, modifier, table.visualRect(index).center())


def type_into(qtbot, editor: MatrixEditor, row: int, col: int, text: str, key=Qt.Key.Key_Return) -> None:
    """Select a cell, type ``text`` (the first key opens the cell editor, as in a spreadsheet), then press ``key``."""
    table = editor.table
    index = editor.model.index(row, col)
    select(qtbot, editor, row, col, row, col)
    qtbot.keyClick(table, text[0])
    line_edit = table.indexWidget(index)
    assert isinstance(line_edit, QLineEdit), "typing on a selected cell should open its editor"
    qtbot.keyClicks(line_edit, text[1:])
    assert line_edit.text() == text
    qtbot.keyClick(line_edit, key)
    qtbot.waitUntil(lambda: table.state() == QAbstractItemView.State.NoState)


# -- typing --------------------------------------------------------------------------------------------------------


def test_typing_a_number_requests_a_one_cell_edit_and_moves_down(qtbot, editor):
    seen = Recorder(editor)
    type_into(qtbot, editor, 3, 1, "0.5")
    assert len(seen.edits) == 1
    row, col, block = seen.edits[0]
    assert (row, col) == (3, 1)
    assert block.dtype == np.float64 and block.shape == (1, 1) and block[0, 0] == 0.5
    assert seen.messages == []
    current = editor.table.currentIndex()
    assert (current.row(), current.column()) == (4, 1), "Enter moves down one row, like a spreadsheet"


def test_the_model_only_requests_and_the_owner_pushes_the_new_matrix_back(qtbot, editor):
    original = W.copy()
    editor.set_matrix(original)

    def apply(row, col, block):  # what the session does, in miniature
        new = editor.model.matrix().copy()
        new[row : row + block.shape[0], col : col + block.shape[1]] = block
        editor.set_matrix(new)

    editor.edit_requested.connect(apply)
    type_into(qtbot, editor, 0, 2, "-1e-3")
    assert np.array_equal(original, W), "the editor never writes into the array it was given"
    assert editor.model.data(editor.model.index(0, 2)) == "\u22120.001"
    assert editor.model.data(editor.model.index(0, 2), Qt.ItemDataRole.EditRole) == "-0.001"
    with pytest.raises(ValueError):
        editor.model.matrix()[0, 0] = 1.0  # the model's view of the array is read-only


def test_tab_moves_right_without_opening_the_next_cell(qtbot, editor):
    seen = Recorder(editor)
    type_into(qtbot, editor, 1, 1, "2", key=Qt.Key.Key_Tab)
    assert [(r, c, b.tolist()) for r, c, b in seen.edits] == [(1, 1, [[2.0]])]
    current = editor.table.currentIndex()
    assert (current.row(), current.column()) == (1, 2)
    assert editor.table.state() == QAbstractItemView.State.NoState


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "-inf", "1e999", "1,5", ""])
def test_text_that_is_not_a_finite_number_is_refused_with_a_message(qtbot, editor, text):
    seen = Recorder(editor)
    index = editor.model.index(3, 1)
    editor.table.setCurrentIndex(index)
    editor.table.edit(index)
    line_edit = editor.table.indexWidget(index)
    line_edit.clear()
    qtbot.keyClicks(line_edit, text)
    with qtbot.waitSignal(editor.message) as blocker:
        qtbot.keyClick(line_edit, Qt.Key.Key_Return)
    assert seen.edits == []
    message = blocker.args[0]
    assert f"'{text}'" in message
    assert "W_Q (head 1) (row 3, d1) keeps 1.25" in message, message


def test_typing_abc_on_a_cell_says_it_is_not_a_number(qtbot, editor):
    seen = Recorder(editor)
    type_into(qtbot, editor, 0, 0, "abc")
    assert seen.edits == []
    assert seen.messages == ["'abc' is not a number: W_Q (head 1) (row 0, d0) keeps \u22122"]
    current = editor.table.currentIndex()
    assert (current.row(), current.column()) == (0, 0), "a refused entry keeps the cursor there, to type again"


def test_numbers_are_read_in_the_c_locale():
    assert parse_number("0.5") == 0.5
    assert parse_number("-1e-3") == -0.001
    assert parse_number(" 2 ") == 2.0
    assert parse_number("+.5") == 0.5
    assert parse_number("\u22120.25") == -0.25  # the minus sign the cells display
    for text in ("1,5", "1_000", "0x10", "1.2.3", "infinity", "٣"):
        with pytest.raises(ValueError):
            parse_number(text)


# -- deleting, filling -----------------------------------------------------------------------------------------------


def test_delete_requests_zeros_for_the_selection(qtbot, editor):
    seen = Recorder(editor)
    select(qtbot, editor, 1, 1, 2, 3)
    qtbot.keyClick(editor.table, Qt.Key.Key_Delete)
    assert [(r, c, b.tolist()) for r, c, b in seen.edits] == [(1, 1, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])]


def test_identity_fill_puts_ones_where_the_matrix_row_equals_the_column(qtbot, editor):
    seen = Recorder(editor)
    select(qtbot, editor, 1, 0, 2, 2)
    editor.fill_selection("identity")
    assert [(r, c, b.tolist()) for r, c, b in seen.edits] == [(1, 0, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])]


def test_each_selected_rectangle_is_filled_by_one_edit(qtbot, editor):
    seen = Recorder(editor)
    selection = QItemSelection(editor.model.index(0, 0), editor.model.index(0, 1))
    selection.select(editor.model.index(3, 3), editor.model.index(4, 3))
    editor.table.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
    editor.fill_selection("ones")
    assert sorted((r, c, b.tolist()) for r, c, b in seen.edits) == [(0, 0, [[1.0, 1.0]]), (3, 3, [[1.0], [1.0]])]


def test_random_fill_is_seeded_and_reproducible(qtbot, editor):
    other = MatrixEditor("W_K (head 1)")
    qtbot.addWidget(other)
    other.set_matrix(W)
    first, second = Recorder(editor), Recorder(other)
    for widget in (editor, other):
        widget.table.selectAll()
        widget.fill_selection("random")
    (_, _, a), (_, _, b) = first.edits[0], second.edits[0]
    assert a.shape == (5, 4)
    assert np.array_equal(a, b), "the same seed gives the same numbers"
    assert np.array_equal(a, np.random.default_rng(0).standard_normal((5, 4)) * 0.5)
    assert editor.seed == 1
    editor.fill_selection("random")
    assert not np.array_equal(first.edits[1][2], a), "each use draws new numbers"


def test_the_context_menu_offers_the_fills_copy_and_paste(qtbot, editor):
    seen = Recorder(editor)
    texts = [action.text() for action in editor.menu.actions() if not action.isSeparator()]
    assert [t.split(" (")[0] for t in texts] == [
        "Fill with zeros",
        "Fill with ones",
        "Fill with identity",
        "Fill with random values",
        "Copy",
        "Paste",
    ]
    select(qtbot, editor, 4, 2, 4, 3)
    next(a for a in editor.menu.actions() if a.text() == "Fill with ones").trigger()
    assert [(r, c, b.tolist()) for r, c, b in seen.edits] == [(4, 2, [[1.0, 1.0]])]


# -- paste and copy --------------------------------------------------------------------------------------------------


def test_pasting_a_tab_separated_block_requests_it_at_the_selection(qtbot, editor):
    seen = Recorder(editor)
    select(qtbot, editor, 1, 1, 1, 1)
    QGuiApplication.clipboard().setText("0.1\t-2e-3\t7\n3\t4.25\t1e-300\n")
    qtbot.keyClick(editor.table, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert seen.messages == []
    ((row, col, block),) = seen.edits
    assert (row, col) == (1, 1)
    assert block.tolist() == [[0.1, -0.002, 7.0], [3.0, 4.25, 1e-300]]


def test_commas_or_spaces_separate_entries_when_there_is_no_tab(qtbot, editor):
    seen = Recorder(editor)
    select(qtbot, editor, 0, 0, 0, 0)
    assert editor.paste_text("1, 2,3\n4   5 6")
    assert seen.edits[0][2].tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_a_block_that_does_not_fit_is_refused_with_its_size(qtbot, editor):
    seen = Recorder(editor)
    select(qtbot, editor, 3, 0, 3, 0)
    assert not editor.paste_text("1\t2\t3\t4\n" * 3)
    assert seen.edits == []
    assert seen.messages == [
        "The pasted block is 3 × 4 but only 2 × 4 cells fit below and right of (row 3, d0) in W_Q (head 1)"
    ]


def test_a_pasted_entry_that_is_not_a_number_is_named(qtbot, editor):
    seen = Recorder(editor)
    select(qtbot, editor, 0, 0, 0, 0)
    assert not editor.paste_text("1\t2\t3\n4\t5\tx")
    assert seen.edits == []
    assert seen.messages[0].startswith("Row 2, column 3 of the pasted text, 'x', is not a number")
    assert not editor.paste_text("1\t2\n3")
    assert "Row 2 of the pasted text has 1 entries but row 1 has 2" in seen.messages[1]
    assert not editor.paste_text("1\tnan")
    assert "'nan', is not a finite number" in seen.messages[2]
    assert not editor.paste_text("\n")
    assert seen.messages[3] == "There are no numbers to paste; nothing was pasted into W_Q (head 1)"
    assert seen.edits == []


def test_copy_then_paste_gives_back_the_same_numbers_bit_for_bit(qtbot, editor):
    values = np.array([[0.1 + 0.2, 1 / 3, -1e-300], [np.pi, -2.5e10, 5e-324]])  # [2, 3]: digits repr must keep
    editor.set_matrix(np.vstack([values, np.zeros((1, 3))]))
    select(qtbot, editor, 0, 0, 1, 2)
    qtbot.keyClick(editor.table, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    text = QGuiApplication.clipboard().text()
    assert text.split("\n")[0].split("\t")[0] == "0.30000000000000004"
    assert len(text.split("\n")) == 2 and all(len(line.split("\t")) == 3 for line in text.split("\n"))

    target = MatrixEditor("X")
    qtbot.addWidget(target)
    target.set_matrix(np.zeros((3, 3)))
    target.show()
    seen = Recorder(target)
    select(qtbot, target, 1, 0, 1, 0)
    qtbot.keyClick(target.table, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    ((row, col, block),) = seen.edits
    assert (row, col) == (1, 0)
    assert block.tobytes() == values.tobytes()


# -- what the table shows --------------------------------------------------------------------------------------------


def test_cells_show_compact_numbers_shaded_by_sign(editor):
    model = editor.model
    editor.set_matrix(np.array([[1.23456789, -4.0], [0.0, 4.0]]))
    assert model.data(model.index(0, 0)) == "1.235"
    assert model.data(model.index(0, 0), Qt.ItemDataRole.EditRole) == "1.23456789"
    assert "1.23456789" in model.data(model.index(0, 0), Qt.ItemDataRole.ToolTipRole)
    assert model.data(model.index(0, 1)) == "\u22124"
    negative = model.data(model.index(0, 1), Qt.ItemDataRole.BackgroundRole)
    zero = model.data(model.index(1, 0), Qt.ItemDataRole.BackgroundRole)
    positive = model.data(model.index(1, 1), Qt.ItemDataRole.BackgroundRole)
    assert zero.getRgb()[:3] == (255, 255, 255)
    assert negative.blue() > negative.red() and positive.red() > positive.blue()
    assert min(negative.lightness(), positive.lightness()) > 160, "black text must stay readable"
    assert model.headerData(1, Qt.Orientation.Horizontal) == "d1"
    assert model.headerData(1, Qt.Orientation.Vertical) == "1"


def test_a_new_shape_updates_the_table_and_the_title(editor):
    assert editor.title.text() == "W_Q (head 1)  5 × 4"
    editor.set_matrix(np.ones((3, 7)), ["the", "cat", "sat"], [f"e{j}" for j in range(7)])
    assert (editor.model.rowCount(), editor.model.columnCount()) == (3, 7)
    assert editor.title.text() == "W_Q (head 1)  3 × 7"
    assert editor.model.headerData(2, Qt.Orientation.Vertical) == "sat"
    editor.set_title("W_Q (head 2)")
    assert editor.title.text() == "W_Q (head 2)  3 × 7"
    with pytest.raises(ShapeError):
        editor.set_matrix(np.ones(3))
    with pytest.raises(ShapeError):
        editor.set_matrix(np.ones((2, 2)), ["only one label"])


def test_the_model_passes_the_qt_model_tester(qtmodeltester):
    model = MatrixTableModel("W_O")
    qtmodeltester.check(model)
    model.set_matrix(W)
    qtmodeltester.check(model)
    model.set_matrix(W * 2)
    model.set_matrix(np.zeros((2, 9)))
    qtmodeltester.check(model)


def test_a_large_matrix_is_shown(qtbot, editor):
    big = np.random.default_rng(1).standard_normal((768, 2304))  # GPT-2's W_QKV
    editor.set_matrix(big)
    qtbot.wait(1)  # let the table lay out and paint
    far = editor.model.index(767, 2303)
    assert editor.model.data(far, Qt.ItemDataRole.EditRole) == repr(big[767, 2303].item())
    assert editor.title.text() == "W_Q (head 1)  768 × 2304"
