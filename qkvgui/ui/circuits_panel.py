"""The two circuits of the selected head: W_QK = W_Q·W_Kᵀ and W_OV = W_V·W_O, their spectra, and X·W_QK·X_kvᵀ."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from qkvgui.core import composition_scores, ov_circuit, qk_circuit
from qkvgui.core.checks import check_finite
from qkvgui.core.circuits import COMPOSITION_FORMULAS, Spectrum, factored_spectrum
from qkvgui.core.errors import QkvError
from qkvgui.ui.heatmap import HeatmapView

#: above this d_model the singular values are not computed live (an SVD of 1024 × 1024 takes ~0.3 s)
MAX_SVD = 1024


#: multiply-adds of a circuits computation above which it runs on the scheduler's worker, not the GUI thread
CIRCUITS_THRESHOLD = 2e6


@dataclass(frozen=True)
class CircuitsInput:
    """What the circuits of one head are computed from: read-only arrays taken from the session on the GUI thread,
    so the worker never touches the session."""

    head: int
    d_model: int
    d_k: int
    d_v: int
    n_heads: int
    cross: bool
    features: list[str]
    q_tokens: list[str]
    k_tokens: list[str]
    w_q: np.ndarray  # [d_model, d_k] the head's
    w_k: np.ndarray  # [d_model, d_k]
    w_v: np.ndarray  # [d_model, d_v]
    w_o: np.ndarray  # [d_v, d_model] the head's rows of W_O
    x: np.ndarray  # [n_q, d_model] what the layer reads
    x_kv: np.ndarray  # [n_k, d_model]
    scores: np.ndarray | None  # [n_q, n_k] from the result, for comparison
    composition_layer: int  # the later layer of the composition scores (0: no composition)
    composition_args: tuple | None  # the six weight arrays composition_scores takes
    kv_head: int = 0  # the key/value head the query head reads
    shared: bool = False  # whether query heads share key/value heads (grouped-query attention)
    rotary: bool = False  # whether the scores are computed from rotated Q and K

    def cost(self) -> float:
        """Multiply-adds, roughly: the two d_model² circuits, the token circuit, the composition products."""
        d, n = self.d_model, max(len(self.q_tokens), len(self.k_tokens))
        r = max(self.d_k, self.d_v)
        comp = 0 if self.composition_args is None else 3 * self.n_heads**2 * d * r * r
        return 2 * d * d * r + 2 * n * d * d + comp  # the two circuits, the token circuit, the compositions


@dataclass(frozen=True)
class CircuitsData:
    inp: CircuitsInput
    qk: np.ndarray  # [d_model, d_model]
    ov: np.ndarray  # [d_model, d_model]
    token_qk: np.ndarray  # [n_q, n_k]
    qk_spectrum: Spectrum | None
    ov_spectrum: Spectrum | None
    composition: np.ndarray | None  # [3·h, h]: Q, K then V composition rows
    error: str = ""  # why there are no spectra (an overflowed circuit)


def gather_circuits(session, result, x_in=None) -> CircuitsInput:
    """The arrays of the selected head and layer (GUI thread; no computation beyond slicing)."""
    head, d_v = session.head, session.d_v
    kv = session.kv_head(head)  # the key/value head this query head reads (itself without shared heads)
    w_q, w_k, w_v, w_o = (session.matrix(n) for n in ("W_Q", "W_K", "W_V", "W_O"))
    x = session.matrix("X") if x_in is None else x_in
    scores = None
    fresh = result is not None and (result.n_heads, result.n_q, result.n_k) == (
        session.n_heads,
        len(session.tokens),
        len(session.key_tokens),
    )
    if fresh and result.head_ready(head):
        scores = result.head(head).scores
    later = max(session.layer, 1)
    comp = None
    if session.n_layers > 1:
        comp = (
            *(_per_query_head(session, n, later) for n in ("W_Q", "W_K", "W_V", "W_O")),
            _per_query_head(session, "W_V", later - 1),
            session.matrix("W_O", layer=later - 1),
        )
    return CircuitsInput(
        head=head,
        d_model=session.d_model,
        d_k=session.d_k,
        d_v=d_v,
        n_heads=session.n_heads,
        cross=session.cross,
        features=list(session.features),
        q_tokens=list(session.tokens),
        k_tokens=list(session.key_tokens),
        w_q=w_q[head],
        w_k=w_k[kv],
        w_v=w_v[kv],
        w_o=w_o[head * d_v : (head + 1) * d_v],
        x=x,
        x_kv=session.matrix("X_kv") if session.cross else x,
        scores=scores,
        composition_layer=later,
        composition_args=comp,
        kv_head=kv,
        shared=session.n_kv_heads < session.n_heads,
        rotary=bool(session.rotary),
    )


def compute_circuits(inp: CircuitsInput) -> CircuitsData:
    """Every number the circuits tab shows (any thread: plain NumPy on read-only arrays)."""
    qk = qk_circuit(inp.w_q[None], inp.w_k[None])[0]  # [d_model, d_model]
    ov = ov_circuit(inp.w_v[None], inp.w_o)[0]  # [d_model, d_model]
    token_qk = inp.x @ qk @ inp.x_kv.T  # [n_q, n_k]
    # From the thin factors (d_k, d_v columns), never an SVD of d_model × d_model: the same nonzero values
    try:  # an overflowed circuit is said so (NonFiniteError names it) instead of drawn as nonsense
        check_finite("W_QK", qk)
        check_finite("W_OV", ov)
        spectra: tuple[Spectrum | None, Spectrum | None] = (
            factored_spectrum(inp.w_q, inp.w_k),
            factored_spectrum(inp.w_v, inp.w_o.T),
        )
        error = ""
    except QkvError as e:
        spectra, error = (None, None), str(e)
    composition = None
    if inp.composition_args is not None:
        c = composition_scores(*inp.composition_args)
        composition = np.concatenate([c["Q"], c["K"], c["V"]])  # [3·h_later, h_earlier]
    return CircuitsData(inp, qk, ov, token_qk, spectra[0], spectra[1], composition, error)


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
        self._qk_bars = self.spectra.plot(
            [], [], pen=None, symbol="o", symbolSize=6, symbolBrush="#c0392b", name="W_QK"
        )
        self._ov_bars = self.spectra.plot(
            [], [], pen=None, symbol="s", symbolSize=6, symbolBrush="#2e86c1", name="W_OV"
        )
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
            "reading a previous-token head)."
        )
        self.views["composition"] = self.composition
        grid.addWidget(self.spectra, 4, 0)
        grid.addWidget(self.composition, 4, 1)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(2, 3)
        grid.setRowStretch(4, 2)
        self.qk: np.ndarray | None = None
        self.ov: np.ndarray | None = None

    def show_session(self, session, result, x_in=None) -> None:
        """Compute and draw the circuits of the session's selected head and layer here (scripts, small layers);
        the window computes big ones on the scheduler's worker (see gather_circuits and compute_circuits)."""
        self.show_circuits(compute_circuits(gather_circuits(session, result, x_in)))

    def show_circuits(self, c: CircuitsData) -> None:
        """Draw circuits computed by compute_circuits (the GUI thread's part: set_data only)."""
        head, d_model = c.inp.head, c.inp.d_model
        features = c.inp.features
        self.qk, self.ov = c.qk, c.ov
        self.views["qk_circuit"].set_data(c.qk, features, features)
        group = f" (W_K of kv head {c.inp.kv_head + 1})" if c.inp.shared else ""
        self.views["qk_circuit"].set_title(f"W_QK = W_Q·W_Kᵀ\nhead {head + 1}{group} · {d_model} × {d_model}")
        self.views["ov_circuit"].set_data(c.ov, features, features)
        self.views["ov_circuit"].set_title(f"W_OV = W_V·W_O\nhead {head + 1} · {d_model} × {d_model}")
        q_tokens, k_tokens = c.inp.q_tokens, c.inp.k_tokens
        n_q, n_k = c.token_qk.shape
        self.views["token_qk"].set_data(c.token_qk, q_tokens, k_tokens)
        unrotated = " (before RoPE)" if c.inp.rotary else ""
        self.views["token_qk"].set_title(
            f"X·W_QK·X{'_kv' if c.inp.cross else ''}ᵀ{unrotated}\nhead {head + 1} · {n_q} × {n_k}"
        )
        if c.inp.scores is not None:
            self.views["circuit_scores"].set_data(c.inp.scores, q_tokens, k_tokens)
            self.views["circuit_scores"].set_title(f"scores = Q·Kᵀ\nhead {head + 1} · {n_q} × {n_k}")
        if c.qk_spectrum is not None and c.ov_spectrum is not None:
            qk_s, ov_s = c.qk_spectrum, c.ov_spectrum
            self._qk_bars.setData(np.arange(len(qk_s.singular_values)), qk_s.singular_values)
            self._ov_bars.setData(np.arange(len(ov_s.singular_values)), ov_s.singular_values)
            self.rank_label.setText(
                f"rank W_QK = {qk_s.rank} (≤ d_k = {c.inp.d_k}),  rank W_OV = {ov_s.rank} (≤ d_v = {c.inp.d_v}); "
                f"largest singular values {qk_s.singular_values[0]:.3g} and {ov_s.singular_values[0]:.3g}. "
                "A head reads and writes through at most d_k and d_v directions of the residual stream."
            )
        else:
            self._qk_bars.setData([], [])
            self._ov_bars.setData([], [])
            self.rank_label.setText(c.error or f"d_model = {d_model}: no singular values above {MAX_SVD}.")
        self.composition.setVisible(c.composition is not None)
        if c.composition is not None:
            later, h = c.inp.composition_layer, c.inp.n_heads
            rows = [f"{kind}: L{later + 1}h{i + 1}" for kind in "QKV" for i in range(h)]
            cols = [f"L{later}h{j + 1}" for j in range(c.composition.shape[1])]
            self.composition.set_data(c.composition, rows, cols)
            self.composition.set_title(f"Q/K/V-composition\nlayer {later + 1} heads × layer {later} heads")

    def show_busy(self) -> None:
        self.rank_label.setText("computing the circuits…")

    def close_views(self) -> None:
        """Close the graphics views (idempotent): views alive at interpreter exit can crash Python 3.11."""
        for view in self.views.values():
            view.close_views()
        if self.spectra.plotItem is not None:
            self.spectra.close()


def _per_query_head(session, name: str, layer: int) -> np.ndarray:
    """A layer's W_Q, W_K, W_V or W_O with one matrix per query head: shared key/value heads repeated per group."""
    m = session.matrix(name, layer=layer)
    if name in ("W_K", "W_V") and m.shape[0] != session.n_heads:
        m = np.repeat(m, session.n_heads // m.shape[0], axis=0)
    return m
