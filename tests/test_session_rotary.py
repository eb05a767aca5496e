"""Rotary positions and shared key/value heads as session settings: undoable setters, checks, real SmolLM2 layers."""

import sys
from pathlib import Path

import numpy as np
import pytest

from qkvgui import Session, SessionError
from qkvgui.core import multi_head_attention

sys.path.insert(0, str(Path(__file__).parent))


def grouped_session(h=6, h_kv=2, n=30, d_model=16, d_k=8):
    rng = np.random.default_rng(1)
    return Session.from_arrays(
        rng.standard_normal((n, d_model)),
        rng.standard_normal((h, d_model, d_k)) / 3,
        rng.standard_normal((h_kv, d_model, d_k)) / 3,
        rng.standard_normal((h_kv, d_model, d_k)),
        rng.standard_normal((h * d_k, d_model)),
        causal=True,
    )


def test_rotary_setting_changes_the_scores_and_undoes_through_states():
    s = grouped_session()
    plain = s.compute()
    before = s.state()
    s.set_rotary(True, theta=500.0)
    r = s.compute()
    assert s.rotary and s.rope_theta == 500.0 and r.rotary == 500.0
    expected = multi_head_attention(
        s.matrix("X"), s.matrix("W_Q"), s.matrix("W_K"), s.matrix("W_V"), s.matrix("W_O"), causal=True, rotary=500.0
    )
    np.testing.assert_array_equal(r.weights, expected.weights)
    assert not np.allclose(r.weights, plain.weights)
    s.set_state(before)  # what the undo command does
    np.testing.assert_array_equal(s.compute().weights, plain.weights)
    for bad in (0.5, float("nan"), "x"):
        with pytest.raises(SessionError, match="θ"):
            s.set_rope_theta(bad)
    assert not s.rotary


def test_sharing_key_value_heads_from_multi_head_to_multi_query_and_back():
    s = grouped_session(h=6, h_kv=6)
    assert s.n_kv_heads == 6
    s.set_n_kv_heads(2)
    assert s.matrix("W_K").shape == (2, 16, 8) and s.matrix("b_K").shape == (2, 8)
    assert [s.kv_head(i) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    r = s.compute()
    split = s.state()
    s.set_n_kv_heads(6)  # splitting copies each shared head: every result stays what it was
    np.testing.assert_array_equal(s.compute().weights, r.weights)
    s.set_state(split)
    s.set_n_kv_heads(1)  # multi-query: every query head reads one key/value head
    assert s.compute().k.shape[0] == 1
    with pytest.raises(SessionError, match="choose one of 1, 2, 3, 6"):
        s.set_n_kv_heads(4)


def test_editing_w_k_of_the_selected_query_head_writes_its_key_value_head():
    s = grouped_session(h=6, h_kv=2)
    s.set_head(4)  # query head 5 reads key/value head 2
    s.set_block("W_K", 0, 0, [[7.0]])
    assert s.matrix("W_K")[1, 0, 0] == 7.0 and s.matrix("W_K")[0, 0, 0] != 7.0


def test_resizing_heads_keeps_the_groups_dividing():
    s = grouped_session(h=6, h_kv=2)
    s.resize(n_heads=4)
    assert (s.n_heads, s.n_kv_heads) == (4, 2)
    s.resize(n_heads=3)
    assert (s.n_heads, s.n_kv_heads) == (3, 1)
    s.set_rotary(True)
    with pytest.raises(SessionError, match="even"):
        s.resize(d_k=5)


def test_bad_states_are_refused():
    with pytest.raises(SessionError, match="divide"):
        grouped_session(h=6, h_kv=4)
    s = grouped_session()
    with pytest.raises(SessionError, match="θ"):
        s.set_state(s.state().replace(rope_theta=float("inf")))


def test_rope_preset_builds_the_previous_token_head_from_rotations_alone():
    onehot = Session.from_preset("previous-token")
    rope = Session.from_preset("previous-token-rope")
    assert rope.rotary and rope.rope_theta == 10000.0 and not onehot.rotary
    assert not any(f.startswith("pos:") for f in rope.features)  # no position features at all
    q = rope.compute().q[0]
    # before the rotation every token asks the same question
    np.testing.assert_allclose(q, np.broadcast_to(q[0], q.shape), atol=0)
    w_rope, w_onehot = rope.compute().weights[0], onehot.compute().weights[0]
    expected = np.eye(6, k=-1)
    expected[0, 0] = 1.0  # the first token has no previous one: it sees only itself
    np.testing.assert_allclose(w_rope, expected, atol=1e-4)
    np.testing.assert_allclose(w_onehot, expected, atol=1e-4)
    rope.set_rotary(False)  # without the rotation nothing tells the positions apart: uniform attention
    np.testing.assert_allclose(rope.compute().weights[0][5], np.full(6, 1 / 6), atol=1e-12)
