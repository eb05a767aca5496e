"""Files: sessions, matrices, figures, checkpoints.

``qkvgui.io.Session`` (exported as ``qkvgui.Session``) is the document of ``qkvgui.session`` with its files:
``Session.load(path)`` and ``session.save(path)``. The persistence lives here, one floor above the document,
so that the document itself stays free of file formats (the layering of DESIGN.md: io → session → core).
"""

from __future__ import annotations

from pathlib import Path

from qkvgui.io.session_file import read_state, write_session
from qkvgui.session import Session as _Document
from qkvgui.session import SessionError

__all__ = ["Session", "SessionError"]


class Session(_Document):
    """The attention document, with loading and saving (see docs/session-format.md for the format)."""

    @classmethod
    def load(cls, path: str | Path) -> Session:
        """Read a session file; anything wrong with it raises SessionError saying what and where."""
        return cls(read_state(path))

    def save(self, path: str | Path) -> Path:
        """Write the session atomically: the previous file survives any failure half-way."""
        return write_session(self, path)

    @classmethod
    def from_checkpoint(cls, path: str | Path, layer: int, text: str) -> Session:
        """Attention layer `layer` (0-based) of a local BERT or GPT-2 model folder (config.json,
        model.safetensors, tokenizer.json) reading `text`: X is what the layer reads, the weights and biases are
        the model's, the tokens the model's own. Needs the `models` extra (safetensors, tokenizers)."""
        from qkvgui.io.checkpoint import read_checkpoint_layer

        c = read_checkpoint_layer(path, layer, text)
        L = c.layer
        session = cls.from_arrays(
            L.x, L.w_q, L.w_k, L.w_v, L.w_o, b_q=L.b_q, b_k=L.b_k, b_v=L.b_v, b_o=L.b_o, tokens=c.tokens,
            causal=L.causal, title=c.title, description=c.description,
            x_residual=None if L.residual is L.x else L.residual,
        )
        session.set_extra("checkpoint", c.source)
        return session

