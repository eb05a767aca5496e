"""Head scores: one number per head saying how much its pattern looks like a known kind of head.

Every score reads a head's attention weights W [n_q, n_k] (row i: how query i spreads over the keys) and the
tokens; positions below are 1-based as in the text, and a score is the mean over the query rows it applies to
(NaN when it applies to none, e.g. "induction" on a sentence with no repeated token):

    previous-token   mean over queries i ≥ 2 of W[i, i − 1]                     (the key just before the query)
    first-token      mean over queries i ≥ 2 of W[i, 1]                         (query 1 can only see key 1)
    duplicate-token  mean over queries i whose token occurred earlier, of Σ_{j < i, t_j = t_i} W[i, j]
    induction        mean over queries i whose token occurred earlier, of Σ_{j < i, t_j = t_i} W[i, j + 1]
                     (the key right after an earlier copy of the query's token: "what came next last time")
    entropy          mean over queries that see a key, of −Σ_j W[i, j]·ln W[i, j]  (nats; 0·ln 0 = 0)

These are the detectors of TransformerLens's head_detector (previous_token, duplicate_token, induction) and the
attention entropy, written as means of attention mass so that each lies in [0, 1] (entropy in [0, ln n_k]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from .attention import AttentionResult
from .errors import SessionError, ShapeError

T = TypeVar("T")

__all__ = ["SCORES", "head_scores", "head_scores_each", "mean_entropy", "repeated_random_tokens", "result_scores"]

#: the score names, in the order tables show them
SCORES = ("previous-token", "first-token", "duplicate-token", "induction", "entropy")


def _row_mean(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean of values [..., n] over the rows marked True in rows [n]; NaN when none is."""
    if not rows.any():
        return np.full(values.shape[:-1], np.nan)
    mean: np.ndarray = values[..., rows].mean(axis=-1)
    return mean


def head_scores(weights: np.ndarray | Sequence[np.ndarray], tokens: Sequence[object]) -> dict[str, np.ndarray]:
    """Every score of SCORES for every head: weights [layers, h, n, n] (self-attention) and the n tokens (any
    hashable: strings or ids). Returns {name: [layers, h]}; see the module docstring for the formulas."""
    w = np.asarray(weights, dtype=np.float64)  # [L, h, n, n]
    if w.ndim == 3:
        w = w[None]
    n = w.shape[-1]
    if w.ndim != 4 or w.shape[-2] != n or len(tokens) != n:
        raise ShapeError(
            f"Head scores need self-attention weights [layers, heads, n, n] and n tokens, not weights of shape "
            f"{w.shape} and {len(tokens)} tokens."
        )
    return _scores(w, _masks(tokens))


def head_scores_each(
    weights: Callable[[int, int], np.ndarray], n_layers: int, n_heads: int, tokens: Sequence[object]
) -> dict[str, np.ndarray]:
    """The scores of ``head_scores``, reading one head's weights [n, n] at a time from ``weights(layer, head)``, so
    memory stays one head's pattern however many heads a model has (a whole model's scores on a worker)."""
    masks = _masks(tokens)
    n = len(tokens)
    out = {name: np.full((n_layers, n_heads), np.nan) for name in SCORES}
    for layer in range(n_layers):
        for head in range(n_heads):
            w = np.asarray(weights(layer, head), dtype=np.float64)
            if w.shape != (n, n):
                raise ShapeError(
                    f"Head scores need self-attention weights n × n for n = {n} tokens; layer {layer + 1}, head "
                    f"{head + 1} is {w.shape[0]} × {w.shape[-1]}."
                )
            for name, value in _scores(w[None, None], masks).items():
                out[name][layer, head] = value[0, 0]
    return out


def result_scores(
    results: Sequence[AttentionResult], tokens: Sequence[object], cross: bool = False
) -> dict[str, np.ndarray]:
    """Every head's scores, {name: [layers, h]}, from one AttentionResult per layer (queries are `tokens`), one
    head's weights at a time. In cross-attention the keys are another sequence, so only "first-token" and
    "entropy" are defined (the others are NaN)."""
    n_layers, n_heads = len(results), (results[0].n_heads if results else 0)

    def weights(layer: int, head: int) -> np.ndarray:
        return results[layer].head_weights(head)

    if not cross:
        return head_scores_each(weights, n_layers, n_heads, tokens)
    out = {name: np.full((n_layers, n_heads), np.nan) for name in SCORES}
    for layer in range(n_layers):
        for head in range(n_heads):
            w = weights(layer, head)  # [n_q, n_k]
            if w.shape[0] > 1:
                out["first-token"][layer, head] = w[1:, 0].mean()
            out["entropy"][layer, head] = mean_entropy(w)
    return out


def _masks(tokens: Sequence[object]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(later [n], same [n, n], repeated [n], after [n, n]): the rows and keys each score reads."""
    n = len(tokens)
    _, ids = np.unique(np.array([str(t) for t in tokens], dtype=object), return_inverse=True)
    ids = ids.reshape(-1)
    later = np.arange(n) >= 1  # queries i ≥ 2 (1-based)
    same = (ids[:, None] == ids[None, :]) & np.tri(n, k=-1, dtype=bool)  # [n, n] j < i with t_j = t_i
    repeated = same.any(axis=1)  # [n] queries whose token occurred earlier
    after = np.zeros_like(same)
    after[:, 1:] = same[:, :-1]  # [n, n] key j + 1 for each earlier copy j (j + 1 ≤ i)
    return later, same, repeated, after


def _scores(w: np.ndarray, masks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """weights [L, h, n, n] -> {name: [L, h]}."""
    later, same, repeated, after = masks
    previous = np.zeros(w.shape[:-1])  # [L, h, n]
    previous[..., 1:] = np.diagonal(w, offset=-1, axis1=-2, axis2=-1)  # W[i, i − 1]
    return {
        "previous-token": _row_mean(previous, later),
        "first-token": _row_mean(w[..., :, 0], later),
        "duplicate-token": _row_mean((w * same).sum(axis=-1), repeated),
        "induction": _row_mean((w * after).sum(axis=-1), repeated),
        "entropy": mean_entropy(w),
    }


def mean_entropy(weights: np.ndarray) -> np.ndarray:
    """weights [..., n_q, n_k] -> [...]: each row's entropy −Σ w·ln w (nats, 0·ln 0 = 0), averaged over the rows
    that see a key (a row with no visible key is all zeros and is left out; NaN when no row sees one)."""
    w = np.asarray(weights, dtype=np.float64)
    safe = np.where(w > 0, w, 1.0)
    entropy = -(w * np.log(safe)).sum(axis=-1)  # [..., n_q]; w·ln 1 = 0 where w = 0
    sees = w.sum(axis=-1) > 0  # [..., n_q]
    counted = sees.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, (entropy * sees).sum(axis=-1) / np.maximum(counted, 1), np.nan)


def repeated_random_tokens(vocabulary: Sequence[T], length: int, seed: int) -> list[T]:
    """`length` tokens drawn at random (seeded) from vocabulary, then the same again: on the second half an induction
    head attends to the token after the earlier copy (TransformerLens's induction test). The tokens are distinct
    when the vocabulary has enough (so each has one earlier copy), drawn with replacement otherwise. SessionError
    (a QkvError) when there is nothing to draw from or nothing to draw."""
    if not len(vocabulary):
        raise SessionError("Repeat random tokens needs at least one token to draw from, and the sentence has none.")
    if length < 1:
        raise SessionError(f"Repeat random tokens needs a length of at least 1 token, not {length}.")
    rng = np.random.default_rng(seed)
    which = rng.choice(len(vocabulary), size=length, replace=length > len(vocabulary))
    picks = [vocabulary[int(i)] for i in which]
    return picks + picks
