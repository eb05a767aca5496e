"""Forward passes of real model families in NumPy, up to one attention layer, and that layer's weights in our shapes.

Given a model's tensors (name → array, as in its checkpoint) and its config, ``layer_input(...)`` runs everything
before layer ℓ (embeddings, LayerNorms, attention, MLPs) and returns what layer ℓ's attention reads, the residual
stream it writes into, and its weights in qkvgui's convention (row vectors; W_Q [h, d_model, d_k]; W_O [h·d_v,
d_model]), so that ``multi_head_attention(x, w_q, w_k, w_v, w_o, b_q=..., ...)`` reproduces the model's attention.

Supported: BERT (BertModel, post-LayerNorm) and GPT-2 (GPT2Model / GPT2LMHeadModel, pre-LayerNorm, causal).
The next family goes into ``ARCHITECTURES`` the same way: a LLaMA-style model needs RMSNorm instead of LayerNorm,
rotary position embeddings applied to q and k inside the layer (so W_Q alone no longer gives the scores: the
session would need a per-position rotation step), and grouped-query attention (W_K, W_V shared by groups of heads:
repeat them per head when mapping to our per-head W_K, W_V).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .errors import CheckpointError

__all__ = ["ARCHITECTURES", "LayerInput", "ModelError", "architecture_of", "layer_input", "max_positions", "n_layers"]


class ModelError(CheckpointError):
    """A checkpoint this code cannot run: unknown architecture, missing tensor, layer out of range."""


@dataclass(frozen=True)
class LayerInput:
    """What one attention layer of a real model reads, and its weights in qkvgui's shapes."""

    x: np.ndarray  # [n, d_model] what the attention reads (after ln_1 for pre-LN models)
    residual: np.ndarray  # [n, d_model] the residual stream the attention's output is added to
    w_q: np.ndarray  # [h, d_model, d_k]
    w_k: np.ndarray  # [h, d_model, d_k]
    w_v: np.ndarray  # [h, d_model, d_v]
    w_o: np.ndarray  # [h·d_v, d_model]
    b_q: np.ndarray  # [h, d_k]
    b_k: np.ndarray  # [h, d_k]
    b_v: np.ndarray  # [h, d_v]
    b_o: np.ndarray  # [d_model]
    causal: bool


Tensors = Mapping[str, np.ndarray] | Callable[[str], np.ndarray]


def _getter(tensors: Tensors, prefixes: tuple[str, ...]) -> Callable[[str], np.ndarray]:
    """A function name → float64 array, trying each name prefix (`bert.`, `transformer.`, none)."""
    get = tensors if callable(tensors) else tensors.__getitem__

    def tensor(name: str) -> np.ndarray:
        for prefix in prefixes:
            try:
                return np.asarray(get(prefix + name), dtype=np.float64)
            except KeyError:
                continue
        tried = ", ".join(map(repr, prefixes))
        raise ModelError(f"The checkpoint has no tensor '{name}' (tried the prefixes {tried}).")

    return tensor


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu_exact(x: np.ndarray) -> np.ndarray:
    """0.5·x·(1 + erf(x/√2)), BERT's "gelu", with math.erf (exact to float64)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GPT-2's "gelu_new": the tanh approximation."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


_ACTIVATIONS = {"gelu": _gelu_exact, "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh,
                "relu": lambda x: np.maximum(x, 0.0)}


def _activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ModelError(f"The activation '{name}' is not supported; known: {', '.join(_ACTIVATIONS)}.") from None


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _heads(w_in_out: np.ndarray, h: int) -> np.ndarray:
    """[d_model, h·d] (input-major, one head's columns after another) -> [h, d_model, d]."""
    d_model, width = w_in_out.shape
    return w_in_out.reshape(d_model, h, width // h).transpose(1, 0, 2).copy()


def _attend(x, w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o, causal):
    """The layer's attention output [n, d_model], computed the model's way (for the layers before ℓ)."""
    q = np.einsum("nd,hde->hne", x, w_q) + b_q[:, None]
    k = np.einsum("nd,hde->hne", x, w_k) + b_k[:, None]
    v = np.einsum("nd,hde->hne", x, w_v) + b_v[:, None]
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
    if causal:
        n = x.shape[0]
        scores = np.where(np.tri(n, dtype=bool), scores, -np.inf)
    ctx = _softmax(scores) @ v  # [h, n, d_v]
    return ctx.transpose(1, 0, 2).reshape(x.shape[0], -1) @ w_o + b_o


# ---- BERT ----------------------------------------------------------------------------------------------------
# Checkpoint names (with or without the "bert." prefix) and how they map to our convention:
#   embeddings.{word,position,token_type}_embeddings.weight  [vocab|positions|types, d]
#   embeddings.LayerNorm.{weight,bias}
#   encoder.layer.L.attention.self.{query,key,value}.weight  [d_out, d_in] (PyTorch nn.Linear: y = x·Wᵀ + b):
#       W_Q = query.weightᵀ, split into heads of d_k columns -> [h, d_model, d_k]; b_Q = query.bias -> [h, d_k]
#   encoder.layer.L.attention.output.dense.{weight,bias}     W_O = dense.weightᵀ [h·d_v, d_model]; b_O = bias
#   encoder.layer.L.attention.output.LayerNorm               post-LN: h1 = LN(h + attention)
#   encoder.layer.L.intermediate.dense, output.dense, output.LayerNorm: the MLP, h = LN(h1 + MLP(h1))
# BERT is post-LN, so the attention reads the residual stream itself: X = residual = h.
def _bert(tensor, config: dict, ids: np.ndarray, layer: int, token_types: np.ndarray | None) -> LayerInput:
    h_count = int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    act = _activation(config.get("hidden_act", "gelu"))
    n = len(ids)
    types = np.zeros(n, dtype=np.intp) if token_types is None else token_types
    hidden = (tensor("embeddings.word_embeddings.weight")[ids] + tensor("embeddings.position_embeddings.weight")[:n]
              + tensor("embeddings.token_type_embeddings.weight")[types])
    hidden = _layer_norm(hidden, tensor("embeddings.LayerNorm.weight"), tensor("embeddings.LayerNorm.bias"), eps)

    def weights(i):
        p = f"encoder.layer.{i}.attention."

        def split(name):  # nn.Linear [d_out, d_in] -> [h, d_model, d], and its bias -> [h, d]
            return _heads(tensor(p + f"self.{name}.weight").T, h_count), tensor(p + f"self.{name}.bias").reshape(
                h_count, -1)

        (w_q, b_q), (w_k, b_k), (w_v, b_v) = split("query"), split("key"), split("value")
        return dict(w_q=w_q, w_k=w_k, w_v=w_v, w_o=tensor(p + "output.dense.weight").T.copy(), b_q=b_q, b_k=b_k,
                    b_v=b_v, b_o=tensor(p + "output.dense.bias"))

    for i in range(layer):
        p = f"encoder.layer.{i}."
        attn = _attend(hidden, causal=False, **weights(i))
        h1 = _layer_norm(hidden + attn, tensor(p + "attention.output.LayerNorm.weight"),
                         tensor(p + "attention.output.LayerNorm.bias"), eps)
        inter = act(h1 @ tensor(p + "intermediate.dense.weight").T + tensor(p + "intermediate.dense.bias"))
        out = inter @ tensor(p + "output.dense.weight").T + tensor(p + "output.dense.bias")
        hidden = _layer_norm(h1 + out, tensor(p + "output.LayerNorm.weight"), tensor(p + "output.LayerNorm.bias"), eps)
    return LayerInput(x=hidden, residual=hidden, causal=False, **weights(layer))


# ---- GPT-2 ---------------------------------------------------------------------------------------------------
# Checkpoint names (with or without the "transformer." prefix):
#   wte.weight [vocab, d], wpe.weight [positions, d]
#   h.L.ln_1.{weight,bias}: pre-LN, the attention reads X = ln_1(h) and writes into h itself
#   h.L.attn.c_attn.{weight,bias}: Conv1D, stored input-major [d_in, 3·d] (y = x·W + b, no transpose):
#       columns [0, d) are Q, [d, 2d) K, [2d, 3d) V; each split into heads of d_k columns -> [h, d_model, d_k]
#   h.L.attn.c_proj.{weight,bias}: Conv1D [h·d_v, d_model]: W_O = weight as stored, b_O = bias
#   h.L.ln_2, h.L.mlp.c_fc, h.L.mlp.c_proj: the MLP, h = h + MLP(ln_2(h))
def _gpt2(tensor, config: dict, ids: np.ndarray, layer: int, token_types: np.ndarray | None) -> LayerInput:
    h_count = int(config.get("n_head", config.get("num_attention_heads", 0)))
    eps = float(config.get("layer_norm_epsilon", 1e-5))
    act = _activation(config.get("activation_function", "gelu_new"))
    n = len(ids)
    hidden = tensor("wte.weight")[ids] + tensor("wpe.weight")[:n]

    def ln(i, which, x):
        return _layer_norm(x, tensor(f"h.{i}.{which}.weight"), tensor(f"h.{i}.{which}.bias"), eps)

    def weights(i):
        w = tensor(f"h.{i}.attn.c_attn.weight")
        b = tensor(f"h.{i}.attn.c_attn.bias")
        d = w.shape[0]
        return dict(
            w_q=_heads(w[:, :d], h_count), w_k=_heads(w[:, d:2 * d], h_count), w_v=_heads(w[:, 2 * d:], h_count),
            w_o=tensor(f"h.{i}.attn.c_proj.weight"), b_o=tensor(f"h.{i}.attn.c_proj.bias"),
            b_q=b[:d].reshape(h_count, -1), b_k=b[d:2 * d].reshape(h_count, -1), b_v=b[2 * d:].reshape(h_count, -1),
        )

    for i in range(layer):
        hidden = hidden + _attend(ln(i, "ln_1", hidden), causal=True, **weights(i))
        m = act(ln(i, "ln_2", hidden) @ tensor(f"h.{i}.mlp.c_fc.weight") + tensor(f"h.{i}.mlp.c_fc.bias"))
        hidden = hidden + m @ tensor(f"h.{i}.mlp.c_proj.weight") + tensor(f"h.{i}.mlp.c_proj.bias")
    return LayerInput(x=ln(layer, "ln_1", hidden), residual=hidden, causal=True, **weights(layer))


#: model_type / architecture name -> (forward pass, tensor name prefixes, config keys of layers and positions)
ARCHITECTURES = {
    "bert": (_bert, ("", "bert."), "num_hidden_layers", "max_position_embeddings"),
    "gpt2": (_gpt2, ("", "transformer."), "n_layer", "n_positions"),
}
_ALIASES = {"BertModel": "bert", "BertForMaskedLM": "bert", "BertForSequenceClassification": "bert",
            "GPT2Model": "gpt2", "GPT2LMHeadModel": "gpt2"}


def architecture_of(config: dict) -> str:
    """The family key of a Hugging Face config ("bert", "gpt2"); ModelError naming the supported ones otherwise."""
    kind = config.get("model_type")
    if kind in ARCHITECTURES:
        return kind
    for name in config.get("architectures") or []:
        if name in _ALIASES:
            return _ALIASES[name]
    named = kind or ", ".join(config.get("architectures") or []) or "an unnamed architecture"
    raise ModelError(f"This checkpoint is {named}; qkvgui reads BERT (BertModel) and GPT-2 (GPT2Model, "
                     "GPT2LMHeadModel) checkpoints.")


def n_layers(config: dict) -> int:
    return int(config[ARCHITECTURES[architecture_of(config)][2]])


def max_positions(config: dict) -> int:
    return int(config[ARCHITECTURES[architecture_of(config)][3]])


def layer_input(tensors: Tensors, config: dict, ids, layer: int, token_types=None) -> LayerInput:
    """Run the model up to attention layer `layer` (0-based) on token ids [n]; see LayerInput."""
    forward, prefixes, _, _ = ARCHITECTURES[architecture_of(config)]
    count = n_layers(config)
    if not 0 <= layer < count:
        raise ModelError(f"The model has layers 1 to {count}; there is no layer {layer + 1}.")
    ids = np.asarray(ids, dtype=np.intp)
    if len(ids) > max_positions(config):
        raise ModelError(f"The sentence has {len(ids)} tokens but the model reads at most {max_positions(config)}.")
    return forward(_getter(tensors, prefixes), config, ids, layer, token_types)
