"""A whole model's small products run on one BLAS thread, and the limit never outlives the computations in it."""

import os
import threading

import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

from qkvgui.state import ONE_BLAS_THREAD_TOKENS, few_blas_threads  # noqa: E402


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_overlapping_threads_leave_blas_as_it_was():
    """In a fresh interpreter: libraries loaded by other tests (torch, transformers) may set BLAS threads too."""
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": f"{here.parent}{os.pathsep}{here}"}
    done = subprocess.run(
        [sys.executable, "-c", "import test_state_blas_threads as t; t.overlapping_threads()"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout or "skip" in done.stdout


def overlapping_threads() -> None:
    before = blas_threads()
    if not before:
        print("skip: no BLAS library threadpoolctl can see")
        return
    inside, a_in, b_in, release_a, release_b = (
        [],
        threading.Event(),
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )

    def a():
        with few_blas_threads(64):
            a_in.set()
            inside.append(blas_threads())
            release_a.wait(5)

    def b():
        a_in.wait(5)
        with few_blas_threads(64):
            b_in.set()
            release_b.wait(5)
            inside.append(blas_threads())

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start()
    tb.start()
    b_in.wait(5)
    release_a.set()  # the first in leaves first: the second is still inside, so the limit stays
    ta.join(5)
    assert blas_threads() == [1] * len(before)
    release_b.set()
    tb.join(5)
    assert all(threads == [1] * len(before) for threads in inside)
    assert blas_threads() == before  # lifted by the last to leave
    with few_blas_threads(ONE_BLAS_THREAD_TOKENS + 1):  # big products keep every thread
        assert blas_threads() == before
    print("ok")
