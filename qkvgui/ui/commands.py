"""Undoable edits: each command calls the session's setters, and undo is the same walk with the old values.

Every command is applied once *before* it is pushed (so a refused edit never reaches the stack); the stack's
first redo() is therefore skipped.
"""

from __future__ import annotations

from PySide6.QtGui import QUndoCommand

from qkvgui.session import Session


class _Applied(QUndoCommand):
    """A command whose first redo already happened when it was built."""

    def __init__(self, text: str):
        super().__init__(text)
        self._first = True

    def redo(self) -> None:
        if self._first:
            self._first = False
            return
        self.reapply()

    def reapply(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class BlockEdit(_Applied):
    """A block of cells written into one matrix (a typed cell, a paste, a fill). A layer's matrix is undone in the
    layer it was edited in: undo and redo select that layer first (as an editor scrolls back to the edit)."""

    def __init__(self, session: Session, name: str, head: int | None, row: int, col: int, block, old, text: str):
        super().__init__(text)
        self.session, self.name, self.head, self.row, self.col = session, name, head, row, col
        self.block, self.old = block, old
        self.layer = None if name in ("X", "X_kv") else session.layer

    def _write(self, block) -> None:
        if self.layer is not None and self.session.layer != self.layer:
            self.session.set_layer(self.layer)
        self.session.set_block(self.name, self.row, self.col, block, head=self.head)

    def undo(self) -> None:
        self._write(self.old)

    def reapply(self) -> None:
        self._write(self.block)


class StateChange(_Applied):
    """Any other change (resize, generator, tokens, settings), undone by restoring the whole state before it.

    States share their read-only arrays, so keeping two of them costs little.
    """

    def __init__(self, session: Session, before, after, text: str):
        super().__init__(text)
        self.session, self.before, self.after = session, before, after

    def undo(self) -> None:
        self.session.set_state(self.before)

    def reapply(self) -> None:
        self.session.set_state(self.after)
