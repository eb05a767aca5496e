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
    return subprocess.run(
        [sys.executable, "-m", "qkvgui", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_presets_are_listed():
    out = qkvgui("presets")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert {
        "previous-token",
        "search-engine",
        "translation",
        "two-heads",
        "causal-gpt",
        "bilinear",
        "induction",
    } <= set(names)


def test_export_writes_every_format_headless(tmp_path):
    session = tmp_path / "s.qkv"
    Session.from_preset("translation").save(session)
    out = qkvgui(
        "export",
        str(session),
        "--out",
        str(tmp_path / "figs"),
        "--format",
        "png,svg,pdf",
        "--views",
        "weights,pipeline",
    )
    assert out.returncode == 0, out.stderr
    written = out.stdout.split()
    assert len(written) == 6
    for path in written:
        data = open(path, "rb").read()
        assert len(data) > 1000
        assert data[:4] in (b"\x89PNG", b"%PDF") or b"<svg" in data[:2000]
    svg = open(tmp_path / "figs" / "weights.svg", encoding="utf-8").read()
    assert "sleeps" in svg and "softmax(masked)" in svg and "attention weights" in svg  # text stays text
    assert out.stderr == ""  # nothing on stderr when all goes well


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
        (["export", "--preset", "bilinear", "--out", "x", "--size", "16xfoo"], "WIDTHxHEIGHT"),
        (["export", "--preset", "bilinear", "--out", "x", "--size", "0x10cm"], "positive size"),
        (["export", "--preset", "bilinear", "--out", "x", "--dpi", "0"], "between 10 and 2400 dpi"),
        (["export", "--preset", "bilinear", "--out", "x", "--font-size", "200"], "font size"),
        (["export", "--preset", "bilinear", "--out", "x", "--numbers", "maybe"], "--numbers"),
        (["export", "--preset", "bilinear", "--out", "x", "--theme", "pink"], "--theme"),
        (["export", "--preset", "bilinear", "--out", "x", "--heads", "9"], "--heads 9"),
        (["export", "--preset", "bilinear", "--out", "x", "--animate", "avi"], "unknown animation format avi"),
        (["export", "--preset", "bilinear", "--out", "x", "--views", "composition"], "two or more layers"),
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


def test_export_lays_the_figure_out_for_the_size_asked_for(tmp_path):
    from PySide6.QtGui import QImage

    out = qkvgui(
        "export",
        "--preset",
        "two-heads",
        "--out",
        str(tmp_path),
        "--views",
        "pipeline,qk_circuit",
        "--format",
        "png,svg,pdf",
        "--size",
        "16x10cm",
        "--dpi",
        "300",
        "--font-size",
        "8",
        "--numbers",
        "off",
        "--theme",
        "dark",
        "--heads",
        "all",
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert len(out.stdout.split()) == 6
    image = QImage(str(tmp_path / "qk_circuit.png"))
    assert (image.width(), image.height()) == (1890, 1181)  # 16 × 10 cm at 300 dpi
    assert round(image.dotsPerMeterX() * 0.0254) == 300
    assert image.pixelColor(1, 1).red() < 60  # the dark theme, whatever the desktop's
    svg = (tmp_path / "qk_circuit.svg").read_text(encoding="utf-8")
    assert 'width="16cm"' in svg and "head 2" in svg  # the printed size; all heads as small multiples
    import re

    box = re.search(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", (tmp_path / "pipeline.pdf").read_bytes())
    assert abs(float(box[1]) - 16 / 2.54 * 72) <= 1 and abs(float(box[2]) - 10 / 2.54 * 72) <= 1  # in points


def test_export_writes_the_animation(tmp_path):
    pytest.importorskip("imageio")
    import imageio.v3 as iio

    out = qkvgui(
        "export",
        "--preset",
        "previous-token",
        "--out",
        str(tmp_path),
        "--views",
        "weights",
        "--size",
        "640x360",
        "--animate",
        "gif,mp4",
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.split()[-2:] == [str(tmp_path / "steps.gif"), str(tmp_path / "steps.mp4")]
    frames = iio.imread(tmp_path / "steps.gif", index=None)
    assert frames.shape == (20, 360, 640, 3)  # 10 steps, two frames each
    video = iio.imread(tmp_path / "steps.mp4", plugin="FFMPEG", index=None)
    assert video.shape[1:] == (360, 640, 3) and video.shape[0] >= 20


def test_version_and_subcommands():
    import qkvgui as package

    out = qkvgui("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"qkvgui {package.__version__}"
    helped = qkvgui("--help")
    assert helped.returncode == 0 and all(c in helped.stdout for c in ("open", "presets", "export"))
    refused = qkvgui("open", "--preset", "nope")  # the default command, named
    assert refused.returncode == 2 and "no preset 'nope'" in refused.stderr
