"""Cooperative Cancel for long work off the GUI thread: a token the window sets and the work checks.

Reading a session or a matrix file, a forward pass through a model: the worker calls ``token.check()`` (or
``check(token)``, which accepts None) between members, chunks or layers, and stops with ``Cancelled`` once the user
pressed Cancel; the window keeps what it had. No Qt here: ``ui.jobs.Progress`` is a ``CancelToken`` that also shows
how far the work is (``token.report(done, total)``).
"""

from __future__ import annotations

import threading

from .errors import Cancelled

__all__ = ["CancelToken", "Cancelled", "check", "report"]


class CancelToken:
    """A thread-safe flag set by one thread (Cancel) and checked by the worker; ``report`` is a no-op here."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise ``Cancelled`` once cancelled."""
        if self._event.is_set():
            raise Cancelled()

    def report(self, done: int, total: int, text: str | None = None) -> None:
        """How far the work is (``done`` of ``total`` units; 0 total: unknown). Subclasses show it."""


def check(token: CancelToken | None) -> None:
    """``token.check()``, for functions whose token is optional."""
    if token is not None:
        token.check()


def report(token: CancelToken | None, done: int, total: int, text: str | None = None) -> None:
    """``token.check()`` then ``token.report(...)``, for functions whose token is optional."""
    if token is not None:
        token.check()
        token.report(done, total, text)
