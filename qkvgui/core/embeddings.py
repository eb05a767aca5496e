"""Ways to turn tokens into the rows of X: one-hot token and position features, sinusoids, seeded noise."""

from __future__ import annotations

import numpy as np

from .errors import ShapeError

__all__ = ["one_hot_features", "sinusoidal_positions", "seeded_random", "token_ids"]


def token_ids(tokens: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each token's index in the vocabulary of distinct tokens, in order of first appearance.

    Returns (ids [n], vocabulary).
    """
    vocab: dict[str, int] = {}
    ids = np.array([vocab.setdefault(t, len(vocab)) for t in tokens], dtype=np.intp)
    return ids, list(vocab)


def one_hot_features(tokens: list[str], d_model: int) -> np.ndarray:
    """X [n, d_model] with a block of one-hot token features followed by a block of one-hot positions.

    Columns 0..V−1 say which distinct token this is, columns V..V+n−1 which position; the rest stay 0.
    This is the residual stream of the hand-built constructions: every feature a head could read is a column.
    """
    ids, vocab = token_ids(tokens)
    n, v = len(tokens), len(vocab)
    if v + n > d_model:
        raise ShapeError(
            f"One-hot features need {v} token columns + {n} position columns = {v + n}, but d_model is {d_model}: "
            f"raise d_model to at least {v + n}."
        )
    x = np.zeros((n, d_model))
    x[np.arange(n), ids] = 1.0
    x[np.arange(n), v + np.arange(n)] = 1.0
    return x


def sinusoidal_positions(n: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """The Transformer's position code [n, d_model]: sin on even columns, cos on odd, wavelengths up to 2π·base."""
    pos = np.arange(n)[:, None]  # [n, 1]
    i = np.arange(d_model)[None, :]  # [1, d_model]
    angle = pos / base ** ((i - i % 2) / d_model)  # [n, d_model]
    return np.where(i % 2 == 0, np.sin(angle), np.cos(angle))


def seeded_random(shape: tuple[int, ...], seed: int, std: float | None = None) -> np.ndarray:
    """Normal noise of the given shape, reproducible from its seed; std defaults to 1/√(rows of the last matrix)."""
    rng = np.random.default_rng(seed)
    if std is None:
        std = 1.0 / np.sqrt(shape[-2]) if len(shape) >= 2 and shape[-2] > 0 else 1.0
    return rng.standard_normal(shape) * std
