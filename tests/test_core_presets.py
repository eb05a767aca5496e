"""Each preset does what its explanation claims, checked from the computed result (no stored numbers)."""

import numpy as np
import pytest

from qkvgui.core import qk_circuit, spectrum
from qkvgui.core.embeddings import token_ids
from qkvgui.core.presets import preset_names
from qkvgui.session import Session


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_opens_with_a_title_and_an_explanation(name):
    s = Session.from_preset(name)
    assert s.title and len(s.description.split(". ")) >= 2
    for r in s.compute_layers():
        assert np.isfinite(r.residual).all()
    assert len(s.features) == s.d_model


def test_previous_token_head_copies_the_previous_token():
    s = Session.from_preset("previous-token")
    r = s.compute()
    n = len(s.tokens)
    ids, vocab = token_ids(s.tokens)
    v = len(vocab)
    for i in range(1, n):
        assert r.weights[0, i, i - 1] >= 0.9
    prev_block = r.residual[:, v + n : v + n + v]  # the "previous token" features
    np.testing.assert_allclose(prev_block[1:], np.eye(v)[ids[:-1]], atol=0.1)
    assert s.causal


def test_search_engine_queries_find_the_matching_key_and_return_its_value():
    s = Session.from_preset("search-engine")
    r = s.compute()
    toks = s.tokens
    for query, document in (("?fruit", "apple"), ("?pet", "cat")):
        i, j = toks.index(query), toks.index(document)
        assert r.weights[0, i].argmax() == j and r.weights[0, i, j] > 0.9
        # the output is the document's value: the head output row equals v_j
        np.testing.assert_allclose(r.head_outputs[0, i], r.v[0, j], atol=0.1)
        # the key that matched is the query's best match by dot product
        assert np.argmax(r.k[0] @ r.q[0, i]) == j


def test_translation_is_cross_attention_with_padding_ignored():
    s = Session.from_preset("translation")
    r = s.compute()
    assert s.cross and len(s.source_tokens) != len(s.tokens)
    pad = s.source_padding
    assert pad[-1] and pad.any()
    assert np.all(r.weights[:, :, pad] == 0)
    np.testing.assert_allclose(r.weights.sum(-1), 1.0)
    aligned = {"the": "le", "black": "noir", "cat": "chat", "sleeps": "dort"}
    for i, word in enumerate(s.tokens):
        assert s.source_tokens[int(r.weights[0, i].argmax())] == aligned[word]


def test_two_heads_attend_by_position_and_by_identity():
    s = Session.from_preset("two-heads")
    r = s.compute()
    toks = s.tokens
    n = len(toks)
    assert all(r.weights[0, i, i - 1] > 0.9 for i in range(1, n))  # head 1: the previous position
    for i in range(n):  # head 2: earlier copies of the same token, and nothing else
        same = [j for j in range(i + 1) if toks[j] == toks[i]]
        assert r.weights[1, i, same].sum() > 0.99
    # W_O mixes both heads into the output
    assert np.abs(s.matrix("W_O")[: s.d_v]).sum() > 0 and np.abs(s.matrix("W_O")[s.d_v :]).sum() > 0


def test_causal_gpt_never_looks_ahead():
    s = Session.from_preset("causal-gpt")
    r = s.compute()
    n = len(s.tokens)
    assert s.causal and np.all(r.weights[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] == 0)


def test_bilinear_scores_are_symmetric_only_when_w_q_equals_w_k():
    s = Session.from_preset("bilinear")
    r = s.compute()
    x = s.matrix("X")
    qk = qk_circuit(s.matrix("W_Q"), s.matrix("W_K"))
    np.testing.assert_allclose(r.scores[0], r.scores[0].T, atol=1e-12)
    assert not np.allclose(r.scores[1], r.scores[1].T)
    for h in range(2):
        np.testing.assert_allclose(x @ qk[h] @ x.T, r.scores[h], atol=1e-12)  # the bilinear form
        assert spectrum(qk[h]).rank <= s.d_k < s.d_model


def test_induction_head_predicts_what_came_next_last_time():
    s = Session.from_preset("induction")
    assert s.n_layers == 2 and "in-context" in s.description
    r0, r1 = s.compute()
    toks = s.tokens
    n = len(toks)
    ids, vocab = token_ids(toks)
    v = len(vocab)
    half = n // 2 + 1  # "<s> A B C D E | A B C D E"
    for i in range(half, n):
        earlier = toks.index(toks[i])  # the first occurrence
        assert r1.weights[0, i, earlier + 1] >= 0.8, (i, toks[i])
        predicted = r1.residual[i, -v:]  # the prediction block
        assert vocab[int(np.argmax(predicted))] == toks[earlier + 1]
        np.testing.assert_allclose(predicted, np.eye(v)[ids[earlier + 1]], atol=0.2)
    # layer 1 is the previous-token head the induction head composes with
    assert all(r0.weights[0, i, i - 1] >= 0.9 for i in range(1, n))


def test_induction_is_k_composition():
    from qkvgui.core import composition_scores

    s = Session.from_preset("induction")
    c = composition_scores(
        *(s.matrix(n, layer=1) for n in ("W_Q", "W_K", "W_V", "W_O")),
        s.matrix("W_V", layer=0),
        s.matrix("W_O", layer=0),
    )
    assert c["K"][0, 0] > 0.3
    assert c["K"][0, 0] > 10 * max(c["Q"][0, 0], c["V"][0, 0])
