"""Learning a head: gradient descent on W_Q and W_K toward an attention pattern the learner draws.

The loss is the cross-entropy between each target row and the softmax row of one head,
``L = −(1/m) Σ_i Σ_j T_ij · log softmax(X_q·W_Q·W_Kᵀ·X_kvᵀ·scale)_ij`` over the m rows that have a target, with
an optional squared error of the head's output (P·X_kv·W_V·W_O) toward a target output. Every gradient is
written out by hand in NumPy (no autograd), so a learner can read it:

    G = scale · (P ⊙ r − T) / m          dL/dS for the scaled scores, r_i = Σ_j T_ij   # [n_q, n_k]
    dL/dW_Q = X_qᵀ · G · K                dL/dW_K = X_kvᵀ · Gᵀ · Q                     # [d_model, d_k]

The optimiser is Adam (β₁ 0.9, β₂ 0.999): the gradient of W_Q is proportional to W_K and vice versa, so plain
gradient descent crawls away from small weights and then overshoots once they have grown; Adam's per-entry step
size keeps one learning rate useful from the first step to the last. Plain gradient descent is available too.

``loss_floor`` gives a proven lower bound on the loss any head with a given d_k can reach (see there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .attention import attention_mask
from .errors import NonFiniteError, ShapeError
from .rope import rope_angles, rope_rotate

__all__ = [
    "FitProblem",
    "Floor",
    "PatternFitter",
    "TARGET_PRESETS",
    "fit_pattern",
    "loss_floor",
    "normalize_target",
    "pattern_loss",
    "qk_singular_values",
    "target_preset",
]

#: the target patterns a learner can start from, by name, with what each one asks of the head
TARGET_PRESETS: dict[str, str] = {
    "previous-token": "every token looks at the one before it (the first looks at itself)",
    "first-token": "every token looks at the first token",
    "self": "every token looks at itself",
    "same-token": "every token looks at every visible copy of its own token",
    "uniform-causal": "every token spreads its attention evenly over itself and everything before it",
}

_TINY = 1e-300


def target_preset(
    name: str,
    n_q: int,
    n_k: int,
    *,
    causal: bool = False,
    tokens_q: Sequence[str] | None = None,
    tokens_kv: Sequence[str] | None = None,
) -> np.ndarray:
    """A target pattern [n_q, n_k] by name (see TARGET_PRESETS), rows summing to 1 over the visible keys."""
    if name not in TARGET_PRESETS:
        raise ShapeError(f"There is no target pattern called {name!r}; choose one of {', '.join(TARGET_PRESETS)}.")
    if n_q < 1 or n_k < 1:
        raise ShapeError("A target pattern needs at least one query and one key.")
    t = np.zeros((n_q, n_k))
    rows = np.arange(n_q)
    if name == "previous-token":
        t[rows, np.clip(rows - 1, 0, n_k - 1)] = 1.0
        t[0, 0] = 1.0
    elif name == "first-token":
        t[:, 0] = 1.0
    elif name == "self":
        t[rows, np.minimum(rows, n_k - 1)] = 1.0
    elif name == "same-token":
        if tokens_q is None:
            raise ShapeError("The same-token pattern needs the tokens.")
        keys = list(tokens_q if tokens_kv is None else tokens_kv)
        for i, tok in enumerate(tokens_q):
            for j, other in enumerate(keys):
                if other == tok:
                    t[i, j] = 1.0
            if not t[i].any():
                t[i, min(i, n_k - 1)] = 1.0  # no copy anywhere: look at itself
    else:  # uniform-causal
        t = np.tri(n_q, n_k)
    visible = attention_mask(n_q, n_k, causal=causal)
    return normalize_target(t, visible)


def normalize_target(target: ArrayLike, visible: np.ndarray | None = None) -> np.ndarray:
    """The target made a pattern: negatives and hidden cells set to 0, each row rescaled to sum to 1.

    A row with nothing left (all zero, or every key hidden) stays all zero: the fit ignores it.
    target [n_q, n_k]; visible bool [n_q, n_k] or None (every key visible).
    """
    t = np.array(target, dtype=np.float64)
    if t.ndim != 2:
        raise ShapeError(f"The target pattern must be 2-D (queries × keys), but it has shape {t.shape}.")
    if not np.isfinite(t).all():
        raise NonFiniteError("The target pattern holds a value that is not a finite number.")
    t = np.maximum(t, 0.0)
    if visible is not None:
        if visible.shape != t.shape:
            raise ShapeError(
                f"The target is {t.shape[0]} × {t.shape[1]} but the mask is {visible.shape[0]} × {visible.shape[1]}."
            )
        t[~visible] = 0.0
    total = t.sum(axis=1, keepdims=True)
    np.divide(t, total, out=t, where=total > 0)
    return t


def _entropy_rows(t: np.ndarray) -> np.ndarray:
    """H(t_i) = −Σ_j t_ij log t_ij for every row (0 log 0 = 0)."""
    safe = np.where(t > 0, t, 1.0)
    return np.asarray(-np.sum(t * np.log(safe), axis=1))


@dataclass(frozen=True)
class FitProblem:
    """What is fitted, validated once. Shapes: x_q [n_q, d_model], x_kv [n_k, d_model], target [n_q, n_k]."""

    x_q: np.ndarray
    x_kv: np.ndarray
    target: np.ndarray
    visible: np.ndarray  # bool [n_q, n_k]
    scale: float
    self_attention: bool
    target_output: np.ndarray | None  # [n_q, d_model]: when given, W_V and W_O are fitted toward it
    output_weight: float
    live_rows: int  # m: the rows that have a target (the loss is their mean)
    b_q: np.ndarray | None = None  # [d_k]: the head's query bias, kept fixed
    b_k: np.ndarray | None = None  # [d_k]: the head's key bias, kept fixed
    q_angles: np.ndarray | None = None  # [n_q, d_k/2]: rotary positions (RoPE) turn each query by these
    k_angles: np.ndarray | None = None  # [n_k, d_k/2]


def _as2d(name: str, a: ArrayLike, cols: int | None = None) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ShapeError(f"{name} must be a 2-D matrix, but it has shape {arr.shape}.")
    if cols is not None and arr.shape[1] != cols:
        raise ShapeError(f"{name} has {arr.shape[1]} columns but it needs {cols}.")
    if not np.isfinite(arr).all():
        raise NonFiniteError(f"{name} holds a value that is not a finite number.")
    return arr


def _problem(
    x_q: ArrayLike,
    x_kv: ArrayLike | None,
    target: ArrayLike,
    d_model: int,
    d_k: int,
    scale: float | None,
    causal: bool,
    visible: ArrayLike | None,
    target_output: ArrayLike | None,
    output_weight: float,
) -> FitProblem:
    xq = _as2d("X", x_q, d_model)
    self_attention = x_kv is None
    xkv = xq if x_kv is None else _as2d("X_kv", x_kv, d_model)
    n_q, n_k = xq.shape[0], xkv.shape[0]
    if n_q == 0 or n_k == 0:
        raise ShapeError("Fitting a pattern needs at least one query token and one key token.")
    vis = attention_mask(n_q, n_k, causal=causal) if visible is None else np.asarray(visible, dtype=bool)
    vis = np.ones((n_q, n_k), dtype=bool) if vis is None else vis
    t = np.asarray(target, dtype=np.float64)
    if t.shape != (n_q, n_k):
        raise ShapeError(
            f"The target pattern is {t.shape} but there are {n_q} queries and {n_k} keys: it must be ({n_q}, {n_k})."
        )
    t = normalize_target(t, vis)
    if not t.any():
        raise ShapeError("The target pattern is empty: mark at least one visible key for one query.")
    factor = 1.0 / float(np.sqrt(d_k)) if scale is None else float(scale)
    if not np.isfinite(factor):
        raise NonFiniteError(f"The scale is {factor}; it must be a finite number.")
    y = None
    if target_output is not None:
        y = _as2d("The target output", target_output, d_model)
        if y.shape[0] != n_q:
            raise ShapeError(f"The target output has {y.shape[0]} rows but there are {n_q} queries.")
    live = int(np.count_nonzero(t.sum(axis=1) > 0))
    return FitProblem(xq, xkv, t, vis, factor, self_attention, y, float(output_weight), live)


def _forward_backward(
    p: FitProblem, params: dict[str, np.ndarray], want_grad: bool = True
) -> tuple[float, float, np.ndarray, dict[str, np.ndarray]]:
    """Loss, pattern P and (optionally) the gradient of every parameter in ``params``.

    params holds w_q, w_k [d_model, d_k], and optionally w_v [d_model, d_v], w_o [d_v, d_model], x [n, d_model]
    (self-attention: X is both queries and keys) or x_q / x_kv.
    """
    x_q = params.get("x", params.get("x_q", p.x_q))  # [n_q, d_model]
    x_kv = params.get("x", params.get("x_kv", p.x_kv))  # [n_k, d_model]
    w_q, w_k = params["w_q"], params["w_k"]  # [d_model, d_k]
    t, vis, scale = p.target, p.visible, p.scale
    m = max(p.live_rows, 1)

    q = x_q @ w_q  # [n_q, d_k]
    k = x_kv @ w_k  # [n_k, d_k]
    if p.b_q is not None:
        q = q + p.b_q
    if p.b_k is not None:
        k = k + p.b_k
    if p.q_angles is not None and p.k_angles is not None:  # rotary positions: the scores read rotated rows
        q = rope_rotate(q, p.q_angles)  # [n_q, d_k]
        k = rope_rotate(k, p.k_angles)  # [n_k, d_k]
    s = (q @ k.T) * scale  # [n_q, n_k]
    s_vis = np.where(vis, s, -np.inf)  # [n_q, n_k]  hidden keys score −inf
    peak = np.max(s_vis, axis=1, keepdims=True)  # [n_q, 1]
    peak[~np.isfinite(peak)] = 0.0  # a row that sees no key
    e = np.exp(s_vis - peak)  # [n_q, n_k]  0 on hidden keys
    z = e.sum(axis=1, keepdims=True)  # [n_q, 1]
    pat = e / np.maximum(z, _TINY)  # [n_q, n_k]  the softmax rows
    r = t.sum(axis=1, keepdims=True)  # [n_q, 1]  1 on rows with a target, 0 elsewhere
    # −Σ T log P with log P = s − peak − log z on visible cells (T is 0 on hidden ones)
    ce = (float(np.sum(r * (peak + np.log(np.maximum(z, _TINY))))) - float(np.sum(t * s))) / m
    loss = ce
    fit_out = p.target_output is not None and "w_v" in params
    if fit_out:
        w_v, w_o = params["w_v"], params["w_o"]  # [d_model, d_v], [d_v, d_model]
        v = x_kv @ w_v  # [n_k, d_v]
        zh = pat @ v  # [n_q, d_v]
        out = zh @ w_o  # [n_q, d_model]
        diff = out - p.target_output  # [n_q, d_model]
        n_q = out.shape[0]
        loss += p.output_weight * 0.5 * float(np.sum(diff * diff)) / n_q
    if not want_grad:
        return loss, ce, pat, {}

    grads: dict[str, np.ndarray] = {}
    d_s = (pat * r - t) / m  # [n_q, n_k]  dCE/d(scaled scores)
    if fit_out:
        d_out = diff * (p.output_weight / n_q)  # [n_q, d_model]
        grads["w_o"] = zh.T @ d_out  # [d_v, d_model]
        d_zh = d_out @ w_o.T  # [n_q, d_v]
        d_v = pat.T @ d_zh  # [n_k, d_v]
        grads["w_v"] = x_kv.T @ d_v  # [d_model, d_v]
        d_pat = d_zh @ v.T  # [n_q, n_k]
        d_s = d_s + pat * (d_pat - np.sum(d_pat * pat, axis=1, keepdims=True))  # softmax backward
    g = d_s * scale  # [n_q, n_k]  dL/d(Q·Kᵀ)
    d_q = g @ k  # [n_q, d_k]
    d_k = g.T @ q  # [n_k, d_k]
    if p.q_angles is not None and p.k_angles is not None:  # a rotation's transpose turns back by the same angle
        d_q = rope_rotate(d_q, -p.q_angles)
        d_k = rope_rotate(d_k, -p.k_angles)
    grads["w_q"] = x_q.T @ d_q  # [d_model, d_k]
    grads["w_k"] = x_kv.T @ d_k  # [d_model, d_k]
    if "x" in params or "x_q" in params:
        d_xq = d_q @ w_q.T  # [n_q, d_model]
        d_xkv = d_k @ w_k.T  # [n_k, d_model]
        if fit_out:
            d_xkv = d_xkv + d_v @ w_v.T
        if "x" in params:
            grads["x"] = d_xq + d_xkv
        else:
            grads["x_q"], grads["x_kv"] = d_xq, d_xkv
    return loss, ce, pat, grads


def pattern_loss(
    x_q: ArrayLike,
    x_kv: ArrayLike | None,
    target: ArrayLike,
    w_q: ArrayLike,
    w_k: ArrayLike,
    *,
    scale: float | None = None,
    causal: bool = False,
    visible: ArrayLike | None = None,
) -> float:
    """The cross-entropy between the target rows and the head's softmax rows, averaged over rows with a target."""
    wq = _as2d("W_Q", w_q)
    wk = _as2d("W_K", w_k)
    prob = _problem(x_q, x_kv, target, wq.shape[0], wq.shape[1], scale, causal, visible, None, 1.0)
    return float(_forward_backward(prob, {"w_q": wq, "w_k": wk}, want_grad=False)[0])


class PatternFitter:
    """Gradient descent run a few steps at a time, so a window can redraw between bursts.

    ``step(k)`` takes k steps and returns their losses; ``w_q``, ``w_k`` (and ``w_v``, ``w_o``, ``x`` when fitted),
    ``pattern`` and ``loss`` are the current state. The fitter copies everything it is given.
    """

    def __init__(
        self,
        x_q: ArrayLike,
        x_kv: ArrayLike | None,
        target: ArrayLike,
        w_q: ArrayLike,
        w_k: ArrayLike,
        *,
        scale: float | None = None,
        causal: bool = False,
        visible: ArrayLike | None = None,
        lr: float = 0.05,
        seed: int = 0,
        optimizer: str = "adam",
        w_v: ArrayLike | None = None,
        w_o: ArrayLike | None = None,
        target_output: ArrayLike | None = None,
        output_weight: float = 1.0,
        fit_x: bool = False,
        b_q: ArrayLike | None = None,
        b_k: ArrayLike | None = None,
        rotary: float | None = None,
    ) -> None:
        wq = _as2d("W_Q", w_q)
        wk = _as2d("W_K", w_k)
        if wq.shape != wk.shape:
            raise ShapeError(f"W_Q is {wq.shape} but W_K is {wk.shape}: the scores Q·Kᵀ need the same shape.")
        d_model, d_k = wq.shape
        if d_k < 1:
            raise ShapeError("d_k is 0: a head needs at least one query/key dimension to learn a pattern.")
        if optimizer not in ("adam", "gd"):
            raise ShapeError(f"Unknown optimiser {optimizer!r}: use 'adam' or 'gd'.")
        if not (np.isfinite(lr) and lr > 0):
            raise NonFiniteError(f"The learning rate is {lr}; it must be a positive finite number.")
        self.problem = _problem(x_q, x_kv, target, d_model, d_k, scale, causal, visible, target_output, output_weight)
        rng = np.random.default_rng(seed)
        # A column c with W_Q[:, c] = W_K[:, c] = 0 is a saddle (each one's gradient is proportional to the
        # other), so that dimension would never be used: start it from small seeded noise instead.
        dead = ~(wq.any(axis=0) | wk.any(axis=0))  # [d_k]
        if dead.any():
            wq[:, dead] = rng.standard_normal((d_model, int(dead.sum()))) * 0.1
            wk[:, dead] = rng.standard_normal((d_model, int(dead.sum()))) * 0.1
        self.params: dict[str, np.ndarray] = {"w_q": wq, "w_k": wk}
        for name, b in (("b_Q", b_q), ("b_K", b_k)):
            if b is not None and np.shape(b) != (d_k,):
                raise ShapeError(f"{name} has shape {np.shape(b)} but it must be ({d_k},), one entry per dimension.")
        if b_q is not None or b_k is not None:
            self.problem = dataclasses.replace(
                self.problem,
                b_q=None if b_q is None else _as2d("b_Q", np.reshape(b_q, (1, -1)))[0],
                b_k=None if b_k is None else _as2d("b_K", np.reshape(b_k, (1, -1)))[0],
            )
        if rotary is not None:  # RoPE with base θ = rotary, positions 0, 1, … as in multi_head_attention
            if d_k % 2:
                raise ShapeError(f"Rotary positions turn pairs of dimensions, so d_k must be even, not {d_k}.")
            n_q, n_k = self.problem.target.shape
            self.problem = dataclasses.replace(
                self.problem,
                q_angles=rope_angles(n_q, d_k, float(rotary)),
                k_angles=rope_angles(n_k, d_k, float(rotary)),
            )
        if target_output is not None:
            if w_v is None or w_o is None:
                raise ShapeError("Fitting toward a target output needs a starting W_V and W_O.")
            wv = _as2d("W_V", w_v, None)
            wo = _as2d("W_O", w_o, d_model)
            if wv.shape[0] != d_model or wo.shape[0] != wv.shape[1]:
                raise ShapeError(
                    f"W_V is {wv.shape} and W_O is {wo.shape}: they must be (d_model × d_v) and (d_v × d_model)."
                )
            self.params["w_v"], self.params["w_o"] = wv, wo
        if fit_x:
            if self.problem.self_attention:
                self.params["x"] = self.problem.x_q.copy()
            else:
                self.params["x_q"], self.params["x_kv"] = self.problem.x_q.copy(), self.problem.x_kv.copy()
        self.lr = float(lr)
        self.optimizer = optimizer
        self.steps_taken = 0
        self._m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._b1t = 1.0
        self._b2t = 1.0
        self.loss, self.pattern_loss, self.pattern, _ = _forward_backward(self.problem, self.params, False)

    # the current state, by the names a learner knows
    @property
    def w_q(self) -> np.ndarray:
        return self.params["w_q"]

    @property
    def w_k(self) -> np.ndarray:
        return self.params["w_k"]

    @property
    def w_v(self) -> np.ndarray | None:
        return self.params.get("w_v")

    @property
    def w_o(self) -> np.ndarray | None:
        return self.params.get("w_o")

    @property
    def x(self) -> np.ndarray | None:
        return self.params.get("x", self.params.get("x_q"))

    def gradients(self) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and the analytic gradient of every fitted parameter at the current state."""
        loss, _, _, grads = _forward_backward(self.problem, self.params)
        return loss, grads

    def step(self, k: int = 1) -> np.ndarray:
        """Take k steps; returns the loss before each of them [k]. ``self.loss`` is the loss after the last."""
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below, once
            return self._steps(int(k))

    def _steps(self, k: int) -> np.ndarray:
        losses = np.empty(k)
        b1, b2, eps, lr = 0.9, 0.999, 1e-8, self.lr
        for i in range(k):
            loss, _, _, grads = _forward_backward(self.problem, self.params)
            losses[i] = loss
            if self.optimizer == "gd":
                for name, g in grads.items():
                    self.params[name] -= lr * g
            else:
                self._b1t *= b1
                self._b2t *= b2
                step = lr * np.sqrt(1.0 - self._b2t) / (1.0 - self._b1t)
                for name, g in grads.items():
                    m, v = self._m[name], self._v[name]
                    m *= b1
                    m += (1.0 - b1) * g
                    v *= b2
                    v += (1.0 - b2) * (g * g)
                    self.params[name] -= step * m / (np.sqrt(v) + eps)
        self.steps_taken += k
        self.loss, self.pattern_loss, self.pattern, _ = _forward_backward(self.problem, self.params, False)
        if not (np.isfinite(self.loss) and all(np.isfinite(v).all() for v in self.params.values())):
            raise NonFiniteError("The fit diverged (the loss is no longer finite): lower the learning rate.")
        return losses


def fit_pattern(
    x_q: ArrayLike,
    x_kv: ArrayLike | None,
    target: ArrayLike,
    w_q: ArrayLike,
    w_k: ArrayLike,
    *,
    scale: float | None = None,
    causal: bool = False,
    steps: int = 1000,
    lr: float = 0.05,
    seed: int = 0,
    optimizer: str = "adam",
    visible: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit W_Q and W_K [d_model, d_k] of one head so that its pattern matches ``target`` [n_q, n_k].

    x_q [n_q, d_model]; x_kv [n_k, d_model] or None (self-attention); target rows are renormalised over the
    visible keys; scale defaults to 1/√d_k; causal hides key j > i. When W_Q and W_K are both zero, the start is
    seeded noise (``seed``), since zero is a saddle. Returns (w_q, w_k, losses [steps + 1]): the loss before
    every step and after the last one. For W_V/W_O or X, or a few steps at a time, use ``PatternFitter``.
    """
    fitter = PatternFitter(
        x_q, x_kv, target, w_q, w_k, scale=scale, causal=causal, visible=visible, lr=lr, seed=seed, optimizer=optimizer
    )
    losses = np.append(fitter.step(int(steps)), fitter.loss)
    return fitter.w_q.copy(), fitter.w_k.copy(), losses


@dataclass(frozen=True)
class Floor:
    """A proven lower bound on the loss of any head of the given d_k, and why it holds (for a learner)."""

    loss: float  # the bound, in the units of the fit's loss
    entropy: float  # the loss of a perfect match (the target's own entropy): nothing can go below it
    kind: str  # "entropy", "duplicates", "rank-1 extremes" or "rank (SVD)"
    reason: str
    #: a loss some head of this d_k provably reaches (or approaches), when one is known, with how
    upper: float | None = None
    upper_reason: str = ""

    @property
    def reachable_gap(self) -> float:
        """How far above a perfect match the bound is (0: no obstruction was found)."""
        return self.loss - self.entropy


def _phi(u: float) -> float:
    # KL(T‖P) = Σ T_ij · φ(log T_ij − log P_ij) with φ(u) = u + e^{−u} − 1
    return float(u + np.expm1(-u))


def loss_floor(
    target: ArrayLike,
    d_k: int,
    *,
    x_q: ArrayLike | None = None,
    x_kv: ArrayLike | None = None,
    causal: bool = False,
    visible: ArrayLike | None = None,
    rotary: bool = False,
) -> Floor:
    """A lower bound on the pattern loss that a head with this d_k can reach, with the argument that proves it.

    The bound is the largest of these (each a theorem, none an estimate):

    * entropy: the cross-entropy is at least the target's own entropy H(T) (Gibbs), reached only by P = T.
    * duplicates: queries with identical rows of X (and the same visible keys) get identical patterns, and keys
      with identical rows get identical weights, whatever the weights are; the best is then the averaged target.
    * rank-1 extremes (d_k = 1, no mask): scores s_ij = a_i·b_j, so the favourite key of query i is the key with
      the largest or the smallest b_j. Any other key has a rival with a score at least as high, so it gets at most
      half the weight and costs at least log 2. Only two keys can ever be anyone's favourite.
    * rank (SVD), full-support targets with no mask: the scores X_q·W·X_kvᵀ have rank r ≤ d_k, so
      D = log T − log P = log T − S + c·1ᵀ, centred along each row and weighted by each row's smallest target
      entry t_i, is the weighted centred log-target minus a rank-r matrix: by Eckart–Young its size is at least
      ρ = √(Σ_{k>r} σ_k²) of that matrix. KL(T‖P) = Σ T_ij·φ(D_ij) with φ(u) = u + e^{−u} − 1 ≥ φ(ρ) since
      φ(√v) is concave (so sub-additive), φ(−u) ≥ φ(u) and t·φ(u) ≥ φ(t·u) for t ≤ 1. The loss is ≥ (H + φ(ρ))/m.

    target [n_q, n_k]; x_q, x_kv the token rows (None: every row distinct and independent). With rotary positions
    (``rotary=True``) identical rows at different positions are turned differently, so only the rank arguments
    (the scores are still a product of two n × d_k matrices) and the entropy apply.
    """
    t = np.asarray(target, dtype=np.float64)
    n_q, n_k = t.shape
    if visible is None:
        visible = attention_mask(n_q, n_k, causal=causal)
    masked = visible is not None and not np.all(visible)
    visible = np.ones((n_q, n_k), dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
    t = normalize_target(t, visible)
    live = t.sum(axis=1) > 0
    m = max(int(live.sum()), 1)
    h_rows = _entropy_rows(t)
    entropy = float(h_rows.sum()) / m
    best = Floor(
        entropy, entropy, "entropy", "Nothing is in the way: the loss can come down to the target's own entropy."
    )

    def consider(value: float, kind: str, reason: str) -> None:
        nonlocal best
        if value > best.loss + 1e-12:
            best = Floor(value, entropy, kind, reason)

    def with_upper(floor: Floor) -> Floor:
        upper, how = _upper_bound(t, live, visible, masked, d_k, r, x_q, x_kv, entropy)
        if upper is None:
            return floor
        return Floor(floor.loss, floor.entropy, floor.kind, floor.reason, max(upper, floor.loss), how)

    # duplicates: rows of X the head cannot tell apart
    if not rotary and (x_q is not None or x_kv is not None):
        xq = None if x_q is None else np.asarray(x_q, dtype=np.float64)
        xk = xq if x_kv is None else np.asarray(x_kv, dtype=np.float64)
        spread = t.copy()
        if xk is not None:
            _, key_group = np.unique(xk, axis=0, return_inverse=True)
            key_group = key_group.ravel()
            for i in range(n_q):
                for g in np.unique(key_group[visible[i]]):
                    cols = np.flatnonzero((key_group == g) & visible[i])
                    spread[i, cols] = t[i, cols].mean()
        total = 0.0
        groups: dict[bytes, list[int]] = {}
        for row in np.flatnonzero(live).tolist():
            key = (xq[row].tobytes() if xq is not None else row.to_bytes(4, "little")) + visible[row].tobytes()
            groups.setdefault(key, []).append(row)
        for rows in groups.values():
            mean = spread[rows].mean(axis=0)
            safe = np.where(mean > 0, mean, 1.0)
            total += float(-np.sum(t[rows] * np.log(safe)))  # Σ_i CE(t_i, mean) = |G|·H(mean) when t spread
        consider(
            total / m,
            "duplicates",
            "Some tokens have identical rows of X, so W_Q (or W_K) cannot tell them apart: they get identical "
            "attention whatever the weights are, but the target asks them to differ. Add position features to "
            "X so the head can tell them apart.",
        )

    r = d_k
    for x in (x_q, x_kv if x_kv is not None else x_q):
        if x is not None and not rotary:  # rotated rows leave the span of X
            r = min(r, int(np.linalg.matrix_rank(np.asarray(x, dtype=np.float64))))
    if r <= 0:
        return with_upper(best)
    if not masked and r == 1 and int(live.sum()) * n_k * n_k <= 4_000_000:  # [m, n_k, n_k] stays small
        # rank-1 extremes: the two favourite keys e1, e2; every other key costs at least log 2
        tl = t[live]
        pair = tl[:, :, None] + tl[:, None, :]  # [m, n_k, n_k]
        idx = np.arange(n_k)
        pair[:, idx, idx] = tl  # e1 = e2
        cost = np.maximum(h_rows[live][:, None, None], np.log(2.0) * (1.0 - pair))  # [m, n_k, n_k]
        value = float(cost.sum(axis=0).min()) / m
        consider(
            value,
            "rank-1 extremes",
            "With d_k = 1 the score is a product of two numbers, s_ij = a_i·b_j: query i's favourite key is "
            "the key with the largest b_j (if a_i > 0) or the smallest (if a_i < 0). Only those two keys can "
            "ever be anyone's favourite; any other key has a rival scoring at least as high, so it gets at "
            "most half of the weight. The target needs more favourites than two: raise d_k to 2 and the keys "
            "become points in a plane, where each one can be the favourite of the query pointing at it.",
        )
    if not masked and np.all(t[live] > 0) and r < min(n_q, n_k) <= 1024:
        w = t[live].min(axis=1)  # [m]  each row's smallest target entry
        centred = np.log(t[live])
        centred = centred - centred.mean(axis=1, keepdims=True)
        sv = np.linalg.svd(w[:, None] * centred, compute_uv=False)
        rho = float(np.sqrt(np.sum(sv[r:] ** 2)))
        consider(
            (float(h_rows.sum()) + _phi(rho)) / m,
            "rank (SVD)",
            f"The scores x_i·W_Q·W_Kᵀ·x_jᵀ are a bilinear form whose matrix has rank at most d_k = {d_k}, so "
            "the log-pattern can only be a rank-d_k matrix (plus a constant per row). The singular values of "
            "the log-target beyond the first d_k are what no such head can produce; they set this floor.",
        )
    return with_upper(best)


def qk_singular_values(w_q: ArrayLike, w_k: ArrayLike) -> np.ndarray:
    """The singular values of W_Q·W_Kᵀ [d_model, d_model] (largest first, at most d_k of them non-zero).

    Computed from the d_k × d_k product of the two QR factors, so a wide residual stream costs O(d_model·d_k²).
    """
    a = np.asarray(w_q, dtype=np.float64)  # [d_model, d_k]
    b = np.asarray(w_k, dtype=np.float64)
    if a.shape[1] <= a.shape[0]:
        a = np.asarray(np.linalg.qr(a, mode="r"))  # W_Q = Q_a·R_a with orthonormal Q_a: same singular values
        b = np.asarray(np.linalg.qr(b, mode="r"))
    return np.asarray(np.linalg.svd(a @ b.T, compute_uv=False))


def _full_row_rank(x: ArrayLike | None) -> bool:
    if x is None:
        return True
    x = np.asarray(x, dtype=np.float64)
    return bool(int(np.linalg.matrix_rank(x)) == x.shape[0])


def _upper_bound(
    t: np.ndarray,
    live: np.ndarray,
    visible: np.ndarray,
    masked: bool,
    d_k: int,
    r: int,
    x_q: ArrayLike | None,
    x_kv: ArrayLike | None,
    entropy: float,
) -> tuple[float | None, str]:
    """A loss that some head of this d_k reaches or approaches, by an explicit construction (None: none known)."""
    n_q, n_k = t.shape
    if not (_full_row_rank(x_q) and _full_row_rank(x_kv if x_kv is not None else x_q)):
        return None, ""  # the scores are confined to the rows' span: no construction below applies
    if d_k >= min(n_q, n_k):
        return entropy, (
            "d_k is as large as the pattern, so any score matrix is reachable: the fit can come "
            "arbitrarily close to the target."
        )
    hard = bool(np.all(np.isin(t[live], (0.0, 1.0))))
    if hard and d_k >= 2:
        return entropy, (
            "Every query wants exactly one key, and with d_k ≥ 2 the keys can sit on a circle with each "
            "query pointing at its own key: every target key becomes its query's favourite, and larger "
            "weights make it sharper without limit."
        )
    if not masked and np.all(t[live] > 0):
        logt = np.log(t[live])
        logt = logt - logt.mean(axis=1, keepdims=True)
        u, sv, vt = np.linalg.svd(logt, full_matrices=False)
        s_r = (u[:, :d_k] * sv[:d_k]) @ vt[:d_k]  # the best rank-d_k approximation of the log-target
        s_r = s_r - s_r.max(axis=1, keepdims=True)
        log_p = s_r - np.log(np.exp(s_r).sum(axis=1, keepdims=True))
        value = float(-np.sum(t[live] * log_p)) / max(int(live.sum()), 1)
        return value, (
            "Keeping the largest d_k singular values of the log-target gives a rank-d_k score matrix "
            "that a head can hold; its loss is this."
        )
    return None, ""
