"""Files, as plain functions of states and arrays: session files (``qkvgui.io.session``), matrices
(``matrix_file``), model checkpoints (``checkpoint``), figures (``figures``) and the atomic writer they share.

This floor sits below the document: ``qkvgui.Session`` calls ``io.session.read_state`` / ``write_state`` and
``io.checkpoint``, and io only knows ``qkvgui.state`` and ``qkvgui.core`` (cli → ui → session → io → state → core).
"""

from __future__ import annotations

from typing import Any

from qkvgui.core import SessionError

__all__ = ["SessionError"]


def __getattr__(name: str) -> Any:
    # ``qkvgui.io.Session`` was the document with files in qkvgui 0.1; the one document is ``qkvgui.Session`` now.
    # Kept as an alias (looked up at run time, so io still imports nothing above it) for older scripts.
    if name == "Session":
        import importlib
        import warnings

        warnings.warn(
            "qkvgui.io.Session is qkvgui.Session now; import it from qkvgui", DeprecationWarning, stacklevel=2
        )
        return importlib.import_module("qkvgui.session").Session
    raise AttributeError(f"module 'qkvgui.io' has no attribute {name!r}")
