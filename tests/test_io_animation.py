"""The computation as an animation: the steps in order, a narration with this session's numbers, and GIF and MP4
files with the frames and frame size a viewer gets."""

import numpy as np
import pytest

from qkvgui import Session
from qkvgui.io.animation import (
    GROUP_SECONDS,
    MP4_FPS,
    STEPS,
    AnimationCancelled,
    narrate,
    step_figure,
    write_animation,
)
from qkvgui.io.figure_paint import FigureOptions, figure_bytes
from qkvgui.io.figure_views import FigureError, figure_data

iio = pytest.importorskip("imageio.v3")

SMALL = FigureOptions(640, 360, font_pt=7)


def test_the_steps_walk_the_pipeline_in_order():
    made = [v for s in STEPS for v in s.outputs]
    assert made == [
        "x",
        "q",
        "k",
        "v",
        "scores",
        "scaled",
        "masked",
        "weights",
        "head_outputs",
        "concat",
        "output",
        "residual",
    ]
    for k, step in enumerate(STEPS):  # every input was made by an earlier step
        earlier = {v for s in STEPS[:k] for v in s.outputs}
        assert set(step.inputs) <= earlier, step.name


def test_narration_uses_the_current_numbers(qapp):
    s = Session()
    d = figure_data(s)
    r = d.result
    w = r.weights[d.head, -1]  # the narrated token is the last one
    j = int(np.argmax(w))
    text = narrate(STEPS[5], d)
    assert f"{w[j]:.2f} to “{d.key_tokens[j]}” ({j + 1})" in text  # positions counted from 1
    text = narrate(STEPS[3], d)
    assert f"{r.scale:.3f}" in text and f"{r.scaled[d.head, -1].max():.2f}".replace("-", "−") in text
    # an edit changes the story
    s.set_head(1)
    assert narrate(STEPS[5], figure_data(s)) != narrate(STEPS[5], d)


def test_a_step_frames_its_inputs_and_hides_what_comes_later(qapp):
    d = figure_data(Session())
    svg = figure_bytes(step_figure(d, 2, SMALL), "svg").decode()  # scores, from Q and K
    assert "Step 3 of 10" in svg
    assert "#1f77b4" in svg and "#e67e22" in svg  # blue frames (inputs), orange frame (the step)
    assert svg.count(">?</text>") == 7  # scaled … residual not reached yet
    hidden = figure_bytes(step_figure(d, 2, SMALL, reveal=False), "svg").decode()
    assert hidden.count(">?</text>") == 8  # the scores themselves are still to come


def test_gif_has_two_frames_per_step_at_the_frame_size(qapp, tmp_path):
    path = write_animation(Session(), tmp_path / "steps.gif", options=SMALL)
    frames = iio.imread(path, index=None)
    assert frames.shape[0] == 2 * len(STEPS)
    assert frames.shape[1:3] == (360, 640)
    assert frames[0].std() > 5 and not np.array_equal(frames[0], frames[-1])
    durations = [iio.immeta(path, index=k)["duration"] for k in (0, 1)]
    assert durations == [GROUP_SECONDS[0] * 1000, GROUP_SECONDS[1] * 1000]


def test_mp4_has_each_step_for_its_seconds_at_the_frame_size(qapp, tmp_path):
    path = write_animation(Session(), tmp_path / "steps.mp4", options=SMALL)
    frames = iio.imread(path, plugin="FFMPEG", index=None)
    per_step = sum(round(s * MP4_FPS) for s in GROUP_SECONDS)
    assert frames.shape == (per_step * len(STEPS), 360, 640, 3)


def test_cancelling_writes_nothing(qapp, tmp_path):
    path = tmp_path / "steps.gif"
    path.write_bytes(b"yesterday's")
    with pytest.raises(AnimationCancelled):
        write_animation(Session(), path, options=SMALL, progress=lambda done, total: done < 3)
    assert path.read_bytes() == b"yesterday's"
    assert [p.name for p in tmp_path.iterdir()] == ["steps.gif"]


def test_unknown_animation_format_is_refused(qapp, tmp_path):
    with pytest.raises(FigureError, match="gif or .mp4"):
        write_animation(Session(), tmp_path / "steps.avi")
