"""The computation as an animation: one step of attention at a time, with a narration that uses the current numbers.

`STEPS` walks X → Q, K, V → scores → scaled → masked → weights → head outputs → concat → output → residual; each
step names the views it reads (highlighted in blue) and the views it makes (orange), and `narrate` writes a
paragraph about it from the session's own numbers. Frames come from the figure renderer (qkvgui.io.figure_paint),
so an animation looks exactly like the exported figures; imageio writes them as GIF (Pillow) or MP4 (the ffmpeg
binary of imageio-ffmpeg). Each step is a group of two frames: its inputs highlighted with the new result still
hidden, then the result revealed, both with the narration as a caption.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PySide6.QtGui import QImage

from qkvgui.io.atomic import atomic_write
from qkvgui.io.figure_paint import Figure, FigureOptions, Highlight, figure_image
from qkvgui.io.figure_views import PIPELINE_STEPS, FigureData, FigureError, figure_data, head_step

__all__ = ["ANIMATION_FORMATS", "STEPS", "Step", "animation_frames", "narrate", "step_figure", "write_animation"]

ANIMATION_FORMATS = ("gif", "mp4")
#: seconds each frame of a step's group is shown: the inputs alone, then the result with its narration
GROUP_SECONDS = (1.2, 3.8)
#: MP4 frames per second (each frame of a group is repeated to last its seconds)
MP4_FPS = 5
#: the default frame size: 720p, a multiple of 16 as video encoders want
DEFAULT_FRAME = (1280, 720)


class AnimationCancelled(Exception):
    """The user cancelled writing an animation; nothing was written."""


@dataclass(frozen=True)
class Step:
    """One step: a name, what it shows, the views it reads and the views it makes."""

    name: str
    title: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


STEPS: tuple[Step, ...] = (
    Step("x", "the tokens as vectors", (), ("x",)),
    Step("qkv", "queries, keys and values", ("x",), ("q", "k", "v")),
    Step("scores", "scores", ("q", "k"), ("scores",)),
    Step("scaled", "scaling", ("scores",), ("scaled",)),
    Step("masked", "the mask", ("scaled",), ("masked",)),
    Step("weights", "softmax", ("masked",), ("weights",)),
    Step("head_outputs", "the weighted sum of values", ("weights", "v"), ("head_outputs",)),
    Step("concat", "concatenating the heads", ("head_outputs",), ("concat",)),
    Step("output", "the output projection", ("concat",), ("output",)),
    Step("residual", "the residual stream", ("x", "output"), ("residual",)),
)


def _n(v: float) -> str:
    """A number in a sentence: two decimals, a real minus sign, −∞ for hidden."""
    if math.isinf(v):
        return "−∞"
    text = f"{v:.2f}"
    if text.strip("-0.") == "":
        text = text.lstrip("-")
    return text.replace("-", "−")


def _vec(row: np.ndarray, limit: int = 4) -> str:
    parts = [_n(float(v)) for v in row[:limit]]
    return "[" + ", ".join(parts) + (", …]" if len(row) > limit else "]")


_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _sub(i: int) -> str:
    """An index as subscript digits: v₄."""
    return str(i).translate(_SUB)


def _tok(tokens: list[str], i: int) -> str:
    return f"“{tokens[i]}” ({i + 1})"  # positions counted from 1, as the window counts them


def narrate(step: Step, d: FigureData) -> str:
    """One paragraph about the step, with this session's numbers (the selected head; the last query token)."""
    r = d.result
    h = d.head
    tokens, keys = d.tokens, d.key_tokens
    n, m = len(tokens), len(keys)
    i = n - 1  # the last token sees the most keys under a causal mask: the most to say
    name = _tok(tokens, i)
    d_model, d_k, d_v = d.w_q.shape[1], d.w_q.shape[2], d.w_v.shape[2]
    head = f"head {h + 1}" + (f" of {d.n_heads}" if d.n_heads > 1 else "")
    if step.name == "x":
        sentence = " ".join(tokens[:12]) + (" …" if n > 12 else "")
        return (
            f"Each of the {n} tokens of “{sentence}” is a row of X, a vector of d_model = {d_model} numbers. "
            f"Token {name} is {_vec(d.x[i])}. Everything that follows is computed from these rows."
        )
    kv = r.kv_head(h) if hasattr(r, "kv_head") else h
    if step.name == "qkv":
        return (
            f"Every row of X is multiplied by the weights of {head}: W_Q and W_K ({d_model} × {d_k}) and W_V "
            f"({d_model} × {d_v}). Each token gets a query (what it looks for), a key (what it offers) and a "
            f"value (what it hands over). For {name}: q = {_vec(r.q[h, i])}, k = {_vec(r.k[kv, min(i, m - 1)])}, "
            f"v = {_vec(r.v[kv, min(i, m - 1)])}."
        )
    visible = np.asarray(r.visible) if r.visible is not None else np.ones((n, m), bool)
    row_visible = visible[i] if visible.ndim == 2 else np.ones(m, bool)
    if step.name == "scores":
        s = head_step(r, "scores", h)[i]
        hi, lo = int(np.argmax(s)), int(np.argmin(s))
        return (
            f"Score (i, j) is the dot product qᵢ·kⱼ: how well token i's query matches token j's key. Row "
            f"{name} ranges from {_n(s[lo])} with {_tok(keys, lo)} to {_n(s[hi])} with {_tok(keys, hi)}. "
            f"A {n} × {m} table per head."
        )
    if step.name == "scaled":
        s = head_step(r, "scores", h)[i]
        hi = int(np.argmax(s))
        why = f"1/√d_k = 1/√{d_k} = {r.scale:.3f}" if math.isclose(r.scale, 1 / math.sqrt(d_k)) else f"{r.scale:.3g}"
        return (
            f"The scores are multiplied by {why}, so that they do not grow with d_k and softmax does not "
            f"saturate: {name}'s largest score {_n(s[hi])} becomes {_n(head_step(r, 'scaled', h)[i, hi])}."
        )
    if step.name == "masked":
        hidden = int((~visible).sum()) if visible.ndim == 2 else 0
        if hidden == 0:
            return (
                "Nothing is hidden here: every token may look at every key, so the masked scores equal the scaled ones."
            )
        why = "a token may not look at later tokens (causal)" if d.causal else "padding keys are hidden"
        return (
            f"The mask hides keys: {why}. Their scores become −∞ (grey), {hidden} of {n * m} cells, so softmax "
            f"will give them weight 0. {name} sees {int(row_visible.sum())} of {m} keys."
        )
    if step.name == "weights":
        w = head_step(r, "weights", h)[i]
        order = [int(j) for j in np.argsort(-w, kind="stable")[:3] if w[j] > 0]
        parts = ", ".join(f"{_n(w[j])} to {_tok(keys, j)}" for j in order)
        return (
            f"Softmax turns each row into weights that are positive and sum to 1 (exp of each score over the "
            f"row's total). {name} gives {parts}"
            + (" and the rest to the others." if m > 3 else ".")
            + " Hidden keys get exactly 0."
        )
    if step.name == "head_outputs":
        w = head_step(r, "weights", h)[i]
        order = [int(j) for j in np.argsort(-w, kind="stable")[:2] if w[j] > 0]
        terms = " + ".join(f"{_n(w[j])} × v{_sub(j)}" for j in order)
        return (
            f"Each token's head output is the weighted sum of the value rows, with its row of weights: for "
            f"{name}, {terms}{' + …' if m > 2 else ''} = {_vec(r.head_outputs[h, i])}. The head has moved "
            "information from the tokens it attends to into this token."
        )
    if step.name == "concat":
        return (
            f"The outputs of the {d.n_heads} head{'s' if d.n_heads > 1 else ''} ({d_v} numbers each) are put "
            f"side by side, head 1 first: {d.n_heads * d_v} numbers per token. For {name}: "
            f"{_vec(r.concat[i], 6)}."
        )
    if step.name == "output":
        return (
            f"W_O ({d.n_heads * d_v} × {d_model}) maps the concatenated heads back to d_model = {d_model} "
            f"numbers per token, mixing what the heads found. For {name}: {_vec(r.output[i])}."
        )
    if step.name == "residual":
        delta = r.residual[i] - d.x[i]
        k = int(np.argmax(np.abs(delta)))
        feature = d.features[k] if k < len(d.features) else f"d{k}"
        sign = "+" if delta[k] >= 0 else "−"
        return (
            f"The output is added to X: the residual stream carries X forward and attention writes into it. "
            f"{name}'s biggest change is {sign}{_n(abs(delta[k]))} in {feature}. The next layer reads this."
        )
    raise FigureError(f"Unknown step {step.name!r}.")


def step_figure(data: FigureData, index: int, options: FigureOptions | None = None, *, reveal: bool = True) -> Figure:
    """The pipeline figure at step `index`: earlier steps shown, later ones hidden, the step's inputs framed in
    blue and its outputs in orange (hidden too when reveal is False), with the step's narration as caption."""
    step = STEPS[index]
    done = {v for s in STEPS[: index + (1 if reveal else 0)] for v in s.outputs}
    hidden = tuple(v for v in PIPELINE_STEPS if v not in done)
    caption = f"Step {index + 1} of {len(STEPS)}: {step.title}. {narrate(step, data)}"
    highlight = Highlight(inputs=step.inputs, current=step.outputs if reveal else (), hidden=hidden)
    return Figure(data, "pipeline", options, caption=caption, highlight=highlight)


def _rgb(image: QImage) -> np.ndarray:
    """[h, w, 3] uint8 of an image."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(rgb.constBits(), np.uint8).reshape(rgb.height(), rgb.bytesPerLine())
    return rows[:, : rgb.width() * 3].reshape(rgb.height(), rgb.width(), 3).copy()


def animation_frames(
    data: FigureData, options: FigureOptions | None = None, progress: Callable[[int, int], bool] | None = None
) -> list[tuple[np.ndarray, float]]:
    """Every frame as ([h, w, 3] uint8, seconds): two per step. progress(done, total) returning False cancels."""
    options = options or FigureOptions(*DEFAULT_FRAME)
    if options.theme == "transparent":  # video has no alpha: transparent means a light page
        options = replace(options, theme="light")
    frames: list[tuple[np.ndarray, float]] = []
    total = 2 * len(STEPS)
    for k in range(len(STEPS)):
        for reveal, seconds in zip((False, True), GROUP_SECONDS, strict=True):
            if progress is not None and progress(len(frames), total) is False:
                raise AnimationCancelled("Writing the animation was cancelled.")
            image = figure_image(step_figure(data, k, options, reveal=reveal))
            frames.append((_rgb(image), seconds))
    if progress is not None:
        progress(total, total)
    return frames


def animation_bytes(frames: list[tuple[np.ndarray, float]], fmt: str) -> bytes:
    """The frames encoded as an animated GIF (one frame per image, each with its duration) or an MP4 (H.264)."""
    import imageio.v3 as iio

    if fmt == "gif":
        return iio.imwrite(
            "<bytes>",
            np.stack([f for f, _ in frames]),
            extension=".gif",
            duration=[round(s * 1000) for _, s in frames],
            loop=0,
        )
    if fmt == "mp4":
        video = [f for f, s in frames for _ in range(max(1, round(s * MP4_FPS)))]
        h, w = video[0].shape[:2]
        if h % 2 or w % 2:  # yuv420p needs even sides: pad with the last row/column rather than rescale
            video = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in video]
        return iio.imwrite(
            "<bytes>",
            np.stack(video),
            extension=".mp4",
            plugin="FFMPEG",
            fps=MP4_FPS,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,
            quality=8,
            ffmpeg_log_level="error",
        )
    raise FigureError(f"Cannot write an animation as {fmt!r}: use gif or mp4.")


def animation_format(path: str | Path, fmt: str | None = None) -> str:
    key = str(fmt if fmt is not None else Path(path).suffix).lower().lstrip(".")
    if key not in ANIMATION_FORMATS:
        raise FigureError(f"Cannot write an animation as {Path(path).name!r}: use a .gif or .mp4 file.")
    return key


def write_animation(
    session,
    path: str | Path,
    fmt: str | None = None,
    options: FigureOptions | None = None,
    progress: Callable[[int, int], bool] | None = None,
    *,
    data: FigureData | None = None,
) -> Path:
    """Write the step-by-step animation of a session's selected layer and head as GIF or MP4, atomically."""
    path = Path(path)
    kind = animation_format(path, fmt)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write {path.name}: the folder {path.parent} does not exist.")
    data = data if data is not None else figure_data(session)
    frames = animation_frames(data, options, progress)
    blob = animation_bytes(frames, kind)
    return atomic_write(path, lambda f: f.write(blob))
