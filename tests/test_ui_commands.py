"""Undo and redo (qkvgui.ui.commands, pushed by the window's EditController): every edit is one step, undo gives
back the session bit for bit, redo gives back the edit bit for bit, and a refused edit never reaches the stack.

On a real-size layer: 30 tokens, 12 heads."""

import numpy as np
import pytest

from qkvgui.session import Session
from qkvgui.ui.commands import BlockEdit, StateChange
from qkvgui.ui.controllers.edits import EditController

N, HEADS, D_MODEL, D_K, D_V = 30, 12, 48, 8, 6


@pytest.fixture
def session():
    rng = np.random.default_rng(17)
    return Session.from_arrays(
        rng.standard_normal((N, D_MODEL)),
        rng.standard_normal((HEADS, D_MODEL, D_K)),
        rng.standard_normal((HEADS, D_MODEL, D_K)),
        rng.standard_normal((HEADS, D_MODEL, D_V)),
        rng.standard_normal((HEADS * D_V, D_MODEL)),
        b_q=rng.standard_normal((HEADS, D_K)),
        tokens=[f"t{i}" for i in range(N)],
    )


@pytest.fixture
def edits(session, qtbot):
    return EditController(session)


def snapshot(session: Session) -> dict:
    """Everything a user can edit, as bytes (so −0.0 and 0.0, or a NaN payload, would differ)."""
    s = session.state()
    out = {"tokens": s.tokens, "source_tokens": s.source_tokens, "settings": (s.causal, s.scale_mode, s.head)}
    for name in ("x", "x_kv", "padding", "source_padding"):
        a = getattr(s, name)
        out[name] = (a.shape, a.dtype.str, a.tobytes())
    for i, layer in enumerate(s.layers):
        for name in ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o", "ablated"):
            a = getattr(layer, name)
            out[f"{i}.{name}"] = None if a is None else (a.shape, a.dtype.str, a.tobytes())
    return out


def changed_keys(a: dict, b: dict) -> set:
    return {k for k in a if a[k] != b[k]}


def test_a_typed_cell_is_one_step_undone_and_redone_bit_exactly(session, edits):
    session.set_head(6)
    before = snapshot(session)
    w_q = session.matrix("W_Q").copy()
    assert edits.edit_block("W_Q", 3, 5, np.array([[0.1 + 0.2]]))  # 0.30000000000000004: every bit counts
    after = snapshot(session)
    assert changed_keys(before, after) == {"0.w_q"}  # no other matrix
    w_q[6, 3, 5] = 0.1 + 0.2  # the selected head's cell, and nothing else of W_Q
    np.testing.assert_array_equal(session.matrix("W_Q"), w_q)
    assert edits.undo_stack.count() == 1
    assert edits.undo_stack.undoText() == "edit W_Q (head 7) row 4, column 6"  # as the Edit menu says it

    edits.undo_stack.undo()
    assert snapshot(session) == before
    edits.undo_stack.redo()
    assert snapshot(session) == after
    edits.undo_stack.undo()
    assert snapshot(session) == before


@pytest.mark.parametrize("name", ["X", "W_K", "W_V", "W_O"])
def test_a_pasted_block_in_each_matrix_undoes_and_redoes(session, edits, name):
    session.set_head(11)
    shown = (lambda m: m[11]) if name in ("W_K", "W_V") else (lambda m: m)  # what the editor shows
    rows, cols = shown(session.matrix(name)).shape
    block = np.arange(12.0).reshape(3, 4) - 5.5
    before = snapshot(session)
    assert edits.edit_block(name, rows - 3, cols - 4, block)  # the bottom-right corner: no room to spare
    after = snapshot(session)
    assert len(changed_keys(before, after)) == 1
    np.testing.assert_array_equal(shown(session.matrix(name))[rows - 3 :, cols - 4 :], block)
    assert edits.undo_stack.undoText() == (
        f"edit 3 × 4 cells of {name}" + (" (head 12)" if name in ("W_K", "W_V") else "")
    )
    edits.undo_stack.undo()
    assert snapshot(session) == before
    edits.undo_stack.redo()
    assert snapshot(session) == after


def test_pushing_an_edit_applies_it_once(session, edits):
    """The command is applied before it is pushed; the stack's own first redo must not apply it again."""
    seen = []
    session.events.matrix.connect(seen.append)
    edits.edit_block("W_O", 0, 0, np.array([[2.0]]))
    assert seen == ["W_O"]
    edits.undo_stack.undo()
    edits.undo_stack.redo()
    assert seen == ["W_O", "W_O", "W_O"]


def test_consecutive_edits_of_a_cell_are_separate_steps(session, edits):
    """Cell edits are not merged: each typed value is its own undo step, as in a spreadsheet."""
    original = session.matrix("X")[2, 2]
    edits.edit_block("X", 2, 2, np.array([[1.0]]))
    edits.edit_block("X", 2, 2, np.array([[2.0]]))
    edits.edit_block("X", 2, 3, np.array([[3.0]]))
    assert edits.undo_stack.count() == 3
    edits.undo_stack.undo()
    assert session.matrix("X")[2, 2] == 2.0 and session.matrix("X")[2, 3] != 3.0
    edits.undo_stack.undo()
    assert session.matrix("X")[2, 2] == 1.0
    edits.undo_stack.undo()
    assert session.matrix("X")[2, 2] == original
    assert not edits.undo_stack.canUndo()


def test_a_refused_edit_changes_nothing_and_is_not_a_step(session, edits, qtbot):
    before = snapshot(session)
    with qtbot.waitSignal(edits.refused) as refused:
        assert not edits.edit_block("W_Q", 0, 0, np.array([[np.nan]]))
    assert "W_Q" in refused.args[0]
    with qtbot.waitSignal(edits.refused):
        assert not edits.edit_block("W_Q", 0, D_K - 1, np.ones((1, 2)))  # one column past the edge
    with qtbot.waitSignal(edits.refused):
        assert not edits.resize("d_k", d_k=-1)
    assert snapshot(session) == before
    assert edits.undo_stack.count() == 0


def test_a_shrink_undone_gives_back_the_cut_values(session, edits):
    """Making d_k smaller drops columns of W_Q and W_K; its undo must bring those exact numbers back."""
    before = snapshot(session)
    assert edits.resize("d_k", d_k=3)
    assert session.matrix("W_Q").shape == (HEADS, D_MODEL, 3)
    after = snapshot(session)
    edits.undo_stack.undo()
    assert snapshot(session) == before
    assert session.matrix("W_Q").shape == (HEADS, D_MODEL, D_K)
    edits.undo_stack.redo()
    assert snapshot(session) == after
    assert isinstance(edits.undo_stack.command(0), StateChange)


def test_fewer_tokens_undone_gives_back_their_rows(session, edits):
    before = snapshot(session)
    assert edits.change("change tokens", session.set_tokens, ["only", "three", "now"])
    assert session.matrix("X").shape == (3, D_MODEL)
    after = snapshot(session)
    edits.undo_stack.undo()
    assert snapshot(session) == before
    assert list(session.tokens) == [f"t{i}" for i in range(N)]
    edits.undo_stack.redo()
    assert snapshot(session) == after


def test_a_generator_and_a_setting_undo_in_order(session, edits):
    """A sequence of different edits walks back step by step, each step to its own exact state."""
    states = [snapshot(session)]
    edits.change("fill X with random", session.generate, "X", "random", seed=edits.seed())
    states.append(snapshot(session))
    edits.change("switch causal mask", session.set_causal, True)
    states.append(snapshot(session))
    edits.edit_block("W_V", 1, 1, np.array([[-0.0]]))  # −0.0: a bit-exact undo must not turn 0.0 into it
    states.append(snapshot(session))
    assert len({repr(s) for s in states}) == 4  # every step changed something
    for expected in reversed(states[:-1]):
        edits.undo_stack.undo()
        assert snapshot(session) == expected
    for expected in states[1:]:
        edits.undo_stack.redo()
        assert snapshot(session) == expected


def test_block_edit_command_on_its_own(session, qtbot):
    """The command without the controller: its undo writes the old block, its (second) redo the new one."""
    from PySide6.QtGui import QUndoStack

    stack = QUndoStack()
    old = session.set_block("W_O", 4, 7, np.full((2, 2), 9.0))
    before_edit = old.copy()
    stack.push(BlockEdit(session, "W_O", None, 4, 7, np.full((2, 2), 9.0), old, "fill"))
    np.testing.assert_array_equal(session.matrix("W_O")[4:6, 7:9], 9.0)
    stack.undo()
    np.testing.assert_array_equal(session.matrix("W_O")[4:6, 7:9], before_edit)
    stack.redo()
    np.testing.assert_array_equal(session.matrix("W_O")[4:6, 7:9], 9.0)
