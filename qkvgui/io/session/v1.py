"""Format version 1 (qkvgui 0.1, one layer): the layout of docs/session-format.md. Never change it: old files must
keep loading forever (tests/data/session_v1.qkv is its golden file)."""

from __future__ import annotations

import math
from typing import Any

from qkvgui.core.checks import check_json_plain
from qkvgui.io.session.archive import Archive, Fields, check_total, declared_shapes
from qkvgui.state import LIMITS, SCALE_MODES, Layer, SessionState

#: the matrices of a version-1 file, all at the top level
MATRICES = ("X", "X_kv", "W_Q", "W_K", "W_V", "W_O")


def load_settings(fields: Fields) -> dict[str, Any]:
    """The settings of format version 1 (everything but the matrices), as SessionState fields."""
    tokens = fields.strings("tokens", low=1, high=LIMITS["tokens"])
    source_tokens = fields.strings("source_tokens", low=1, high=LIMITS["tokens"])
    padding = fields.flags("padding", len(tokens), "tokens")
    source_padding = fields.flags("source_padding", len(source_tokens), "source tokens")
    cross = fields.get("cross", bool)
    causal = fields.get("causal", bool)
    scale = fields.child("scale")
    mode = scale.get("mode", str)
    if mode not in SCALE_MODES:
        raise scale.error("mode", f"is {mode!r}; it must be one of {', '.join(SCALE_MODES)}.")
    custom = scale.get("custom", (int, float))
    try:
        custom = float(custom)
    except OverflowError:
        custom = math.inf
    if not math.isfinite(custom):
        raise scale.error("custom", f"must be a finite number, not {custom}.")
    head = fields.get("head", int)
    if not 0 <= head < LIMITS["heads"]:
        raise fields.error("head", f"is {head}; a head index runs from 0 to the number of heads - 1.")
    title = fields.get("title", str)
    description = fields.get("description", str)
    features = fields.strings("features", low=0, high=LIMITS["d_model"], default=[])
    extra = fields.get("extra", dict, default={})
    try:  # checked here, before any matrix is read: a deep extra also overflowed the stack when it was copied
        check_json_plain(extra, "it", ValueError)
    except ValueError as e:
        raise fields.error("extra", str(e).removeprefix("it ")) from None

    return dict(
        tokens=tokens,
        source_tokens=source_tokens,
        padding=padding,
        source_padding=source_padding,
        cross=cross,
        causal=causal,
        scale_mode=mode,
        custom_scale=custom,
        head=head,
        title=title,
        description=description,
        features=features,
        extra=extra,
    )


def load(fields: Fields, archive: Archive) -> SessionState:
    """Format version 1 (qkvgui 0.1, one layer): the layout of docs/session-format.md. Never change it."""
    settings = load_settings(fields)
    shapes = declared_shapes(fields.child("shapes"), MATRICES)
    check_total(archive, shapes.values())
    members = fields.child("matrices")
    arrays = {name: archive.read_matrix(name, members.get(name, str), shapes[name]) for name in MATRICES}
    return SessionState(
        **settings,
        x=arrays["X"],
        x_kv=arrays["X_kv"],
        layers=(Layer(arrays["W_Q"], arrays["W_K"], arrays["W_V"], arrays["W_O"]),),
    )
