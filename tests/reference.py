"""An independent attention reference for the tests: loops over heads and tokens, float64, written from the paper."""

import math

import numpy as np


def reference_attention(
    x_q, w_q, w_k, w_v, w_o, x_kv=None, b_q=None, b_k=None, b_v=None, b_o=None, causal=False, pad=None, scale=None
):
    """Returns (weights [h, n_q, n_k], head_outputs [h, n_q, d_v], output [n_q, d_model]) the slow way."""
    x_kv = x_q if x_kv is None else x_kv
    h, d_model, d_k = w_q.shape
    d_v = w_v.shape[2]
    n_q, n_k = len(x_q), len(x_kv)
    scale = 1 / math.sqrt(d_k) if scale is None else scale
    weights = np.zeros((h, n_q, n_k))
    outs = np.zeros((h, n_q, d_v))
    for head in range(h):
        for i in range(n_q):
            q_i = [
                sum(x_q[i, a] * w_q[head, a, c] for a in range(d_model)) + (0 if b_q is None else b_q[head, c])
                for c in range(d_k)
            ]
            logits = []
            for j in range(n_k):
                hidden = (causal and j > i) or (pad is not None and pad[j])
                if hidden:
                    logits.append(None)
                    continue
                k_j = [
                    sum(x_kv[j, a] * w_k[head, a, c] for a in range(d_model)) + (0 if b_k is None else b_k[head, c])
                    for c in range(d_k)
                ]
                logits.append(scale * sum(q_i[c] * k_j[c] for c in range(d_k)))
            finite = [s for s in logits if s is not None]
            if not finite:
                continue  # no visible key: weights and output stay 0
            top = max(finite)
            exps = [0.0 if s is None else math.exp(s - top) for s in logits]
            total = math.fsum(exps)
            for j in range(n_k):
                weights[head, i, j] = exps[j] / total
                if exps[j]:
                    v_j = [
                        sum(x_kv[j, a] * w_v[head, a, c] for a in range(d_model)) + (0 if b_v is None else b_v[head, c])
                        for c in range(d_v)
                    ]
                    for c in range(d_v):
                        outs[head, i, c] += weights[head, i, j] * v_j[c]
    output = np.zeros((n_q, d_model))
    for i in range(n_q):
        for m in range(d_model):
            acc = 0.0 if b_o is None else b_o[m]
            for head in range(h):
                for c in range(d_v):
                    acc += outs[head, i, c] * w_o[head * d_v + c, m]
            output[i, m] = acc
    return weights, outs, output
