"""Real heads from a local model folder (Hugging Face layout): one attention layer of a BERT or GPT-2 checkpoint.

The folder holds `config.json`, `model.safetensors` and `tokenizer.json`. Tensors are read lazily from the
safetensors file (only those the forward pass up to the layer needs; never through pickle), the sentence is
tokenized with the model's own tokenizer, and ``qkvgui.core.models`` computes what the layer reads.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from qkvgui.core import CheckpointError
from qkvgui.core.checks import LIMITS
from qkvgui.core.models import ARCHITECTURES, ModelError, architecture_of, layer_input, max_positions, n_layers
from qkvgui.io.files import file_boundary, open_regular, reason

__all__ = ["CheckpointLayer", "read_checkpoint_layer", "checkpoint_info"]

FILES = ("config.json", "model.safetensors", "tokenizer.json")
#: the largest config.json read (real ones are a few KiB)
MAX_CONFIG_BYTES = 4 * 1024**2
#: the sizes a config may give, each a whole number within these bounds (checked before anything is allocated);
#: None (JSON null) is accepted where Hugging Face uses it for "the default"
CONFIG_COUNTS = {
    "num_attention_heads": LIMITS["heads"], "n_head": LIMITS["heads"], "num_key_value_heads": LIMITS["heads"],
    "num_hidden_layers": 1024, "n_layer": 1024,
    "max_position_embeddings": 1 << 22, "n_positions": 1 << 22, "n_ctx": 1 << 22,
    "hidden_size": LIMITS["d_model"], "n_embd": LIMITS["d_model"], "head_dim": LIMITS["d_head"],
    "vocab_size": 1 << 24, "type_vocab_size": 1 << 16, "intermediate_size": 1 << 20, "n_inner": 1 << 20,
}
#: the settings every config must give (one of each group), with the name used in messages
_REQUIRED = ((("num_attention_heads", "n_head"), "the number of heads"),
             (("hidden_size", "n_embd"), "the width of the residual stream"))
#: small positive numbers (epsilons) that must be finite
CONFIG_EPSILONS = ("layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps")


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
        raise CheckpointError(f"{folder} is not a folder: choose the model's folder (with {', '.join(FILES)}).")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder.name} has no {' and no '.join(missing)}: a model folder needs "
                           f"{', '.join(FILES)}.")
    return folder


def read_config(folder: Path) -> dict:
    """config.json as a dict whose sizes are all whole numbers within bounds; anything else is refused, naming the
    setting (a deeply nested file, Infinity, 1e10, true or a list where a count belongs)."""
    path = folder / "config.json"
    where = f"{folder.name}/config.json"
    with file_boundary(path, CheckpointError, "read"):
        with open_regular(path, max_bytes=MAX_CONFIG_BYTES, what="model config", error=CheckpointError) as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        try:
            config = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise CheckpointError(f"{where} is nested too deeply to be a model config.") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{where} cannot be read: {reason(e)}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} is not a JSON object.")
    for key, limit in CONFIG_COUNTS.items():
        if key not in config or (config[key] is None and key not in _required_keys(config)):
            continue
        value = config[key]
        if type(value) is not int:
            raise CheckpointError(f"{where}: '{key}' must be a whole number, not {_json_text(value)}.")
        if not 1 <= value <= limit:
            raise CheckpointError(f"{where}: '{key}' is {value}; it must be between 1 and {limit:,}.")
    for key in CONFIG_EPSILONS:
        value = config.get(key)
        if value is not None and (type(value) not in (int, float) or not 0 <= value < 1 or not math.isfinite(value)):
            raise CheckpointError(f"{where}: '{key}' must be a small positive number, not {_json_text(value)}.")
    try:
        arch = architecture_of(config)
    except ModelError as e:
        raise CheckpointError(reason(e, 400)) from None
    for keys, what in (*_REQUIRED, *(((k,), "a size the model needs") for k in ARCHITECTURES[arch][2:4])):
        if not any(isinstance(config.get(k), int) for k in keys):
            raise CheckpointError(f"{where} does not give {what} ('{keys[0]}').")
    heads = next(config[k] for k in _REQUIRED[0][0] if isinstance(config.get(k), int))
    width = next(config[k] for k in _REQUIRED[1][0] if isinstance(config.get(k), int))
    if "head_dim" not in config and width % heads:
        raise CheckpointError(f"{where}: a residual stream of width {width} cannot be split into {heads} heads.")
    return config


def _required_keys(config: dict) -> set[str]:
    keys = {k for group, _ in _REQUIRED for k in group}
    try:
        keys.update(ARCHITECTURES[architecture_of(config)][2:4])
    except ModelError:
        pass
    return keys


def _json_text(value) -> str:
    text = json.dumps(value, allow_nan=True, ensure_ascii=True, default=str) if not isinstance(value, float) \
        else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checkpoint_info(path) -> dict:
    """{"architecture", "layers", "positions"} of a model folder, from its config (cheap: reads no tensors)."""
    folder = _folder(path)
    config = read_config(folder)
    try:
        return {"architecture": architecture_of(config), "layers": n_layers(config),
                "positions": max_positions(config), "config": config}
    except ModelError as e:
        raise CheckpointError(str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder.name}/config.json lacks a setting the model needs ({e}).") from None


def read_checkpoint_layer(path, layer: int, text: str) -> CheckpointLayer:
    """Tokenize `text` with the model's tokenizer and compute what attention layer `layer` (0-based) reads."""
    from safetensors import SafetensorError, safe_open
    from tokenizers import Tokenizer

    folder = _folder(path)
    info = checkpoint_info(folder)
    if not 0 <= layer < info["layers"]:
        raise CheckpointError(f"The model has layers 1 to {info['layers']}; there is no layer {layer + 1}.")
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError("Type a sentence for the model to read.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CheckpointError(f"The sentence holds a character that is not text (a lone surrogate, at position "
                           f"{e.start + 1}): retype it.") from None
    tokenizer_path = folder / "tokenizer.json"
    with file_boundary(tokenizer_path, CheckpointError, "read as a tokenizer"):
        with open_regular(tokenizer_path, max_bytes=256 * 1024**2, what="tokenizer", error=CheckpointError):
            pass  # a regular file of sane size: the tokenizers library opens it itself
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as e:  # the tokenizers library raises plain Exceptions for bad files
            raise CheckpointError(f"{folder.name}/tokenizer.json cannot be read as a tokenizer: {reason(e)}") from None
        tokenizer.no_padding()
        tokenizer.no_truncation()
        encoding = tokenizer.encode(text)
        ids = list(encoding.ids)
        tokens = [str(t) for t in encoding.tokens]
    if not ids:
        raise CheckpointError("The tokenizer made no tokens of that sentence.")
    vocab = info["config"].get("vocab_size")
    if isinstance(vocab, int) and max(ids) >= vocab:
        raise CheckpointError(f"The tokenizer gives token id {max(ids)} but the model has {vocab} embeddings: "
                           f"{folder.name}/tokenizer.json does not belong to this model.")
    if len(ids) > info["positions"]:
        raise CheckpointError(f"The sentence makes {len(ids)} tokens but the model reads at most {info['positions']}: "
                           "shorten it.")
    started = time.perf_counter()
    weights = folder / "model.safetensors"
    with file_boundary(weights, CheckpointError, "read as the model's weights"):
        with open_regular(weights, what="weights file", error=CheckpointError):
            pass  # a regular file: safetensors maps it itself
        try:
            with safe_open(str(weights), framework="numpy") as tensors:
                names = set(tensors.keys())

                def get(name):
                    if name not in names:
                        raise KeyError(name)
                    return tensors.get_tensor(name)

                result = layer_input(get, info["config"], ids, layer, token_types=None)
        except ModelError as e:
            raise CheckpointError(str(e)) from None
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{folder.name}/model.safetensors cannot be read: {reason(e)}") from None
    seconds = time.perf_counter() - started
    arch = {"bert": "BERT", "gpt2": "GPT-2"}[info["architecture"]]
    name = str(info["config"].get("_name_or_path") or folder.name).rstrip("/").split("/")[-1] or folder.name
    return CheckpointLayer(
        tokens=tokens,
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
