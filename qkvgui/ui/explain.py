"""The words beside the numbers: how one score or one head output was made, as plain text a learner can follow.

Qt-free functions of an AttentionResult, so the inspector panel only displays what these return.
"""

from __future__ import annotations

from html import escape

import numpy as np

from qkvgui.core import AttentionResult
from qkvgui.core.format import format_number as _number

#: how many terms of a sum are written out before the rest is summarised
MAX_TERMS = 8


def _products(a, b) -> str:
    """a·b written out as its first products, "0.5×1.2 + ...", with the rest summed."""
    parts = [f"{_number(x)}×{_number(y)}" for x, y in zip(a[:MAX_TERMS], b[:MAX_TERMS], strict=True)]
    if len(a) > MAX_TERMS:
        parts.append(
            f"… ({len(a) - MAX_TERMS} more products, summing to {_number(float(a[MAX_TERMS:] @ b[MAX_TERMS:]))})"
        )
    return " + ".join(parts)


def explain_score(r: AttentionResult, head: int, i: int, j: int, q_tokens, k_tokens) -> str:
    """HTML: how scores, scaled, masked and weights at (head, i, j) were made from row i of Q and row j of K."""
    kv = r.kv_head(head)
    qi, kj = r.q_rope[head, i], r.k_rope[kv, j]  # the rotated vectors with RoPE, Q and K themselves otherwise
    one = r.head(head)
    qt, kt = escape(str(q_tokens[i])), escape(str(k_tokens[j]))
    shared = f", key/value head {kv + 1}" if r.n_kv_heads < r.n_heads else ""
    a, b = i + 1, j + 1  # positions as a reader counts them, from 1 (the API stays 0-based)
    lines = [f"<b>Query {a} ‘{qt}’ · key {b} ‘{kt}’</b> (head {head + 1}{shared})"]
    if r.rotary is not None:
        lines += [
            f"RoPE: q<sub>{a}</sub> is turned by {i}·θ<sub>c</sub> and k<sub>{b}</sub> by {j}·θ<sub>c</sub> (the "
            f"first token is not turned), in each pair (c, c + d<sub>k</sub>/2), θ<sub>c</sub> = "
            f"{_number(r.rotary)}<sup>−2c/d<sub>k</sub></sup>",
            f"score = rot(q<sub>{a}</sub>)·rot(k<sub>{b}</sub>) = q<sub>{a}</sub>·R(({j} − {i})·θ)"
            f"·k<sub>{b}</sub>: the positions enter only through i − j = {i - j}, by the rotation",
        ]
    lines += [
        f"score = q<sub>{a}</sub>·k<sub>{b}</sub> = Σ<sub>c</sub> q<sub>{a}</sub>[c]·k<sub>{b}</sub>[c]"
        + (" (rotated)" if r.rotary is not None else ""),
        "&nbsp;&nbsp;= " + _products(qi, kj),
        f"&nbsp;&nbsp;= <b>{_number(one.scores[i, j])}</b>",
        f"scaled = {_number(one.scores[i, j])} × {_number(r.scale)} = <b>{_number(one.scaled[i, j])}</b>",
    ]
    if r.visible[i, j]:
        lines.append("mask: key visible, the scaled score passes unchanged")
    else:
        lines.append("mask: key <b>hidden</b> (causal: it comes after the query, or it is padding) → −∞")
    row = one.masked[i]
    if i in r.dead_rows:
        lines.append(f"softmax: query {a} sees no key at all, so its weights are all 0 and it takes nothing")
    else:
        top = row.max()
        denom = np.exp(row[np.isfinite(row)] - top).sum()
        lines.append(
            f"weight = exp({_number(row[j])} − {_number(top)}) / Σ<sub>j'</sub> exp(masked[{a}, j'] − {_number(top)}) "
            f"= {_number(np.exp(row[j] - top) if np.isfinite(row[j]) else 0.0)} / {_number(denom)} "
            f"= <b>{_number(one.weights[i, j])}</b>"
        )
        shown = ", ".join(f"{escape(str(k_tokens[c]))} {one.weights[i, c]:.2f}" for c in range(len(row))[:16])
        lines.append(f"row {a}’s weights: {shown}{' …' if len(row) > 16 else ''}")
    return "<br>".join(lines)


def explain_output_row(r: AttentionResult, head: int, i: int, q_tokens, k_tokens) -> str:
    """HTML: head output row i as the weighted sum of the rows of V."""
    w = r.head(head).weights[i]
    order = np.argsort(-w, kind="stable")
    qt = escape(str(q_tokens[i]))
    # positions as a reader counts them, from 1
    lines = [
        f"<b>Head {head + 1} output for query {i + 1} ‘{qt}’</b> = Σ<sub>j</sub> w<sub>{i + 1}j</sub> · v<sub>j</sub>"
    ]
    if i in r.dead_rows:
        lines.append("this query sees no key, so its output is 0")
        return "<br>".join(lines)
    terms = [f"{w[j]:.2f}·v<sub>{j + 1}</sub> ‘{escape(str(k_tokens[j]))}’" for j in order[:MAX_TERMS] if w[j] > 0]
    lines.append("&nbsp;&nbsp;= " + " + ".join(terms) + (" + …" if np.count_nonzero(w) > MAX_TERMS else ""))
    out = r.head_outputs[head, i]
    lines.append(
        "&nbsp;&nbsp;= [" + ", ".join(_number(v) for v in out[:MAX_TERMS]) + (", …]" if len(out) > MAX_TERMS else "]")
    )
    return "<br>".join(lines)


def _dims(r: AttentionResult) -> dict:
    h, n, d_k = r.q.shape
    m, d_v = r.v.shape[1], r.v.shape[2]
    return {"h": h, "n": n, "m": m, "d_k": d_k, "d_v": d_v, "d_model": r.output.shape[1]}


def view_formula(name: str, r: AttentionResult) -> str:
    """The view's formula with the current shapes written out, e.g. "scores = Q·Kᵀ: (5×4)·(4×7) = 5×7"."""
    d = _dims(r)
    n, m, d_k, d_v, h, dm = d["n"], d["m"], d["d_k"], d["d_v"], d["h"], d["d_model"]
    formulas = {
        "q": f"Q = X·W_Q: ({n}×{dm})·({dm}×{d_k}) = {n}×{d_k}",
        "k": f"K = X_kv·W_K: ({m}×{dm})·({dm}×{d_k}) = {m}×{d_k}",
        "v": f"V = X_kv·W_V: ({m}×{dm})·({dm}×{d_v}) = {m}×{d_v}",
        "q_rope": f"Q_rope = Q with pair (c, c + {d_k // 2}) of row i turned by i·θ_c: {n}×{d_k}",
        "k_rope": f"K_rope = K with pair (c, c + {d_k // 2}) of row j turned by j·θ_c: {m}×{d_k}",
        "angles": f"angle = position · {r.rotary or 0:g}^(−2c/{d_k}), wrapped to ±π: {n}×{d_k // 2}",
        "scores": f"scores = Q{'_rope' if r.rotary else ''}·K{'_rope' if r.rotary else ''}ᵀ: "
        f"({n}×{d_k})·({d_k}×{m}) = {n}×{m}",
        "scaled": f"scaled = scores × {r.scale:.4g}: {n}×{m}",
        "masked": f"masked = scaled, with −∞ where a key is hidden: {n}×{m}",
        "weights": f"weights = softmax(masked), row by row: {n}×{m}, every row sums to 1",
        "head_outputs": f"head output = weights·V: ({n}×{m})·({m}×{d_v}) = {n}×{d_v}",
        "concat": f"concat = [head 1 | … | head {h}]: {h} × ({n}×{d_v}) side by side = {n}×{h * d_v}",
        "output": f"output = concat·W_O: ({n}×{h * d_v})·({h * d_v}×{dm}) = {n}×{dm}",
        "residual": f"residual = X + output: ({n}×{dm}) + ({n}×{dm}) = {n}×{dm}",
        "block": f"X′ = the model's own block (norms, MLP) of r = residual, read-only: {n}×{dm}",
    }
    return formulas[name]


def explain_cell(
    name: str, meaning: str, r: AttentionResult, value: float, i: int, j: int, row_label: str, col_label: str
) -> str:
    """HTML: the view's formula with shapes, what a row means, and the hovered cell's value."""
    return (
        f"<b>{escape(view_formula(name, r))}</b><br>{escape(meaning)}<br>"
        f"row {i + 1} ‘{escape(str(row_label))}’, column {j + 1} ‘{escape(str(col_label))}’ = <b>{_number(value)}</b>"
    )
