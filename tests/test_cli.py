"""The command line, run as a user runs it: in a subprocess, headless, reading what it prints and writes."""

import os
import subprocess
import sys

import numpy as np
import pytest

from qkvgui import Session


def qkvgui(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)  # export must go offscreen by itself
    return subprocess.run([sys.executable, "-m", "qkvgui", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_presets_are_listed():
    out = qkvgui("presets")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert {"previous-token", "search-engine", "translation", "two-heads", "causal-gpt", "bilinear",
            "induction"} <= set(names)


def test_export_writes_every_format_headless(tmp_path):
    session = tmp_path / "s.qkv"
    Session.from_preset("translation").save(session)
    out = qkvgui("export", str(session), "--out", str(tmp_path / "figs"), "--format", "png,svg,pdf",
                 "--views", "weights,pipeline")
    assert out.returncode == 0, out.stderr
    written = out.stdout.split()
    assert len(written) == 6
    for path in written:
        data = open(path, "rb").read()
        assert len(data) > 1000
        assert data[:4] in (b"\x89PNG", b"%PDF") or b"<svg" in data[:2000]
    svg = open(tmp_path / "figs" / "weights.svg", encoding="utf-8").read()
    assert "sleeps" in svg and "weights = softmax(masked)" in svg  # text stays text


def test_export_of_a_preset(tmp_path):
    out = qkvgui("export", "--preset", "induction", "--out", str(tmp_path), "--views", "weights", "--head", "1")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "weights.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["export", "missing.qkv", "--out", "x"], "missing.qkv"),
        (["export", "--preset", "nope", "--out", "x"], "no preset 'nope'"),
        (["export", "--preset", "bilinear", "--out", "x", "--format", "gif"], "unknown format gif"),
        (["export", "--preset", "bilinear", "--out", "x", "--views", "everything"], "unknown view everything"),
        (["export", "--preset", "bilinear"], "--out"),
        (["--preset", "nope"], "no preset 'nope'"),
        (["presets", "extra"], "takes no arguments"),
        (["not-a-session.qkv"], "not-a-session.qkv"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, words):
    out = qkvgui(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert words in out.stderr


def test_a_corrupt_session_is_refused_on_the_command_line(tmp_path):
    bad = tmp_path / "bad.qkv"
    bad.write_bytes(b"\x00" * 100)
    out = qkvgui("export", str(bad), "--out", str(tmp_path))
    assert out.returncode == 2 and "bad.qkv" in out.stderr and "Traceback" not in out.stderr


def test_python_m_and_the_session_api_agree(tmp_path):
    s = Session.from_preset("previous-token")
    path = s.save(tmp_path / "p.qkv")
    again = Session.load(path)
    np.testing.assert_array_equal(again.compute().weights, s.compute().weights)
    assert again.tokens == s.tokens
