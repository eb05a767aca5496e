"""A tiny GPT-2 checkpoint in the Hugging Face layout, written deterministically (seeded) by the tests themselves."""

import json
from pathlib import Path

import numpy as np

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "and", "it", "was", "happy", "."]
CONFIG = {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "n_embd": 16,
    "n_head": 4,
    "n_layer": 3,
    "n_positions": 12,
    "n_ctx": 12,
    "vocab_size": len(WORDS) + 1,
    "layer_norm_epsilon": 1e-5,
    "activation_function": "gelu_new",
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
}


def tiny_gpt2_tensors(seed: int = 7) -> dict[str, np.ndarray]:
    """GPT-2 tensor names and shapes (Conv1D weights input-major), float32 as checkpoints store them."""
    rng = np.random.default_rng(seed)
    d, n_layer, vocab, pos = CONFIG["n_embd"], CONFIG["n_layer"], CONFIG["vocab_size"], CONFIG["n_positions"]

    def w(*shape, std=0.3):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    t = {
        "transformer.wte.weight": w(vocab, d),
        "transformer.wpe.weight": w(pos, d),
        "transformer.ln_f.weight": 1 + w(d, std=0.1),
        "transformer.ln_f.bias": w(d, std=0.1),
    }
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        t |= {
            p + "ln_1.weight": 1 + w(d, std=0.1),
            p + "ln_1.bias": w(d, std=0.1),
            p + "attn.c_attn.weight": w(d, 3 * d),
            p + "attn.c_attn.bias": w(3 * d, std=0.1),
            p + "attn.c_proj.weight": w(d, d),
            p + "attn.c_proj.bias": w(d, std=0.1),
            p + "ln_2.weight": 1 + w(d, std=0.1),
            p + "ln_2.bias": w(d, std=0.1),
            p + "mlp.c_fc.weight": w(d, 4 * d),
            p + "mlp.c_fc.bias": w(4 * d, std=0.1),
            p + "mlp.c_proj.weight": w(4 * d, d),
            p + "mlp.c_proj.bias": w(d, std=0.1),
        }
    return t


#: the variants the tests check against Hugging Face: config changes and the dtype the tensors are stored in
VARIANTS = {
    "default": ({}, "F32"),
    "unscaled": ({"scale_attn_weights": False}, "F32"),
    "inverse-layer": ({"scale_attn_by_inverse_layer_idx": True}, "F32"),
    "unscaled-inverse": ({"scale_attn_weights": False, "scale_attn_by_inverse_layer_idx": True}, "F32"),
    "float16": ({}, "F16"),
    "bfloat16": ({}, "BF16"),
}


def to_bfloat16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even, as torch rounds."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """A .safetensors file written by hand (the format is a JSON header and raw bytes), in F32, F16 or BF16."""
    header, chunks, offset = {}, [], 0
    for name, a in tensors.items():
        raw = {"F32": lambda x: x.astype("<f4"), "F16": lambda x: x.astype("<f2"), "BF16": to_bfloat16_bits}[dtype](a)
        data = np.ascontiguousarray(raw).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + b"".join(chunks))


def write_tiny_gpt2(folder: Path, variant: str = "default") -> Path:
    """config.json, model.safetensors and a word-level tokenizer.json in folder; returns the folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    changes, dtype = VARIANTS[variant]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG | changes, indent=2))
    write_safetensors(folder / "model.safetensors", tiny_gpt2_tensors(), dtype)
    vocab = {"<unk>": 0} | {word: i + 1 for i, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder
