"""qkvgui.show() from a real IPython kernel, as a Jupyter user runs it: ``%gui qt`` lets the kernel's own loop drive
the window, the kernel answers the next cell at once, and a change made from code reaches the window's views."""

import os
import queue
import time
from pathlib import Path

import pytest

pytest.importorskip("ipykernel")
jupyter_client = pytest.importorskip("jupyter_client")

import qkvgui  # noqa: E402

ROOT = Path(qkvgui.__file__).resolve().parents[1]
GUI = "%gui qt"  # what a notebook user types first


def run(kc, code: str, timeout: float = 240) -> str:
    """Execute a cell in the kernel; its printed output (an error in the cell fails the test).

    ipykernel's Qt loop can miss a request that arrives just as it enters the loop (the zmq socket's notification
    is edge-triggered: "Run All" hangs in ipykernel issues #240, spyder #21299); a user's next keystroke wakes it.
    So while no reply has come, the test asks for the kernel's info every 2 s, as a front end's heartbeat would. A
    kernel blocked in an event loop of qkvgui's own would answer neither: the request would still time out."""
    msg_id = kc.execute(code)
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = kc.get_shell_msg(timeout=2)
        except queue.Empty:
            assert time.monotonic() < deadline, f"no reply to {code!r} in {timeout:.0f} s: the kernel is blocked"
            kc.kernel_info()
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    out: list[str] = []
    while True:  # the cell's output, up to the kernel going idle after it
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            out.append("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            break
    assert reply["content"]["status"] == "ok", f"{code!r} failed in the kernel:\n{''.join(out)}"
    return "".join(out)


@pytest.fixture
def kernel():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QT_API="pyside6")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    km, kc = jupyter_client.manager.start_new_kernel(startup_timeout=240, kernel_name="python3", env=env, cwd=str(ROOT))
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def wait_for(kc, code: str, expected: str, seconds: float = 120) -> str:
    """Ask the kernel until a cell prints `expected`, leaving it idle in between (its Qt loop runs then)."""
    deadline = time.monotonic() + seconds
    while True:
        got = run(kc, code).strip()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_show_in_a_real_kernel_does_not_block_and_follows_changes_from_code(kernel):
    kc = kernel
    # the kernel imports this checkout's qkvgui
    assert run(kc, "import qkvgui; print(qkvgui.__file__)").strip() == qkvgui.__file__
    run(kc, GUI)
    out = run(
        kc,
        "import numpy as np, qkvgui\n"
        "s = qkvgui.Session.from_preset('previous-token')\n"
        "w = qkvgui.show(s)\n"
        "print(type(w).__name__, w.isVisible(), w.session is s)",
    )
    assert out.strip() == "MainWindow True True"
    # the kernel is not blocked by the window (show ran no event loop of its own): the next cell runs and returns
    assert run(kc, "print(6 * 7)").strip() == "42"
    # the window's first computation arrives through the kernel's own event loop
    assert wait_for(kc, "print(w.result is not None)", "True") == "True"
    run(kc, "before = w.views['weights'].image_array().copy()\ns.set_matrix('W_Q', np.zeros_like(s.matrix('W_Q')))")
    # uniform over the visible keys (causal): the weights view redrawn, without processEvents in the cell
    check = (
        "n = len(s.tokens); uniform = np.tri(n) / np.tri(n).sum(1, keepdims=True)\n"
        "img = w.views['weights'].image_array()\n"
        "print(not np.array_equal(img, before) and np.allclose(img, uniform, atol=1e-6))"
    )
    assert wait_for(kc, check, "True") == "True"
    run(kc, "w.close()")
