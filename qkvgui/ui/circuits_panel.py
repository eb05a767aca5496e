"""The two circuits of the selected head: W_QK = W_Q·W_Kᵀ and W_OV = W_V·W_O, their spectra, and X·W_QK·X_kvᵀ."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from qkvgui.core import QkvError, composition_scores, ov_circuit, qk_circuit, spectrum
from qkvgui.core.circuits import COMPOSITION_FORMULAS
from qkvgui.session import Session
from qkvgui.ui.heatmap import HeatmapView

#: above this d_model the singular values are not computed live (an SVD of 1024 × 1024 takes ~0.3 s)
MAX_SVD = 1024


class CircuitsPanel(QWidget):
    """Heatmaps of W_QK and W_OV (d_model × d_model) with their singular values and rank, and the token-level
    QK circuit X·W_QK·X_kvᵀ beside the scores it equals (before biases)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        grid = QGridLayout(self)
        self.views: dict[str, HeatmapView] = {}
        tips = {
            "qk_circuit": "W_QK = W_Q·W_Kᵀ: score(i, j) = x_i·W_QK·x_jᵀ. Row a, column b: how much feature a of a "
                          "query token attracts feature b of a key token. Rank ≤ d_k.",
            "ov_circuit": "W_OV = W_V·W_O: row a is what the head writes into the residual stream for each unit of "
                          "feature a in a token it attends to. Rank ≤ d_v.",
            "token_qk": "X·W_QK·X_kvᵀ: the QK circuit read on the tokens. It equals the scores Q·Kᵀ when there "
                        "are no biases.",
            "circuit_scores": "scores = Q·Kᵀ from the pipeline, for comparison.",
        }
        for k, name in enumerate(("qk_circuit", "ov_circuit", "token_qk", "circuit_scores")):
            view = HeatmapView("diverging")
            view.setObjectName(f"view.{name}")
            view.setToolTip(tips[name])
            self.views[name] = view
            grid.addWidget(view, k // 2 * 2, k % 2)
        self.spectra = pg.PlotWidget()
        self.spectra.setObjectName("view.circuit_spectra")
        self.spectra.setBackground(self.palette().color(self.backgroundRole()))
        self.spectra.setMenuEnabled(False)
        self.spectra.setMouseEnabled(False, False)
        self.spectra.addLegend(offset=(-10, 10))
        self.spectra.setLabel("bottom", "index")
        self.spectra.setLabel("left", "singular value")
        self.spectra.setTitle("singular values", size="9pt")
        self._qk_bars = self.spectra.plot([], [], pen=None, symbol="o", symbolSize=6, symbolBrush="#c0392b",
                                          name="W_QK")
        self._ov_bars = self.spectra.plot([], [], pen=None, symbol="s", symbolSize=6, symbolBrush="#2e86c1",
                                          name="W_OV")
        self.rank_label = QLabel()
        self.rank_label.setObjectName("circuit.ranks")
        self.rank_label.setWordWrap(True)
        grid.addWidget(self.rank_label, 1, 0, 1, 2)
        self.composition = HeatmapView("weights")
        self.composition.setObjectName("view.composition")
        self.composition.setToolTip(
            "Q-, K- and V-composition (Elhage et al. 2021) between each head of a layer (¹) and each head of the "
            "layer before (⁰), in our row-vector convention:\n"
            + "\n".join(f"{kind}: {formula}" for kind, formula in COMPOSITION_FORMULAS.items())
            + "\nHigh K-composition: the later head's keys read what the earlier head wrote (an induction head "
            "reading a previous-token head).")
        self.views["composition"] = self.composition
        grid.addWidget(self.spectra, 4, 0)
        grid.addWidget(self.composition, 4, 1)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(2, 3)
        grid.setRowStretch(4, 2)
        self.qk: np.ndarray | None = None
        self.ov: np.ndarray | None = None

    def show_session(self, session, result, x_in=None) -> None:
        """Draw the circuits of the session's selected head and layer; result gives the scores to compare with,
        x_in what the layer reads (X for the first layer, the residual stream after the one before otherwise)."""
        self.show_composition(session)
        head = session.head
        kv = session.kv_head(head)  # the key/value head this query head reads (itself without shared heads)
        w_q, w_k, w_v, w_o = (session.matrix(n) for n in ("W_Q", "W_K", "W_V", "W_O"))
        self.qk = qk_circuit(w_q[head:head + 1], w_k[kv:kv + 1])[0]  # [d_model, d_model]
        h, d_v = session.n_heads, session.d_v
        block = w_o[head * d_v:(head + 1) * d_v]  # this head's rows of W_O
        self.ov = ov_circuit(w_v[kv:kv + 1], block)[0]  # [d_model, d_model]
        features = session.features
        self.views["qk_circuit"].set_data(self.qk, features, features)
        group = f" (W_K of kv head {kv + 1})" if session.n_kv_heads < h else ""
        self.views["qk_circuit"].set_title(f"W_QK = W_Q·W_Kᵀ\nhead {head + 1}{group} · {session.d_model} × "
                                           f"{session.d_model}")
        self.views["ov_circuit"].set_data(self.ov, features, features)
        self.views["ov_circuit"].set_title(f"W_OV = W_V·W_O\nhead {head + 1} · {session.d_model} × {session.d_model}")
        x = session.matrix("X") if x_in is None else x_in
        x_kv = session.matrix("X_kv") if session.cross else x
        token_qk = x @ self.qk @ x_kv.T  # [n_q, n_k]
        q_tokens, k_tokens = session.tokens, session.key_tokens
        self.views["token_qk"].set_data(token_qk, q_tokens, k_tokens)
        unrotated = " (before RoPE)" if session.rotary else ""
        self.views["token_qk"].set_title(f"X·W_QK·X{'_kv' if session.cross else ''}ᵀ{unrotated}\n"
                                         f"head {head + 1} · {token_qk.shape[0]} × {token_qk.shape[1]}")
        if result is not None and result.n_heads == h:
            self.views["circuit_scores"].set_data(result.head(head).scores, q_tokens, k_tokens)
            self.views["circuit_scores"].set_title(f"scores = Q·Kᵀ\nhead {head + 1} · {token_qk.shape[0]} × "
                                                   f"{token_qk.shape[1]}")
        try:
            spectra = (spectrum(self.qk, "W_QK"), spectrum(self.ov, "W_OV")) if session.d_model <= MAX_SVD else None
        except QkvError as e:  # an overflowed circuit: say so instead of drawing nonsense
            spectra = None
            self.rank_label.setText(str(e))
        if spectra is not None:
            qk_s, ov_s = spectra
            self._qk_bars.setData(np.arange(len(qk_s.singular_values)), qk_s.singular_values)
            self._ov_bars.setData(np.arange(len(ov_s.singular_values)), ov_s.singular_values)
            self.rank_label.setText(
                f"rank W_QK = {qk_s.rank} (≤ d_k = {session.d_k}),  rank W_OV = {ov_s.rank} (≤ d_v = {d_v}); "
                f"largest singular values {qk_s.singular_values[0]:.3g} and {ov_s.singular_values[0]:.3g}. "
                "A head reads and writes through at most d_k and d_v directions of the residual stream."
            )
        else:
            self._qk_bars.setData([], [])
            self._ov_bars.setData([], [])
        if spectra is None and session.d_model > MAX_SVD:
            self.rank_label.setText(f"d_model = {session.d_model}: singular values are not computed live above "
                                    f"{MAX_SVD}.")

    def show_composition(self, session) -> None:
        """Composition of the selected layer's heads with the layer before (layers 1 and 2 when the first is
        selected); hidden for a single layer."""
        self.composition.setVisible(session.n_layers > 1)
        if session.n_layers < 2:
            return
        later = max(session.layer, 1)
        w_q1, w_k1, w_v1, w_o1 = (_per_query_head(session, n, later) for n in ("W_Q", "W_K", "W_V", "W_O"))
        c = composition_scores(w_q1, w_k1, w_v1, w_o1, _per_query_head(session, "W_V", later - 1),
                               session.matrix("W_O", layer=later - 1))
        h = session.n_heads
        data = np.concatenate([c["Q"], c["K"], c["V"]])  # [3·h_later, h_earlier]
        rows = [f"{kind}: L{later + 1}h{i + 1}" for kind in "QKV" for i in range(h)]
        cols = [f"L{later}h{j + 1}" for j in range(h)]
        self.composition.set_data(data, rows, cols)
        self.composition.set_title(f"Q/K/V-composition\nlayer {later + 1} heads × layer {later} heads")

    def close_views(self) -> None:
        """Close the graphics views (idempotent): views alive at interpreter exit can crash Python 3.11."""
        for view in self.views.values():
            view.close_views()
        if self.spectra.plotItem is not None:
            self.spectra.close()


def _per_query_head(session: Session, name: str, layer: int) -> np.ndarray:
    """A layer's W_Q, W_K, W_V or W_O with one matrix per query head: shared key/value heads repeated per group."""
    m = session.matrix(name, layer=layer)
    if name in ("W_K", "W_V") and m.shape[0] != session.n_heads:
        m = np.repeat(m, session.n_heads // m.shape[0], axis=0)
    return m
