"""Format version 2 (layers, biases, switched-off heads), the version this qkvgui writes. Never change it once
released: tests/data/session_v2.qkv is its golden file; a new format is a new module with its own loader."""

from __future__ import annotations

from qkvgui.io.session.archive import LAYER_MATRICES, Archive, Fields, check_total, declared_shapes, json_kind
from qkvgui.io.session.v1 import load_settings as load_v1_settings
from qkvgui.state import LIMITS, Layer, SessionState


def load(fields: Fields, archive: Archive) -> SessionState:
    """Format version 2 (layers, biases, switched-off heads): the settings of version 1 plus "layer", the session's
    matrices X, X_kv (and X_residual) at the top, and a "layers" list, each with its own shapes and matrices."""
    layers_doc = fields.get("layers", list)
    if not 1 <= len(layers_doc) <= LIMITS["layers"]:
        raise fields.error("layers", f"has {len(layers_doc)} entries; a session has 1 to {LIMITS['layers']} layers.")
    top = {k: v for k, v in fields.doc.items() if k not in ("shapes", "matrices", "layers")}
    shape_fields = fields.child("shapes")
    names = ("X", "X_kv") + (("X_residual",) if "X_residual" in shape_fields.doc else ())
    shapes = declared_shapes(shape_fields, names)
    layer_fields = []
    for i, entry in enumerate(layers_doc):
        if not isinstance(entry, dict):
            raise fields.error(f"layers[{i}]", f"must be an object, not {json_kind(entry)}.")
        lf = Fields(entry, archive, f"layers[{i}].")
        layer_fields.append((lf, declared_shapes(lf.child("shapes"), LAYER_MATRICES)))
    check_total(archive, [*shapes.values(), *(v for _, ls in layer_fields for v in ls.values())])
    # The settings shared with version 1 are read by its loader's rules, on a copy without the matrices.
    v1 = load_v1_settings(Fields(top, archive))
    members = fields.child("matrices")
    arrays = {name: archive.read_matrix(name, members.get(name, str), shapes[name]) for name in names}
    layers = []
    for i, (lf, layer_shapes) in enumerate(layer_fields):
        mf = lf.child("matrices")
        got = {
            name: archive.read_matrix(f"{name} of layer {i + 1}", mf.get(name, str), layer_shapes[name])
            for name in LAYER_MATRICES
        }
        h = layer_shapes["W_Q"][0]
        ablated = lf.flags("ablated", h, "heads")
        layers.append(
            Layer(
                got["W_Q"],
                got["W_K"],
                got["W_V"],
                got["W_O"],
                got["b_Q"],
                got["b_K"],
                got["b_V"],
                got["b_O"],
                ablated=ablated,
            )
        )
    layer = fields.get("layer", int)
    if not 0 <= layer < len(layers):
        raise fields.error("layer", f"is {layer}; a layer index runs from 0 to {len(layers) - 1}.")
    return SessionState(
        **v1, x=arrays["X"], x_kv=arrays["X_kv"], x_residual=arrays.get("X_residual"), layers=tuple(layers), layer=layer
    )
