"""Embedding generators: the features a learner reads off X are where they should be."""

import numpy as np
import pytest

from qkvgui.core import ShapeError
from qkvgui.core.embeddings import one_hot_features, seeded_random, sinusoidal_positions, token_ids


def test_one_hot_token_and_position_blocks():
    tokens = ["the", "cat", "the", "dog"]
    x = one_hot_features(tokens, 10)
    ids, vocab = token_ids(tokens)
    assert vocab == ["the", "cat", "dog"] and ids.tolist() == [0, 1, 0, 2]
    assert x.shape == (4, 10)
    np.testing.assert_array_equal(x[:, :3], np.eye(3)[ids])  # token block
    np.testing.assert_array_equal(x[:, 3:7], np.eye(4))  # position block
    assert not x[:, 7:].any()


def test_one_hot_refuses_too_small_d_model():
    with pytest.raises(ShapeError, match="raise d_model to at least 7"):
        one_hot_features(["a", "b", "c", "a"], 6)


def test_sinusoids_match_the_paper_formula():
    pe = sinusoidal_positions(6, 8)
    for pos in range(6):
        for i in range(4):
            assert pe[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / 8)))
            assert pe[pos, 2 * i + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * i / 8)))


def test_seeded_random_is_reproducible():
    a, b, c = seeded_random((2, 3, 4), 5), seeded_random((2, 3, 4), 5), seeded_random((2, 3, 4), 6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
