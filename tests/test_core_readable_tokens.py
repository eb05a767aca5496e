"""Byte-level BPE tokens (GPT-2, SmolLM2) are shown as a reader reads them; typed tokens are left alone."""

from qkvgui.core.format import readable_tokens


def test_byte_level_markers_become_visible_spaces_and_newlines():
    raw = ["The", "Ġquick", "Ċ", "ĠcafÃ©", "ĠĠ", "<|endoftext|>"]
    assert readable_tokens(raw) == ["The", "␣quick", "↵", "␣café", "␣␣", "<|endoftext|>"]


def test_half_a_character_stays_raw():
    assert readable_tokens(["Ġthe", "Ã"]) == ["␣the", "Ã"]  # b"\xc3" alone is not text


def test_typed_tokens_are_not_decoded():
    assert readable_tokens(["café", "Ã©", "the"]) == ["café", "Ã©", "the"]  # no marker: what the user typed


def test_sentencepiece_word_starts_are_shown_the_same_way():
    assert readable_tokens(["▁the", "▁cat", "s"]) == ["␣the", "␣cat", "s"]
