"""How numbers and shapes are written: the one formatter behind the editors, the heatmap cells, the explanations
and the figures (qkvgui.core.format)."""

import math

import numpy as np

from qkvgui.core.format import MINUS, format_number, format_shape


def test_short_style_is_what_an_editor_cell_shows():
    assert format_number(0.123456) == "0.1235"
    assert format_number(-1.5) == f"{MINUS}1.5"
    assert format_number(123456.0) == "1.235e+05"
    assert format_number(-0.0) == "0"  # a reader sees zero, not "−0"
    assert format_number(np.inf) == "∞"
    assert format_number(-np.inf) == f"{MINUS}∞"
    assert format_number(math.nan) == "nan"
    assert "-" not in format_number(-2.5e-7)  # a real minus sign in the exponent's number too


def test_short_style_reads_back_to_four_significant_digits():
    rng = np.random.default_rng(0)
    for v in rng.standard_normal(200) * 10.0 ** rng.integers(-6, 7, 200):
        back = float(format_number(float(v)).replace(MINUS, "-"))
        assert abs(back - v) <= 5e-4 * abs(v)


def test_cell_style_keeps_a_cell_narrow():
    assert format_number(99.994, "cell") == "99.99"
    assert format_number(99.996, "cell") == "100"
    assert format_number(123456.0, "cell") == "1e+05"
    assert format_number(np.inf, "cell") == "+∞"
    assert format_number(-0.004, "cell") == "0.00"


def test_shapes():
    assert format_shape((4, 12)) == "4 × 12"
    assert format_shape(()) == "a scalar"
