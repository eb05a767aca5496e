"""How numbers and shapes are written for people: one formatter for cells, tooltips, explanations and messages."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["format_shape"]


def format_shape(shape: Iterable[int]) -> str:
    """``4 × 12`` for (4, 12); ``a scalar`` for ()."""
    dims = [str(int(d)) for d in shape]
    return " × ".join(dims) if dims else "a scalar"
