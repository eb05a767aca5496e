"""Reading a GGUF file (llama.cpp's single-file model format) in NumPy: metadata, tensors and the tokenizer.

The ``gguf`` package parses the file and dequantizes its blocks (Q4_0, Q4_1, Q8_0, K-quants, F16, …) in pure NumPy;
this module adds what qkvgui needs on top: every failure as one ``ModelError`` naming the file, sizes checked before
anything is allocated, only the embedding rows a sentence uses dequantized, llama.cpp's row permutation of W_Q and
W_K undone (its RoPE kernels pair coordinates (2i, 2i+1); checkpoints in Hugging Face's layout pair (i, i + d/2)),
and a ``tokenizers.Tokenizer`` rebuilt from the vocabulary stored in the metadata, the way Hugging Face's GGUF
loader builds it, so that a sentence splits into the same tokens.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from qkvgui.core.models import ModelError

__all__ = ["GgufFile", "open_gguf", "unpermute_rope_rows", "MAX_ELEMENTS"]

#: The most elements one dequantized tensor may have (float64: 8 bytes each); a 7B model's embedding is 131M.
MAX_ELEMENTS = 400_000_000


def unpermute_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's permutation of W_Q / W_K rows ([n_heads·d_k, d_model], PyTorch layout), as HF's loader does.

    llama.cpp's converter reorders each head's d_k rows from (i, i + d_k/2) pairs into interleaved (2i, 2i+1)
    pairs; reading them back as [head, d_k/2, 2] and swapping the last two axes restores the original order.
    """
    rows = weight.shape[0]
    if n_heads <= 0 or rows % (2 * n_heads):
        raise ModelError(
            f"A W_Q/W_K tensor with {rows} rows cannot hold {n_heads} rotary heads (rows must be a "
            "multiple of 2 × heads)."
        )
    d_half = rows // n_heads // 2
    return weight.reshape(n_heads, d_half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _reader_class():
    from gguf import GGUFReader, GGUFValueType

    ARRAY, STRING = int(GGUFValueType.ARRAY), int(GGUFValueType.STRING)
    SCALARS = {int(k): v for k, v in GGUFReader.gguf_scalar_to_np.items()}

    class FastReader(GGUFReader):
        """GGUFReader slicing a plain ndarray view of its memory map: 5× faster on 100 000-entry vocabularies.

        (Every slice of an ``np.memmap`` runs Python-level ``__array_finalize__``; the plain view does not.)
        """

        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self._plain = self.data.view(np.ndarray)
            count = int(count)
            end = offset + np.dtype(dtype).itemsize * count
            if end > plain.shape[0]:
                raise ValueError(f"the file ends at byte {plain.shape[0]} but an entry reaches byte {end}")
            arr = plain[offset:end].view(dtype=dtype)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

        def _get_field_parts(self, orig_offs, raw_type):
            # Arrays (the vocabulary, the merges, the token types: 100 000 entries) without the generic recursion:
            # a string array in one tight loop giving the same parts (length, bytes per string); an array of
            # numbers as one part (contents() flattens the parts, so the values come out the same).
            if int(raw_type) != ARRAY or self.byte_order != "I":
                return super()._get_field_parts(orig_offs, raw_type)
            itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            count = int(alen[0])
            kind = int(itype[0])
            if kind in SCALARS:
                values = self._get(orig_offs + 12, SCALARS[kind], count)
                if values.shape[0] != count:
                    raise ValueError("an array runs past the end of the file")
                return 12 + int(values.nbytes), [itype, alen, values], [2], [GGUFValueType.ARRAY, GGUFValueType(kind)]
            if kind != STRING:
                return super()._get_field_parts(orig_offs, raw_type)
            plain = self._plain
            size = plain.shape[0]
            offs = orig_offs + 12
            parts: list[np.ndarray] = [itype, alen]
            idxs: list[int] = []
            unpack = struct.Struct("<Q").unpack_from
            for _ in range(count):
                if offs + 8 > size:
                    raise ValueError(f"a string array runs past the end of the file (byte {size})")
                (n,) = unpack(plain, offs)
                if offs + 8 + n > size:
                    raise ValueError(f"a string of {n} bytes runs past the end of the file (byte {size})")
                idxs.append(len(parts) + 1)
                parts.append(plain[offs : offs + 8].view(np.uint64))
                parts.append(plain[offs + 8 : offs + 8 + n])
                offs += 8 + n
            return offs - orig_offs, parts, idxs, [GGUFValueType.ARRAY, GGUFValueType.STRING]

    return FastReader


class GgufFile:
    """One GGUF file: ``meta(key)``, ``tensor(name)`` (float64, PyTorch layout [rows, cols]), ``rows(name, ids)``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        label = self.path.name
        try:
            import gguf  # noqa: F401  (the `models` extra)
        except ImportError:
            raise ModelError("Reading GGUF files needs the 'gguf' package: pip install gguf") from None
        if not self.path.is_file():
            raise ModelError(f"{label} is not a file.")
        try:
            with open(self.path, "rb") as f:
                if f.read(4) != b"GGUF":
                    raise ModelError(f"{label} is not a GGUF file (it does not start with 'GGUF').")
            self._reader = _reader_class()(str(self.path))
        except ModelError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError, OverflowError) as e:
            raise ModelError(f"{label} cannot be read as GGUF: {e}") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        self._meta: dict[str, Any] = {}
        self._tokenizer: Any = None

    @property
    def label(self) -> str:
        return self.path.name

    def names(self) -> list[str]:
        return list(self._tensors)

    def has(self, key: str) -> bool:
        return key in self._reader.fields

    def meta(self, key: str, default: Any = ModelError) -> Any:
        """A metadata value as Python data (str, int, float, bool or list); ModelError when missing and no default."""
        if key in self._meta:
            return self._meta[key]
        field = self._reader.fields.get(key)
        if field is None:
            if default is ModelError:
                raise ModelError(f"{self.label} lacks the metadata '{key}' a model needs.")
            return default
        try:
            value = field.contents()
        except (ValueError, IndexError, UnicodeDecodeError, TypeError) as e:
            raise ModelError(f"{self.label}: the metadata '{key}' cannot be read ({e}).") from None
        self._meta[key] = value
        return value

    def _entry(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            raise ModelError(f"{self.label} has no tensor '{name}'.") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape in PyTorch order (GGUF lists dimensions innermost first)."""
        return tuple(int(d) for d in reversed(self._entry(name).shape))

    def _dequantize(self, name: str, raw: np.ndarray, qtype) -> np.ndarray:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        try:
            if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F64, GGMLQuantizationType.F16):
                return np.asarray(raw, dtype=np.float64)
            return np.asarray(dequantize(raw, qtype), dtype=np.float64)
        except (NotImplementedError, ValueError, TypeError, IndexError, KeyError) as e:
            raise ModelError(
                f"{self.label}: the tensor '{name}' ({getattr(qtype, 'name', qtype)}) cannot be dequantized: {e}"
            ) from None

    def tensor(self, name: str) -> np.ndarray:
        """The whole tensor, dequantized to float64, in PyTorch layout (e.g. [d_out, d_in] for a linear layer)."""
        entry = self._entry(name)
        shape = self.shape(name)
        count = int(np.prod(shape, dtype=np.int64))
        if count > MAX_ELEMENTS:
            raise ModelError(
                f"{self.label}: the tensor '{name}' has {count:,} values, more than qkvgui reads ({MAX_ELEMENTS:,})."
            )
        out = self._dequantize(name, entry.data, entry.tensor_type)
        if out.size != count:
            raise ModelError(
                f"{self.label}: the tensor '{name}' holds {out.size} values but its shape {shape} "
                f"needs {count} (the file is damaged or truncated)."
            )
        return out.reshape(shape)

    def rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` of a 2-D tensor (an embedding), dequantizing only those rows.  # [len(ids), cols]"""
        entry = self._entry(name)
        shape = self.shape(name)
        if len(shape) != 2:
            raise ModelError(f"{self.label}: '{name}' is not a matrix (shape {shape}).")
        ids = np.asarray(ids, dtype=np.intp)
        if ids.size and (ids.min() < 0 or ids.max() >= shape[0]):
            raise ModelError(f"{self.label}: token id {int(ids.max())} is outside the vocabulary of {shape[0]}.")
        raw = entry.data
        if raw.ndim != 2 or raw.shape[0] != shape[0]:
            raise ModelError(f"{self.label}: the tensor '{name}' is stored in a layout qkvgui cannot slice.")
        out = self._dequantize(name, raw[ids], entry.tensor_type)
        if out.size != len(ids) * shape[1]:
            raise ModelError(f"{self.label}: the tensor '{name}' is damaged (row size mismatch).")
        return out.reshape(len(ids), shape[1])

    # ---- tokenizer ---------------------------------------------------------------------------------------------
    def tokenizer(self):
        """A ``tokenizers.Tokenizer`` built from the metadata as Hugging Face's GGUF loader builds it."""
        if self._tokenizer is not None:
            return self._tokenizer
        kind = self.meta("tokenizer.ggml.model", None)
        if kind != "gpt2":
            raise ModelError(
                f"{self.label} stores a '{kind}' tokenizer; qkvgui rebuilds byte-level BPE ('gpt2') "
                "tokenizers from GGUF files (SmolLM, LLaMA 3, Qwen). Use the model's safetensors folder "
                "with its tokenizer.json instead."
            )
        self._tokenizer = _byte_level_tokenizer(
            self.meta("tokenizer.ggml.tokens"),
            self.meta("tokenizer.ggml.merges"),
            self.meta("tokenizer.ggml.token_type", None),
            self.meta("tokenizer.ggml.pre", None),
        )
        return self._tokenizer


# The pre-tokenizer splits of the byte-level vocabularies whose `tokenizer.ggml.pre` says so (as HF's loader keeps
# them); any other name splits with GPT-2's own regex, which is what ByteLevel(use_regex=True) does.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}


@functools.lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's map from bytes to printable characters (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _byte_level_tokenizer(tokens: list, merges: list, token_types: list | None, pre: str | None):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    if not isinstance(tokens, list) or not isinstance(merges, list):
        raise ModelError("The GGUF tokenizer metadata is damaged (tokens and merges must be lists of strings).")
    spelling = _byte_alphabet()
    alphabet = set(spelling.values())
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        token = str(token)
        if not set(token) <= alphabet:  # a token stored as plain text: spell its bytes in the BPE alphabet
            token = "".join(spelling[b] for b in token.encode("utf-8"))
        vocab[token] = index
    pairs = []
    for merge in merges:
        parts = str(merge).split(" ")
        if len(parts) != 2:
            raise ModelError(f"The GGUF tokenizer has a damaged merge rule {merge!r} (it needs two parts).")
        pairs.append((parts[0], parts[1]))
    try:
        tokenizer = Tokenizer(
            BPE(
                vocab=vocab,
                merges=pairs,
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
            )
        )
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise ModelError(f"The GGUF tokenizer cannot be built: {e}") from None
    split = _SPLITS.get(pre or "")
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tokenizer.decoder = decoders.ByteLevel()
    if token_types:
        # Control tokens (type 3, like <|im_start|>) stay whole as special tokens; user-defined ones (type 4) as
        # plain added tokens. A "control" token spelled outside the byte alphabet is a llama.cpp mislabel: skipped.
        control = [
            AddedToken(str(t), normalized=False, special=True)
            for t, kind in zip(tokens, token_types, strict=False)
            if kind == 3 and set(str(t)) <= alphabet
        ]
        if control:
            tokenizer.add_special_tokens(control)
        user = [
            AddedToken(str(t), normalized=False, special=False)
            for t, kind in zip(tokens, token_types, strict=False)
            if kind == 4 and str(t) in vocab
        ]
        if user:
            tokenizer.add_tokens(user)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@functools.lru_cache(maxsize=2)
def _open_cached(path: str, size: int, mtime_ns: int) -> GgufFile:
    return GgufFile(path)


def open_gguf(path: str | os.PathLike) -> GgufFile:
    """A GgufFile, reusing the one opened last for the same unchanged file (importing several layers parses once)."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as e:
        raise ModelError(f"{p.name} cannot be read: {e.strerror or e}") from None
    return _open_cached(str(p), st.st_size, st.st_mtime_ns)
