"""GPT-2's tensor map (GPT2Model, GPT2LMHeadModel; pre-LayerNorm, causal) onto ``core.models.Model``.

Checkpoint names (with or without the "transformer." prefix):
  wte.weight [vocab, d], wpe.weight [positions, d]
  h.L.ln_1: pre-norm, the attention reads X = ln_1(s) and writes into s itself
  h.L.attn.c_attn.{weight,bias}: Conv1D, stored input-major [d_in, 3·d] (y = x·W + b, no transpose):
      columns [0, d) are Q, [d, 2d) K, [2d, 3d) V; each split into heads of d_k columns -> [h, d_model, d_k]
  h.L.attn.c_proj.{weight,bias}: Conv1D [h·d_v, d_model]: W_O = weight as stored, b_O = bias
  h.L.ln_2, h.L.mlp.c_fc, h.L.mlp.c_proj: the MLP, s = s + MLP(ln_2(s))
The attention scale: 1/√d_k, or 1 when ``scale_attn_weights`` is false; divided further by ℓ + 1 (1-based layer
number) when ``scale_attn_by_inverse_layer_idx`` is true, as Hugging Face's GPT2Attention does.
"""

from __future__ import annotations

import math

from qkvgui.core.models import ACTIVATIONS, AttentionWeights, Block, Embedding, Mlp, Model
from qkvgui.io.checkpoints.common import CheckpointError, Getter, RowReader, Shape, heads, layer_norms, setting

NAME = "gpt2"
LABEL = "GPT-2"
ARCHITECTURES = ("GPT2Model", "GPT2LMHeadModel")
PREFIXES = ("", "transformer.")


def check(config: dict) -> Shape:
    """The model's sizes from its config; CheckpointError for an option the forward pass does not model."""
    shape = Shape.read(config, "n_embd", "n_head", "n_layer", "n_positions")
    setting(config, "layer_norm_epsilon", float, 1e-5, low=0.0, high=1.0)
    setting(config, "scale_attn_weights", bool, True)
    setting(config, "scale_attn_by_inverse_layer_idx", bool, False)
    setting(config, "reorder_and_upcast_attn", bool, False)  # float32 upcasting only: the same math in float64
    act = setting(config, "activation_function", str, "gelu_new")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"config.json's 'activation_function' is {act!r}; qkvgui runs {', '.join(ACTIVATIONS)}.")
    if setting(config, "add_cross_attention", bool, False):
        raise CheckpointError("config.json sets 'add_cross_attention'; qkvgui runs GPT-2 without cross-attention.")
    return shape


def scale(config: dict, d_k: int, layer: int) -> float | None:
    """The factor layer `layer`'s (0-based) scores are multiplied by; None for the usual 1/√d_k."""
    by_width, by_layer = config.get("scale_attn_weights", True), config.get("scale_attn_by_inverse_layer_idx", False)
    if by_width and not by_layer:
        return None
    s = 1.0 / math.sqrt(d_k) if by_width else 1.0
    return s / float(layer + 1) if by_layer else s


def build(get: Getter, rows: RowReader, config: dict, shape: Shape, layers: int) -> Model:
    """The first `layers` layers of the model, weights widened to float64."""
    d, h = shape.d_model, shape.n_heads
    norm = layer_norms(get, d, float(setting(config, "layer_norm_epsilon", float, 1e-5)))
    act = config.get("activation_function", "gelu_new")

    embedding = Embedding(
        tokens=lambda ids: rows("wte.weight", ids), positions=get("wpe.weight")[: shape.max_positions]
    )
    attention, blocks = [], []
    for i in range(layers):
        p = f"h.{i}."
        w = get(p + "attn.c_attn.weight", (d, 3 * d))
        b = get(p + "attn.c_attn.bias", (3 * d,))
        attention.append(
            AttentionWeights(
                w_q=heads(w[:, :d], h),
                w_k=heads(w[:, d : 2 * d], h),
                w_v=heads(w[:, 2 * d :], h),
                w_o=get(p + "attn.c_proj.weight", (d, d)),
                b_o=get(p + "attn.c_proj.bias", (d,)),
                b_q=b[:d].reshape(h, -1),
                b_k=b[d : 2 * d].reshape(h, -1),
                b_v=b[2 * d :].reshape(h, -1),
                scale=scale(config, d // h, i),
            )
        )
        w_fc = get(p + "mlp.c_fc.weight")
        if w_fc.ndim != 2 or w_fc.shape[0] != d:
            raise CheckpointError(f"{p}mlp.c_fc.weight is {list(w_fc.shape)}; it must be [{d}, d_mlp].")
        d_mlp = w_fc.shape[1]
        mlp = Mlp(
            w_fc,
            get(p + "mlp.c_fc.bias", (d_mlp,)),
            get(p + "mlp.c_proj.weight", (d_mlp, d)),
            get(p + "mlp.c_proj.bias", (d,)),
            act,
        )
        blocks.append(Block(pre_norm=True, norm_attn=norm(p + "ln_1"), norm_mlp=norm(p + "ln_2"), mlp=mlp))
    return Model(NAME, embedding, attention, blocks, causal=True, max_positions=shape.max_positions)
