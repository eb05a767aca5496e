"""The classic explanations of attention, built by hand as plain arrays: each one a layer a learner can open and edit.

Every preset is a ``Preset`` in the core's own argument names and shapes (row vectors; W_Q [h, d_model, d_k]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .embeddings import one_hot_features, seeded_random, token_ids
from .errors import PresetError
from .weights import Weights

__all__ = ["Preset", "PRESETS", "TOKEN_PRESETS", "FREE_MATRICES", "make_preset", "preset_names", "preset_sizes"]


@dataclass(frozen=True)
class Preset(Weights):
    """A ready-made session: its tokens and X, the four matrices of ``Weights`` (W_Q, W_K, W_V, W_O), settings."""

    name: str
    title: str
    description: str
    tokens: list[str]
    x: np.ndarray  # [n, d_model]
    causal: bool = False
    scale: float | None = None  # None: 1/√d_k
    source_tokens: list[str] | None = None  # cross-attention when given
    x_kv: np.ndarray | None = None  # [m, d_model]
    source_padding: np.ndarray | None = None  # [m] bool
    features: list[str] = field(default_factory=list)  # a name for each column of X, for the axis labels
    #: further layers over the same residual stream, each (w_q, w_k, w_v, w_o) with the first layer's shapes
    more_layers: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...] = ()
    #: JSON-plain data kept with the session (e.g. {"view": "learn"}: the window opens on that tab)
    extra: dict[str, Any] = field(default_factory=dict)
    #: rotary positions (RoPE) with this base θ; None: positions are not rotated
    rotary: float | None = None


def _previous_token_layer(
    tokens: list[str], sharpness: float = 12.0, extra: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """A residual stream [token one-hot | position one-hot | previous-token block], and a head that fills the
    previous-token block: W_Q reads position p and asks for p − 1, W_K offers each token's own position,
    W_V reads the token, W_O writes it into the previous-token block.

    Returns (x [n, d_model], w_q, w_k [1, d_model, n], w_v [1, d_model, V], w_o [V, d_model], vocab), with
    `extra` more (zero) feature columns at the end of the residual stream for later layers to write into.
    """
    ids, vocab = token_ids(tokens)
    n, v = len(tokens), len(vocab)
    d_model = 2 * v + n + extra
    x = np.zeros((n, d_model))
    x[:, : v + n] = one_hot_features(tokens, v + n)
    pos = v + np.arange(n)  # the rows of W that read position p
    # score(i, j) = c² when j = i − 1 and 0 otherwise; after 1/√d_k it is `sharpness`
    c = np.sqrt(sharpness * np.sqrt(n))
    w_q = np.zeros((1, d_model, n))
    w_q[0, pos[1:], np.arange(n - 1)] = c  # position p looks for position p − 1
    w_k = np.zeros((1, d_model, n))
    w_k[0, pos, np.arange(n)] = c  # position p is found at p
    w_v = np.zeros((1, d_model, v))
    w_v[0, np.arange(v), np.arange(v)] = 1.0  # the token's identity
    w_o = np.zeros((v, d_model))
    w_o[np.arange(v), v + n + np.arange(v)] = 1.0  # written into the previous-token block
    return x, w_q, w_k, w_v, w_o, vocab


def _feature_names(vocab: list[str], n: int, extra: Sequence[str] = ()) -> list[str]:
    # positions as a reader counts them, from 1
    return [f"tok:{t}" for t in vocab] + [f"pos:{p + 1}" for p in range(n)] + list(extra)


def _tokens(tokens: Sequence[str] | None, default: str) -> list[str]:
    """The sentence a preset is built over: the given tokens (a learner typed them) or the preset's own."""
    if tokens is None:
        return default.split()
    tokens = [str(t) for t in tokens]
    if not tokens:
        raise PresetError("A preset needs at least one token.")
    return tokens


def previous_token(tokens: Sequence[str] | None = None) -> Preset:
    tokens = _tokens(tokens, "the cat sat on the mat")
    x, w_q, w_k, w_v, w_o, vocab = _previous_token_layer(tokens)
    return Preset(
        name="previous-token",
        title="A previous-token head, built by hand",
        description=(
            "The residual stream holds one-hot features: which token this is, and at which position. W_K offers "
            "each token's position; W_Q turns position p into a question for position p − 1, so every token "
            "attends to the one before it. W_V reads the token's identity and W_O writes it into a new "
            "'previous token' block of the residual stream: after the layer, each token knows its predecessor."
        ),
        tokens=tokens,
        x=x,
        w_q=w_q,
        w_k=w_k,
        w_v=w_v,
        w_o=w_o,
        causal=True,
        features=_feature_names(vocab, len(tokens), [f"prev:{t}" for t in vocab]),
    )


def search_engine() -> Preset:
    # Three documents offer a topic (their key) and deliver their content (their value); two questions ask
    # for a topic (their query). Features: [offers fruit, vehicle, animal | seeks fruit, vehicle, animal |
    # content of apple, bus, cat | retrieved apple, bus, cat].
    tokens = ["apple", "bus", "cat", "?fruit", "?pet"]
    topics = 3
    d_model = 4 * topics
    x = np.zeros((len(tokens), d_model))
    for doc in range(3):
        x[doc, doc] = 1.0  # offers its own topic
        x[doc, 2 * topics + doc] = 1.0  # its content
    x[3, topics + 0] = 1.0  # ?fruit seeks the fruit topic
    x[4, topics + 2] = 1.0  # ?pet seeks the animal topic
    strength = 4.0
    w_q = np.zeros((1, d_model, topics))
    w_q[0, topics + np.arange(topics), np.arange(topics)] = strength  # the query: what I am looking for
    w_k = np.zeros((1, d_model, topics))
    w_k[0, np.arange(topics), np.arange(topics)] = strength  # the key: what I offer (the title)
    w_v = np.zeros((1, d_model, topics))
    w_v[0, 2 * topics + np.arange(topics), np.arange(topics)] = 1.0  # the value: what I deliver (the content)
    w_o = np.zeros((topics, d_model))
    w_o[np.arange(topics), 3 * topics + np.arange(topics)] = 1.0  # retrieved content lands in its own block
    return Preset(
        name="search-engine",
        title="Attention as a search engine",
        description=(
            "Each token's query is what it is searching for, each key is what a token offers (its title), and "
            "each value is what it delivers (its content). '?fruit' searches for fruit: its query matches the "
            "key of 'apple', so nearly all of its weight goes there and its output is apple's content. "
            "'?pet' finds 'cat' the same way. Tokens that search for nothing spread their weight evenly."
        ),
        tokens=tokens,
        x=x,
        w_q=w_q,
        w_k=w_k,
        w_v=w_v,
        w_o=w_o,
        features=[
            "offers:fruit",
            "offers:vehicle",
            "offers:animal",
            "seeks:fruit",
            "seeks:vehicle",
            "seeks:animal",
            "is:apple",
            "is:bus",
            "is:cat",
            "got:apple",
            "got:bus",
            "got:cat",
        ],
    )


def translation() -> Preset:
    # Meanings shared by both languages: DET, BLACK, CAT, SLEEPS. Target rows carry the meaning they need
    # next; source rows carry their meaning and their identity. Padding carries nothing and is masked.
    target = ["the", "black", "cat", "sleeps"]
    source = ["le", "chat", "noir", "dort", "<pad>", "<pad>"]
    meaning_of_target = [0, 1, 2, 3]
    meaning_of_source = [0, 2, 1, 3]
    n_meanings, n_src = 4, 4
    d_model = n_meanings + n_src + n_src
    x = np.zeros((len(target), d_model))
    x[np.arange(4), meaning_of_target] = 1.0
    x_kv = np.zeros((len(source), d_model))
    x_kv[np.arange(4), meaning_of_source] = 1.0
    x_kv[np.arange(4), n_meanings + np.arange(4)] = 1.0  # which source word this is
    strength = 4.0
    eye = np.zeros((1, d_model, n_meanings))
    eye[0, np.arange(n_meanings), np.arange(n_meanings)] = strength
    w_v = np.zeros((1, d_model, n_src))
    w_v[0, n_meanings + np.arange(n_src), np.arange(n_src)] = 1.0
    w_o = np.zeros((n_src, d_model))
    w_o[np.arange(n_src), n_meanings + n_src + np.arange(n_src)] = 1.0
    return Preset(
        name="translation",
        title="Cross-attention for translation",
        description=(
            "Queries come from the English sentence being written, keys and values from the French source. Each "
            "English word asks for its meaning; the French word with that meaning answers, even where the word "
            "order differs ('black cat' / 'chat noir'). The source is padded to a fixed length: padded keys are "
            "masked and get weight 0."
        ),
        tokens=target,
        x=x,
        w_q=eye.copy(),
        w_k=eye.copy(),
        w_v=w_v,
        w_o=w_o,
        source_tokens=source,
        x_kv=x_kv,
        source_padding=np.array([False] * 4 + [True] * 2),
        features=[
            "m:DET",
            "m:BLACK",
            "m:CAT",
            "m:SLEEP",
            "src:le",
            "src:chat",
            "src:noir",
            "src:dort",
            "got:le",
            "got:chat",
            "got:noir",
            "got:dort",
        ],
    )


def two_heads(tokens: Sequence[str] | None = None) -> Preset:
    tokens = _tokens(tokens, "the cat saw the dog and the cat ran")
    x, w_q0, w_k0, w_v0, w_o0, vocab = _previous_token_layer(tokens)
    n, v = len(tokens), len(vocab)
    d_model = x.shape[1]
    d_k = n
    # Head 2 attends by token identity: a token's query asks for its own token, keys offer the token.
    c = np.sqrt(8.0 * np.sqrt(d_k))
    w_q1 = np.zeros((1, d_model, d_k))
    w_k1 = np.zeros((1, d_model, d_k))
    w_q1[0, np.arange(v), np.arange(v)] = c
    w_k1[0, np.arange(v), np.arange(v)] = c
    # Both heads read the token; W_O writes head 1 into the previous-token block and mixes head 2 in at half
    # strength, so the output is a blend of "who came before me" and "which tokens are like me".
    w_v = np.concatenate([w_v0, w_v0])
    w_o = np.zeros((2 * v, d_model))
    w_o[:v] = w_o0
    w_o[v + np.arange(v), v + n + np.arange(v)] = 0.5
    return Preset(
        name="two-heads",
        title="Two heads: one by position, one by token",
        description=(
            "Head 1 attends by position: each token looks at the one before it. Head 2 attends by identity: each "
            "token looks at every earlier copy of itself ('the' finds the earlier 'the'). Their outputs are "
            "concatenated and W_O mixes them into one block of the residual stream."
        ),
        tokens=tokens,
        x=x,
        w_q=np.concatenate([w_q0, w_q1]),
        w_k=np.concatenate([w_k0, w_k1]),
        w_v=w_v,
        w_o=w_o,
        causal=True,
        features=_feature_names(vocab, n, [f"mix:{t}" for t in vocab]),
    )


def causal_gpt(tokens: Sequence[str] | None = None) -> Preset:
    tokens = _tokens(tokens, "once upon a time there was a")  # row i of X is the same whatever follows it
    d_model, h, d_k = 16, 2, 8
    x = seeded_random((len(tokens), d_model), seed=42, std=1.0)
    return Preset(
        name="causal-gpt",
        title="Decoder self-attention (GPT-style)",
        description=(
            "A decoder layer as in GPT: each token may only look at itself and earlier tokens (the causal mask "
            "puts −∞ above the diagonal, so those weights are 0). The weights are seeded random numbers: edit "
            "them and watch the pattern change, but never reach into the future."
        ),
        tokens=tokens,
        x=x,
        w_q=seeded_random((h, d_model, d_k), seed=1) * 2,
        w_k=seeded_random((h, d_model, d_k), seed=2) * 2,
        w_v=seeded_random((h, d_model, d_k), seed=3),
        w_o=seeded_random((h * d_k, d_model), seed=4),
        causal=True,
    )


def bilinear(tokens: Sequence[str] | None = None) -> Preset:
    tokens = _tokens(tokens, "bank river money loan water")
    d_model, d_k = 6, 2
    x = seeded_random((len(tokens), d_model), seed=7, std=1.0)
    w = seeded_random((1, d_model, d_k), seed=8, std=1.0)
    w_k2 = seeded_random((1, d_model, d_k), seed=9, std=1.0)
    return Preset(
        name="bilinear",
        title="The score is a bilinear form x_i·W_QK·x_jᵀ",
        description=(
            "Every score is x_i·W_Q·W_Kᵀ·x_jᵀ: one matrix W_QK = W_Q·W_Kᵀ (d_model × d_model, rank ≤ d_k) decides "
            "who attends to whom. Head 1 has W_Q = W_K, so W_QK is symmetric and so are its scores: relevance "
            "runs both ways. Head 2 has W_Q ≠ W_K: token i may care about j while j ignores i."
        ),
        tokens=tokens,
        x=x,
        w_q=np.concatenate([w, w]),
        w_k=np.concatenate([w, w_k2]),
        w_v=seeded_random((2, d_model, d_k), seed=10),
        w_o=seeded_random((2 * d_k, d_model), seed=11),
    )


def induction(tokens: Sequence[str] | None = None) -> Preset:
    # The residual stream: [token | position | previous token | predicted next token]. Layer 1 is the
    # previous-token head; layer 2 an induction head whose keys read the previous-token block (K-composition).
    tokens = _tokens(tokens, "<s> A B C D E A B C D E")
    ids, vocab = token_ids(tokens)
    n, v = len(tokens), len(vocab)
    x, w_q0, w_k0, w_v0, w_o0, _ = _previous_token_layer(tokens, extra=v)
    d_model, d_k, d_v = x.shape[1], n, v
    prev, pred = v + n, 2 * v + n  # where the previous-token and prediction blocks start
    c = np.sqrt(12.0 * np.sqrt(d_k))  # score c² (× 1/√d_k = 12) where the key's previous token is the query's token
    w_q1 = np.zeros((1, d_model, d_k))
    w_q1[0, np.arange(v), np.arange(v)] = c  # the query: "who came right after a copy of me?"
    w_k1 = np.zeros((1, d_model, d_k))
    w_k1[0, prev + np.arange(v), np.arange(v)] = c  # the key: "the token before me was ..."
    w_v1 = np.zeros((1, d_model, d_v))
    w_v1[0, np.arange(v), np.arange(v)] = 1.0  # the value: my own token
    w_o1 = np.zeros((d_v, d_model))
    w_o1[np.arange(v), pred + np.arange(v)] = 1.0  # written into the prediction block
    return Preset(
        name="induction",
        title="An induction head, built by hand from two layers",
        description=(
            "Layer 1 is a previous-token head: it writes into every token's residual stream which token came "
            "before it. Layer 2 is an induction head: its queries read the current token, and its keys read those "
            "previous-token features (K-composition). So on a repeated sequence each token in the second half "
            "attends to the token that followed its earlier occurrence, and copies that token into the prediction "
            "block: the model predicts what came next last time. This is the circuit behind in-context learning."
        ),
        tokens=tokens,
        x=x,
        w_q=w_q0,
        w_k=w_k0,
        w_v=w_v0,
        w_o=w_o0,
        causal=True,
        features=_feature_names(vocab, n, [f"prev:{t}" for t in vocab] + [f"next:{t}" for t in vocab]),
        more_layers=((w_q1, w_k1, w_v1, w_o1),),
    )


def learn_previous_token(tokens: Sequence[str] | None = None, d_k: int = 1) -> Preset:
    # The previous-token preset's residual stream and W_V/W_O, but W_Q and W_K of d_k = 1 are small seeded
    # noise: the learner draws (here: is given) the pattern and gradient descent has to find the head.
    tokens = _tokens(tokens, "the cat sat on the mat")
    x, _, _, w_v, w_o, vocab = _previous_token_layer(tokens)
    d_model = x.shape[1]
    w_q = seeded_random((1, d_model, d_k), seed=1, std=0.3)
    w_k = seeded_random((1, d_model, d_k), seed=2, std=0.3)
    return Preset(
        name="learn-previous-token",
        title="Learn a head: find W_Q and W_K for the previous-token pattern",
        description=(
            "The Learn tab shows the target: every token should look at the one before it. Press Start and "
            "gradient descent adjusts W_Q and W_K of this head while every view redraws. With d_k = 1 it cannot "
            "succeed: the score x_i·W_Q·W_Kᵀ·x_jᵀ is a bilinear form of rank 1, a_i·b_j, so only the keys with the "
            "largest and the smallest b_j can ever be anyone's favourite. Raise d_k to 2 and press Start again: "
            "now it can. Paint your own target with the mouse, or pick another one."
        ),
        tokens=tokens,
        x=x,
        w_q=w_q,
        w_k=w_k,
        w_v=w_v,
        w_o=w_o,
        causal=False,
        features=_feature_names(vocab, len(tokens), [f"prev:{t}" for t in vocab]),
        extra={"view": "learn", "learn_target": "previous-token"},
    )


def previous_token_rope(tokens: Sequence[str] | None = None) -> Preset:
    """The previous-token head again, with no position features at all: RoPE supplies the positions."""
    from .rope import DEFAULT_THETA, rope_frequencies

    tokens = _tokens(tokens, "the cat sat on the mat")
    ids, vocab = token_ids(tokens)
    n, v = len(tokens), len(vocab)
    d_model, d_k = v + 1 + v, 8  # [token one-hot | a constant 1 | previous-token block]
    x = np.zeros((n, d_model))
    x[np.arange(n), ids] = 1.0  # which token this is
    x[:, v] = 1.0  # the same for every token: whatever differs between positions comes from the rotation
    omega = float(rope_frequencies(d_k, DEFAULT_THETA)[0])  # pair 0 turns 1 radian per position
    # score(i, j) = c²·cos((j − i + 1)·ω) (pair 0 only): largest at j = i − 1; the next best is cos(1) = 0.54.
    # c is chosen so that after 1/√d_k that margin is 12, as in the one-hot head.
    c = np.sqrt(12.0 * np.sqrt(d_k) / (1.0 - np.cos(omega)))
    w_q = np.zeros((1, d_model, d_k))
    w_q[0, v, 0] = c  # q = (c, 0) in pair 0 (coordinates 0 and d_k/2) for every token, before the rotation
    w_k = np.zeros((1, d_model, d_k))
    w_k[0, v, 0] = c * np.cos(omega)  # k = q turned one position further: (c·cos ω, c·sin ω) ...
    w_k[0, v, d_k // 2] = c * np.sin(omega)  # ... so rot(k, j) lines up with rot(q, i) exactly when j = i − 1
    w_v = np.zeros((1, d_model, v))
    w_v[0, np.arange(v), np.arange(v)] = 1.0  # the token's identity
    w_o = np.zeros((v, d_model))
    w_o[np.arange(v), v + 1 + np.arange(v)] = 1.0  # written into the previous-token block
    return Preset(
        name="previous-token-rope",
        title="A previous-token head with rotary positions (RoPE)",
        description=(
            "The same previous-token head as the 'previous-token' preset, built without any position feature: "
            "every token's row of X holds only its identity and a constant 1, so Q = X·W_Q and K = X·W_K are the "
            "same at every position. RoPE then turns each query and key by its position (see Q_rope, K_rope and "
            "the angles: pair 0 turns one radian per position). W_K stores the key already turned one position "
            "further than the query, so rot(q, i)·rot(k, j) = c²·cos((j − i + 1) rad): largest when j = i − 1, "
            "whatever i is. The score depends on the positions only through i − j; the one-hot head needed a "
            "feature per position and a W_Q row per position instead. One pair repeats every 2π ≈ 6.3 positions, "
            "which is why real models rotate many pairs at many speeds (try a longer sentence, or change θ)."
        ),
        tokens=tokens,
        x=x,
        w_q=w_q,
        w_k=w_k,
        w_v=w_v,
        w_o=w_o,
        causal=True,
        rotary=DEFAULT_THETA,
        features=[f"tok:{t}" for t in vocab] + ["const"] + [f"prev:{t}" for t in vocab],
    )


PRESETS: dict[str, Callable[..., Preset]] = {
    "previous-token": previous_token,
    "previous-token-rope": previous_token_rope,
    "search-engine": search_engine,
    "translation": translation,
    "two-heads": two_heads,
    "causal-gpt": causal_gpt,
    "bilinear": bilinear,
    "induction": induction,
    "learn-previous-token": learn_previous_token,
}


#: the presets built over any sentence: their features (one-hot tokens and positions, or seeded rows) and the weights
#: that read them are made from the tokens, so a new sentence rebuilds them and the preset's claim still holds.
#: The others (search-engine, translation) hand-pick meanings for their own words: new words have none.
TOKEN_PRESETS = (
    "previous-token",
    "previous-token-rope",
    "two-heads",
    "causal-gpt",
    "bilinear",
    "induction",
    "learn-previous-token",
)


def preset_names() -> list[str]:
    return list(PRESETS)


def preset_sizes(name: str, tokens: Sequence[str], d_k: int = 1) -> dict[str, int]:
    """The sizes a token preset built over `tokens` would have (heads, d_model, d_k, d_v, layers), computed
    without building it, so that they can be checked against the limits before anything is allocated."""
    n, v = len(tokens), len(set(tokens))
    sizes = {
        "previous-token": (1, 2 * v + n, n, v, 1),
        "learn-previous-token": (1, 2 * v + n, d_k, v, 1),
        "previous-token-rope": (1, 2 * v + 1, 8, v, 1),
        "two-heads": (2, 2 * v + n, n, v, 1),
        "induction": (1, 3 * v + n, n, v, 2),
        "causal-gpt": (2, 16, 8, 8, 1),
        "bilinear": (2, 6, 2, 2, 1),
    }
    if name not in sizes:
        raise PresetError(f"The '{name}' preset is built over its own words only, not over any sentence.")
    heads, d_model, d_k, d_v, layers = sizes[name]
    return {"heads": heads, "d_model": d_model, "d_k": d_k, "d_v": d_v, "layers": layers}


#: the matrices a learner is meant to change in a preset (its claim does not depend on their values): the Learn
#: tab trains W_Q and W_K of learn-previous-token, at the d_k the learner chose (``make_preset(..., d_k=)``)
FREE_MATRICES: dict[str, tuple[str, ...]] = {"learn-previous-token": ("W_Q", "W_K")}


def make_preset(name: str, tokens: Sequence[str] | None = None, d_k: int | None = None) -> Preset:
    """Build a preset by name, over its own sentence or (for the TOKEN_PRESETS) over `tokens`; a PresetError names
    the presets that exist. `d_k` is taken by the presets with FREE_MATRICES only (ignored by the others)."""
    if name not in PRESETS:
        raise PresetError(
            f"There is no preset '{name}'; choose one of {', '.join(PRESETS)} (`qkvgui presets` lists them)."
        )
    options = {"d_k": int(d_k)} if d_k is not None and name in FREE_MATRICES else {}
    if tokens is None:
        return PRESETS[name](**options)
    if name not in TOKEN_PRESETS:
        raise PresetError(f"The '{name}' preset is built over its own words only, not over any sentence.")
    return PRESETS[name](list(tokens), **options)
