"""How numbers and shapes are written for people: one formatter for cells, tooltips, explanations and messages."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

__all__ = ["MINUS", "format_number", "format_shape", "readable_tokens"]

#: a real minus sign: the same width as the digits, and it matches "−∞"
MINUS = "\u2212"


def format_number(value: float, style: Literal["short", "cell", "compact"] = "short") -> str:
    """A number as people read it, with a real minus sign; ``nan`` stays ``nan``.

    ``"short"`` (the matrix editors' cells, the explanations, figure colour-bar ticks): up to 4 significant digits,
    ``0`` for ±0, ``∞`` and ``−∞``: 0.1235, −1.5, 1.2e+05.

    ``"cell"`` (the numbers drawn in heatmap cells, in the window and in figures): two decimals, none from 100, an
    exponent from 100 000 (so a cell keeps its width), ``−0.00`` written ``0.00``, ``+∞`` and ``−∞`` (a hidden key):
    0.12, −1.50, 1234, 1e+05.

    ``"compact"`` (heatmap cells narrower than ~22 px): at most two significant digits, no leading zero:
    .37, −.05, 1.4, −12, 0.
    """
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return f"{MINUS}∞" if value < 0 else ("+∞" if style == "cell" else "∞")
    if style == "short":
        return "0" if value == 0 else f"{value:.4g}".replace("-", MINUS)
    magnitude = abs(value)
    if style == "compact":
        if magnitude < 0.995:
            text = f"{value:.2f}".replace("0.", ".", 1)
        elif magnitude < 9.95:
            text = f"{value:.1f}"
        elif magnitude < 999.5:
            text = f"{value:.0f}"
        else:
            text = f"{value:.0e}".replace("e+0", "e").replace("e+", "e")
        return "0" if text.strip("-0.") == "" else text.replace("-", MINUS)
    text = f"{value:.2f}" if magnitude < 99.995 else f"{value:.0f}" if magnitude < 99999.5 else f"{value:.0e}"
    if text.strip("-0.") == "":  # -0.00 is just zero to a reader
        text = text.lstrip("-")
    return text.replace("-", MINUS)


def format_shape(shape: Iterable[int]) -> str:
    """``4 × 12`` for (4, 12); ``a scalar`` for ()."""
    dims = [str(int(d)) for d in shape]
    return " × ".join(dims) if dims else "a scalar"


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: the character each byte is written as in a token string → the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars: dict[str, int] = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            chars[chr(256 + shifted)] = b  # a space is written "Ġ" (U+0120), a newline "Ċ" (U+010A)
            shifted += 1
    return chars


_BYTE_LEVEL = _byte_level_alphabet()
#: how the invisible characters of a token are shown: a space as ␣, a newline as ↵, a tab as ⇥
_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def readable_tokens(tokens: Sequence[str]) -> list[str]:
    """Token strings as a reader wants to see them. The tokens of a byte-level BPE tokenizer (GPT-2, SmolLM2 and
    the LLaMA-3 family) spell a space "Ġ" and a newline "Ċ": "Ġthe" is shown "␣the", "Ċ" is shown "↵", and
    "Ã©" (the two bytes of é) "é". SentencePiece's "▁the" is shown "␣the" too. Other tokens, and every token of a
    sequence that has no such marker (what a user typed), are returned as they are; a token that is not whole
    UTF-8 text (half a character) stays raw. The raw tokens remain the session's (``Session.tokens``)."""
    tokens = [str(t) for t in tokens]
    if any(t.startswith("▁") for t in tokens):
        return [t.replace("▁", "␣") for t in tokens]
    if not any("Ġ" in t or "Ċ" in t for t in tokens):
        return tokens
    out = []
    for t in tokens:
        if all(c in _BYTE_LEVEL for c in t):
            try:
                t = bytes(_BYTE_LEVEL[c] for c in t).decode("utf-8").translate(_VISIBLE)
            except UnicodeDecodeError:
                pass
        out.append(t)
    return out
