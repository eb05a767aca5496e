"""A learner's presets stay true: a new sentence rebuilds a preset's features and weights for the new tokens, and
the session says when an edit took it away from what the preset's description claims."""

import numpy as np
import pytest

from qkvgui.core.embeddings import token_ids
from qkvgui.core.presets import TOKEN_PRESETS, preset_names
from qkvgui.session import Session

DOG = "a dog saw the cat".split()


def previous_token_weights(s: Session, layer: int = 0, head: int = 0) -> list[float]:
    w = s.compute_layers()[layer].weights[head]
    return [float(w[i, i - 1]) for i in range(1, len(s.tokens))]


@pytest.mark.parametrize("name", ["previous-token", "two-heads", "induction"])
def test_a_new_sentence_keeps_the_previous_token_head(name):
    s = Session.from_preset(name)
    s.set_tokens(DOG)
    assert s.tokens == DOG
    assert min(previous_token_weights(s)) >= 0.9
    assert s.preset_changes() == [] and s.preset_note() == ""


def test_the_features_and_their_names_are_made_for_the_new_tokens():
    s = Session.from_preset("previous-token")
    s.set_tokens(DOG)
    ids, vocab = token_ids(DOG)
    n, v = len(DOG), len(vocab)
    x = s.matrix("X")
    # one-hot token block, then one-hot positions, then the (empty) previous-token block: built here by hand
    expected = np.zeros((n, 2 * v + n))
    for i, t in enumerate(DOG):
        expected[i, vocab.index(t)] = 1.0
        expected[i, v + i] = 1.0
    np.testing.assert_array_equal(x, expected)
    assert s.features == [f"tok:{t}" for t in vocab] + [f"pos:{p}" for p in range(1, n + 1)] + [
        f"prev:{t}" for t in vocab
    ]
    # and after the layer each token's previous-token block names its predecessor
    r = s.compute()
    np.testing.assert_allclose(r.residual[1:, v + n :], np.eye(v)[ids[:-1]], atol=0.05)


def test_the_induction_head_still_predicts_on_a_new_repeated_sentence():
    s = Session.from_preset("induction")
    toks = "<s> red fox ran red fox ran".split()
    s.set_tokens(toks)
    r1 = s.compute_layers()[1]
    for i in range(4, len(toks)):
        earlier = toks.index(toks[i])
        assert r1.weights[0, i, earlier + 1] >= 0.8
    assert s.preset_changes() == []


def test_the_rope_preset_rebuilds_without_position_features():
    s = Session.from_preset("previous-token-rope")
    s.set_tokens(DOG)
    assert min(previous_token_weights(s)) >= 0.9
    assert not any(f.startswith("pos:") for f in s.features) and "tok:dog" in s.features


def test_seeded_presets_keep_their_weights_and_the_rows_of_the_tokens_that_stay():
    for name in ("causal-gpt", "bilinear"):
        s = Session.from_preset(name)
        before = {m: s.matrix(m).copy() for m in ("W_Q", "W_K", "W_V", "W_O")}
        x0 = s.matrix("X").copy()
        s.set_tokens([*s.tokens, "more"])
        for m, a in before.items():
            np.testing.assert_array_equal(s.matrix(m), a)
        np.testing.assert_array_equal(s.matrix("X")[: len(x0)], x0)
        assert s.preset_changes() == []
    s = Session.from_preset("bilinear")
    s.set_tokens(DOG)
    r = s.compute()
    np.testing.assert_allclose(r.scores[0], r.scores[0].T, atol=1e-12)  # its claim: W_Q = W_K gives symmetry


def test_an_edit_takes_the_session_away_from_the_preset_and_undoing_it_brings_it_back():
    s = Session.from_preset("previous-token")
    assert s.preset == "previous-token" and s.preset_note() == ""
    before = s.state()
    s.set_block("W_Q", 6, 0, np.array([[0.0]]))  # row 6 (position 2) no longer asks for position 1
    assert s.preset_changes() == ["W_Q"]
    assert "previous-token" in s.preset_note() and "W_Q" in s.preset_note()
    s.set_causal(False)
    assert s.preset_changes() == ["the causal mask", "W_Q"]
    # an edited session is not rebuilt: its edits are the learner's, new tokens follow the ordinary rule
    s.set_tokens(DOG)
    assert "the tokens" in s.preset_changes() or "X" in s.preset_changes()
    s.set_state(before)
    assert s.preset_changes() == []


def test_presets_over_their_own_words_say_when_the_words_change():
    for name in ("search-engine", "translation"):
        s = Session.from_preset(name)
        assert name not in TOKEN_PRESETS
        s.set_tokens(["apple", "pear"])
        assert "the tokens" in s.preset_changes()
        assert "may no longer hold" in s.preset_note()
    s = Session.from_preset("translation")
    s.set_tokens(["un", "chien"], source=True)
    assert "the source tokens" in s.preset_changes()


def test_the_learn_preset_ignores_the_trained_weights_and_keeps_the_chosen_d_k():
    s = Session.from_preset("learn-previous-token")
    s.set_matrix("W_Q", s.matrix("W_Q") * 3)  # what training does
    assert s.preset_changes() == []
    s.resize(d_k=2)
    assert s.preset_changes() == []
    s.set_tokens(DOG)
    assert s.d_k == 2 and s.d_model == 2 * 5 + 5 and s.preset_changes() == []


def test_a_preset_saved_and_loaded_is_still_that_preset(tmp_path):
    s = Session.from_preset("two-heads")
    s.set_tokens(DOG)
    s.save(tmp_path / "p.qkv")
    t = Session.load(tmp_path / "p.qkv")
    assert t.preset == "two-heads" and t.preset_changes() == []
    t.set_tokens("one two three".split())
    assert min(previous_token_weights(t)) >= 0.9


def test_a_sentence_too_long_for_the_preset_is_refused_before_allocating():
    from qkvgui.core import SessionError

    s = Session.from_preset("induction")
    tokens = [f"w{i}" for i in range(3000)]  # d_model 3·3000 + 3000 passes the d_model limit
    with pytest.raises(SessionError, match="d_model"):
        s.set_tokens(tokens)
    assert s.tokens == "<s> A B C D E A B C D E".split()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_starts_true(name):
    s = Session.from_preset(name)
    assert s.preset == name and s.preset_changes() == []


def test_repeated_random_tokens_keep_the_induction_preset_true():
    s = Session.from_preset("induction")
    s.repeat_random_tokens(seed=3, length=4)
    toks = s.tokens
    assert len(toks) == 9 and toks[1:5] == toks[5:] and s.preset_changes() == []
    r1 = s.compute_layers()[1]
    for i in range(5, 9):
        if toks.count(toks[i]) == 2:  # a token drawn once per half: its earlier copy is unique
            assert r1.weights[0, i, toks.index(toks[i]) + 1] >= 0.8
