"""The circuits panel: what it says about composition is what is computed, and a circuit that overflowed is
reported in words instead of crashing the panel."""

from __future__ import annotations

import re

import numpy as np

from qkvgui import Session
from qkvgui.core import composition_scores
from qkvgui.ui.circuits_panel import CircuitsPanel


def _norm(m: np.ndarray) -> float:
    return float(np.linalg.norm(m))


def test_the_composition_tooltip_states_the_formulas_that_are_computed(qtbot):
    panel = CircuitsPanel()
    qtbot.addWidget(panel)
    tip = panel.composition.toolTip()
    formulas = dict(re.findall(r"^([QKV]): (.+)$", tip, re.M))
    assert formulas == {
        "Q": "‖W_OV⁰·W_QK¹‖_F / (‖W_OV⁰‖_F ‖W_QK¹‖_F)",
        "K": "‖W_QK¹·W_OV⁰ᵀ‖_F / (‖W_QK¹‖_F ‖W_OV⁰‖_F)",
        "V": "‖W_OV⁰·W_OV¹‖_F / (‖W_OV⁰‖_F ‖W_OV¹‖_F)",
    }
    assert "W_QKᵀ·W_OV" not in tip  # the column-vector form matches neither score in our convention
    # ...and those words, evaluated by hand on the induction preset, give the numbers the panel draws
    s = Session.from_preset("induction")
    w = {n: s.matrix(n, layer=1) for n in ("W_Q", "W_K", "W_V", "W_O")}
    c = composition_scores(*w.values(), s.matrix("W_V", layer=0), s.matrix("W_O", layer=0))
    d_v = s.d_v
    for h in range(s.n_heads):
        qk1 = w["W_Q"][h] @ w["W_K"][h].T
        ov1 = w["W_V"][h] @ w["W_O"][h * d_v : (h + 1) * d_v]
        for g in range(s.n_heads):
            ov0 = s.matrix("W_V", layer=0)[g] @ s.matrix("W_O", layer=0)[g * d_v : (g + 1) * d_v]
            assert np.isclose(c["Q"][h, g], _norm(ov0 @ qk1) / (_norm(ov0) * _norm(qk1)))
            assert np.isclose(c["K"][h, g], _norm(qk1 @ ov0.T) / (_norm(qk1) * _norm(ov0)))
            assert np.isclose(c["V"][h, g], _norm(ov0 @ ov1) / (_norm(ov0) * _norm(ov1)))
    panel.show_session(s, None)
    np.testing.assert_allclose(panel.views["composition"].data(), np.concatenate([c["Q"], c["K"], c["V"]]))


def test_an_overflowed_circuit_is_reported_in_the_rank_line(qtbot):
    panel = CircuitsPanel()
    qtbot.addWidget(panel)
    s = Session()
    w_q = np.array(s.matrix("W_Q"))
    w_q[0] = 1e300  # finite, but W_Q·W_Kᵀ overflows (the session accepts it; the result refuses later)
    w_k = np.array(s.matrix("W_K"))
    w_k[0] = 1e300
    s.set_matrix("W_Q", w_q)
    s.set_matrix("W_K", w_k)
    panel.show_session(s, None)
    assert "W_QK holds inf" in panel.rank_label.text()
    s.set_head(1)  # a sound head draws its spectrum again
    panel.show_session(s, None)
    assert panel.rank_label.text().startswith("rank W_QK = ")
