"""Real models from local checkpoints: a folder in the Hugging Face layout becomes a ``core.models.Model``.

One module per family's tensor map (``bert``, ``gpt2``): each says which configs it reads (``NAME``,
``ARCHITECTURES``), checks the config (``check(config) -> Shape``, refusing options the forward pass does not
model), and maps the checkpoint's tensors to our shapes (``build(get, rows, config, shape, layers) -> Model``).
A new family is one more module and one more entry in ``FAMILIES``. What all share (finding the files, config
values, the tokenizer, safetensors in float64/32/16 and bfloat16) lives in ``common`` and ``safetensors``.

    checkpoint_info(path) -> dict                     cheap: reads config.json only
    read_checkpoint(path, layer, text) -> Imported    runs the model (all layers when layer is None)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from qkvgui.core.checks import LIMITS
from qkvgui.core.models import LayerProgress, LayerRun, Model, ModelError, run
from qkvgui.io.checkpoints import bert, gpt2
from qkvgui.io.checkpoints.common import (
    CheckpointError,
    Shape,
    folder_of,
    ordinary_ids,
    read_config,
    special_ids,
    tensor_getter,
    token_strings,
    tokenize,
)
from qkvgui.io.checkpoints.safetensors import SafetensorsFile
from qkvgui.io.files import file_boundary, open_regular, reason
from qkvgui.state import few_blas_threads

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "Imported",
    "checkpoint_info",
    "family_of",
    "read_checkpoint",
    "repeated_random_ids",
]

#: family name -> its tensor-map module (NAME, LABEL, ARCHITECTURES, PREFIXES, check, build)
FAMILIES: dict[str, ModuleType] = {m.NAME: m for m in (bert, gpt2)}


def family_of(config: dict) -> ModuleType:
    """The tensor-map module of a config, by model_type or architecture; CheckpointError naming the known ones."""
    kind = config.get("model_type")
    if isinstance(kind, str) and kind in FAMILIES:
        return FAMILIES[kind]
    names = config.get("architectures")
    for name in names if isinstance(names, list) else []:
        for family in FAMILIES.values():
            if name in family.ARCHITECTURES:
                return family
    named = kind if isinstance(kind, str) else ", ".join(map(str, names)) if isinstance(names, list) else ""
    named = reason(ValueError(named), 80) if named else ""
    known = "; ".join(f"{f.LABEL} ({', '.join(f.ARCHITECTURES[:2])})" for f in FAMILIES.values())
    raise CheckpointError(f"This checkpoint is {named or 'an unnamed architecture'}; qkvgui reads {known}.")


def checkpoint_info(path: str | os.PathLike) -> dict:
    """{"architecture", "label", "layers", "heads", "d_model", "positions", "config"} of a model folder."""
    folder = folder_of(path)
    config = read_config(folder)
    family = family_of(config)
    shape = family.check(config)
    return {
        "architecture": family.NAME,
        "label": family.LABEL,
        "layers": shape.n_layers,
        "heads": shape.n_heads,
        "d_model": shape.d_model,
        "positions": shape.max_positions,
        "config": config,
    }


@dataclass(frozen=True, eq=False)
class Imported:
    """A model run on a sentence: its tokens, one LayerRun per layer run, and the model's read-only blocks."""

    tokens: list[str]
    ids: np.ndarray  # [n]
    runs: list[LayerRun]  # layers 0 .. last run
    model: Model  # attention weights and blocks of those layers
    layer: int | None  # the one layer asked for, or None: all
    title: str
    description: str
    source: dict  # {"path", "layer", "text", "architecture"}: what "Reset to model weights" reloads

    @classmethod
    def of_run(
        cls,
        *,
        name: str,
        count: int,
        what: str,
        seconds: float,
        tokens: list[str],
        ids: Sequence[int],
        runs: list[LayerRun],
        model: Model,
        layer: int | None,
        path: Path,
        text: str,
        architecture: str,
        ids_given: bool,
    ) -> Imported:
        """A family's run as every family names it: the title says which of the model's ``count`` layers, the
        description (``what`` the session holds) ends with how to get the model back and the time it took."""
        return cls(
            tokens=tokens,
            ids=np.asarray(ids),
            runs=runs,
            model=model,
            layer=layer,
            title=f"{name}: all {count} layers" if layer is None else f"{name}: layer {layer + 1} of {count}",
            description=(
                f"{what} Every matrix is editable, and Reset to model weights brings the model back. "
                f"(Computed in {seconds:.2f} s.)"
            ),
            source={
                "path": str(path.resolve()),
                "layer": layer,
                "text": text,
                "architecture": architecture,
                **({"ids": [int(i) for i in ids]} if ids_given else {}),
            },
        )


def read_checkpoint(
    path: str | os.PathLike,
    layer: int | None,
    text: str,
    ids: Sequence[int] | None = None,
    progress: LayerProgress | None = None,
) -> Imported:
    """Tokenize text with the model's tokenizer and run the model up to `layer` (0-based; None: every layer).
    Given `ids`, the model reads those token ids instead (text only names the session). ``progress(done, total)``
    is told before each layer and may raise to stop (see ``core.models.run``)."""
    folder = folder_of(path)
    info = checkpoint_info(folder)
    family = FAMILIES[info["architecture"]]
    count = info["layers"]
    ids_given = ids is not None
    if layer is not None and not 0 <= layer < count:
        raise CheckpointError(f"The model has layers 1 to {count}; there is no layer {layer + 1}.")
    if layer is None and count > LIMITS["layers"]:
        raise CheckpointError(
            f"The model has {count} layers, more than the {LIMITS['layers']} a session holds: "
            "import one layer at a time."
        )
    if ids is None:
        ids, tokens = tokenize(folder, text)
    else:
        ids, tokens = token_strings(folder, ids)
    vocab = info["config"].get("vocab_size")
    if isinstance(vocab, int) and max(ids) >= vocab:
        raise CheckpointError(
            f"The tokenizer gives token id {max(ids)} but the model has {vocab} embeddings: "
            f"{folder.name}/tokenizer.json does not belong to this model."
        )
    if len(ids) > info["positions"]:
        raise CheckpointError(
            f"The sentence makes {len(ids)} tokens but the model reads at most {info['positions']}: shorten it."
        )
    started = time.perf_counter()
    layers = count if layer is None else layer + 1
    weights = folder / "model.safetensors"
    with file_boundary(weights, CheckpointError, "read as the model's weights"):
        with open_regular(weights, what="weights file", error=CheckpointError):
            pass  # a regular file (not a pipe or device): it is memory-mapped below
    try:
        tensors = SafetensorsFile(weights)
        try:
            get = tensor_getter(tensors, family.PREFIXES)

            def rows(name: str, which: np.ndarray) -> np.ndarray:
                return tensors.rows(get.full(name), which)  # type: ignore[attr-defined]

            shape: Shape = family.check(info["config"])
            model = family.build(get, rows, info["config"], shape, layers)
            with few_blas_threads(len(ids)):  # small products: one BLAS thread (see qkvgui.state)
                runs = run(model, np.asarray(ids), layers, progress)
        finally:
            tensors.close()
    except ModelError as e:
        raise CheckpointError(f"{folder.name}: {e}") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder.name}/model.safetensors cannot be read: {e}") from None
    seconds = time.perf_counter() - started
    name = str(info["config"].get("_name_or_path") or folder.name).rstrip("/").split("/")[-1] or folder.name
    dtypes = "/".join(sorted(d for d in tensors.dtypes() if d.startswith(("F", "BF")))) or "numbers"
    first = runs[0].result
    heads = f"{first.q.shape[0]} heads of {first.q.shape[2]}"
    pre = "the residual stream after its norm" if model.blocks[0].pre_norm else "the residual stream itself"
    if layer is None:
        what = (
            f"All {count} attention layers of {name} ({family.LABEL}, {heads}, stored as {dtypes}) reading "
            f"“{text}”, as the model's own tokenizer splits it. Between layers the model's own blocks run "
            f"(read-only: {model.blocks[0].describe()}), so an edit to any layer reaches every later one. "
            f"Each layer's X is {pre}."
        )
    else:
        what = (
            f"The real attention layer {layer + 1} of {name} ({family.LABEL}, {heads}, stored as {dtypes}) "
            f"reading “{text}”, as the model's own tokenizer splits it. X is what this layer's attention reads "
            f"({pre})."
        )
    return Imported.of_run(
        name=name,
        count=count,
        what=what,
        seconds=seconds,
        tokens=tokens,
        ids=ids,
        runs=runs,
        model=model,
        layer=layer,
        path=Path(folder),
        text=text,
        architecture=info["architecture"],
        ids_given=ids_given,
    )


def repeated_random_ids(path: str | os.PathLike, text: str, length: int = 20, seed: int = 0) -> list[int]:
    """Token ids for TransformerLens's induction test: the special tokens the tokenizer puts around `text`
    (BERT's [CLS] … [SEP]), around `length` ordinary tokens drawn at random (seeded) and said twice."""
    from qkvgui.core.heads import repeated_random_tokens

    folder = folder_of(path)
    info = checkpoint_info(folder)
    specials, lead = special_ids(folder, text)
    room = (info["positions"] - len(specials)) // 2
    if room < 1:
        raise CheckpointError("The model reads too few tokens for a repeated sequence.")
    vocabulary = ordinary_ids(folder, info["config"].get("vocab_size"))
    middle = [int(i) for i in repeated_random_tokens(vocabulary, min(length, room), seed)]
    return specials[:lead] + middle + specials[lead:]
