"""Writes tests/data/torch_reference.npz: cases computed by PyTorch's own attention, float64.

Run by hand when the cases change (`pip install torch` first): `python tests/make_torch_reference.py`.
The test suite compares the core against this file, and against torch live when torch is installed.
"""

from pathlib import Path

import numpy as np


def make_cases():
    """The cases: (name, inputs dict). Inputs use the core's argument names."""
    rng = np.random.default_rng(20261122)

    def layer(h, d_model, d_k, d_v, n_q, n_k=None, cross=False, biases=False):
        c = {
            "x_q": rng.standard_normal((n_q, d_model)),
            "w_q": rng.standard_normal((h, d_model, d_k)),
            "w_k": rng.standard_normal((h, d_model, d_k)),
            "w_v": rng.standard_normal((h, d_model, d_v)),
            "w_o": rng.standard_normal((h * d_v, d_model)),
        }
        if cross:
            c["x_kv"] = rng.standard_normal((n_k, d_model))
        if biases:
            c |= {
                "b_q": rng.standard_normal((h, d_k)),
                "b_k": rng.standard_normal((h, d_k)),
                "b_v": rng.standard_normal((h, d_v)),
                "b_o": rng.standard_normal(d_model),
            }
        return c

    cases = [
        ("self", layer(2, 8, 4, 4, 6)),
        ("self_biases", layer(3, 12, 4, 4, 7, biases=True)),
        ("cross", layer(2, 8, 4, 4, 5, n_k=9, cross=True)),
        ("causal", {**layer(4, 16, 4, 4, 10), "causal": True}),
        (
            "padding",
            {**layer(2, 8, 4, 4, 5, n_k=7, cross=True), "key_padding_mask": np.array([0, 0, 0, 0, 1, 1, 1], bool)},
        ),
        ("dk_ne_dv", {**layer(3, 10, 5, 2, 6), "causal": True}),
        ("huge_logits", {**layer(2, 6, 3, 3, 5), "scale": 1e3}),
        ("custom_scale", {**layer(2, 8, 4, 4, 6), "scale": 0.37}),
        (
            "fully_masked_row",
            {
                **layer(2, 8, 4, 4, 4, n_k=4, cross=True),
                "causal": True,
                "key_padding_mask": np.array([1, 0, 0, 0], bool),
            },
        ),
        ("h1_nk1", layer(1, 4, 3, 2, 3, n_k=1, cross=True)),
    ]
    return cases


def torch_attention(c):
    """weights [h, n_q, n_k] and output [n_q, d_model] from torch's scaled_dot_product_attention."""
    import math

    import torch
    import torch.nn.functional as F

    t = {k: torch.as_tensor(v) for k, v in c.items() if isinstance(v, np.ndarray)}
    x_q = t["x_q"]
    x_kv = t.get("x_kv", x_q)
    h, d_model, d_k = t["w_q"].shape
    d_v = t["w_v"].shape[2]
    q = torch.einsum("nd,hde->hne", x_q, t["w_q"])
    k = torch.einsum("nd,hde->hne", x_kv, t["w_k"])
    v = torch.einsum("nd,hde->hne", x_kv, t["w_v"])
    if "b_q" in t:
        q, k, v = q + t["b_q"][:, None], k + t["b_k"][:, None], v + t["b_v"][:, None]
    n_q, n_k = q.shape[1], k.shape[1]
    visible = torch.ones(n_q, n_k, dtype=torch.bool)
    if c.get("causal"):
        visible &= torch.ones(n_q, n_k, dtype=torch.bool).tril()
    if "key_padding_mask" in t:
        visible &= ~t["key_padding_mask"][None, :]
    scale = c.get("scale", 1 / math.sqrt(d_k))
    logits = (q @ k.transpose(1, 2)) * scale
    logits = logits.masked_fill(~visible, float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # torch gives NaN for a row with no key
    heads = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=visible, scale=scale)[0]
    heads = heads.nan_to_num(0.0)
    heads = torch.where(visible.any(dim=1)[None, :, None], heads, torch.zeros_like(heads))
    out = heads.transpose(0, 1).reshape(n_q, h * d_v) @ t["w_o"]
    if "b_o" in t:
        out = out + t["b_o"]
    return weights.numpy(), out.numpy()


def main():
    arrays = {}
    for name, c in make_cases():
        weights, output = torch_attention(c)
        for key, value in c.items():
            arrays[f"{name}/{key}"] = np.asarray(value)
        arrays[f"{name}/torch_weights"] = weights
        arrays[f"{name}/torch_output"] = output
    out = Path(__file__).parent / "data" / "torch_reference.npz"
    np.savez(out, **arrays)
    print(f"wrote {out} ({len(arrays)} arrays)")


if __name__ == "__main__":
    main()
