"""Figures rendered from a session without any window, checked as the reader of the file sees them: pixel size and
resolution, the text of titles, labels and subscripts, page sizes, themes, and a circuit view that is not blank."""

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PySide6.QtGui import QImage

from qkvgui import Session
from qkvgui.core.format import format_number
from qkvgui.io.figure_paint import Figure, FigureOptions, figure_bytes, parse_size, write_figure_file
from qkvgui.io.figure_views import FigureError, figure_data, rich_runs

SVG = "{http://www.w3.org/2000/svg}"


def texts(svg: bytes | str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return list(root.iter(f"{SVG}text"))


def strings(svg) -> list[str]:
    return ["".join(t.itertext()) for t in texts(svg)]


def pixels(image: QImage) -> np.ndarray:
    """[h, w, 4] uint8 B, G, R, A."""
    image = image.convertToFormat(QImage.Format.Format_ARGB32)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 4].reshape(image.height(), image.width(), 4).copy()


def real_size_session() -> Session:
    """30 tokens, 12 heads: the normal case, not the toy one."""
    rng = np.random.default_rng(3)
    n, d_model, h, d = 30, 48, 12, 4
    tokens = [f"tok{i}" for i in range(n)]
    return Session.from_arrays(
        rng.standard_normal((n, d_model)),
        rng.standard_normal((h, d_model, d)),
        rng.standard_normal((h, d_model, d)),
        rng.standard_normal((h, d_model, d)),
        rng.standard_normal((h * d, d_model)) / 4,
        tokens=tokens,
        causal=True,
    )


@pytest.fixture
def data(qapp):
    return figure_data(Session())


# ------------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1600x1000", (1600, 1000, "px")),
        ("16x10cm", (16, 10, "cm")),
        ("6.5 x 4 in", (6.5, 4, "in")),
        ("160x100mm", (16, 10, "cm")),
        ("800×600px", (800, 600, "px")),
    ],
)
def test_sizes_are_read_in_px_cm_and_inches(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "1600", "axb", "16x10ft", "-3x4"])
def test_unreadable_sizes_say_how_to_write_one(text):
    with pytest.raises(FigureError, match="WIDTHxHEIGHT"):
        parse_size(text)


def test_png_has_the_pixels_and_resolution_asked_for(data, tmp_path):
    path = write_figure_file(tmp_path / "w.png", Figure(data, "weights", FigureOptions(16, 10, "cm", dpi=300)))
    image = QImage(str(path))
    assert (image.width(), image.height()) == (round(16 / 2.54 * 300), round(10 / 2.54 * 300))  # 1890 × 1181
    assert image.dotsPerMeterX() == pytest.approx(300 / 0.0254, abs=1)
    path = write_figure_file(tmp_path / "p.png", Figure(data, "pipeline", FigureOptions(1600, 1000)))
    image = QImage(str(path))
    assert (image.width(), image.height()) == (1600, 1000)
    assert image.dotsPerMeterX() == pytest.approx(96 / 0.0254, abs=1)


def test_the_layout_follows_the_size_not_the_screen(data, tmp_path):
    """A bigger page at the same font size gets bigger cells (laid out again, not scaled up)."""
    small = QImage(str(write_figure_file(tmp_path / "s.png", Figure(data, "weights", FigureOptions(400, 300)))))
    large = QImage(str(write_figure_file(tmp_path / "l.png", Figure(data, "weights", FigureOptions(1200, 900)))))

    def dark_rows(image):  # rows of the image crossing the heatmap's first cell (weight 1.00, dark blue)
        a = pixels(image)
        return int(((a[..., 0] > 120) & (a[..., 2] < 60)).any(axis=1).sum())

    assert dark_rows(large) > 2.5 * dark_rows(small)


def test_pdf_page_is_the_size_asked_for_with_text_as_text(data, tmp_path):
    path = write_figure_file(tmp_path / "w.pdf", Figure(data, "pipeline", FigureOptions(16, 10, "cm")))
    boxes = re.findall(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", path.read_bytes())
    assert len(boxes) == 1
    x0, y0, x1, y1 = (float(v) for v in boxes[0])
    assert (x1 - x0, y1 - y0) == (pytest.approx(16 / 2.54 * 72, abs=1), pytest.approx(10 / 2.54 * 72, abs=1))
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler's pdftotext is not installed")
    text = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    for expected in ("attention weights", "softmax(masked)", "head outputs", "residual stream", "cat", "mat"):
        assert expected in text
    page = tmp_path / "page"
    subprocess.run(
        ["pdftoppm", "-png", "-r", "96", "-singlefile", str(path), str(page)], check=True, capture_output=True
    )
    image = QImage(str(page) + ".png")
    assert abs(image.width() - 16 / 2.54 * 96) <= 2
    assert len(np.unique(pixels(image).reshape(-1, 4), axis=0)) > 50  # heatmaps, not a blank page


# ------------------------------------------------------------------------------------------------ SVG text


def test_svg_titles_have_readable_names_and_real_subscripts(data):
    svg = figure_bytes(Figure(data, "pipeline", FigureOptions(1600, 1000)), "svg")
    found = strings(svg)
    joined = " | ".join(found)
    for name in (
        "input",
        "queries",
        "keys",
        "values",
        "attention scores",
        "scaled scores",
        "masked scores",
        "attention weights",
        "head outputs",
        "heads concatenated",
        "attention output",
        "residual stream",
    ):
        assert name in joined
    assert "head_outputs" not in joined and "W_Q" not in joined  # no code names, no literal underscores
    # "Q = X·W" then a smaller, lowered "Q": a real subscript, as text
    elements = texts(svg)
    k = next(i for i, t in enumerate(elements) if (t.text or "").endswith("Q = X·W"))
    base, sub = elements[k], elements[k + 1]
    assert sub.text == "Q"
    assert float(sub.get("font-size")) < 0.8 * float(base.get("font-size"))
    assert float(sub.get("y")) > float(base.get("y"))
    assert float(sub.get("x")) > float(base.get("x"))
    # Kᵀ as K with a raised T
    k = next(i for i, t in enumerate(elements) if (t.text or "").endswith("Q·K"))
    assert elements[k + 1].text == "T" and float(elements[k + 1].get("y")) < float(elements[k].get("y"))


def test_svg_has_every_token_label_when_they_fit(data):
    svg = figure_bytes(Figure(data, "weights", FigureOptions(800, 600)), "svg")
    found = strings(svg)
    for token in ("the", "cat", "sat", "on", "mat"):
        assert found.count(token) >= 2  # as a row and as a column label
    assert found.count("the") >= 4  # "the" is two tokens


def test_crowded_labels_are_thinned_and_tagged_with_their_position(qapp):
    d = figure_data(real_size_session())
    svg = figure_bytes(Figure(d, "weights", FigureOptions(300, 240, font_pt=9)), "svg")
    found = strings(svg)
    tagged = [s for s in found if re.fullmatch(r"\d+:tok\d+", s)]
    assert tagged, found
    # the tag is the token's position counted from 1, as the window counts (tok0 is the first token)
    assert all(s.split(":")[1] == f"tok{int(s.split(':')[0]) - 1}" for s in tagged)
    assert len(set(tagged)) < 2 * 30  # thinned
    # and on a big page every label fits, untagged
    svg = figure_bytes(Figure(d, "weights", FigureOptions(1400, 1400, font_pt=9)), "svg")
    found = strings(svg)
    assert all(f"tok{i}" in found for i in range(30))


def test_colour_bar_ticks_have_no_needless_decimals(data, qapp):
    assert [format_number(v) for v in (30.0, 15.0, 0.0, -15.0, 0.5, 1.25, 2.5)] == [
        "30",
        "15",
        "0",
        "−15",
        "0.5",
        "1.25",
        "2.5",
    ]
    s = Session.from_arrays(
        np.eye(3) * 29.0, np.eye(3)[None], np.eye(3)[None], np.eye(3)[None], np.eye(3), tokens=["a", "b", "c"]
    )
    svg = figure_bytes(Figure(figure_data(s), "x", FigureOptions(500, 400, numbers=False)), "svg")
    found = strings(svg)
    assert "30" in found and "−30" in found and "15" in found
    assert not any(re.fullmatch(r"−?\d+\.0+", t) for t in found)


def test_numbers_and_colour_bar_can_be_switched_off(data):
    on = strings(figure_bytes(Figure(data, "weights", FigureOptions(800, 600)), "svg"))
    off = strings(figure_bytes(Figure(data, "weights", FigureOptions(800, 600, numbers=False, colorbar=False)), "svg"))
    cells = [t for t in on if re.fullmatch(r"[01]\.\d\d", t)]
    assert len(cells) == 36  # every cell of the 6 × 6 weights
    assert not [t for t in off if re.fullmatch(r"[01]\.\d\d", t)]
    assert "0.5" in on and "0.5" not in off  # the colour bar's middle tick


def test_all_heads_are_small_multiples_with_captions(qapp):
    d = figure_data(real_size_session())
    found = strings(figure_bytes(Figure(d, "weights", FigureOptions(1600, 1000, heads="all")), "svg"))
    for h in range(1, 13):
        assert f"head {h}" in found
    assert any("12 heads" in t for t in found)


def test_svg_opens_in_librsvg_at_its_size(data, tmp_path):
    if shutil.which("rsvg-convert") is None:
        pytest.skip("librsvg's rsvg-convert is not installed")
    path = write_figure_file(tmp_path / "c.svg", Figure(data, "circuits", FigureOptions(1200, 800)))
    out = tmp_path / "c.png"
    subprocess.run(["rsvg-convert", str(path), "-o", str(out)], check=True, capture_output=True)
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1200, 800)
    assert len(np.unique(pixels(image).reshape(-1, 4), axis=0)) > 50


# ------------------------------------------------------------------------------------------------ content


@pytest.mark.parametrize("view", ["qk_circuit", "ov_circuit", "token_qk", "circuit_scores"])
def test_circuit_views_export_headless_and_are_not_blank(data, view, tmp_path):
    image = QImage(str(write_figure_file(tmp_path / f"{view}.png", Figure(data, view, FigureOptions(600, 500)))))
    a = pixels(image)[..., :3].astype(float)
    assert a.std() > 20  # a heatmap, not an empty plot
    saturated = (np.abs(a[..., 2] - a[..., 0]) > 60).mean()  # red or blue cells
    assert saturated > 0.05


def test_composition_needs_two_layers_and_is_drawn_with_them(qapp, tmp_path):
    with pytest.raises(FigureError, match="two or more layers"):
        Figure(figure_data(Session()), "composition")
    s = Session.from_preset("induction")
    found = strings(figure_bytes(Figure(figure_data(s), "composition", FigureOptions(600, 500)), "svg"))
    assert "Q: L2h1" in found and "L1h1" in found


def test_cell_colours_are_the_values(data, tmp_path):
    """The strongest weight is drawn darker than a zero one: the colours are the data's."""
    image = QImage(
        str(write_figure_file(tmp_path / "w.png", Figure(data, "weights", FigureOptions(600, 600, numbers=False))))
    )
    a = pixels(image)[..., :3].astype(int).sum(axis=-1)
    # find the heatmap: its darkest pixel is the 1.00 cell (row 0, col 0); zero cells are near white
    assert a.min() < 250
    assert (a > 700).mean() > 0.3  # mostly paper: zero weights and background


@pytest.mark.parametrize(
    "name, background", [("light", (255, 255, 255, 255)), ("dark", (34, 31, 30, 255)), ("transparent", (0, 0, 0, 0))]
)
def test_themes_set_the_page_whatever_the_window(data, tmp_path, name, background):
    image = QImage(
        str(write_figure_file(tmp_path / f"{name}.png", Figure(data, "weights", FigureOptions(400, 300, theme=name))))
    )
    corner = tuple(int(v) for v in pixels(image)[2, 2])  # B, G, R, A
    assert corner == background
    svg = figure_bytes(Figure(data, "weights", FigureOptions(400, 300, theme=name)), "svg").decode()
    ink = "#e8e8e8" if name == "dark" else "#1a1a1a"
    assert f'fill="{ink}"' in svg


def test_unknown_views_and_heads_are_clear_errors(data):
    with pytest.raises(FigureError, match="no view 'nope'.*pipeline"):
        Figure(data, "nope")
    with pytest.raises(FigureError, match="no head 5"):
        Figure(data, "weights", FigureOptions(heads=4))
    with pytest.raises(FigureError, match="font size"):
        Figure(data, "weights", FigureOptions(font_pt=0))
    with pytest.raises(FigureError, match="too large"):
        Figure(data, "weights", FigureOptions(100, 100, "in", dpi=2400))


def test_title_markup():
    assert rich_runs("W_{QK} = W_Q·W_K^T") == [
        ("W", 0),
        ("QK", -1),
        (" = W", 0),
        ("Q", -1),
        ("·W", 0),
        ("K", -1),
        ("T", 1),
    ]
    assert rich_runs("a\\_b") == [("a_b", 0)]


def test_rotary_views_export_and_refuse_without_rope(qapp, tmp_path):
    s = Session.from_preset("previous-token-rope")
    data = figure_data(s)
    for view in ("q_rope", "k_rope", "angles"):
        image = QImage(str(write_figure_file(tmp_path / f"{view}.png", Figure(data, view, FigureOptions(500, 400)))))
        assert pixels(image)[..., :3].astype(float).std() > 20  # a heatmap, not an empty page
    np.testing.assert_array_equal(data.array("k_rope", 0), s.compute().k_rope[0])
    assert "rope" in strings(figure_bytes(Figure(data, "scores", FigureOptions(500, 400)), "svg"))
    with pytest.raises(FigureError, match="rotary positions"):
        Figure(figure_data(Session()), "q_rope")
