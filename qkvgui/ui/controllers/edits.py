"""Every user edit as one undoable step: the panels ask, this pushes the command, a refusal is reported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from qkvgui.core import QkvError
from qkvgui.session import PER_HEAD, Session
from qkvgui.ui.commands import BlockEdit, StateChange


class EditController(QObject):
    """Owns the undo stack. ``refused(message)`` is emitted when the session rejects an edit (nothing changed)."""

    refused = Signal(str)

    def __init__(self, session: Session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.undo_stack = QUndoStack(self)

    def seed(self) -> int:
        """A seed for generators that differs per step, so Randomize twice gives two different matrices."""
        return self.undo_stack.index() + 1

    def edit_block(self, name: str, row: int, col: int, block: np.ndarray) -> bool:
        """Write a block into a matrix (the selected head's slice for W_Q, W_K, W_V) as one undoable edit."""
        s = self.session  # W_K/W_V rows are per key/value head: shared by a group of query heads under GQA
        head = (s.head if name == "W_Q" else s.kv_head()) if name in PER_HEAD else None
        try:
            old = self.session.set_block(name, row, col, block, head=head)
        except QkvError as e:
            self.refused.emit(str(e))
            return False
        r, c = block.shape
        kv = "kv " if name in ("W_K", "W_V") and s.n_kv_heads < s.n_heads else ""
        where = f" ({kv}head {head + 1})" if head is not None else ""
        # positions as a reader counts them, from 1 (the API stays 0-based)
        text = (
            f"edit {name}{where} row {row + 1}, column {col + 1}"
            if r * c == 1
            else f"edit {r} × {c} cells of {name}{where}"
        )
        self.undo_stack.push(BlockEdit(self.session, name, head, row, col, block, old, text))
        return True

    def change(self, text: str, setter: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Apply a session change as one undoable step; a refused change says why and leaves all as it was."""
        before = self.session.state()
        try:
            setter(*args, **kwargs)
        except QkvError as e:
            self.refused.emit(str(e))
            return False
        self.undo_stack.push(StateChange(self.session, before, self.session.state(), text))
        return True

    def resize(self, what: str, **sizes: int) -> bool:
        return self.change(f"change {what}", self.session.resize, **sizes)
