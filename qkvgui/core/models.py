"""The forward pass of real transformer models in NumPy, given their tensors already in qkvgui's shapes.

A checkpoint reader (``qkvgui.io.checkpoints``, one module per family's tensor map) turns a model's tensors into a
``Model``: an embedding, and per layer the attention weights (row vectors; W_Q [h, d_model, d_k]; W_O [h·d_v,
d_model]) and the rest of the block (``Block``: LayerNorms, MLP) read-only. ``run(model, ids)`` runs the model
and keeps, per layer, what its attention read, the stream it wrote into, the attention's ``AttentionResult``
(computed by ``multi_head_attention``, the one attention implementation) and the stream after the block.

Two arrangements of a block cover the families read today (and LLaMA, whose RMSNorm is ``Norm(kind="rms")``):

    pre-norm  (GPT-2, LLaMA)   x = norm_attn(s);  s = s + attention(x);  s = s + mlp(norm_mlp(s))
    post-norm (BERT)           x = s;             s = norm_attn(s + attention(x));  s = norm_mlp(s + mlp(s))

A new family adds a tensor map in io (giving a ``Model``); new per-layer attention steps (rotary positions,
shared key/value heads) go into ``AttentionWeights.arguments()``, which is what ``multi_head_attention`` receives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .attention import AttentionResult, multi_head_attention
from .errors import CheckpointError
from .weights import LayerWeights

__all__ = [
    "ACTIVATIONS",
    "AttentionWeights",
    "Block",
    "Embedding",
    "LayerRun",
    "Mlp",
    "Model",
    "ModelError",
    "Norm",
    "Stack",
    "gelu_exact",
    "gelu_tanh",
    "run",
    "run_blocks",
]


class ModelError(CheckpointError):
    """A model this code cannot run: a missing tensor, a layer out of range, a sentence too long."""


# ---- activations -----------------------------------------------------------------------------------------------
def gelu_exact(x: np.ndarray) -> np.ndarray:
    """BERT's "gelu": 0.5·x·(1 + erf(x/√2)), vectorised with scipy's erf (exact to float64)."""
    from scipy.special import erf  # the `models` extra; imported here so the core itself needs only NumPy

    out: np.ndarray = 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GPT-2's "gelu_new": 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _relu(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(x, 0.0)
    return out


def _silu(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / (1.0 + np.exp(-x))
    return out


#: activation name (as Hugging Face configs spell it) -> function
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": gelu_exact,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": _relu,
    "silu": _silu,
}


# ---- the pieces of a model -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Norm:
    """LayerNorm ((x − mean)/√(var + eps)·weight + bias) or RMSNorm (x/√(mean(x²) + eps)·weight), row-wise."""

    weight: np.ndarray  # [d_model]
    bias: np.ndarray | None  # [d_model]
    eps: float
    kind: str = "layer"  # "layer" | "rms"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "rms":
            rms: np.ndarray = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps) * self.weight
            return rms
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean  # [n, d_model]
        var = (centred * centred).mean(axis=-1, keepdims=True)
        out: np.ndarray = centred / np.sqrt(var + self.eps) * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


@dataclass(frozen=True, eq=False)
class Mlp:
    """out = act(x·W_in + b_in)·W_out + b_out; with W_gate (LLaMA's SwiGLU): (act(x·W_gate) ⊙ (x·W_in))·W_out."""

    w_in: np.ndarray  # [d_model, d_mlp]
    b_in: np.ndarray | None  # [d_mlp]
    w_out: np.ndarray  # [d_mlp, d_model]
    b_out: np.ndarray | None  # [d_model]
    activation: str
    w_gate: np.ndarray | None = None  # [d_model, d_mlp]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        act = ACTIVATIONS[self.activation]
        up = x @ self.w_in  # [n, d_mlp]
        if self.b_in is not None:
            up += self.b_in
        hidden = up * act(x @ self.w_gate) if self.w_gate is not None else act(up)  # [n, d_mlp]
        out: np.ndarray = hidden @ self.w_out  # [n, d_model]
        if self.b_out is not None:
            out = out + self.b_out
        return out


@dataclass(frozen=True, eq=False)
class Block:
    """Everything of one transformer block except its attention weights: the model's own, shown read-only."""

    pre_norm: bool  # True: norms before attention and MLP (GPT-2, LLaMA); False: after (BERT)
    norm_attn: Norm | None  # pre-norm: ln_1 (what the attention reads); post-norm: after attention + residual
    norm_mlp: Norm | None  # pre-norm: ln_2 (what the MLP reads); post-norm: after MLP + residual
    mlp: Mlp

    def attention_input(self, stream: np.ndarray) -> np.ndarray:
        """What the attention reads from the residual stream [n, d_model]."""
        if self.pre_norm and self.norm_attn is not None:
            return self.norm_attn(stream)
        return stream

    def after_attention(self, stream: np.ndarray, output: np.ndarray) -> np.ndarray:
        """The stream after the block, given the stream before it and the attention's output, both [n, d_model]."""
        if self.pre_norm:
            s = stream + output
            after: np.ndarray = s + self.mlp(self.norm_mlp(s) if self.norm_mlp is not None else s)
            return after
        s = stream + output
        if self.norm_attn is not None:
            s = self.norm_attn(s)
        s = s + self.mlp(s)
        return self.norm_mlp(s) if self.norm_mlp is not None else s

    def describe(self) -> str:
        """The block's steps in words, for the label of its step in the pipeline."""
        act = self.mlp.activation
        if self.pre_norm:
            return f"s + attention, then s + MLP({act})(norm(s))"
        return f"norm(s + attention), then norm(s + MLP({act}))"

    def formula(self, next_block: Block | None = None) -> str:
        """The block as a formula from the attention's residual (r = X + output, written into the stream) to what
        the next layer's attention reads (its X), or to the stream after the block for the last layer (no
        next_block). E.g. BERT: "X′ = LN(h + MLP(h)), h = LN(r)"; GPT-2: "X′ = LN(r + MLP(LN(r)))"."""
        mlp = f"MLP{'·gate' if self.mlp.w_gate is not None else ''}[{self.mlp.activation}]"
        if self.pre_norm:
            inner = f"r + {mlp}({_norm_name(self.norm_mlp)}(r))" if self.norm_mlp is not None else f"r + {mlp}(r)"
            if next_block is None:
                return f"s′ = {inner}"
            norm = next_block.norm_attn if next_block.pre_norm else None
            return f"X′ = {_norm_name(norm)}({inner})" if norm is not None else f"X′ = {inner}"
        h = f"{_norm_name(self.norm_attn)}(r)" if self.norm_attn is not None else "r"
        out = f"{_norm_name(self.norm_mlp)}(h + {mlp}(h))" if self.norm_mlp is not None else f"h + {mlp}(h)"
        return f"{'X′' if next_block is not None else 's′'} = {out}, h = {h}"


def _norm_name(norm: Norm | None) -> str:
    return "RMSNorm" if norm is not None and norm.kind == "rms" else "LN"


@dataclass(frozen=True, eq=False)
class AttentionWeights(LayerWeights):
    """One layer's attention in qkvgui's shapes (the weights and biases of ``LayerWeights``, then how the scores
    are scaled and rotated); `arguments()` is what multi_head_attention receives."""

    scale: float | None = None  # None: 1/√d_k
    rotary: float | None = None  # the RoPE base θ (LLaMA family), None: positions are not rotated

    def arguments(self) -> dict[str, Any]:
        return dict(
            w_q=self.w_q,
            w_k=self.w_k,
            w_v=self.w_v,
            w_o=self.w_o,
            b_q=self.b_q,
            b_k=self.b_k,
            b_v=self.b_v,
            b_o=self.b_o,
            scale=self.scale,
            rotary=self.rotary,
        )


@dataclass(frozen=True, eq=False)
class Embedding:
    """Token ids -> the residual stream entering layer 1: token (+ position + type) rows, then an optional norm."""

    tokens: Callable[[np.ndarray], np.ndarray]  # ids [n] -> rows [n, d_model] (reads only the rows it needs)
    positions: np.ndarray | None = None  # [max_positions, d_model] learned absolute positions
    types: np.ndarray | None = None  # [n_types, d_model] BERT's token types (all type 0 here)
    norm: Norm | None = None

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        n = len(ids)
        x = np.array(self.tokens(ids), dtype=np.float64)  # [n, d_model]
        if self.positions is not None:
            x += self.positions[:n]
        if self.types is not None:
            x += self.types[0]
        return self.norm(x) if self.norm is not None else x


@dataclass(frozen=True, eq=False)
class Model:
    """A model ready to run: its embedding, and per layer its attention weights and the rest of its block."""

    family: str  # "bert", "gpt2", ...
    embedding: Embedding
    attention: Sequence[AttentionWeights]  # [n_layers]
    blocks: Sequence[Block]  # [n_layers]
    causal: bool
    max_positions: int
    info: dict[str, Any] = field(default_factory=dict)  # what the reader wants to say (name, dtype, ...)

    @property
    def n_layers(self) -> int:
        return len(self.attention)


@dataclass(frozen=True, eq=False)
class LayerRun:
    """One layer of a run: what its attention read, the stream it wrote into, its result, the stream after."""

    x: np.ndarray  # [n, d_model] what the attention read (norm_attn of the stream in pre-norm models)
    stream: np.ndarray  # [n, d_model] the residual stream entering the layer
    result: AttentionResult
    after: np.ndarray  # [n, d_model] the stream after the whole block (attention, norms, MLP)


#: told (layers done, layers in all) before each layer of a run; it may raise to stop the run there (Cancel)
LayerProgress = Callable[[int, int], object]


def run(
    model: Model, ids: Sequence[int] | np.ndarray, layers: int | None = None, progress: LayerProgress | None = None
) -> list[LayerRun]:
    """Run `model` on token ids [n] through its first `layers` layers (all by default); one LayerRun per layer.

    ``progress(done, total)`` is called before each layer (and once at the end); whatever it raises stops the
    run before the next layer and comes out of ``run``: that is how the window's Cancel stops a forward pass."""
    ids = np.asarray(ids, dtype=np.intp)
    count = model.n_layers if layers is None else layers
    if not 0 <= count <= model.n_layers:
        raise ModelError(f"The model has {model.n_layers} layers; it cannot run {count}.")
    if len(ids) == 0:
        raise ModelError("The model needs at least one token.")
    if len(ids) > model.max_positions:
        raise ModelError(f"The sentence has {len(ids)} tokens but the model reads at most {model.max_positions}.")
    stream = model.embedding(ids)  # [n, d_model]
    runs: list[LayerRun] = []
    for weights, block in zip(model.attention[:count], model.blocks[:count], strict=True):
        if progress is not None:
            progress(len(runs), count)
        x = block.attention_input(stream)  # [n, d_model]
        result = multi_head_attention(x, causal=model.causal, **weights.arguments())
        after = block.after_attention(stream, result.output)  # [n, d_model]
        runs.append(LayerRun(x=x, stream=stream, result=result, after=after))
        stream = after
    if progress is not None:
        progress(count, count)
    return runs


def run_blocks(
    blocks: Sequence[Block],
    x: np.ndarray,
    stream: np.ndarray,
    attend: Callable[[int, np.ndarray], AttentionResult],
    start: int = 0,
) -> list[tuple[AttentionResult, np.ndarray, np.ndarray]]:
    """The model's stack with editable attention: ``attend(layer, x)`` gives layer ℓ's AttentionResult.

    x [n, d_model] is what layer ``start + 1``'s attention reads (layer 1's: the editable X), stream [n, d_model]
    the stream it writes into. Returns per layer from ``start`` on (result, stream in, stream after the block);
    layer ℓ + 1 reads ``attention_input`` of the stream after layer ℓ's block, as the model does.
    """
    out = []
    for layer in range(start, len(blocks)):
        block = blocks[layer]
        if layer > start:
            x = block.attention_input(stream)
        result = attend(layer, x)
        after = block.after_attention(stream, result.output)
        out.append((result, stream, after))
        stream = after
    return out


@dataclass(frozen=True, eq=False)
class Stack:
    """A real model's own parts around its editable attention layers, held read-only by a whole-model session.

    ``blocks[ℓ]`` runs after attention layer ℓ (and gives layer ℓ + 1 its input); ``scale_factors[ℓ]`` multiplies
    the session's scale for layer ℓ (GPT-2's ``scale_attn_by_inverse_layer_idx`` makes it 1/(ℓ + 1)).
    """

    family: str
    blocks: tuple[Block, ...]
    scale_factors: tuple[float, ...]

    def __post_init__(self) -> None:
        for block in self.blocks:  # the model's own: shown, never edited
            for part in (block.norm_attn, block.norm_mlp, block.mlp):
                for a in vars(part).values() if part is not None else ():
                    if isinstance(a, np.ndarray):
                        a.flags.writeable = False

    @property
    def d_model(self) -> int:
        return int(self.blocks[0].mlp.w_in.shape[0])

    def check(self, n_layers: int, d_model: int) -> str | None:
        """What is wrong with this stack for a session of n_layers × d_model, or None."""
        if len(self.blocks) != n_layers or len(self.scale_factors) != n_layers:
            return f"the model's blocks are for {len(self.blocks)} layers but the session has {n_layers}"
        for i, block in enumerate(self.blocks):
            m = block.mlp
            if m.w_in.shape[0] != d_model or m.w_out.shape[1] != d_model:
                return f"the MLP of layer {i + 1} is for d_model {m.w_in.shape[0]}, not {d_model}"
        if not all(math.isfinite(f) for f in self.scale_factors):
            return "a scale factor is not finite"
        for i, block in enumerate(self.blocks):
            for part in (block.norm_attn, block.norm_mlp, block.mlp):
                for name, a in vars(part).items() if part is not None else ():
                    if isinstance(a, np.ndarray) and not np.isfinite(a).all():
                        return f"layer {i + 1}'s {name} holds a value that is not a finite number"
                if isinstance(part, Norm) and not (math.isfinite(part.eps) and part.eps >= 0):
                    return f"layer {i + 1}'s norm has eps {part.eps}"
        return None

    # ---- as plain arrays and JSON (for session files) ------------------------------------------------------
    def to_plain(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-plain description, arrays by name) that ``from_plain`` turns back into the same stack."""
        arrays: dict[str, np.ndarray] = {}
        layers = []
        for i, b in enumerate(self.blocks):
            entry: dict[str, Any] = {"pre_norm": b.pre_norm, "activation": b.mlp.activation, "norms": {}}
            for which in ("norm_attn", "norm_mlp"):
                norm = getattr(b, which)
                if norm is not None:
                    entry["norms"][which] = {"kind": norm.kind, "eps": norm.eps, "bias": norm.bias is not None}
                    arrays[f"{i}/{which}.weight"] = norm.weight
                    if norm.bias is not None:
                        arrays[f"{i}/{which}.bias"] = norm.bias
            for name in ("w_in", "b_in", "w_out", "b_out", "w_gate"):
                a = getattr(b.mlp, name)
                if a is not None:
                    arrays[f"{i}/mlp.{name}"] = a
            layers.append(entry)
        return {"family": self.family, "scale_factors": list(self.scale_factors), "layers": layers}, arrays

    @classmethod
    def from_plain(cls, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Stack:
        """The stack of ``to_plain``; ModelError saying what is missing or does not fit."""
        try:
            blocks = []
            for i, entry in enumerate(doc["layers"]):
                norms = {}
                for which, spec in entry["norms"].items():
                    if which not in ("norm_attn", "norm_mlp") or spec["kind"] not in ("layer", "rms"):
                        raise ModelError(f"layer {i + 1} has an unknown norm {which!r} of kind {spec['kind']!r}")
                    norms[which] = Norm(
                        arrays[f"{i}/{which}.weight"],
                        arrays[f"{i}/{which}.bias"] if spec["bias"] else None,
                        float(spec["eps"]),
                        spec["kind"],
                    )
                if entry["activation"] not in ACTIVATIONS:
                    raise ModelError(f"layer {i + 1}'s activation {entry['activation']!r} is unknown")
                mlp = Mlp(
                    arrays[f"{i}/mlp.w_in"],
                    arrays.get(f"{i}/mlp.b_in"),
                    arrays[f"{i}/mlp.w_out"],
                    arrays.get(f"{i}/mlp.b_out"),
                    entry["activation"],
                    arrays.get(f"{i}/mlp.w_gate"),
                )
                d_model, d_mlp = mlp.w_in.shape
                shapes = {"w_out": (d_mlp, d_model), "b_in": (d_mlp,), "b_out": (d_model,), "w_gate": (d_model, d_mlp)}
                for name, shape in shapes.items():
                    a = getattr(mlp, name)
                    if a is not None and a.shape != shape:
                        raise ModelError(f"layer {i + 1}'s mlp.{name} is {a.shape}, not {shape}")
                for norm in norms.values():
                    if norm.weight.shape != (d_model,) or (norm.bias is not None and norm.bias.shape != (d_model,)):
                        raise ModelError(f"a norm of layer {i + 1} does not have {d_model} entries")
                blocks.append(Block(bool(entry["pre_norm"]), norms.get("norm_attn"), norms.get("norm_mlp"), mlp))
            factors = tuple(float(f) for f in doc["scale_factors"])
            return cls(str(doc["family"]), tuple(blocks), factors)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"The model's blocks are incomplete ({type(e).__name__}: {e}).") from None
