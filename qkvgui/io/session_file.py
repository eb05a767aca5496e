"""Kept for code written against qkvgui 0.1: session files now live in the package ``qkvgui.io.session``."""

from qkvgui.core.checks import MAX_JSON_BYTES, MAX_MATRIX_BYTES, MAX_MEMBER_BYTES, MAX_TOTAL_BYTES
from qkvgui.io.session import FORMAT, LOADERS, SUFFIX, VERSION, read_state, write_session, write_state
from qkvgui.io.session.archive import JSON_MEMBER

__all__ = [
    "FORMAT",
    "JSON_MEMBER",
    "LOADERS",
    "MAX_JSON_BYTES",
    "MAX_MATRIX_BYTES",
    "MAX_MEMBER_BYTES",
    "MAX_TOTAL_BYTES",
    "SUFFIX",
    "VERSION",
    "read_state",
    "write_session",
    "write_state",
]
