"""Head scores against loops written from their definitions, and the detectors finding the heads built by hand."""

import math

import numpy as np
import pytest

from qkvgui.core.heads import SCORES, head_scores, repeated_random_tokens
from qkvgui.session import Session


def loop_scores(w: np.ndarray, tokens: list[str]) -> dict[str, float]:
    """One head's scores by the definitions in qkvgui.core.heads, with plain loops (positions 0-based here)."""
    n = len(tokens)
    prev = [w[i, i - 1] for i in range(1, n)]
    first = [w[i, 0] for i in range(1, n)]
    dup, ind = [], []
    for i in range(n):
        earlier = [j for j in range(i) if tokens[j] == tokens[i]]
        if earlier:
            dup.append(sum(w[i, j] for j in earlier))
            ind.append(sum(w[i, j + 1] for j in earlier))
    ent = [-sum(p * math.log(p) for p in w[i] if p > 0) for i in range(n) if w[i].sum() > 0]
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return {
        "previous-token": mean(prev),
        "first-token": mean(first),
        "duplicate-token": mean(dup),
        "induction": mean(ind),
        "entropy": mean(ent),
    }


def random_causal_weights(rng, layers: int, heads: int, n: int) -> np.ndarray:
    logits = rng.normal(size=(layers, heads, n, n)) * 2
    logits = np.where(np.tri(n, dtype=bool), logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("seed", range(4))
def test_every_score_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    n = 30
    tokens = [str(t) for t in rng.integers(0, 8, size=n)]  # repeats, so duplicate and induction are defined
    w = random_causal_weights(rng, 2, 12, n)
    w[1, 3, 5] = 0.0  # a dead row (no visible key) is left out of the entropy
    got = head_scores(w, tokens)
    assert set(got) == set(SCORES)
    for layer in range(2):
        for head in range(12):
            want = loop_scores(w[layer, head], tokens)
            for name in SCORES:
                assert got[name].shape == (2, 12)
                np.testing.assert_allclose(got[name][layer, head], want[name], rtol=1e-12, err_msg=name)


def test_scores_that_do_not_apply_are_nan():
    w = random_causal_weights(np.random.default_rng(0), 1, 2, 4)
    got = head_scores(w, ["a", "b", "c", "d"])  # no token repeats
    assert np.isnan(got["duplicate-token"]).all() and np.isnan(got["induction"]).all()
    assert np.isfinite(got["previous-token"]).all()


def test_ideal_heads_score_one():
    n = 9
    tokens = list("xabcdabcd")
    prev = np.eye(n, k=-1)
    prev[0, 0] = 1.0
    induction = np.zeros((n, n))
    for i, t in enumerate(tokens):
        earlier = [j for j in range(i) if tokens[j] == t]
        induction[i, earlier[0] + 1 if earlier else 0] = 1.0
    got = head_scores(np.stack([prev, induction])[None], tokens)
    assert got["previous-token"][0, 0] == 1.0 and got["induction"][0, 1] == 1.0
    assert got["entropy"][0, 0] == 0.0


def table(scores: dict[str, np.ndarray], name: str) -> list[tuple[int, int]]:
    """(layer, head) by score, best first: what the Model tab's sorted table shows."""
    s = scores[name]
    order = np.argsort(-np.nan_to_num(s, nan=-np.inf), axis=None, kind="stable")
    return [tuple(int(v) for v in np.unravel_index(i, s.shape)) for i in order]


def test_the_induction_presets_heads_top_their_tables():
    s = Session.from_preset("induction")
    scores = s.head_scores()
    assert scores["previous-token"].shape == (2, 1)
    assert table(scores, "previous-token")[0] == (0, 0)  # layer 1 is the previous-token head
    assert table(scores, "induction")[0] == (1, 0)  # layer 2 is the induction head
    assert scores["previous-token"][0, 0] > 0.9 and scores["induction"][1, 0] > 0.9


def test_repeating_random_tokens_lights_the_induction_head_up():
    s = Session.from_preset("induction")
    s.repeat_random_tokens(seed=3)
    tokens = s.tokens
    half = (len(tokens) - 1) // 2
    assert tokens[1 : 1 + half] == tokens[1 + half :] and tokens != Session.from_preset("induction").tokens
    scores = s.head_scores()
    assert scores["induction"][1, 0] > 0.9 and table(scores, "induction")[0] == (1, 0)


def test_repeated_random_tokens_are_seeded():
    a = repeated_random_tokens(list("abcdef"), 5, seed=1)
    assert a == repeated_random_tokens(list("abcdef"), 5, seed=1) and a[:5] == a[5:]
    assert a != repeated_random_tokens(list("abcdef"), 5, seed=2)


def test_impossible_requests_are_refused_with_a_qkv_error_saying_why():
    from qkvgui.core import QkvError, SessionError, ShapeError

    with pytest.raises(SessionError, match="at least one token to draw from"):
        repeated_random_tokens([], 5, seed=0)
    with pytest.raises(SessionError, match="length of at least 1 token, not 0"):
        repeated_random_tokens(list("ab"), 0, seed=0)
    with pytest.raises(ShapeError, match=r"\[layers, heads, n, n\] and n tokens.*\(1, 2, 3, 3\) and 2 tokens"):
        head_scores(np.zeros((1, 2, 3, 3)), ["a", "b"])
    assert issubclass(SessionError, QkvError) and issubclass(ShapeError, QkvError)
