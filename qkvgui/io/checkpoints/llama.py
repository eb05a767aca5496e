"""The LLaMA family's tensor map: a GGUF file (llama.cpp) or a Hugging Face folder (`model_type: llama`) as arrays
in qkvgui's shapes (row vectors; W_Q [h, d_model, d_k]; W_K, W_V [n_kv_heads, d_model, d_k]; W_O [h·d_v, d_model]).

Names and layouts:
  Hugging Face (safetensors, nn.Linear weights [d_out, d_in], y = x·Wᵀ):
    model.embed_tokens.weight [vocab, d]; model.layers.L.input_layernorm.weight (RMSNorm before attention);
    self_attn.{q,k,v,o}_proj.weight; post_attention_layernorm.weight; mlp.{gate,up,down}_proj.weight
  GGUF (llama.cpp, same [d_out, d_in] once dequantized, W_Q/W_K rows permuted for its RoPE kernels):
    token_embd.weight; blk.L.attn_norm.weight; blk.L.attn_{q,k,v,output}.weight; blk.L.ffn_norm.weight;
    blk.L.ffn_{gate,up,down}.weight
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qkvgui.core.models import AttentionWeights, Block, Embedding, LayerProgress, Mlp, Model, ModelError, Norm, run
from qkvgui.state import few_blas_threads

from .gguf import GgufFile, open_gguf, unpermute_rope_rows

__all__ = [
    "LABEL",
    "NAME",
    "LlamaConfig",
    "LlamaSource",
    "build_model",
    "is_llama",
    "llama_config_from_gguf",
    "llama_config_from_hf",
    "open_llama",
    "read_llama",
]

NAME = "llama"
LABEL = "LLaMA family"


@dataclass(frozen=True)
class LlamaConfig:
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    theta: float
    eps: float
    max_positions: int
    name: str


def _int(value: Any, what: str, label: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ModelError(f"{label}: the setting {what} is {value!r}, not a whole number.") from None
    if v <= 0:
        raise ModelError(f"{label}: the setting {what} is {v}; it must be positive.")
    return v


def _check(cfg: LlamaConfig, label: str) -> LlamaConfig:
    if cfg.n_heads % cfg.n_kv_heads:
        raise ModelError(f"{label}: {cfg.n_heads} query heads cannot share {cfg.n_kv_heads} key/value heads evenly.")
    if cfg.d_head % 2:
        raise ModelError(f"{label}: rotary positions need an even head width, not {cfg.d_head}.")
    if not (np.isfinite(cfg.theta) and cfg.theta > 1):
        raise ModelError(f"{label}: the rotary base θ is {cfg.theta}; it must be a finite number above 1.")
    return cfg


def llama_config_from_hf(config: dict, label: str) -> LlamaConfig:
    """The settings of a Hugging Face LLaMA config.json."""
    scaling = config.get("rope_scaling") or (config.get("rope_parameters") or {})
    kind = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else "default"
    if kind not in (None, "default"):
        raise ModelError(f"{label} scales its rotary positions ('{kind}'); qkvgui reads plain RoPE only.")
    theta = config.get("rope_theta")
    if theta is None and isinstance(config.get("rope_parameters"), dict):
        theta = config["rope_parameters"].get("rope_theta")
    heads = _int(config.get("num_attention_heads"), "num_attention_heads", label)
    d_model = _int(config.get("hidden_size"), "hidden_size", label)
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ModelError(f"{label} has attention or MLP biases; qkvgui reads LLaMA layers without biases.")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ModelError(f"{label} uses the activation '{act}'; LLaMA's MLP is SwiGLU with 'silu'.")
    return _check(
        LlamaConfig(
            n_layers=_int(config.get("num_hidden_layers"), "num_hidden_layers", label),
            d_model=d_model,
            n_heads=heads,
            n_kv_heads=_int(config.get("num_key_value_heads", heads), "num_key_value_heads", label),
            d_head=_int(config.get("head_dim") or d_model // heads, "head_dim", label),
            d_mlp=_int(config.get("intermediate_size"), "intermediate_size", label),
            theta=float(theta if theta is not None else 10000.0),
            eps=float(config.get("rms_norm_eps", 1e-6)),
            max_positions=_int(config.get("max_position_embeddings", 2048), "max_position_embeddings", label),
            name=str(config.get("_name_or_path") or label).rstrip("/").split("/")[-1] or label,
        ),
        label,
    )


def llama_config_from_gguf(g: GgufFile) -> LlamaConfig:
    """The settings stored in a GGUF file's metadata (under its architecture's prefix)."""
    arch = g.meta("general.architecture")
    if arch != "llama":
        raise ModelError(
            f"{g.label} holds a '{arch}' model; qkvgui reads LLaMA-architecture GGUF files (LLaMA, SmolLM, Mistral)."
        )
    scaling = g.meta("llama.rope.scaling.type", "none")
    if scaling not in ("none", None) or "rope_freqs.weight" in g.names():
        raise ModelError(f"{g.label} scales its rotary positions; qkvgui reads plain RoPE only.")
    heads = _int(g.meta("llama.attention.head_count"), "head_count", g.label)
    d_model = _int(g.meta("llama.embedding_length"), "embedding_length", g.label)
    d_head = _int(g.meta("llama.attention.key_length", d_model // heads), "key_length", g.label)
    rot = g.meta("llama.rope.dimension_count", d_head)
    if int(rot) != d_head:
        raise ModelError(f"{g.label} rotates {rot} of {d_head} coordinates per head; qkvgui rotates whole heads.")
    return _check(
        LlamaConfig(
            n_layers=_int(g.meta("llama.block_count"), "block_count", g.label),
            d_model=d_model,
            n_heads=heads,
            n_kv_heads=_int(g.meta("llama.attention.head_count_kv", heads), "head_count_kv", g.label),
            d_head=d_head,
            d_mlp=_int(g.meta("llama.feed_forward_length"), "feed_forward_length", g.label),
            theta=float(g.meta("llama.rope.freq_base", 10000.0)),
            eps=float(g.meta("llama.attention.layer_norm_rms_epsilon", 1e-5)),
            max_positions=_int(g.meta("llama.context_length", 2048), "context_length", g.label),
            name=str(g.meta("general.name", g.path.stem)),
        ),
        g.label,
    )


class LlamaSource:
    """One LLaMA model on disk: its config, tokenizer, and tensors by role in qkvgui's shapes (float64)."""

    def __init__(self, config: LlamaConfig, tokenizer, tensor, rows, gguf: bool, path: Path):
        self.config = config
        self.tokenizer = tokenizer
        self._tensor = tensor  # HF-style name -> float64 array, PyTorch layout
        self._rows = rows  # (name, ids) -> rows
        self.gguf = gguf
        self.path = path

    def _name(self, role: str, layer: int | None = None) -> str:
        if self.gguf:
            names = {
                "embed": "token_embd.weight",
                "final_norm": "output_norm.weight",
                "attn_norm": "attn_norm",
                "q": "attn_q",
                "k": "attn_k",
                "v": "attn_v",
                "o": "attn_output",
                "mlp_norm": "ffn_norm",
                "gate": "ffn_gate",
                "up": "ffn_up",
                "down": "ffn_down",
            }
            return names[role] if layer is None else f"blk.{layer}.{names[role]}.weight"
        names = {
            "embed": "model.embed_tokens.weight",
            "final_norm": "model.norm.weight",
            "attn_norm": "input_layernorm",
            "q": "self_attn.q_proj",
            "k": "self_attn.k_proj",
            "v": "self_attn.v_proj",
            "o": "self_attn.o_proj",
            "mlp_norm": "post_attention_layernorm",
            "gate": "mlp.gate_proj",
            "up": "mlp.up_proj",
            "down": "mlp.down_proj",
        }
        return names[role] if layer is None else f"model.layers.{layer}.{names[role]}.weight"

    def _get(self, role: str, layer: int, shape: tuple[int, ...]) -> np.ndarray:
        name = self._name(role, layer)
        a = self._tensor(name)
        if a.shape != shape:
            raise ModelError(f"{self.path.name}: '{name}' has shape {a.shape} but the config says {shape}.")
        return a

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """The token embedding rows of ids.  # [n, d_model]"""
        return self._rows(self._name("embed"), ids)

    def layer(self, i: int) -> dict[str, np.ndarray]:
        """Layer i's weights in qkvgui's shapes: w_q [h, d, d_k], w_k/w_v [kv, d, d_k], w_o [h·d_k, d],
        attn_norm, mlp_norm [d], w_gate, w_up [d, d_mlp], w_down [d_mlp, d]."""
        c = self.config
        d, h, kv, dk = c.d_model, c.n_heads, c.n_kv_heads, c.d_head
        q = self._get("q", i, (h * dk, d))
        k = self._get("k", i, (kv * dk, d))
        if self.gguf:  # llama.cpp interleaved the rotary pairs: put them back in HF's (i, i + d/2) layout
            q = unpermute_rope_rows(q, h)
            k = unpermute_rope_rows(k, kv)
        v = self._get("v", i, (kv * dk, d))

        def heads(w: np.ndarray, count: int) -> np.ndarray:  # [count·d_k, d] -> [count, d, d_k]
            return np.ascontiguousarray(w.reshape(count, dk, d).transpose(0, 2, 1))

        return {
            "w_q": heads(q, h),
            "w_k": heads(k, kv),
            "w_v": heads(v, kv),
            "w_o": np.ascontiguousarray(self._get("o", i, (d, h * dk)).T),
            "attn_norm": self._get("attn_norm", i, (d,)),
            "mlp_norm": self._get("mlp_norm", i, (d,)),
            "w_gate": np.ascontiguousarray(self._get("gate", i, (c.d_mlp, d)).T),
            "w_up": np.ascontiguousarray(self._get("up", i, (c.d_mlp, d)).T),
            "w_down": np.ascontiguousarray(self._get("down", i, (d, c.d_mlp)).T),
        }


def _find_gguf(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if path.is_dir() and not (path / "model.safetensors").is_file():
        found = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if len(found) > 1:
            raise ModelError(
                f"{path.name} holds {len(found)} GGUF files ({', '.join(p.name for p in found[:4])}): "
                "choose one of them."
            )
        return found[0] if found else None
    return None


def is_llama(path: str | os.PathLike) -> bool:
    """True for a .gguf file, a folder holding one, or a folder whose config.json says model_type llama."""
    p = Path(path)
    try:
        if _find_gguf(p) is not None:
            return True
    except ModelError:
        return True
    folder = p.parent if p.is_file() else p
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (
        config.get("model_type") == "llama" or "LlamaForCausalLM" in (config.get("architectures") or [])
    )


def open_llama(path: str | os.PathLike) -> LlamaSource:
    """A LlamaSource for a .gguf file, a folder holding one .gguf, or a Hugging Face LLaMA safetensors folder."""
    p = Path(path)
    gguf_path = _find_gguf(p)
    if gguf_path is not None:
        g = open_gguf(gguf_path)
        config = llama_config_from_gguf(g)
        return LlamaSource(config, g.tokenizer(), g.tensor, g.rows, True, gguf_path)
    folder = p.parent if p.is_file() else p
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / n).is_file()]
    if missing:
        raise ModelError(
            f"{folder.name} has no .gguf file and no {' and no '.join(missing)}: choose a .gguf file "
            "or a LLaMA folder with config.json, model.safetensors and tokenizer.json."
        )
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder.name}/config.json cannot be read: {e}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{folder.name}/config.json is not a JSON object.")
    config = llama_config_from_hf(raw, folder.name)
    from tokenizers import Tokenizer

    from .safetensors import SafetensorsFile

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise ModelError(f"{folder.name}/tokenizer.json cannot be read as a tokenizer: {e}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tensors = SafetensorsFile(folder / "model.safetensors")

    def tensor(name: str) -> np.ndarray:
        if name not in tensors:
            raise ModelError(f"{folder.name}/model.safetensors has no tensor '{name}'.")
        return tensors.get(name)

    def rows(name: str, ids: np.ndarray) -> np.ndarray:
        if name not in tensors:
            raise ModelError(f"{folder.name}/model.safetensors has no tensor '{name}'.")
        vocab = tensors.shape(name)[0]
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ModelError(f"Token id {int(ids.max())} is outside the vocabulary of {vocab}.")
        return tensors.rows(name, ids)

    return LlamaSource(config, tokenizer, tensor, rows, False, folder)


def tokenize(source: LlamaSource, text: str) -> tuple[list[int], list[str]]:
    """The model's own token ids and strings for text; ModelError for empty or unencodable text."""
    if not isinstance(text, str) or not text.strip():
        raise ModelError("Type a sentence for the model to read.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ModelError(
            f"The sentence holds a character that is not text (a lone surrogate, at position {e.start + 1}): retype it."
        ) from None
    encoding = source.tokenizer.encode(text)
    ids = [int(i) for i in encoding.ids]
    if not ids:
        raise ModelError("The tokenizer made no tokens of that sentence.")
    if len(ids) > source.config.max_positions:
        raise ModelError(
            f"The sentence makes {len(ids)} tokens but the model reads at most {source.config.max_positions}: "
            "shorten it."
        )
    return ids, [str(t) for t in encoding.tokens]


def build_model(source: LlamaSource, layers: int) -> Model:
    """The first `layers` layers as a ``core.models.Model``: pre-norm blocks with RMSNorm and a SwiGLU MLP, and
    attention with rotary positions (θ from the config) and the model's shared key/value heads."""
    c = source.config
    attention, blocks = [], []
    for i in range(layers):
        w = source.layer(i)
        attention.append(AttentionWeights(w_q=w["w_q"], w_k=w["w_k"], w_v=w["w_v"], w_o=w["w_o"], rotary=c.theta))
        blocks.append(
            Block(
                pre_norm=True,
                norm_attn=Norm(w["attn_norm"], None, c.eps, kind="rms"),
                norm_mlp=Norm(w["mlp_norm"], None, c.eps, kind="rms"),
                mlp=Mlp(w["w_up"], None, w["w_down"], None, "silu", w_gate=w["w_gate"]),
            )
        )
    embedding = Embedding(tokens=lambda ids: source.embed(np.asarray(ids, dtype=np.intp)))
    return Model(NAME, embedding, attention, blocks, causal=True, max_positions=c.max_positions)


def read_llama(
    path: str | os.PathLike,
    layer: int | None,
    text: str,
    ids: Sequence[int] | None = None,
    progress: LayerProgress | None = None,
):
    """Like ``checkpoints.read_checkpoint`` for the LLaMA family: tokenize `text` (or read token `ids`) and run the
    model up to attention layer `layer` (0-based; None: every layer), telling ``progress(done, total)`` before each
    layer (it may raise to stop). Returns a ``checkpoints.Imported``."""
    from qkvgui.core.checks import LIMITS

    from . import Imported

    started = time.perf_counter()
    try:
        source = open_llama(path)
        c = source.config
        if layer is not None and not 0 <= layer < c.n_layers:
            raise ModelError(f"The model has layers 1 to {c.n_layers}; there is no layer {layer + 1}.")
        if layer is None and c.n_layers > LIMITS["layers"]:
            raise ModelError(
                f"The model has {c.n_layers} layers, more than the {LIMITS['layers']} a session holds: "
                "import one layer at a time."
            )
        if ids is None:
            token_ids, tokens = tokenize(source, text)
        else:
            token_ids = [int(i) for i in ids]
            tokens = [str(source.tokenizer.id_to_token(i)) for i in token_ids]
        count = c.n_layers if layer is None else layer + 1
        model = build_model(source, count)
        with few_blas_threads(len(token_ids)):  # small products: one BLAS thread (see qkvgui.state)
            runs = run(model, np.asarray(token_ids), count, progress)
    except ModelError:
        raise
    except (OSError, ValueError) as e:
        raise ModelError(f"{Path(path).name} cannot be read: {e}") from None
    seconds = time.perf_counter() - started
    kind = "GGUF" if source.gguf else "safetensors"
    heads = (
        f"{c.n_heads} query heads sharing {c.n_kv_heads} key/value heads of {c.d_head}; rotary positions with "
        f"θ = {c.theta:g}"
    )
    if layer is None:
        what = (
            f"All {c.n_layers} attention layers of {c.name} ({LABEL}, {kind}; {heads}) reading “{text}”, as the "
            "model's own tokenizer splits it. Between layers the model's own blocks run (read-only: RMSNorm, "
            "SwiGLU MLP), so an edit to any layer reaches every later one. Each layer's X is the residual stream "
            "after its RMSNorm; Q and K are rotated by their position before the scores."
        )
    else:
        what = (
            f"The real attention layer {layer + 1} of {c.name} ({LABEL}, {kind}; {heads}) reading “{text}”, as "
            "the model's own tokenizer splits it. X is what this layer's attention reads (the residual stream after "
            "RMSNorm); Q and K are rotated by their position before the scores."
        )
    return Imported.of_run(
        name=c.name,
        count=c.n_layers,
        what=what,
        seconds=seconds,
        tokens=tokens,
        ids=token_ids,
        runs=runs,
        model=model,
        layer=layer,
        path=source.path,
        text=text,
        architecture=NAME,
        ids_given=ids is not None,
    )
