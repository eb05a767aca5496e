"""The session document: edits reach the computation, refusals change nothing, resizes keep values."""

from unittest.mock import Mock

import numpy as np
import pytest
from reference import reference_attention

from qkvgui.session import Layer, Session, SessionError


def watched():
    """A session and a spy on its matrix signal; `spy.every` sees every signal of the group."""
    s = Session()
    spy = Mock()
    spy.every = Mock()
    s.events.matrix.connect(spy)
    s.events.all.connect(spy.every)
    return s, spy


def test_default_session_computes_the_reference():
    s = Session()
    r = s.compute()
    w_ref, _, out_ref = reference_attention(
        s.matrix("X"), s.matrix("W_Q"), s.matrix("W_K"), s.matrix("W_V"), s.matrix("W_O"), causal=s.causal
    )
    np.testing.assert_allclose(r.weights, w_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.output, out_ref, rtol=1e-12, atol=1e-13)
    assert r.weights.shape == (2, 6, 6)


def test_block_edit_announces_and_changes_the_result():
    s, spy = watched()
    before = s.compute().weights.copy()
    old = s.set_block("W_Q", 3, 1, [[0.5]], head=1)
    spy.assert_called_once_with("W_Q")
    assert s.matrix("W_Q")[1, 3, 1] == 0.5
    assert not np.array_equal(s.compute().weights[1], before[1])
    np.testing.assert_array_equal(s.compute().weights[0], before[0])  # the other head is untouched
    s.set_block("W_Q", 3, 1, old, head=1)
    np.testing.assert_array_equal(s.compute().weights, before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("W_K", 5, 2, [[1.0, 2.0]]), "does not fit in W_K"),
        (("X", 0, 0, [[np.nan]]), "finite"),
        (("W_O", 0, 0, [[np.inf]]), "finite"),
        (("nope", 0, 0, [[1.0]]), "no matrix called 'nope'"),
    ],
)
def test_refused_edits_change_nothing(args, message):
    s, spy = watched()
    before = {name: s.matrix(name).copy() for name in ("X", "W_K", "W_O")}
    with pytest.raises(SessionError, match=message):
        s.set_block(*args)
    spy.assert_not_called()
    spy.every.assert_not_called()
    for name, value in before.items():
        np.testing.assert_array_equal(s.matrix(name), value)


def test_matrices_are_read_only_to_callers():
    s = Session()
    with pytest.raises(ValueError):
        s.matrix("X")[0, 0] = 3.0


def test_resize_keeps_every_existing_value():
    s = Session()
    w_o, w_v = s.matrix("W_O").copy(), s.matrix("W_V").copy()
    s.resize(n_heads=3, d_v=4, d_model=14)
    assert s.matrix("W_O").shape == (12, 14)
    blocks = s.matrix("W_O").reshape(3, 4, 14)
    np.testing.assert_array_equal(blocks[:2, :3, :12], w_o.reshape(2, 3, 12))  # each head's block stays its own
    assert not blocks[2].any() and not blocks[:, 3].any()
    np.testing.assert_array_equal(s.matrix("W_V")[:2, :12, :3], w_v)
    s.resize(n_heads=2, d_v=3, d_model=12)
    np.testing.assert_array_equal(s.matrix("W_O"), w_o)
    with pytest.raises(SessionError, match="heads must be between 1"):
        s.resize(n_heads=0)


def test_tokens_keep_their_rows_when_the_sentence_is_edited():
    s = Session()
    x = s.matrix("X").copy()
    s.set_tokens(["the", "big", "cat", "sat", "on", "the", "mat"])
    np.testing.assert_array_equal(s.matrix("X")[0], x[0])
    np.testing.assert_array_equal(s.matrix("X")[2:], x[1:])
    assert s.compute().weights.shape == (2, 7, 7)
    s.set_tokens(["the", "dog", "sat", "on", "the", "mat"][:3])
    assert s.matrix("X").shape == (3, 12)
    with pytest.raises(SessionError):
        s.set_tokens([])


def test_cross_attention_and_padding_reach_the_result():
    s = Session()
    s.set_cross(True)
    s.set_causal(False)
    r = s.compute()
    assert r.weights.shape == (2, 6, 5)
    assert np.all(r.weights[:, :, 4] == 0)  # <pad> is hidden
    s.set_padding([False] * 5)
    assert np.all(s.compute().weights[:, :, 4] > 0)
    with pytest.raises(SessionError, match="one flag per token"):
        s.set_padding([True])


def test_scale_modes():
    s = Session()
    assert s.scale() == pytest.approx(1 / np.sqrt(3))
    s.set_scale("none")
    assert s.compute().scale == 1.0
    s.set_scale("custom", 0.25)
    assert s.compute().scale == 0.25
    with pytest.raises(SessionError):
        s.set_scale("custom", float("nan"))
    assert s.scale() == 0.25


def test_state_round_trip_restores_everything():
    s = Session()
    snap = s.state()
    s.set_block("X", 0, 0, [[9.0]])
    s.resize(d_k=5)
    s.set_causal(False)
    s.set_state(snap)
    assert s.matrix("X")[0, 0] == snap.x[0, 0] and s.d_k == 3 and s.causal


def test_one_hot_generator_refuses_small_d_model_cleanly():
    s = Session()
    s.resize(d_model=6)
    x = s.matrix("X").copy()
    with pytest.raises(SessionError, match="raise d_model"):
        s.generate("X", "one-hot")
    np.testing.assert_array_equal(s.matrix("X"), x)


def test_from_arrays_takes_the_cores_arguments():
    rng = np.random.default_rng(0)
    x, x_kv = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    w_q, w_k, w_v = rng.standard_normal((3, 2, 4, 2))
    w_o = rng.standard_normal((4, 4))
    s = Session.from_arrays(
        x, w_q, w_k, w_v, w_o, x_kv=x_kv, tokens=list("abc"), key_padding_mask=[0, 0, 0, 1, 1], causal=True
    )
    from qkvgui.core import multi_head_attention

    ref = multi_head_attention(
        x, w_q, w_k, w_v, w_o, x_kv=x_kv, causal=True, key_padding_mask=np.array([0, 0, 0, 1, 1], bool)
    )
    np.testing.assert_array_equal(s.compute().weights, ref.weights)
    assert s.tokens == ["a", "b", "c"] and s.cross
    with pytest.raises(SessionError, match="2 tokens but X has 3 rows"):
        Session.from_arrays(x, w_q, w_k, w_v, w_o, tokens=["a", "b"])
    with pytest.raises(SessionError, match="W_K"):
        Session.from_arrays(x, w_q, w_k[:, :3], w_v, w_o)


def test_unknown_preset_names_the_presets():
    with pytest.raises(SessionError, match="previous-token"):
        Session.from_preset("nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"custom_scale": "big"}, "custom scale has the wrong type"),
        ({"head": 1.5}, "head has the wrong type"),
        ({"tokens": [1, 2, 3, 4, 5, 6]}, "tokens must be a list of strings"),
        (
            {"layers": [Layer(np.zeros((2, 12, 0)), np.zeros((2, 12, 0)), np.ones((2, 12, 3)), np.ones((6, 12)))]},
            "d_k must be between 1",
        ),
        ({"layers": []}, "1 to 64 layers"),
    ],
)
def test_states_of_the_wrong_kind_are_refused(change, message):
    from qkvgui.state import SessionState

    good = Session().state()
    with pytest.raises(SessionError, match=message):
        Session(SessionState(**{**good.__dict__, **change}))


def test_a_session_owns_its_state():
    tokens, extra = list(Session().tokens), {}
    snap = Session().state().replace(tokens=tokens, extra=extra)
    s = Session(snap)
    tokens.append("leak")
    extra["x"] = 1
    snap.extra["x"] = 1
    assert "leak" not in s.tokens and "x" not in s.state().extra


def test_a_stack_of_layers_feeds_each_layer_the_stream_of_the_one_before():
    s = Session()
    one = s.compute()
    s.add_layer(seed=5)
    assert s.n_layers == 2 and s.layer == 1
    r0, r1 = s.compute()
    np.testing.assert_array_equal(r0.weights, one.weights)  # layer 0 is unchanged
    w = {n: s.matrix(n, layer=1) for n in ("W_Q", "W_K", "W_V", "W_O")}
    w_ref, _, out_ref = reference_attention(r0.residual, w["W_Q"], w["W_K"], w["W_V"], w["W_O"], causal=True)
    np.testing.assert_allclose(r1.weights, w_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r1.residual, r0.residual + out_ref, rtol=1e-12, atol=1e-12)
    # an edit in layer 0 flows through layer 1
    s.set_layer(0)
    s.set_block("W_V", 0, 0, [[5.0]], head=0)
    assert not np.array_equal(s.compute()[1].residual, r1.residual)
    s.remove_layer(1)
    assert s.n_layers == 1 and s.layer == 0
    with pytest.raises(SessionError, match="at least one layer"):
        s.remove_layer()


def test_ablating_a_head_removes_what_it_writes():
    s = Session()
    full = s.compute()
    s.set_ablated(1, True)
    r = s.compute()
    np.testing.assert_array_equal(r.weights, full.weights)
    assert not r.head_outputs[1].any()
    np.testing.assert_allclose(r.output, full.head_outputs[0] @ s.matrix("W_O")[:3])
    s.set_ablated(1, False)
    np.testing.assert_array_equal(s.compute().output, full.output)


def test_biases_and_a_separate_residual_stream_from_arrays():
    rng = np.random.default_rng(4)
    x, resid = rng.standard_normal((2, 3, 4))
    w_q, w_k, w_v = rng.standard_normal((3, 1, 4, 2))
    w_o = rng.standard_normal((2, 4))
    b = {
        "b_q": rng.standard_normal((1, 2)),
        "b_k": rng.standard_normal((1, 2)),
        "b_v": rng.standard_normal((1, 2)),
        "b_o": rng.standard_normal(4),
    }
    s = Session.from_arrays(x, w_q, w_k, w_v, w_o, x_residual=resid, **b)
    r = s.compute()
    _, _, out_ref = reference_attention(x, w_q, w_k, w_v, w_o, **b)
    np.testing.assert_allclose(r.output, out_ref, rtol=1e-12)
    np.testing.assert_allclose(r.residual, resid + out_ref, rtol=1e-12)
    np.testing.assert_array_equal(s.matrix("b_O"), b["b_o"])
