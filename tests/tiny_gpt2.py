"""A tiny GPT-2 checkpoint in the Hugging Face layout, written deterministically (seeded) by the tests themselves."""

import json
from pathlib import Path

import numpy as np

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "and", "it", "was", "happy", "."]
CONFIG = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 16, "n_head": 4, "n_layer": 3,
          "n_positions": 12, "n_ctx": 12, "vocab_size": len(WORDS) + 1, "layer_norm_epsilon": 1e-5,
          "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def tiny_gpt2_tensors(seed: int = 7) -> dict[str, np.ndarray]:
    """GPT-2 tensor names and shapes (Conv1D weights input-major), float32 as checkpoints store them."""
    rng = np.random.default_rng(seed)
    d, n_layer, vocab, pos = CONFIG["n_embd"], CONFIG["n_layer"], CONFIG["vocab_size"], CONFIG["n_positions"]

    def w(*shape, std=0.3):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    t = {"transformer.wte.weight": w(vocab, d), "transformer.wpe.weight": w(pos, d),
         "transformer.ln_f.weight": 1 + w(d, std=0.1), "transformer.ln_f.bias": w(d, std=0.1)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        t |= {p + "ln_1.weight": 1 + w(d, std=0.1), p + "ln_1.bias": w(d, std=0.1),
              p + "attn.c_attn.weight": w(d, 3 * d), p + "attn.c_attn.bias": w(3 * d, std=0.1),
              p + "attn.c_proj.weight": w(d, d), p + "attn.c_proj.bias": w(d, std=0.1),
              p + "ln_2.weight": 1 + w(d, std=0.1), p + "ln_2.bias": w(d, std=0.1),
              p + "mlp.c_fc.weight": w(d, 4 * d), p + "mlp.c_fc.bias": w(4 * d, std=0.1),
              p + "mlp.c_proj.weight": w(4 * d, d), p + "mlp.c_proj.bias": w(d, std=0.1)}
    return t


def write_tiny_gpt2(folder: Path) -> Path:
    """config.json, model.safetensors and a word-level tokenizer.json in folder; returns the folder."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    save_file(tiny_gpt2_tensors(), str(folder / "model.safetensors"))
    vocab = {"<unk>": 0} | {word: i + 1 for i, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder
