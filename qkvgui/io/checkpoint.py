"""Real heads from a local model folder (Hugging Face layout): one attention layer of a BERT or GPT-2 checkpoint.

The folder holds `config.json`, `model.safetensors` and `tokenizer.json`. Tensors are read lazily from the
safetensors file (only those the forward pass up to the layer needs; never through pickle), the sentence is
tokenized with the model's own tokenizer, and ``qkvgui.core.models`` computes what the layer reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from qkvgui.core.models import ModelError, architecture_of, layer_input, max_positions, n_layers
from qkvgui.session import SessionError

__all__ = ["CheckpointLayer", "read_checkpoint_layer", "checkpoint_info"]

FILES = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass(frozen=True)
class CheckpointLayer:
    """One layer of a real model on a sentence, ready to become a session."""

    tokens: list[str]
    layer: object  # qkvgui.core.models.LayerInput
    title: str
    description: str
    source: dict  # {"path", "layer", "text", "architecture"}: what to reload for "Reset to model weights"


def _folder(path) -> Path:
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise SessionError(f"{folder} is not a folder: choose the model's folder (with {', '.join(FILES)}).")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise SessionError(f"{folder.name} has no {' and no '.join(missing)}: a model folder needs "
                           f"{', '.join(FILES)}.")
    return folder


def checkpoint_info(path) -> dict:
    """{"architecture", "layers", "positions"} of a model folder, from its config (cheap: reads no tensors)."""
    folder = _folder(path)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SessionError(f"{folder.name}/config.json cannot be read: {e}") from None
    if not isinstance(config, dict):
        raise SessionError(f"{folder.name}/config.json is not a JSON object.")
    try:
        return {"architecture": architecture_of(config), "layers": n_layers(config),
                "positions": max_positions(config), "config": config}
    except ModelError as e:
        raise SessionError(str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise SessionError(f"{folder.name}/config.json lacks a setting the model needs ({e}).") from None


def read_checkpoint_layer(path, layer: int, text: str) -> CheckpointLayer:
    """Tokenize `text` with the model's tokenizer and compute what attention layer `layer` (0-based) reads."""
    from safetensors import SafetensorError, safe_open
    from tokenizers import Tokenizer

    folder = _folder(path)
    info = checkpoint_info(folder)
    if not 0 <= layer < info["layers"]:
        raise SessionError(f"The model has layers 1 to {info['layers']}; there is no layer {layer + 1}.")
    if not text.strip():
        raise SessionError("Type a sentence for the model to read.")
    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:  # the tokenizers library raises plain Exceptions for bad files
        raise SessionError(f"{folder.name}/tokenizer.json cannot be read as a tokenizer: {e}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoding = tokenizer.encode(text)
    ids = list(encoding.ids)
    if not ids:
        raise SessionError("The tokenizer made no tokens of that sentence.")
    if len(ids) > info["positions"]:
        raise SessionError(f"The sentence makes {len(ids)} tokens but the model reads at most {info['positions']}: "
                           "shorten it.")
    started = time.perf_counter()
    try:
        with safe_open(str(folder / "model.safetensors"), framework="numpy") as tensors:
            names = set(tensors.keys())

            def get(name):
                if name not in names:
                    raise KeyError(name)
                return tensors.get_tensor(name)

            result = layer_input(get, info["config"], ids, layer, token_types=None)
    except ModelError as e:
        raise SessionError(str(e)) from None
    except (SafetensorError, OSError, ValueError) as e:
        raise SessionError(f"{folder.name}/model.safetensors cannot be read: {e}") from None
    seconds = time.perf_counter() - started
    arch = {"bert": "BERT", "gpt2": "GPT-2"}[info["architecture"]]
    name = str(info["config"].get("_name_or_path") or folder.name).rstrip("/").split("/")[-1] or folder.name
    return CheckpointLayer(
        tokens=list(encoding.tokens),
        layer=result,
        title=f"{name}: layer {layer + 1} of {info['layers']}",
        description=(f"The real attention layer {layer + 1} of {name} ({arch}, "
                     f"{result.w_q.shape[0]} heads of {result.w_q.shape[2]}) reading “{text}”, as the model's own "
                     f"tokenizer splits it. X is what this layer's attention reads"
                     f"{' (the residual stream after ln_1)' if info['architecture'] == 'gpt2' else ''}; "
                     f"every matrix is editable, and Reset to model weights brings the layer back. "
                     f"(Computed in {seconds:.2f} s.)"),
        source={"path": str(folder.resolve()), "layer": layer, "text": text, "architecture": info["architecture"]},
    )
