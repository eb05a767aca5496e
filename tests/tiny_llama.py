"""A tiny LLaMA checkpoint (RMSNorm, RoPE, 4 query heads sharing 2 key/value heads, SwiGLU) in the Hugging Face
layout, written deterministically (seeded) by the tests themselves."""

import json
from pathlib import Path

import numpy as np

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "and", "it", "was", "happy", "."]
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 16,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "intermediate_size": 24,
    "hidden_act": "silu",
    "max_position_embeddings": 32,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "vocab_size": len(WORDS) + 1,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
}


def tiny_llama_tensors(seed: int = 11) -> dict[str, np.ndarray]:
    """LLaMA tensor names and PyTorch shapes (nn.Linear weights [d_out, d_in]), float32 as checkpoints store them."""
    rng = np.random.default_rng(seed)
    d, n_layer, vocab = CONFIG["hidden_size"], CONFIG["num_hidden_layers"], CONFIG["vocab_size"]
    d_k = d // CONFIG["num_attention_heads"]
    kv = CONFIG["num_key_value_heads"] * d_k
    ff = CONFIG["intermediate_size"]

    def w(*shape, std=0.4):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    t = {
        "model.embed_tokens.weight": w(vocab, d, std=1.0),
        "model.norm.weight": 1 + w(d, std=0.1),
        "lm_head.weight": w(vocab, d),
    }
    for i in range(n_layer):
        p = f"model.layers.{i}."
        t |= {
            p + "input_layernorm.weight": 1 + w(d, std=0.1),
            p + "post_attention_layernorm.weight": 1 + w(d, std=0.1),
            p + "self_attn.q_proj.weight": w(d, d),
            p + "self_attn.k_proj.weight": w(kv, d),
            p + "self_attn.v_proj.weight": w(kv, d),
            p + "self_attn.o_proj.weight": w(d, d),
            p + "mlp.gate_proj.weight": w(ff, d),
            p + "mlp.up_proj.weight": w(ff, d),
            p + "mlp.down_proj.weight": w(d, ff),
        }
    return t


def write_tiny_llama(folder: Path) -> Path:
    """config.json, model.safetensors and a word-level tokenizer.json in folder; returns the folder."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    save_file(tiny_llama_tensors(), str(folder / "model.safetensors"))
    vocab = {"<unk>": 0} | {word: i + 1 for i, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute): W_Q/W_K rows reordered for its RoPE."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_tiny_llama_gguf(path: Path) -> Path:
    """The same tiny LLaMA as a GGUF file, as llama.cpp's converter writes it (W_Q/W_K rows permuted, F32)
    with a byte-level tokenizer whose tokens are the words (with and without GPT-2's leading-space mark)."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = CONFIG
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_dimension_count(c["hidden_size"] // c["num_attention_heads"])
    spaced = ["Ġ" + word for word in WORDS]
    tokens = ["<unk>"] + WORDS + spaced
    merges = []
    for word in spaced + WORDS:  # BPE builds each word letter by letter (spaced words first: they win)
        for k in range(1, len(word)):
            merges.append(f"{word[:k]} {word[k]}")
        for piece in [*word, *(word[:k] for k in range(2, len(word)))]:
            if piece not in tokens:
                tokens.append(piece)
    extra = len(tokens) - 1 - 2 * len(WORDS)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3] + [1] * (len(tokens) - 1))
    w.add_token_merges(merges)
    for name, tensor in tiny_llama_tensors().items():
        if name == "lm_head.weight":
            continue
        if name == "model.embed_tokens.weight":
            # "Ġword" reads the same row as "word"; letters and prefixes get zero rows
            tensor = np.concatenate([tensor, tensor[1:], np.zeros((extra, tensor.shape[1]), np.float32)])
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            role = rest.removesuffix(".weight")
            if role == "self_attn.q_proj":
                tensor = llama_cpp_permute(tensor, c["num_attention_heads"])
            elif role == "self_attn.k_proj":
                tensor = llama_cpp_permute(tensor, c["num_key_value_heads"])
            out = f"blk.{layer}.{GGUF_NAMES[role]}.weight"
        w.add_tensor(out, np.ascontiguousarray(tensor, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
