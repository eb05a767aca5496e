"""The words beside the numbers: how one score or one head output was made, as plain text a learner can follow.

Qt-free functions of an AttentionResult, so the inspector panel only displays what these return.
"""

from __future__ import annotations

from html import escape

import numpy as np

from qkvgui.core import AttentionResult

#: how many terms of a sum are written out before the rest is summarised
MAX_TERMS = 8


def _num(v: float) -> str:
    if np.isneginf(v):
        return "−∞"
    return f"{v:.4g}".replace("-", "−")


def _products(a, b) -> str:
    """a·b written out as its first products, "0.5×1.2 + ...", with the rest summed."""
    parts = [f"{_num(x)}×{_num(y)}" for x, y in zip(a[:MAX_TERMS], b[:MAX_TERMS], strict=True)]
    if len(a) > MAX_TERMS:
        parts.append(f"… ({len(a) - MAX_TERMS} more products, summing to {_num(float(a[MAX_TERMS:] @ b[MAX_TERMS:]))})")
    return " + ".join(parts)


def explain_score(r: AttentionResult, head: int, i: int, j: int, q_tokens, k_tokens) -> str:
    """HTML: how scores, scaled, masked and weights at (head, i, j) were made from row i of Q and row j of K."""
    qi, kj = r.q[head, i], r.k[head, j]
    qt, kt = escape(str(q_tokens[i])), escape(str(k_tokens[j]))
    lines = [
        f"<b>Query {i} ‘{qt}’ · key {j} ‘{kt}’</b> (head {head + 1})",
        f"score = q<sub>{i}</sub>·k<sub>{j}</sub> = Σ<sub>c</sub> q<sub>{i}</sub>[c]·k<sub>{j}</sub>[c]",
        "&nbsp;&nbsp;= " + _products(qi, kj),
        f"&nbsp;&nbsp;= <b>{_num(r.scores[head, i, j])}</b>",
        f"scaled = {_num(r.scores[head, i, j])} × {_num(r.scale)} = <b>{_num(r.scaled[head, i, j])}</b>",
    ]
    if r.visible[i, j]:
        lines.append("mask: key visible, the scaled score passes unchanged")
    else:
        lines.append("mask: key <b>hidden</b> (causal: it comes after the query, or it is padding) → −∞")
    row = r.masked[head, i]
    if i in r.dead_rows:
        lines.append(f"softmax: query {i} sees no key at all, so its weights are all 0 and it takes nothing")
    else:
        top = row.max()
        denom = np.exp(row[np.isfinite(row)] - top).sum()
        lines.append(
            f"weight = exp({_num(row[j])} − {_num(top)}) / Σ<sub>j'</sub> exp(masked[{i}, j'] − {_num(top)}) "
            f"= {_num(np.exp(row[j] - top) if np.isfinite(row[j]) else 0.0)} / {_num(denom)} "
            f"= <b>{_num(r.weights[head, i, j])}</b>"
        )
        shown = ", ".join(f"{escape(str(k_tokens[c]))} {r.weights[head, i, c]:.2f}" for c in range(len(row))[:16])
        lines.append(f"row {i}’s weights: {shown}{' …' if len(row) > 16 else ''}")
    return "<br>".join(lines)


def explain_output_row(r: AttentionResult, head: int, i: int, q_tokens, k_tokens) -> str:
    """HTML: head output row i as the weighted sum of the rows of V."""
    w = r.weights[head, i]
    order = np.argsort(-w, kind="stable")
    qt = escape(str(q_tokens[i]))
    lines = [f"<b>Head {head + 1} output for query {i} ‘{qt}’</b> = Σ<sub>j</sub> w<sub>{i}j</sub> · v<sub>j</sub>"]
    if i in r.dead_rows:
        lines.append("this query sees no key, so its output is 0")
        return "<br>".join(lines)
    terms = [f"{w[j]:.2f}·v<sub>{j}</sub> ‘{escape(str(k_tokens[j]))}’" for j in order[:MAX_TERMS] if w[j] > 0]
    lines.append("&nbsp;&nbsp;= " + " + ".join(terms) + (" + …" if np.count_nonzero(w) > MAX_TERMS else ""))
    out = r.head_outputs[head, i]
    lines.append("&nbsp;&nbsp;= [" + ", ".join(_num(v) for v in out[:MAX_TERMS]) + (", …]" if len(out) > MAX_TERMS
                                                                                       else "]"))
    return "<br>".join(lines)
