"""BERT's tensor map (BertModel and its task heads; post-LayerNorm, bidirectional) onto ``core.models.Model``.

Checkpoint names (with or without the "bert." prefix) and how they map to our convention:
  embeddings.{word,position,token_type}_embeddings.weight  [vocab | positions | types, d]; embeddings.LayerNorm
  encoder.layer.L.attention.self.{query,key,value}.{weight,bias}  nn.Linear [d_out, d_in] (y = x·Wᵀ + b):
      W_Q = query.weightᵀ split into heads of d_k columns -> [h, d_model, d_k]; b_Q = query.bias -> [h, d_k]
  encoder.layer.L.attention.output.dense.{weight,bias}     W_O = dense.weightᵀ [h·d_v, d_model]; b_O = bias
  encoder.layer.L.attention.output.LayerNorm               post-norm: s = LN(s + attention)
  encoder.layer.L.{intermediate.dense, output.dense, output.LayerNorm}: s = LN(s + W_out·gelu(W_in·s))
"""

from __future__ import annotations

import numpy as np

from qkvgui.core.models import ACTIVATIONS, AttentionWeights, Block, Embedding, Mlp, Model
from qkvgui.io.checkpoints.common import CheckpointError, Getter, RowReader, Shape, heads, layer_norms, setting

NAME = "bert"
LABEL = "BERT"
ARCHITECTURES = (
    "BertModel",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
)
PREFIXES = ("", "bert.")


def check(config: dict) -> Shape:
    """The model's sizes from its config; CheckpointError for an option the forward pass does not model."""
    shape = Shape.read(config, "hidden_size", "num_attention_heads", "num_hidden_layers", "max_position_embeddings")
    setting(config, "layer_norm_eps", float, 1e-12, low=0.0, high=1.0)
    act = setting(config, "hidden_act", str, "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"config.json's 'hidden_act' is {act!r}; qkvgui runs {', '.join(ACTIVATIONS)}.")
    kind = setting(config, "position_embedding_type", str, "absolute")
    if kind != "absolute":
        raise CheckpointError(
            f"config.json's 'position_embedding_type' is {kind!r}; qkvgui runs BERT with "
            "'absolute' position embeddings only."
        )
    for option in ("is_decoder", "add_cross_attention"):
        if setting(config, option, bool, False):
            raise CheckpointError(f"config.json sets '{option}'; qkvgui runs BERT as an encoder only.")
    return shape


def build(get: Getter, rows: RowReader, config: dict, shape: Shape, layers: int) -> Model:
    """The first `layers` layers of the model, weights widened to float64."""
    d, h = shape.d_model, shape.n_heads
    norm = layer_norms(get, d, float(setting(config, "layer_norm_eps", float, 1e-12)))
    act = config.get("hidden_act", "gelu")

    embedding = Embedding(
        tokens=lambda ids: rows("embeddings.word_embeddings.weight", ids),
        positions=get("embeddings.position_embeddings.weight")[: shape.max_positions],
        types=get("embeddings.token_type_embeddings.weight"),
        norm=norm("embeddings.LayerNorm"),
    )
    attention, blocks = [], []
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def linear(name: str, p: str = p) -> tuple[np.ndarray, np.ndarray]:  # -> [h, d_model, d_k], [h, d_k]
            return heads(get(p + f"attention.self.{name}.weight", (d, d)).T, h), get(
                p + f"attention.self.{name}.bias", (d,)
            ).reshape(h, -1)

        (w_q, b_q), (w_k, b_k), (w_v, b_v) = linear("query"), linear("key"), linear("value")
        attention.append(
            AttentionWeights(
                w_q,
                w_k,
                w_v,
                get(p + "attention.output.dense.weight", (d, d)).T.copy(),
                b_q,
                b_k,
                b_v,
                get(p + "attention.output.dense.bias", (d,)),
            )
        )
        w_in = get(p + "intermediate.dense.weight")
        if w_in.ndim != 2 or w_in.shape[1] != d:
            raise CheckpointError(f"{p}intermediate.dense.weight is {list(w_in.shape)}; it must be [d_mlp, {d}].")
        mlp = Mlp(
            w_in.T.copy(),
            get(p + "intermediate.dense.bias", (w_in.shape[0],)),
            get(p + "output.dense.weight", (d, w_in.shape[0])).T.copy(),
            get(p + "output.dense.bias", (d,)),
            act,
        )
        blocks.append(
            Block(
                pre_norm=False,
                norm_attn=norm(p + "attention.output.LayerNorm"),
                norm_mlp=norm(p + "output.LayerNorm"),
                mlp=mlp,
            )
        )
    return Model(NAME, embedding, attention, blocks, causal=False, max_positions=shape.max_positions)
