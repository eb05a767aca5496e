"""What every model folder shares: finding its files, reading config.json and tokenizing with tokenizer.json.

A model folder in the Hugging Face layout holds ``config.json``, ``model.safetensors`` and ``tokenizer.json``.
Every failure becomes one ``CheckpointError`` whose message names the file and what to do.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qkvgui.core.checks import LIMITS
from qkvgui.core.errors import CheckpointError
from qkvgui.core.models import ModelError, Norm
from qkvgui.io.checkpoints.safetensors import SafetensorsFile
from qkvgui.io.files import file_boundary, open_regular, reason

__all__ = [
    "FILES",
    "CheckpointError",
    "Shape",
    "folder_of",
    "heads",
    "read_config",
    "setting",
    "tokenize",
    "tensor_getter",
]

FILES = ("config.json", "model.safetensors", "tokenizer.json")
#: the largest config.json read (real ones are a few KiB)
MAX_CONFIG_BYTES = 4 * 1024**2
#: the sizes a config may give, each a whole number within these bounds (checked before anything is allocated);
#: None (JSON null) is accepted where Hugging Face uses it for "the default"
CONFIG_COUNTS = {
    "num_attention_heads": LIMITS["heads"],
    "n_head": LIMITS["heads"],
    "num_key_value_heads": LIMITS["heads"],
    "num_hidden_layers": 1024,
    "n_layer": 1024,
    "max_position_embeddings": 1 << 22,
    "n_positions": 1 << 22,
    "n_ctx": 1 << 22,
    "hidden_size": LIMITS["d_model"],
    "n_embd": LIMITS["d_model"],
    "head_dim": LIMITS["d_head"],
    "vocab_size": 1 << 24,
    "type_vocab_size": 1 << 16,
    "intermediate_size": 1 << 20,
    "n_inner": 1 << 20,
}
#: small positive numbers (epsilons) that must be finite
CONFIG_EPSILONS = ("layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps")


def folder_of(path: str | os.PathLike) -> Path:
    """The model folder at path (or holding the file at path); CheckpointError when a file is missing."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder: choose the model's folder (with {', '.join(FILES)}).")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{folder.name} has no {' and no '.join(missing)}: a model folder needs {', '.join(FILES)}."
        )
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
        if config.get(key) is None:  # JSON null: Hugging Face's "the default"; a family needing it says so
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
    return config


def _json_text(value) -> str:
    text = (
        json.dumps(value, allow_nan=True, ensure_ascii=True, default=str)
        if not isinstance(value, float)
        else repr(value)
    )
    return text if len(text) <= 40 else text[:37] + "..."


_MISSING = object()


def setting(
    config: dict,
    key: str,
    kind: type,
    default=_MISSING,
    *,
    low: float | None = None,
    high: float | None = None,
    what: str = "a setting the model needs",
):
    """config[key] checked to be of `kind` (int, float, bool, str) and within [low, high]; JSON null is the
    default (Hugging Face's meaning), and a setting without a default must be given."""
    value = config.get(key, default)
    if value is None and default is not _MISSING:
        value = default
    if value is _MISSING or value is None:
        raise CheckpointError(f"config.json does not give {what} ('{key}').")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise CheckpointError(f"config.json's '{key}' is {value!r}; it must be a {kind.__name__}.")
    if kind in (int, float):
        assert isinstance(value, int | float)
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise CheckpointError(f"config.json's '{key}' is {value!r}; it must lie between {low} and {high}.")
    return value


def tokenize(folder: Path, text: str) -> tuple[list[int], list[str]]:
    """The model's own token ids and strings of text (no padding, no truncation)."""
    from tokenizers import Tokenizer

    if not isinstance(text, str) or not text.strip():
        raise CheckpointError("Type a sentence for the model to read.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CheckpointError(
            f"The sentence holds a character that is not text (a lone surrogate, at position {e.start + 1}): retype it."
        ) from None
    path = folder / "tokenizer.json"
    with file_boundary(path, CheckpointError, "read as a tokenizer"):
        with open_regular(path, max_bytes=256 * 1024**2, what="tokenizer", error=CheckpointError):
            pass  # a regular file of sane size: the tokenizers library opens it itself
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises plain Exceptions for bad files
            raise CheckpointError(f"{folder.name}/tokenizer.json cannot be read as a tokenizer: {reason(e)}") from None
        tokenizer.no_padding()
        tokenizer.no_truncation()
        encoding = tokenizer.encode(text)
        ids, tokens = list(encoding.ids), [str(t) for t in encoding.tokens]
    if not ids:
        raise CheckpointError("The tokenizer made no tokens of that sentence.")
    return ids, tokens


def tensor_getter(tensors: SafetensorsFile, prefixes: tuple[str, ...]) -> Callable[[str], np.ndarray]:
    """name -> float64 array, trying each name prefix in turn (`bert.`, `transformer.`, none)."""

    def full(name: str) -> str:
        for prefix in prefixes:
            if prefix + name in tensors:
                return prefix + name
        tried = ", ".join(repr(p) for p in prefixes)
        raise ModelError(f"The checkpoint has no tensor '{name}' (tried the prefixes {tried}).")

    def get(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        key = full(name)
        if shape is not None and tensors.shape(key) != shape:
            raise ModelError(f"The tensor '{key}' is {list(tensors.shape(key))} but the config says {list(shape)}.")
        return tensors.get(key)

    get.full = full  # type: ignore[attr-defined]
    return get


#: the largest sizes read from a config (the session's own limits, and a generous bound on positions)
MAX_LAYERS, MAX_HEADS, MAX_D_MODEL, MAX_POSITIONS = 1024, LIMITS["heads"], LIMITS["d_model"], 1 << 22


@dataclass(frozen=True)
class Shape:
    """A model's sizes, read from its config and checked before any tensor is read."""

    d_model: int
    n_heads: int
    n_layers: int
    max_positions: int

    @classmethod
    def read(cls, config: dict, d_model: str, n_heads: str, n_layers: str, positions: str) -> Shape:
        """Read the four sizes under the family's key names."""
        shape = cls(
            setting(config, d_model, int, low=1, high=MAX_D_MODEL, what="the width of the residual stream"),
            setting(config, n_heads, int, low=1, high=MAX_HEADS, what="the number of heads"),
            setting(config, n_layers, int, low=1, high=MAX_LAYERS, what="the number of layers"),
            setting(config, positions, int, low=1, high=MAX_POSITIONS, what="the longest sentence it reads"),
        )
        if shape.d_model % shape.n_heads:
            raise CheckpointError(
                f"config.json: a residual stream of width {shape.d_model} ('{d_model}') cannot be split into "
                f"{shape.n_heads} heads ('{n_heads}')."
            )
        return shape


#: a family's tensor reader: ``get(name, shape=None)``, the tensor widened to float64 (its shape checked when given)
Getter = Callable[..., np.ndarray]
#: rows of an embedding by token id, ``rows(name, ids)``, read without the whole matrix
RowReader = Callable[[str, np.ndarray], np.ndarray]


def layer_norms(get: Getter, d: int, eps: float) -> Callable[[str], Norm]:
    """``norm(prefix)``: the LayerNorm whose weight and bias ([d] each) are the tensors ``prefix.weight``, ``.bias``."""

    def norm(name: str) -> Norm:
        return Norm(get(name + ".weight", (d,)), get(name + ".bias", (d,)), eps)

    return norm


def heads(w_in_out: np.ndarray, h: int) -> np.ndarray:
    """[d_model, h·d] (input-major, one head's columns after another) -> [h, d_model, d]."""
    d_model, width = w_in_out.shape
    return w_in_out.reshape(d_model, h, width // h).transpose(1, 0, 2).copy()


def _tokenizer(folder: Path):
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    with file_boundary(path, CheckpointError, "read as a tokenizer"):
        with open_regular(path, max_bytes=256 * 1024**2, what="tokenizer", error=CheckpointError):
            pass
        return Tokenizer.from_file(str(path))


def token_strings(folder: Path, ids) -> tuple[list[int], list[str]]:
    """Given token ids (checked against the tokenizer's vocabulary), the ids and the tokenizer's strings for them."""
    tokenizer = _tokenizer(folder)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    ids = [int(i) for i in ids]
    if not ids or min(ids) < 0 or max(ids) >= size:
        raise CheckpointError(f"Token ids must lie between 0 and {size - 1} for this tokenizer.")
    return ids, [str(tokenizer.id_to_token(i)) for i in ids]


def special_ids(folder: Path, text: str) -> tuple[list[int], int]:
    """The special token ids the tokenizer adds around text, and how many of them come first."""
    _, _ = tokenize(folder, text)  # the same checks as an import
    tokenizer = _tokenizer(folder)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoding = tokenizer.encode(text)
    mask = list(encoding.special_tokens_mask)
    lead = next((i for i, m in enumerate(mask) if not m), len(mask))
    return [i for i, m in zip(encoding.ids, mask, strict=True) if m], lead


def ordinary_ids(folder: Path, vocab_size) -> list[int]:
    """The ids of ordinary tokens: not added or special ([CLS], <|endoftext|>, [unused7]), within the model's
    embedding table."""
    tokenizer = _tokenizer(folder)
    limit = tokenizer.get_vocab_size(with_added_tokens=False)
    if isinstance(vocab_size, int):
        limit = min(limit, vocab_size)
    out = []
    for token, i in tokenizer.get_vocab(with_added_tokens=False).items():
        bracketed = (token[:1], token[-1:]) in (("[", "]"), ("<", ">"))
        if i < limit and not bracketed:
            out.append(i)
    if not out:
        raise CheckpointError(f"{folder.name}/tokenizer.json has no ordinary tokens to draw from.")
    return sorted(out)
