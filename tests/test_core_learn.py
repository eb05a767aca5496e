"""fit_pattern and its friends: analytic gradients against finite differences, fits that reach (or provably
cannot reach) a drawn pattern, and the floors a learner is shown."""

from __future__ import annotations

import numpy as np
import pytest

from qkvgui.core import (
    PatternFitter,
    QkvError,
    fit_pattern,
    loss_floor,
    multi_head_attention,
    normalize_target,
    pattern_loss,
    qk_singular_values,
    target_preset,
)
from qkvgui.core.embeddings import one_hot_features

TOKENS = "the cat sat on a red mat now".split()  # 8 distinct tokens


def x8() -> np.ndarray:
    return one_hot_features(TOKENS, 16)  # [8 token columns | 8 position columns]


def head_weights(x, w_q, w_k, causal, scale=None):
    """The pattern through the app's own attention (an independent path from the fitter's forward pass)."""
    d_model, d_k = w_q.shape
    w_v = np.zeros((1, d_model, 1))
    w_o = np.zeros((1, d_model))
    res = multi_head_attention(x, w_q[None], w_k[None], w_v, w_o, causal=causal, scale=scale)
    return res.weights[0]


def reference_loss(x, target, w_q, w_k, causal):
    """Cross-entropy written as loops over rows, from the attention module's weights."""
    p = head_weights(x, w_q, w_k, causal)
    t = normalize_target(target, np.tri(len(x), dtype=bool) if causal else None)
    rows = [i for i in range(len(t)) if t[i].sum() > 0]
    total = 0.0
    for i in rows:
        for j in range(t.shape[1]):
            if t[i, j] > 0:
                total -= t[i, j] * np.log(p[i, j])
    return total / len(rows)


def numeric_grad(fitter: PatternFitter, name: str, h: float = 1e-6) -> np.ndarray:
    a = fitter.params[name]
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + h
        up = fitter.gradients()[0]
        a[idx] = old - h
        down = fitter.gradients()[0]
        a[idx] = old
        g[idx] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("case", ["causal", "cross", "output-and-x", "rotary"])
def test_gradient_matches_finite_differences(case):
    rng = np.random.default_rng(7)
    n, d_model, d_v = 6, 5, 2
    d_k = 4 if case == "rotary" else 3
    x = rng.standard_normal((n, d_model))
    target = rng.random((n, n)) ** 3
    kwargs = {}
    x_kv = None
    causal = case != "cross"
    if case == "causal":
        kwargs = dict(b_q=rng.standard_normal(d_k), b_k=rng.standard_normal(d_k))  # fixed biases, as imported
    if case == "rotary":
        kwargs = dict(rotary=10.0, b_q=rng.standard_normal(d_k))  # RoPE turns Q after its bias, as in the core
    if case == "cross":
        x_kv = rng.standard_normal((4, d_model))
        target = rng.random((n, 4))
    if case == "output-and-x":
        kwargs = dict(
            w_v=rng.standard_normal((d_model, d_v)),
            w_o=rng.standard_normal((d_v, d_model)),
            target_output=rng.standard_normal((n, d_model)),
            output_weight=0.7,
            fit_x=True,
        )
    fitter = PatternFitter(
        x,
        x_kv,
        target,
        rng.standard_normal((d_model, d_k)),
        rng.standard_normal((d_model, d_k)),
        causal=causal,
        scale=0.8,
        **kwargs,
    )
    _, grads = fitter.gradients()
    expected = {"w_q", "w_k"} | ({"w_v", "w_o", "x"} if case == "output-and-x" else set())
    assert set(grads) == expected
    for name, g in grads.items():
        num = numeric_grad(fitter, name)
        rel = np.linalg.norm(g - num) / np.linalg.norm(num)
        assert rel <= 1e-6, (name, rel)


def test_rotary_fit_matches_the_attention_of_rotated_queries_and_keys():
    rng = np.random.default_rng(4)
    x = x8()
    w_q, w_k = rng.standard_normal((16, 4)), rng.standard_normal((16, 4))
    target = target_preset("previous-token", 8, 8, causal=True)
    fitter = PatternFitter(x, None, target, w_q, w_k, causal=True, rotary=100.0)
    d_model = 16
    res = multi_head_attention(
        x, w_q[None], w_k[None], np.zeros((1, d_model, 1)), np.zeros((1, d_model)), causal=True, rotary=100.0
    )
    np.testing.assert_allclose(fitter.pattern, res.head(0).weights, atol=1e-12)
    fitter.step(1500)
    assert all(fitter.pattern[i, i - 1] >= 0.9 for i in range(2, 8))


def test_loss_is_the_cross_entropy_of_the_attention_weights():
    rng = np.random.default_rng(3)
    x = x8()
    w_q, w_k = rng.standard_normal((16, 4)), rng.standard_normal((16, 4))
    target = rng.random((8, 8))
    for causal in (False, True):
        ours = pattern_loss(x, None, target, w_q, w_k, causal=causal)
        assert ours == pytest.approx(reference_loss(x, target, w_q, w_k, causal), rel=1e-12)


def test_previous_token_is_learned_from_random_weights():
    x = x8()
    rng = np.random.default_rng(0)
    w_q, w_k = rng.standard_normal((16, 8)) * 0.3, rng.standard_normal((16, 8)) * 0.3
    given = w_q.copy()
    target = target_preset("previous-token", 8, 8, causal=True)
    w_q2, w_k2, losses = fit_pattern(x, None, target, w_q, w_k, scale=None, causal=True, steps=2000, lr=0.05, seed=0)
    assert losses.shape == (2001,)
    assert losses[-1] < losses[0] / 100
    p = head_weights(x, w_q2, w_k2, causal=True)  # through the app's attention, not the fitter
    for i in range(2, 8):
        assert p[i, i - 1] >= 0.9, (i, p[i])
    assert np.array_equal(w_q, given)  # the caller's weights are left alone


def test_zero_weights_start_from_seeded_noise():
    x = x8()
    target = target_preset("first-token", 8, 8)
    zeros = np.zeros((16, 2))
    a = fit_pattern(x, None, target, zeros, zeros, steps=50, seed=1)
    b = fit_pattern(x, None, target, zeros, zeros, steps=50, seed=1)
    c = fit_pattern(x, None, target, zeros, zeros, steps=50, seed=2)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert a[2][-1] < a[2][0]


def test_a_new_empty_dimension_is_woken_up():
    # Raising d_k pads W_Q and W_K with a zero column: a saddle that gradient descent would never leave.
    x = x8()
    rng = np.random.default_rng(2)
    w_q, w_k = np.zeros((16, 2)), np.zeros((16, 2))
    w_q[:, 0], w_k[:, 0] = rng.standard_normal(16), rng.standard_normal(16)
    target = target_preset("previous-token", 8, 8)
    fitter = PatternFitter(x, None, target, w_q, w_k, seed=3)
    assert np.array_equal(fitter.w_q[:, 0], w_q[:, 0])  # the column in use starts where it was
    assert fitter.w_q[:, 1].any() and fitter.w_k[:, 1].any()
    fitter.step(200)
    assert np.abs(fitter.w_q[:, 1]).max() > 0.1 and np.abs(fitter.w_k[:, 1]).max() > 0.1


def test_stepping_in_bursts_equals_one_long_fit():
    x = x8()
    rng = np.random.default_rng(5)
    w_q, w_k = rng.standard_normal((16, 3)), rng.standard_normal((16, 3))
    target = target_preset("uniform-causal", 8, 8, causal=True)
    w_q1, w_k1, losses = fit_pattern(x, None, target, w_q, w_k, causal=True, steps=300, lr=0.02)
    fitter = PatternFitter(x, None, target, w_q, w_k, causal=True, lr=0.02)
    bursts = np.concatenate([fitter.step(30) for _ in range(10)])
    assert np.array_equal(bursts, losses[:-1]) and fitter.loss == losses[-1]
    assert np.array_equal(fitter.w_q, w_q1) and np.array_equal(fitter.w_k, w_k1)
    assert fitter.steps_taken == 300


def svd_floor(target: np.ndarray, d_k: int) -> float:
    """The test's own floor for an unmasked, full-support target: (Σ H(t_i) + φ(ρ)) / n with
    ρ = ‖tail of the SVD of diag(min_j t_ij)·(row-centred log T) beyond d_k‖ and φ(u) = u + e^(−u) − 1."""
    n = len(target)
    entropy = -sum(target[i, j] * np.log(target[i, j]) for i in range(n) for j in range(n))
    centred = np.log(target) - np.log(target).mean(axis=1, keepdims=True)
    weighted = np.diag(target.min(axis=1)) @ centred
    sv = np.linalg.svd(weighted, compute_uv=False)
    rho = np.sqrt(np.sum(sv[d_k:] ** 2))
    return (entropy + rho + np.exp(-rho) - 1) / n


def test_rank_one_head_stays_above_the_svd_floor():
    x = x8()
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((8, 8)) * 2.0
    target = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # full support, full rank
    floor = svd_floor(target, 1)
    reported = loss_floor(target, 1, x_q=x)
    assert reported.kind == "rank (SVD)" and reported.loss == pytest.approx(floor, rel=1e-12)
    assert floor > reported.entropy  # the rank is what binds
    for seed in range(4):
        w = np.random.default_rng(seed).standard_normal((2, 16, 1))
        _, _, losses = fit_pattern(x, None, target, w[0], w[1], steps=2000, lr=0.05, seed=seed)
        assert losses.min() >= floor
    # a full-rank head goes below the rank-1 floor: the floor is about d_k, not about the optimiser
    w = np.random.default_rng(0).standard_normal((2, 16, 8)) * 0.3
    _, _, losses = fit_pattern(x, None, target, w[0], w[1], steps=2000, lr=0.05)
    assert losses[-1] < floor
    # the reported upper bound is reached by the truncated SVD it describes
    centred = logits - logits.mean(axis=1, keepdims=True)  # log T up to a constant per row
    u, s, vt = np.linalg.svd(centred)
    w_q = np.zeros((16, 1))
    w_k = np.zeros((16, 1))
    w_q[8:, 0] = u[:, 0] * s[0]  # the position columns carry the rank-1 form
    w_k[8:, 0] = vt[0]
    assert pattern_loss(x, None, target, w_q, w_k, scale=1.0) == pytest.approx(reported.upper, rel=1e-9)


def test_previous_token_without_a_mask_needs_more_than_one_dimension():
    x = x8()
    target = target_preset("previous-token", 8, 8, causal=False)
    floor = loss_floor(target, 1, x_q=x)
    assert floor.kind == "rank-1 extremes"
    # rows 0 and 1 both want key 0; six more rows want six other keys, and only one more can be a favourite
    assert floor.loss == pytest.approx(5 * np.log(2) / 8)
    for seed in range(3):
        w = np.random.default_rng(seed).standard_normal((2, 16, 1)) * 0.3
        _, _, losses = fit_pattern(x, None, target, w[0], w[1], steps=2000, lr=0.05)
        assert losses.min() >= floor.loss
    assert loss_floor(target, 2, x_q=x).loss == 0.0 and loss_floor(target, 2, x_q=x).upper == 0.0
    w = np.random.default_rng(0).standard_normal((2, 16, 2)) * 0.3
    _, _, losses = fit_pattern(x, None, target, w[0], w[1], steps=2000, lr=0.05)
    assert losses[-1] < 0.05


def test_rank_one_causal_previous_token_is_reachable_by_a_zigzag():
    # Under the causal mask a query's favourite is the largest or smallest key number *it can see*: the zigzag
    # b = 0, −1, 1, −2, 2, … makes the previous token a new record for every query. No rank floor is claimed.
    x = x8()
    target = target_preset("previous-token", 8, 8, causal=True)
    assert loss_floor(target, 1, x_q=x, causal=True).loss == 0.0
    w_q, w_k = np.zeros((16, 1)), np.zeros((16, 1))
    w_k[8:, 0] = [0, -1, 1, -2, 2, -3, 3, -4]
    w_q[8:, 0] = 20 * np.array([1, 1, -1, 1, -1, 1, -1, 1])
    p = head_weights(x, w_q, w_k, causal=True, scale=1.0)
    assert all(p[i, i - 1] > 0.99 for i in range(1, 8))


def test_tokens_without_positions_cannot_tell_copies_apart():
    tokens = "the cat the cat".split()
    x = np.zeros((4, 2))
    x[[0, 2], 0] = 1.0
    x[[1, 3], 1] = 1.0
    target = target_preset("previous-token", 4, 4)
    floor = loss_floor(target, 2, x_q=x)
    assert floor.kind == "duplicates" and floor.loss > 0.3
    w = np.random.default_rng(0).standard_normal((2, 2, 2))
    _, _, losses = fit_pattern(x, None, target, w[0], w[1], steps=1000)
    assert losses.min() >= floor.loss - 1e-12
    assert tokens  # the sentence the features stand for


def test_target_presets_and_normalisation():
    t = target_preset("previous-token", 4, 4, causal=True)
    assert np.array_equal(t, [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    t = target_preset("uniform-causal", 3, 3, causal=True)
    assert np.allclose(t, [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    t = target_preset("same-token", 4, 4, causal=True, tokens_q="a b a b".split())
    assert np.allclose(t[2], [0.5, 0, 0.5, 0]) and np.allclose(t[1], [0, 1, 0, 0])
    assert np.array_equal(target_preset("first-token", 2, 3), [[1, 0, 0], [1, 0, 0]])
    assert np.array_equal(target_preset("self", 2, 2), np.eye(2))
    painted = normalize_target([[2, 2, 5], [0, 0, 0], [-1, 3, 1]], np.tri(3, dtype=bool))
    assert np.allclose(painted, [[1, 0, 0], [0, 0, 0], [0, 0.75, 0.25]])
    with pytest.raises(QkvError, match="no target pattern called"):
        target_preset("nonsense", 2, 2)


def test_bad_input_is_refused_with_a_message():
    x = x8()
    w = np.zeros((16, 2))
    t = target_preset("self", 8, 8)
    with pytest.raises(QkvError, match="target pattern is"):
        fit_pattern(x, None, t[:3], w, w, steps=1)
    with pytest.raises(QkvError, match="empty"):
        fit_pattern(x, None, np.zeros((8, 8)), w, w, steps=1)
    with pytest.raises(QkvError, match="learning rate"):
        fit_pattern(x, None, t, w, w, steps=1, lr=float("nan"))
    with pytest.raises(QkvError, match="same shape"):
        fit_pattern(x, None, t, w, np.zeros((16, 3)), steps=1)
    with pytest.raises(QkvError, match="finite"):
        fit_pattern(x * np.nan, None, t, w, w, steps=1)
    with pytest.raises(QkvError, match="diverged"):
        fit_pattern(x, None, t, np.ones((16, 2)), -np.ones((16, 2)), steps=5, lr=1e300, optimizer="gd")


@pytest.mark.parametrize("shape", [(16, 3), (4, 6)])
def test_qk_singular_values_are_those_of_the_product(shape):
    rng = np.random.default_rng(9)
    w_q, w_k = rng.standard_normal(shape), rng.standard_normal(shape)
    expected = np.linalg.svd(w_q @ w_k.T, compute_uv=False)[: min(shape)]
    np.testing.assert_allclose(qk_singular_values(w_q, w_k)[: min(shape)], expected, rtol=1e-10)
