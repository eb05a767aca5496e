"""Large layers on every core, with the same numbers as on one: one BLAS thread per product, threads over tasks.

A BLAS product may round differently with a different number of BLAS threads (OpenBLAS splits the rows between its
threads, and a row at a split can be computed by another kernel). So the products of a large layer always run on
one BLAS thread (``one_blas_thread``; deterministic for a given shape, on any machine), and the cores are used by
running independent products (one head's, one projection's) and independent row blocks of element-wise steps on
a few threads (``run_tasks``). Which thread runs a task never changes a bit.

The BLAS limit is process-wide (threadpoolctl sets OpenBLAS's thread count): the first thread to enter sets it,
the last to leave restores it. Without threadpoolctl the limit cannot be set, and tasks run one after another
with BLAS's own threads, as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["MAX_THREADS", "blas_limited", "fresh_array", "one_blas_thread", "run_tasks", "task_threads"]

#: at most this many threads share a layer's work (each holds one n_q × n_k buffer of its own)
MAX_THREADS = 4
_state: dict[str, Any] = {"users": 0, "limiter": None, "executor": None}
_lock = threading.Lock()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries (found once: ~1 ms), or None without threadpoolctl."""
    if "controller" not in _state:
        try:
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

            _state["controller"] = ThreadpoolController()
        except Exception:  # noqa: BLE001 - no threadpoolctl, or a BLAS it cannot drive
            _state["controller"] = None
    return _state["controller"]


def blas_limited() -> bool:
    """True when BLAS can be held to one thread (threadpoolctl drives the loaded BLAS library)."""
    with _lock:
        return _controller() is not None


@contextlib.contextmanager
def one_blas_thread(needed: bool = True) -> Iterator[bool]:
    """A context in which NumPy's BLAS runs every product on one thread (process-wide, reference-counted: threads
    overlapping in it never leave BLAS limited afterwards). Yields whether the limit holds. needed=False: a no-op
    (for products too small to be split by BLAS anyway)."""
    if not needed:
        yield False
        return
    with _lock:
        if _state["users"] == 0:
            controller = _controller()
            try:
                _state["limiter"] = None if controller is None else controller.limit(limits=1, user_api="blas")
            except Exception:  # noqa: BLE001 - a BLAS threadpoolctl cannot drive: its own threads
                _state["limiter"] = None
        _state["users"] += 1
        held = _state["limiter"] is not None
    try:
        yield held
    finally:
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0 and _state["limiter"] is not None:
                _state["limiter"].restore_original_limits()
                _state["limiter"] = None


def task_threads(tasks: int, held: bool) -> int:
    """How many threads should share this many independent tasks: one unless BLAS is held to one thread (else
    the products would contend for BLAS's own threads), at most the cores and MAX_THREADS."""
    return max(1, min(tasks, _cores(), MAX_THREADS)) if held else 1


def _executor() -> ThreadPoolExecutor:
    with _lock:
        if _state["executor"] is None:
            _state["executor"] = ThreadPoolExecutor(MAX_THREADS - 1, thread_name_prefix="qkvgui-core")
        executor: ThreadPoolExecutor = _state["executor"]
        return executor


def run_tasks(tasks: Sequence[Callable[[dict[str, Any]], None]], threads: int) -> list[dict[str, Any]]:
    """Run the tasks on `threads` threads (this one among them), taken in order; re-raise the first error (the
    others then stop taking tasks). Each task gets its thread's own dict, for buffers reused across its tasks;
    the dicts are returned (the calling thread's first)."""
    mine: dict[str, Any] = {}
    if threads <= 1 or len(tasks) <= 1:
        for task in tasks:
            task(mine)
        return [mine]
    queue = iter(tasks)
    lock = threading.Lock()
    errors: list[BaseException] = []
    # numpy's error state is per thread: the helpers get the caller's
    err = np.geterr()

    def work(local: dict[str, Any]) -> dict[str, Any]:
        with np.errstate(**err):
            while True:
                with lock:
                    task = None if errors else next(queue, None)
                if task is None:
                    return local
                try:
                    task(local)
                except BaseException as e:  # noqa: BLE001 - handed to the caller below
                    with lock:
                        errors.append(e)
                    return local

    helpers: list[Future[dict[str, Any]]] = [_executor().submit(work, {}) for _ in range(threads - 1)]
    work(mine)
    locals_ = [mine]
    for f in helpers:
        if f.cancel():  # still waiting for a free thread (another layer's tasks hold it): nothing left to do
            continue
        locals_.append(f.result())
    if errors:
        raise errors[0]
    return locals_


#: arrays of at least this many bytes are made of small pages (fresh_array)
SMALL_PAGES_BYTES = 32 * 2**20
_MADV_NOHUGEPAGE = 15  # Linux
_madvise: list[Any] = []


def fresh_array(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """np.empty(shape, dtype), asking Linux for small (4 KB) pages when it is large.

    NumPy asks for huge pages for every large array; a fresh huge page can cost ~0.3 s per 128 MB on a virtual
    machine (the host backs guest memory that was never touched before), while small pages come from memory
    freed moments ago. Only a hint: elsewhere, or if the call fails, this is np.empty.
    """
    a = np.empty(shape, dtype=dtype)
    if a.nbytes < SMALL_PAGES_BYTES or not sys.platform.startswith("linux"):
        return a
    try:
        if not _madvise:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            _madvise.append(libc.madvise)
        page = 4096
        start = -(-a.ctypes.data // page) * page
        end = (a.ctypes.data + a.nbytes) // page * page
        if end > start:
            _madvise[0](start, end - start, _MADV_NOHUGEPAGE)
    except Exception:  # noqa: BLE001 - a hint only
        pass
    return a
