"""MatrixEditor: a spreadsheet-like table over one 2-D matrix that requests edits and never writes them itself.

The model shows the array it is given and turns every keystroke, paste or fill into one ``edit_requested(row, col,
block)``; the owner (an undo command on the session) applies it and pushes the new array back with ``set_matrix``.
Input the editor refuses is explained on ``message`` (for the status bar), never in a message box.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import cast

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelectionRange,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QAction, QColor, QGuiApplication, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemDelegate,
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from qkvgui.core.errors import QkvError, ShapeError
from qkvgui.core.format import MINUS, format_number
from qkvgui.ui.text import short_label

#: A number in the C locale: an optional sign, ASCII digits with at most one ".", an optional exponent. No "," or "_".
#: Written so that no two parts can match the same digits: matching is linear in the length of the text.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: pasted text longer than this is parsed off the GUI thread when the editor has a ``background`` runner
BACKGROUND_PASTE_CHARS = 64 * 1024
#: the longest text read as one number (a float64 needs at most 24 characters; exact decimals run to ~770)
MAX_NUMBER_CHARS = 1024
_NON_FINITE_WORDS = {"nan", "inf", "infinity"}

#: Cell shading: white at 0, fading to these light ends at ±max|value|, so black text stays readable on every cell.
_WHITE = np.array([255.0, 255.0, 255.0])
_NEGATIVE = np.array([146.0, 197.0, 222.0])  # light blue
_POSITIVE = np.array([244.0, 165.0, 130.0])  # light red
_TEXT = QColor(0, 0, 0)

COLUMN_WIDTH = 64  # px: fits "−0.1234"
MAX_COLUMN_WIDTH = 140  # px: the widest a named column grows
MAX_FITTED_COLUMNS = 256  # above this many columns every column keeps COLUMN_WIDTH
ROW_HEIGHT = 22  # px
#: The fills of the selection, with their context-menu text.
FILL_ACTIONS = {
    "zeros": "Fill with zeros",
    "ones": "Fill with ones",
    "identity": "Fill with identity (1 where row = column)",
    "random": "Fill with random values (seeded)",
}
FILLS = tuple(FILL_ACTIONS)
RANDOM_SCALE = 0.5  # random fills draw standard normals times this, small enough to keep softmax away from one-hot


def parse_number(text: str) -> float:
    """The finite float ``text`` spells in the C locale (``'0.5'``, ``'-1e-3'``, ``' 2 '``).

    Raises ValueError whose message is a predicate to put after the quoted text: ``"is not a number"``. Linear in
    the length of the text, and text longer than ``MAX_NUMBER_CHARS`` is refused without being read.
    """
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"is too long to be a number (more than {MAX_NUMBER_CHARS} characters)")
    s = text.strip().replace(MINUS, "-")
    if not _NUMBER.fullmatch(s):
        if s.lstrip("+-").lower() in _NON_FINITE_WORDS:
            raise ValueError("is not a finite number")
        raise ValueError("is not a number")
    value = float(s)
    if not math.isfinite(value):
        raise ValueError("is too large to store (the largest number is about 1.8e308)")
    return value


def _rows_end(text: str) -> int:
    """The length of ``text`` without the blank lines and spaces a spreadsheet puts after a copied block."""
    end = len(text)
    while end and text[end - 1] in "\r\n \t":
        end -= 1
    return end


def block_shape(text: str, max_rows: int | None = None) -> tuple[int, int]:
    """(rows, columns) of pasted text, from its line count and its first line only: cheap, before parsing.

    With ``max_rows``, counting stops after ``max_rows + 1`` lines: a block of more rows than fit reports
    ``max_rows + 1`` (a 400 MB paste is refused after reading a few lines, not after counting all of them)."""
    end = _rows_end(text)
    if end == 0:
        return 0, 0
    newline = "\n" if "\n" in text[: min(end, 1 << 20)] or "\r" not in text else "\r"
    first_end = text.find(newline, 0, end)
    first = text[: first_end if first_end >= 0 else end].rstrip("\r")
    cols = len(_split_line(first, "\t" in first or "\t" in text[: min(end, 1 << 20)]))
    if max_rows is None:
        return text.count(newline, 0, end) + 1, cols
    rows, at = 1 + (first_end >= 0), first_end
    while at >= 0 and rows <= max_rows:
        at = text.find(newline, at + 1, end)
        rows += at >= 0
    return rows, cols


def _split_line(line: str, tabs: bool) -> list[str]:
    return line.split("\t") if tabs else re.split(r"\s*,\s*|\s+", line.strip())


class PasteError(QkvError):
    """Pasted text that is not a block of numbers, or does not fit; the message says which and where."""


def parse_block(text: str, fits: tuple[int, int] | None = None, progress=None) -> np.ndarray:
    """The (rows, cols) float64 block in pasted text: one line per row, entries separated by tabs (as spreadsheets
    copy them) or, when there is no tab, by commas or runs of spaces. Raises ValueError naming the first bad entry.

    With ``fits`` (rows, cols), a larger block is refused before any number is parsed (its shape comes from the
    line count and the first line), and so is text too long to hold that many entries of at most
    ``MAX_NUMBER_CHARS`` characters. ``progress(done_rows, rows)`` is called after each piece of about
    ``PASTE_PIECE_CHARS`` characters; when it returns False the parse stops with ``PasteError("cancelled")``.

    The text is parsed a piece of rows at a time: a piece of plain numbers is checked by one linear pattern and
    converted by NumPy (each call a few milliseconds, so a worker parsing a 7 MB paste never keeps Python's lock
    from the window for long, and the whole takes a fraction of entry-by-entry parsing); any other piece is read
    entry by entry with ``parse_number``, which names the first bad entry. Both give the same numbers, bit for bit.
    """
    rows_count, cols_count = block_shape(text, None if fits is None else fits[0])
    if rows_count == 0:
        raise PasteError("There are no numbers to paste")
    if fits is not None:
        if rows_count > fits[0] or cols_count > fits[1]:
            rows = f"more than {fits[0]}" if rows_count > fits[0] else str(rows_count)
            raise PasteError(f"The pasted block is {rows} × {cols_count} but only {fits[0]} × {fits[1]} cells fit")
        if len(text) > rows_count * cols_count * (MAX_NUMBER_CHARS + 2) + 2 * rows_count + 1024:
            raise PasteError(
                f"The pasted text is too long for {rows_count} × {cols_count} numbers: an entry is "
                f"longer than {MAX_NUMBER_CHARS} characters"
            )
    body = text[: _rows_end(text)]
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    tabs = "\t" in text
    n_rows = body.count("\n") + 1
    block = np.empty((n_rows, cols_count))  # [rows, cols]
    piece_rows = max(1, PASTE_PIECE_CHARS * n_rows // max(len(body), 1))
    start, row = 0, 0
    while row < n_rows:
        end, count = start - 1, 0
        while count < piece_rows:  # the piece ends after piece_rows lines, or with the text
            end = body.find("\n", end + 1)
            count += 1
            if end < 0:
                break
        piece = body[start:] if end < 0 else body[start:end]
        values = _parse_plain(piece, count, cols_count, tabs)
        if values is None:
            values = _parse_entries(piece, row, cols_count, tabs)
        block[row : row + count] = values
        row, start = row + count, end + 1
        if progress is not None and progress(row, n_rows) is False:
            raise PasteError("cancelled")
    return block


#: parse_block works through pasted text in pieces of about this many characters (a few milliseconds each)
PASTE_PIECE_CHARS = 32 * 1024
#: what a piece of tab-separated plain numbers is made of: its digits, signs, points, exponents and separators
_PLAIN_CHARS = b"0123456789+-.eE\t\n"


@cache
def _comma_lines(cols: int) -> re.Pattern[str]:
    """Lines of exactly ``cols`` numbers (``_NUMBER``) separated by commas or runs of spaces (linear: no two parts
    can match the same characters)."""
    space, number = r"[^\S\n]*", _NUMBER.pattern
    line = rf"{space}{number}(?:(?:{space},{space}|[^\S\n]+){number}){{{cols - 1}}}{space}"
    return re.compile(f"(?:{line}\n)*{line}")


def _parse_plain(piece: str, rows: int, cols: int, tabs: bool) -> np.ndarray | None:
    """The (rows, cols) numbers of a piece of plain numbers, or None when the piece holds anything else (a minus
    sign, a word, spaces in a cell, an entry too long or too large): parse_number then reads that piece entry by
    entry and says what is wrong.

    Tab-separated (as spreadsheets copy): every character is one of a number's or a separator, every line has
    cols - 1 tabs, no cell is empty, and Python's float (which reads exactly the numbers ``_NUMBER`` matches
    among those characters) accepts every entry. Otherwise each line is matched by one linear pattern."""
    if tabs:
        try:
            if piece.encode("ascii").translate(None, _PLAIN_CHARS):
                return None  # a character no plain number or separator has
        except UnicodeEncodeError:
            return None
        if any(line.count("\t") != cols - 1 for line in piece.split("\n")):
            return None
    elif not _comma_lines(cols).fullmatch(piece):
        return None
    entries = piece.split() if tabs else piece.replace(",", " ").split()
    if len(entries) != rows * cols or max(map(len, entries)) > MAX_NUMBER_CHARS:
        return None  # an empty cell, or an entry parse_number refuses as too long
    try:
        values = np.array(entries, dtype=np.float64)  # Python's float, correctly rounded, entry by entry
    except ValueError:
        return None
    if not np.isfinite(values).all():
        return None
    return values.reshape(rows, cols)


def _parse_entries(piece: str, first_row: int, cols: int, tabs: bool) -> np.ndarray:
    """The numbers of a piece of lines entry by entry, naming the first entry that is not a finite number."""
    lines = piece.split("\n")
    block = np.empty((len(lines), cols))
    for k, line in enumerate(lines):
        i = first_row + k
        row = _split_line(line, tabs)
        if len(row) != cols:
            raise PasteError(
                f"Row {i + 1} of the pasted text has {len(row)} entries but row 1 has {cols}: paste a rectangular block"
            )
        for j, entry in enumerate(row):
            try:
                block[k, j] = parse_number(entry)
            except ValueError as e:
                shown = entry.strip() if len(entry) <= 40 else entry.strip()[:37] + "..."
                raise PasteError(f"Row {i + 1}, column {j + 1} of the pasted text, {shown!r}, {e}") from None
    return block


class MatrixTableModel(QAbstractTableModel):
    """A read-only view of one (rows, cols) float64 array as a table whose edits are requests.

    ``setData`` never changes the array: it parses the text and emits ``edit_requested(row, col, block)`` with a
    (1, 1) block, or ``message`` explaining why the text was refused. The owner answers with ``set_matrix``.
    """

    edit_requested = Signal(int, int, object)  # (row, col, block [h, w] float64): write block with top-left here
    message = Signal(str)  # why an edit was refused, for the status bar

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name  # names the matrix in messages, e.g. "W_Q (head 1)"
        self._array = np.zeros((0, 0))  # [rows, cols], read-only view
        self._row_labels: list[str] = []
        self._col_labels: list[str] = []
        self._max_abs = 0.0  # of the finite values; scales the cell shading
        self.last_edit_refused = False  # whether the last typed text was refused (the view keeps the cursor there)

    # -- the data -------------------------------------------------------------------------------------------------

    def set_matrix(
        self, array: np.ndarray, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None
    ) -> None:
        """Show ``array`` (rows, cols); labels default to ``0…rows-1`` and ``d0…d{cols-1}``.

        The model keeps a read-only view (no copy for float64 input). A same-shaped array repaints the cells; a new
        shape resets the model (and the views' selections).
        """
        matrix = np.asarray(array, dtype=np.float64)
        if matrix.ndim != 2:
            raise ShapeError(f"{self.name} must be a 2-D matrix, but the array given has shape {matrix.shape}")
        n_rows, n_cols = matrix.shape
        rows = [str(i) for i in range(n_rows)] if row_labels is None else [str(s) for s in row_labels]
        cols = [f"d{j}" for j in range(n_cols)] if col_labels is None else [str(s) for s in col_labels]
        if len(rows) != n_rows or len(cols) != n_cols:
            raise ShapeError(
                f"{self.name} is {n_rows} × {n_cols} but was given {len(rows)} row and {len(cols)} column labels"
            )
        view = matrix.view()
        view.flags.writeable = False  # the model only ever reads; edits go through edit_requested
        reshaped = matrix.shape != self._array.shape
        if reshaped:
            self.beginResetModel()
        self._array, self._row_labels, self._col_labels = view, rows, cols
        finite = np.isfinite(matrix)
        self._max_abs = float(np.max(np.abs(matrix), initial=0.0, where=finite))
        if reshaped:
            self.endResetModel()
        elif matrix.size:
            self.dataChanged.emit(self.index(0, 0), self.index(n_rows - 1, n_cols - 1))
            self.headerDataChanged.emit(Qt.Orientation.Vertical, 0, n_rows - 1)
            self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, n_cols - 1)

    def matrix(self) -> np.ndarray:
        """The (rows, cols) array shown, read-only."""
        return self._array

    def where(self, row: int, col: int) -> str:
        """A cell named by its headers, as the user sees them: ``"row 3, d1"``."""
        return f"row {short_label(self._row_labels[row])}, {short_label(self._col_labels[col])}"

    def request_block(self, row: int, col: int, block: np.ndarray) -> None:
        """Ask the owner to write ``block`` (h, w) with its top-left cell at (row, col); nothing changes here."""
        block = np.asarray(block, dtype=np.float64)
        n_rows, n_cols = self._array.shape
        fits = block.ndim == 2 and 0 <= row <= n_rows - block.shape[0] and 0 <= col <= n_cols - block.shape[1]
        if not fits:
            raise ShapeError(
                f"A {block.shape} block at ({row}, {col}) does not fit inside {self.name} ({n_rows} × {n_cols})"
            )
        self.edit_requested.emit(row, col, block)

    # -- QAbstractTableModel --------------------------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self._array.shape[0]

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self._array.shape[1]

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        value = float(self._array[row, col])
        if role == Qt.ItemDataRole.DisplayRole:
            return format_number(value)
        if role == Qt.ItemDataRole.EditRole:
            return repr(value)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{self.name} ({self.where(row, col)}) = {value!r}"
        if role == Qt.ItemDataRole.BackgroundRole:
            return self._shade(value)
        if role == Qt.ItemDataRole.ForegroundRole:
            return _TEXT  # the shading is always light, so the text is black even under a dark theme
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        return None

    def _shade(self, value: float) -> QColor:
        """White at 0, light blue at −max|value|, light red at +max|value| (non-finite cells stay white)."""
        if not math.isfinite(value) or self._max_abs == 0:
            return QColor(255, 255, 255)
        t = min(abs(value) / self._max_abs, 1.0)
        r, g, b = _WHITE + t * ((_POSITIVE if value > 0 else _NEGATIVE) - _WHITE)
        return QColor(round(r), round(g), round(b))

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        labels = self._col_labels if orientation == Qt.Orientation.Horizontal else self._row_labels
        return short_label(labels[section]) if 0 <= section < len(labels) else None  # a 15 MiB token stays short

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEditable

    def setData(self, index: QModelIndex | QPersistentModelIndex, value, role: int = Qt.ItemDataRole.EditRole) -> bool:
        """Request the typed value as a (1, 1) edit; refuse anything but a finite number with a ``message``."""
        if not index.isValid() or role != Qt.ItemDataRole.EditRole:
            return False
        row, col = index.row(), index.column()
        text = value if isinstance(value, str) else str(value)
        try:
            number = parse_number(text)
        except ValueError as e:
            old = format_number(float(self._array[row, col]))
            shown = text.strip() if len(text) <= 40 else text.strip()[:37] + "..."
            self.message.emit(f"{shown!r} {e}: {self.name} ({self.where(row, col)}) keeps {old}")
            self.last_edit_refused = True
            return False
        self.last_edit_refused = False
        self.request_block(row, col, np.array([[number]]))
        return True


class _SheetView(QTableView):
    """A QTableView with spreadsheet keys: Enter commits and moves down, Tab right, Delete clears, Ctrl+C/V copy
    and paste (the editor does the work on the signals)."""

    copy_requested = Signal()
    paste_requested = Signal()
    clear_requested = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if event.matches(QKeySequence.StandardKey.Copy):
            self.copy_requested.emit()
        elif event.matches(QKeySequence.StandardKey.Paste):
            self.paste_requested.emit()
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.clear_requested.emit()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.state() != QAbstractItemView.State.EditingState:
            self._step(-1 if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 1, 0)
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def closeEditor(self, editor: QWidget, hint: QAbstractItemDelegate.EndEditHint) -> None:
        # Enter (SubmitModelCache) moves down and Tab / Shift+Tab move sideways without opening the next editor,
        # as in a spreadsheet: the next keystroke of a number starts a fresh edit there. Refused text (the model has
        # just said why) keeps the cursor on its cell, ready to be typed again.
        hints = QAbstractItemDelegate.EndEditHint
        step = {hints.SubmitModelCache: (1, 0), hints.EditNextItem: (0, 1), hints.EditPreviousItem: (0, -1)}.get(hint)
        if step is None:
            super().closeEditor(editor, hint)
            return
        model = self.model()
        refused = isinstance(editor, QLineEdit) and getattr(model, "last_edit_refused", False)  # parsed once
        super().closeEditor(editor, hint if hint == hints.SubmitModelCache else hints.NoHint)
        if not refused:
            self._step(*step)

    def _step(self, d_row: int, d_col: int) -> None:
        """Make the cell (d_row, d_col) away from the current one current, stopping at the matrix's edges."""
        current = self.currentIndex()
        if not current.isValid():
            return
        model = self.model()
        row = min(max(current.row() + d_row, 0), model.rowCount() - 1)
        col = min(max(current.column() + d_col, 0), model.columnCount() - 1)
        self.setCurrentIndex(model.index(row, col))


class MatrixEditor(QWidget):
    """A titled, editable table of one matrix: ``W_Q (head 1)  5 × 4`` above the cells.

    Every change the user makes (typing, paste, Delete, the fills of the context menu) is emitted as
    ``edit_requested(row, col, block)`` with a (h, w) float64 block; refusals are explained on ``message``.
    """

    edit_requested = Signal(int, int, object)  # (row, col, block [h, w] float64)
    message = Signal(str)

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.seed = 0  # the next "random" fill uses default_rng(seed), then seed += 1: reproducible sessions
        #: runs long work off the GUI thread: background(title, work(progress), done(result), failed(message)),
        #: as ``JobRunner.run``; None: everything on the calling thread
        self.background: Callable[..., bool] | None = None
        self._col_labels: list[str] | None = None  # the column names last shown (to refit widths only on change)
        self.model = MatrixTableModel(name, self)
        self.title = QLabel()
        self.table = _SheetView(self)
        self.table.setModel(self.model)
        self.table.setEditTriggers(
            QAbstractItemView.EditTrigger.AnyKeyPressed
            | QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.table.setWordWrap(False)
        # Fixed default sizes, never resizeColumnsToContents(): that measures every cell (minutes at 768 × 2304).
        columns, rows = self.table.horizontalHeader(), self.table.verticalHeader()
        columns.setMinimumSectionSize(24)
        columns.setDefaultSectionSize(COLUMN_WIDTH)
        rows.setMinimumSectionSize(16)
        rows.setDefaultSectionSize(ROW_HEIGHT)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.menu = self._build_menu()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.table)
        self._update_title()

        self.model.edit_requested.connect(self.edit_requested)
        self.model.message.connect(self.message)
        self.table.copy_requested.connect(self.copy_selection)
        self.table.paste_requested.connect(self.paste_from_clipboard)
        self.table.clear_requested.connect(lambda: self.fill_selection("zeros"))
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(
            lambda pos: self.menu.exec(self.table.viewport().mapToGlobal(pos))
        )

    def _build_menu(self) -> QMenu:
        """The right-click menu: the four fills, then Copy and Paste (their shortcuts are shown, handled by keys)."""
        menu = QMenu(self)
        for kind, text in FILL_ACTIONS.items():
            action = QAction(text, menu)
            action.triggered.connect(lambda _=False, kind=kind: self.fill_selection(kind))
            menu.addAction(action)
        menu.addSeparator()
        for text, keys, slot in (
            ("Copy", QKeySequence.StandardKey.Copy, self.copy_selection),
            ("Paste", QKeySequence.StandardKey.Paste, self.paste_from_clipboard),
        ):
            action = QAction(text, menu)
            action.setShortcut(keys)  # shown in the menu; the table's keyPressEvent handles the keys themselves
            action.triggered.connect(lambda _=False, slot=slot: slot())
            menu.addAction(action)
        return menu

    # -- data and title -------------------------------------------------------------------------------------------

    def set_matrix(
        self, array: np.ndarray, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None
    ) -> None:
        """Show ``array`` (rows, cols) with its labels (see ``MatrixTableModel.set_matrix``) and its shape in the
        title."""
        labels_before = self._col_labels
        self.model.set_matrix(array, row_labels, col_labels)
        self._col_labels = list(col_labels) if col_labels is not None else None
        if self._col_labels != labels_before:
            self._fit_named_columns()
        self._update_title()

    def _fit_named_columns(self) -> None:
        """Widen columns whose names (a preset's features, 'tok:cat') do not fit the default width.

        Only for a few hundred columns: measuring labels is cheap, but a wide matrix keeps its fixed width (never
        resizeColumnsToContents, which takes minutes at thousands of columns).
        """
        header = self.table.horizontalHeader()
        labels = self._col_labels or []
        if not labels or len(labels) > MAX_FITTED_COLUMNS:
            header.setDefaultSectionSize(COLUMN_WIDTH)
            return
        metrics = header.fontMetrics()
        for i, label in enumerate(labels):
            width = metrics.horizontalAdvance(short_label(label)) + 14
            header.resizeSection(i, min(MAX_COLUMN_WIDTH, max(COLUMN_WIDTH, width)))

    def set_title(self, name: str) -> None:
        """Rename the matrix (title and messages); the shape is appended: ``W_Q (head 1)  5 × 4``."""
        self.model.name = name
        self._update_title()

    def _update_title(self) -> None:
        n_rows, n_cols = self.model.matrix().shape
        self.title.setText(f"{self.model.name}  {n_rows} × {n_cols}")

    # -- the selection --------------------------------------------------------------------------------------------

    def _ranges(self) -> list[tuple[int, int, int, int]]:
        """The selected rectangles as (top, left, height, width), or the current cell when nothing is selected."""
        # A QItemSelection is a list of ranges; PySide6's stubs don't say it is iterable.
        selection = cast(Iterable[QItemSelectionRange], self.table.selectionModel().selection())
        ranges = [(r.top(), r.left(), r.height(), r.width()) for r in selection if r.isValid()]
        current = self.table.currentIndex()
        if not ranges and current.isValid():
            ranges = [(current.row(), current.column(), 1, 1)]
        return ranges

    def _bounds(self) -> tuple[int, int, int, int] | None:
        """The bounding rectangle (top, left, height, width) of the selection, or None when there is none."""
        ranges = self._ranges()
        if not ranges:
            return None
        top = min(r[0] for r in ranges)
        left = min(r[1] for r in ranges)
        bottom = max(r[0] + r[2] for r in ranges)
        right = max(r[1] + r[3] for r in ranges)
        return top, left, bottom - top, right - left

    def fill_selection(self, kind: str) -> None:
        """Request ``kind`` ("zeros", "ones", "identity" or "random") in each selected rectangle, one edit each.

        Identity is 1 where the matrix's row number equals its column number; random is seeded by ``self.seed``.
        """
        if kind not in FILLS:
            raise ValueError(f"unknown fill {kind!r}: expected one of {', '.join(FILLS)}")
        ranges = self._ranges()
        if not ranges:
            self.message.emit(f"Select the cells of {self.model.name} to fill first")
            return
        rng = np.random.default_rng(self.seed) if kind == "random" else None
        for top, left, height, width in ranges:
            if kind == "zeros":
                block = np.zeros((height, width))
            elif kind == "ones":
                block = np.ones((height, width))
            elif kind == "identity":
                rows = np.arange(top, top + height)[:, None]  # [h, 1]
                cols = np.arange(left, left + width)[None, :]  # [1, w]
                block = (rows == cols).astype(np.float64)  # [h, w]
            else:
                assert rng is not None  # made above for kind == "random"
                block = rng.standard_normal((height, width)) * RANDOM_SCALE  # [h, w]
            self.model.request_block(top, left, block)
        if kind == "random":
            self.seed += 1

    def copy_selection(self) -> str | None:
        """Put the selection's bounding rectangle on the clipboard as tab-separated text with every digit (``repr``),
        one line per row, and return that text (None when nothing is selected)."""
        bounds = self._bounds()
        if bounds is None:
            return None
        top, left, height, width = bounds
        block = self.model.matrix()[top : top + height, left : left + width].tolist()
        text = "\n".join("\t".join(repr(v) for v in row) for row in block)
        QGuiApplication.clipboard().setText(text)
        return text

    def paste_from_clipboard(self) -> bool:
        """Paste the clipboard's text (see ``paste_text``)."""
        return self.paste_text(QGuiApplication.clipboard().text())

    def paste_text(self, text: str) -> bool:
        """Request the block of numbers in ``text`` with its top-left at the selection's top-left cell.

        Tabs separate entries (or commas / spaces when there is no tab), lines separate rows. Every entry must be a
        finite number and the block must fit in the matrix; otherwise ``message`` says why and nothing is requested.
        Returns whether an edit was requested.
        """
        bounds = self._bounds()
        if bounds is None:
            self.message.emit(f"Select the cell of {self.model.name} where the pasted block should start")
            return False
        top, left = bounds[:2]
        n_rows, n_cols = self.model.matrix().shape
        # The shape first: a block that cannot fit is never parsed, and a huge one is not even counted through.
        height, width = block_shape(text, max_rows=None if len(text) < 1 << 20 else n_rows - top)
        if height and (top + height > n_rows or left + width > n_cols):
            rows = f"{height}" if len(text) < 1 << 20 or height <= n_rows - top else f"more than {n_rows - top}"
            self.message.emit(
                f"The pasted block is {rows} × {width} but only {n_rows - top} × {n_cols - left} cells fit below "
                f"and right of ({self.model.where(top, left)}) in {self.model.name}"
            )
            return False
        fits = (n_rows - top, n_cols - left)
        if self.background is not None and len(text) > BACKGROUND_PASTE_CHARS:
            # A large block is parsed on a worker (progress and Cancel); the edit is requested when it is complete.
            name, shape = self.model.name, self.model.matrix().shape

            def parse(progress) -> np.ndarray:
                return parse_block(text, fits=fits, progress=progress)

            def parsed(block: np.ndarray) -> None:
                if self.model.matrix().shape != shape or self.model.name != name:
                    self.message.emit(f"{name} changed while the paste was read: nothing was pasted.")
                    return
                self.model.request_block(top, left, block)

            return self.background(
                f"Pasting {height} × {width} numbers into {name}",
                parse,
                parsed,
                lambda e: self.message.emit(f"{e}; nothing was pasted into {name}"),
            )
        try:
            block = parse_block(text, fits=fits)
        except ValueError as e:
            self.message.emit(f"{e}; nothing was pasted into {self.model.name}")
            return False
        self.model.request_block(top, left, block)
        return True
