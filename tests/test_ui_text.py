"""Text from files is shown capped and breakable (issue 11, item 6): a one-word 15 MiB description or token cannot
stall the window."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PySide6.QtCore import Qt

from qkvgui.ui.matrix_editor import MatrixEditor
from qkvgui.ui.text import (
    MAX_DISPLAY_CHARS,
    MAX_LABEL_CHARS,
    display_text,
    format_tokens,
    one_line,
    parse_tokens,
    short_label,
)


def test_display_text_is_capped_and_breakable():
    shown = display_text("w" * (15 * 1024**2))
    assert len(shown) < MAX_DISPLAY_CHARS + 100
    assert shown.endswith(f"({15 * 1024**2 - MAX_DISPLAY_CHARS:,} more characters)")
    words = shown.split("\u200b")
    assert max(len(w) for w in words[:-1]) == 80  # a break opportunity every 80 characters
    assert display_text("a short text, left as it is") == "a short text, left as it is"
    assert display_text("lone \ud800 surrogate") == "lone ? surrogate"  # Qt cannot hold a lone surrogate


def test_labels_and_messages_stay_on_one_short_line():
    assert short_label("new york") == "new york"
    long = short_label("x" * 300_000)
    assert len(long) == MAX_LABEL_CHARS and long.endswith("…")
    assert short_label("two\nlines") == "two lines"
    assert one_line("first\nsecond") == "first"
    assert len(one_line("y" * 100_000)) <= 400


def test_a_huge_token_is_a_short_header(qtbot):
    editor = MatrixEditor("X")
    qtbot.addWidget(editor)
    token = "t" * 300_000
    editor.set_matrix(np.zeros((2, 3)), [token, "cat"], ["d0", token, "d2"])
    model = editor.model
    assert len(model.headerData(0, Qt.Orientation.Vertical)) == MAX_LABEL_CHARS
    assert len(model.headerData(1, Qt.Orientation.Horizontal)) == MAX_LABEL_CHARS
    assert model.headerData(1, Qt.Orientation.Vertical) == "cat"
    assert len(model.where(0, 1)) < 3 * MAX_LABEL_CHARS


@given(st.lists(st.text(max_size=12), min_size=1, max_size=8))
def test_token_text_round_trips_every_token_list(tokens):
    """Issue 11, item 14: the token field re-split "new york" into two tokens; quoted tokens come back exactly."""
    assert parse_tokens(format_tokens(tokens)) == tokens


def test_token_text_reads_as_words_and_says_what_is_wrong():
    assert format_tokens(["the", "new york", "café"]) == 'the "new york" café'
    assert parse_tokens('  the "new york"   café ') == ["the", "new york", "café"]
    assert parse_tokens("don't stop") == ["don't", "stop"]
    with pytest.raises(ValueError, match="not closed"):
        parse_tokens('the "new york')
    with pytest.raises(ValueError, match="put a space after"):
        parse_tokens('"new"york')
