"""Checks shared by every room: the largest sizes qkvgui accepts, and the search for NaN and infinities.

One place for each, so that a file, a resize and a paste refuse the same things with the same words.
"""

from __future__ import annotations

import numpy as np

from .errors import NonFiniteError

__all__ = ["LIMITS", "check_finite"]

#: the largest sizes a session may have; files, resizes and imports beyond them are refused before allocating
LIMITS = {"tokens": 4096, "d_model": 8192, "heads": 256, "d_head": 4096, "layers": 64}


def check_finite(name: str, a: np.ndarray) -> None:
    """Raise NonFiniteError naming the first NaN or infinity of a, where it is and how many there are."""
    # One fast reduction first: the sum of finite numbers is finite unless it overflows, so only a
    # non-finite sum needs the element-wise search that says where the bad value is.
    if a.dtype.kind not in "fc" or np.isfinite(np.sum(a)):
        return
    bad = np.argwhere(~np.isfinite(a))
    if len(bad) == 0:
        return
    where = ", ".join(str(int(i)) for i in bad[0])
    value = a[tuple(bad[0])]
    raise NonFiniteError(
        f"{name} holds {value} at [{where}] ({len(bad)} non-finite value{'s' if len(bad) > 1 else ''}): "
        "every entry must be a finite number."
    )
