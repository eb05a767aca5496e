"""Format version 4: version 2 (or 3, with a whole model's blocks) plus rotary positions, and key/value heads shared
by groups of query heads (W_K, W_V and b_K, b_V of n_kv_heads matrices: their shapes say so). Written only for a
session that uses either. Never change it once released: tests/data/session_v4.qkv is its golden file."""

from __future__ import annotations

import math

from qkvgui.io.session import v2, v3
from qkvgui.io.session.archive import Archive, Fields
from qkvgui.state import SessionState


def load(fields: Fields, archive: Archive) -> SessionState:
    """Version 3's state when the file has a "model", version 2's otherwise, plus "rotary": {"on", "theta"}."""
    state = (v3.load if "model" in fields.doc else v2.load)(fields, archive)
    rotary = fields.child("rotary")
    on = rotary.get("on", bool)
    theta = rotary.get("theta", (int, float))
    try:
        theta = float(theta)
    except OverflowError:
        theta = math.inf
    if not (math.isfinite(theta) and theta > 1):
        raise rotary.error("theta", f"must be a finite number above 1 (the rotary base θ), not {theta}.")
    return state.replace(rotary=on, rope_theta=theta)
