"""The words beside the numbers: formulas with the current shapes, and each sum adding up to the number shown."""

import re

import numpy as np
import pytest

from qkvgui.core import multi_head_attention
from qkvgui.ui.explain import explain_output_row, explain_score, view_formula


def result(n=5, m=7, d_k=4, d_v=3, h=2, d_model=6, **kw):
    rng = np.random.default_rng(0)
    return multi_head_attention(
        rng.standard_normal((n, d_model)),
        rng.standard_normal((h, d_model, d_k)),
        rng.standard_normal((h, d_model, d_k)),
        rng.standard_normal((h, d_model, d_v)),
        rng.standard_normal((h * d_v, d_model)),
        x_kv=rng.standard_normal((m, d_model)),
        **kw,
    )


def test_formulas_write_out_the_current_shapes():
    r = result()
    assert view_formula("scores", r) == "scores = Q·Kᵀ: (5×4)·(4×7) = 5×7"
    assert view_formula("head_outputs", r) == "head output = weights·V: (5×7)·(7×3) = 5×3"
    assert view_formula("output", r) == "output = concat·W_O: (5×6)·(6×6) = 5×6"
    assert "2 × (5×3)" in view_formula("concat", r)


def test_score_explanation_adds_up_to_the_score():
    r = result(d_k=3)
    text = explain_score(r, 1, 2, 4, list("abcde"), list("ABCDEFG"))
    products = r.q[1, 2] * r.k[1, 4]
    assert f"{r.scores[1, 2, 4]:.4g}".replace("-", "−") in text
    assert f"{r.q[1, 2, 0]:.4g}".replace("-", "−") + "×" in text  # the first product is written out

    # the text's own arithmetic adds up: the products it writes out sum to the score it shows (4 digits each)
    def number(t: str) -> float:
        return float(t.replace("−", "-"))

    pairs = re.findall(r"([−\d.e+]+)×([−\d.e+]+)", text)
    assert len(pairs) == len(products)
    shown = number(re.search(r"&nbsp;&nbsp;= <b>([^<]+)</b>", text).group(1))
    assert sum(number(a) * number(b) for a, b in pairs) == pytest.approx(shown, rel=2e-3, abs=2e-3)
    assert "key visible" in text


def test_masked_and_dead_rows_are_explained():
    r = result(n=3, m=3, causal=True, key_padding_mask=np.array([True, False, False]))
    assert "hidden" in explain_score(r, 0, 1, 2, list("abc"), list("xyz"))
    assert "sees no key" in explain_score(r, 0, 0, 1, list("abc"), list("xyz"))
    assert "output is 0" in explain_output_row(r, 0, 0, list("abc"), list("xyz"))
    row = explain_output_row(r, 0, 2, list("abc"), list("xyz"))
    # rows counted from 1: the padded first key's v₁ takes no part
    assert "v<sub>2</sub>" in row and "v<sub>3</sub>" in row and "v<sub>1</sub>" not in row
