"""How numbers and shapes are written for people: one formatter for cells, tooltips, explanations and messages."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

__all__ = ["MINUS", "format_number", "format_shape"]

#: a real minus sign: the same width as the digits, and it matches "−∞"
MINUS = "\u2212"


def format_number(value: float, style: Literal["short", "cell"] = "short") -> str:
    """A number as people read it, with a real minus sign; ``nan`` stays ``nan``.

    ``"short"`` (the matrix editors' cells, the explanations, figure colour-bar ticks): up to 4 significant digits,
    ``0`` for ±0, ``∞`` and ``−∞``: 0.1235, −1.5, 1.2e+05.

    ``"cell"`` (the numbers drawn in heatmap cells, in the window and in figures): two decimals, none from 100, an
    exponent from 100 000 (so a cell keeps its width), ``−0.00`` written ``0.00``, ``+∞`` and ``−∞`` (a hidden key):
    0.12, −1.50, 1234, 1e+05.
    """
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return f"{MINUS}∞" if value < 0 else ("+∞" if style == "cell" else "∞")
    if style == "short":
        return "0" if value == 0 else f"{value:.4g}".replace("-", MINUS)
    magnitude = abs(value)
    text = f"{value:.2f}" if magnitude < 99.995 else f"{value:.0f}" if magnitude < 99999.5 else f"{value:.0e}"
    if text.strip("-0.") == "":  # -0.00 is just zero to a reader
        text = text.lstrip("-")
    return text.replace("-", MINUS)


def format_shape(shape: Iterable[int]) -> str:
    """``4 × 12`` for (4, 12); ``a scalar`` for ()."""
    dims = [str(int(d)) for d in shape]
    return " × ".join(dims) if dims else "a scalar"
