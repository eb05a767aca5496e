"""Writes tests/data/session_v<VERSION>.qkv: the golden session file of the format version qkvgui writes now.

Run by hand, once per new format version: `python tests/make_golden_sessions.py`. A golden file is never rewritten
(the script refuses unless given --force): it is the proof that files of that version keep loading. The tests
rebuild the expected contents from `golden_state_v1()` below, so the construction is frozen too: only exact
arithmetic (IEEE division is correctly rounded everywhere), no random generators whose streams might change.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"


def _values(shape: tuple[int, ...], salt: int) -> np.ndarray:
    """Deterministic float64 entries: tenths and thirds (not exact in binary), a -0.0 and a subnormal."""
    idx = np.indices(shape).reshape(len(shape), -1)
    weights = np.array([7, 3, 5][: len(shape)]).reshape(-1, 1)
    k = ((idx * weights).sum(axis=0) + salt) % 11  # 0..10
    a = (k - 5) / 10 + (k % 3) / 3  # e.g. -0.5, 0.1 + 1/3
    a[0] = -0.0
    a[-1] = 5e-324
    return a.reshape(shape)


def golden_state_v1():
    """The session stored in session_v1.qkv: 4 tokens, cross-attention onto 3 source tokens, 2 heads, d_k ≠ d_v."""
    from qkvgui.state import Layer, SessionState

    n, m, d_model, h, d_k, d_v = 4, 3, 4, 2, 2, 3
    return SessionState(
        tokens=["the", "cat", "sat", "<pad>"],
        source_tokens=["le", "chat", "<pad>"],
        x=_values((n, d_model), 1),
        x_kv=_values((m, d_model), 2),
        layers=[
            Layer(
                w_q=_values((h, d_model, d_k), 3),
                w_k=_values((h, d_model, d_k), 4),
                w_v=_values((h, d_model, d_v), 5),
                w_o=_values((h * d_v, d_model), 6),
            )
        ],
        padding=np.array([False, False, False, True]),
        source_padding=np.array([False, False, True]),
        cross=True,
        causal=True,
        scale_mode="custom",
        custom_scale=0.75,
        head=1,
        title="golden v1",
        description="Schlüssel → Wert: the session format's first version.",
        features=["a", "b", "c", "d"],
        extra={"note": "golden", "numbers": [1, 2.5]},
    )


def golden_state_v2():
    """The session stored in session_v2.qkv: two layers (the second selected), biases, a switched-off head, and a
    residual stream apart from X (as a pre-LayerNorm checkpoint layer has)."""
    import dataclasses

    from qkvgui.state import Layer

    v1 = golden_state_v1()
    n, d_model, h, d_k, d_v = 4, 4, 2, 2, 3
    second = Layer(
        w_q=_values((h, d_model, d_k), 7),
        w_k=_values((h, d_model, d_k), 8),
        w_v=_values((h, d_model, d_v), 9),
        w_o=_values((h * d_v, d_model), 10),
        b_q=_values((h, d_k), 11),
        b_k=_values((h, d_k), 12),
        b_v=_values((h, d_v), 13),
        b_o=_values((d_model,), 14),
        ablated=np.array([True, False]),
    )
    return dataclasses.replace(
        v1,
        layers=[v1.layers[0], second],
        layer=1,
        x_residual=_values((n, d_model), 15),
        title="golden v2",
        description="Two layers over one residual stream.",
    )


def golden_state_v3():
    """The session stored in session_v3.qkv: version 2's layers (self-attention) with a whole model's own blocks
    between them: pre-norm LayerNorms, a gelu_new MLP 3 wide, and the second layer's scale halved."""
    import dataclasses

    from qkvgui.core.models import Block, Mlp, Norm, Stack

    v2 = golden_state_v2()
    d_model, d_mlp = 4, 3
    blocks = tuple(
        Block(
            pre_norm=True,
            norm_attn=Norm(_values((d_model,), 20 + i), _values((d_model,), 21 + i), 1e-5),
            norm_mlp=Norm(_values((d_model,), 22 + i), None, 1e-6, "rms"),
            mlp=Mlp(
                _values((d_model, d_mlp), 23 + i),
                _values((d_mlp,), 24 + i),
                _values((d_mlp, d_model), 25 + i),
                _values((d_model,), 26 + i),
                "gelu_new",
            ),
        )
        for i in range(2)
    )
    return dataclasses.replace(
        v2,
        cross=False,
        model=Stack("gpt2", blocks, (1.0, 0.5)),
        title="golden v3",
        description="A whole model: its own blocks between the layers.",
    )


def golden_state_v4():
    """The session stored in session_v4.qkv: version 3's whole model, with rotary positions (θ = 500) and 4 query
    heads sharing 2 key/value heads in its second layer's place (both layers: W_K, W_V, b_K, b_V of 2 heads)."""
    import dataclasses

    from qkvgui.state import Layer

    v3 = golden_state_v3()
    d_model, h, h_kv, d_k, d_v = 4, 4, 2, 2, 3
    layers = [
        Layer(
            w_q=_values((h, d_model, d_k), 30 + i),
            w_k=_values((h_kv, d_model, d_k), 31 + i),
            w_v=_values((h_kv, d_model, d_v), 32 + i),
            w_o=_values((h * d_v, d_model), 33 + i),
            b_q=_values((h, d_k), 34 + i),
            b_k=_values((h_kv, d_k), 35 + i),
            b_v=_values((h_kv, d_v), 36 + i),
            b_o=_values((d_model,), 37 + i),
            ablated=np.array([False, i == 1, False, False]),
        )
        for i in range(2)
    ]
    return dataclasses.replace(
        v3,
        layers=layers,
        head=3,
        rotary=True,
        rope_theta=500.0,
        title="golden v4",
        description="Rotary positions and two key/value heads shared by four query heads.",
    )


def main(argv: list[str]) -> int:
    from qkvgui.io.session import VERSION, write_session

    builders = {1: golden_state_v1, 2: golden_state_v2, 3: golden_state_v3, 4: golden_state_v4}
    if VERSION not in builders:
        print(f"add golden_state_v{VERSION}() for format version {VERSION} first", file=sys.stderr)
        return 1
    target = DATA / f"session_v{VERSION}.qkv"
    if target.exists() and "--force" not in argv:
        print(
            f"{target} exists; golden files are never rewritten (pass --force if you really mean it)", file=sys.stderr
        )
        return 1
    DATA.mkdir(exist_ok=True)
    print(write_session(builders[VERSION](), target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
