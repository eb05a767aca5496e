"""Format version 3: version 2 plus a whole model's own blocks (norms, MLPs between the attention layers), written
only for a session imported with every layer. Never change it once released: tests/data/session_v3.qkv is its
golden file."""

from __future__ import annotations

from qkvgui.core.models import ModelError, Stack
from qkvgui.io.session import v2
from qkvgui.io.session.archive import JSON_MEMBER, Archive, Fields, check_total
from qkvgui.state import LIMITS, SessionState

#: the largest axis of a model block's array (an MLP is a few times d_model wide)
MAX_MODEL_AXIS = 8 * LIMITS["d_model"]
#: the most arrays a model may list (norm weights and biases, MLP matrices and biases: at most 9 per layer)
MAX_MODEL_ARRAYS = 16 * LIMITS["layers"]


def load(fields: Fields, archive: Archive) -> SessionState:
    """Version 2's state, plus "model": "family", "scale_factors" (one per layer), "layers" (per layer "pre_norm",
    "activation" and "norms"), and the "shapes"/"matrices" of its arrays under model/ (see docs/session-format.md).
    Every declared shape is checked, and the total size with the layers', before any array is read."""
    model = fields.child("model")
    shapes, members = model.child("shapes"), model.child("matrices")
    if len(shapes.doc) > MAX_MODEL_ARRAYS:
        raise model.error("shapes", f"lists {len(shapes.doc)} arrays; a model has at most {MAX_MODEL_ARRAYS}.")
    declared = {}
    for name in shapes.doc:
        dims = shapes.get(name, list)
        if not (1 <= len(dims) <= 2 and all(type(d) is int and 1 <= d <= MAX_MODEL_AXIS for d in dims)):
            raise shapes.error(name, f"is {dims!r}; a model array has 1 or 2 axes of 1 to {MAX_MODEL_AXIS}.")
        declared[name] = tuple(dims)
    check_total(archive, declared.values())
    state = v2.load(fields, archive)
    arrays = {
        name: archive.read_matrix(f"model {name}", members.get(name, str), shape) for name, shape in declared.items()
    }
    try:
        stack = Stack.from_plain(model.doc, arrays)
    except ModelError as e:
        raise archive.error(f"{JSON_MEMBER}: the field 'model' does not describe a model: {e}") from None
    return state.replace(model=stack)
