"""The best model for a budget: a sweep of ``benchmarks/budget.py`` runs, with a table and a plot in docs/.

    python benchmarks/sweep.py cifar --minutes 3            # every CIFAR candidate for 3 minutes
    python benchmarks/sweep.py mnist --minutes 10 --only base pre-lr3e-3
    python benchmarks/sweep.py cifar --report               # rewrite the table and plot from the results

Each run is one ``budget.run`` (train for the minutes, evaluate the held-out split), done one after the
other with 2 threads; its result is written to ``docs/sweep/RESULTS/<data>-<minutes>min-<name>.json`` and
skipped when that file exists, so an interrupted sweep continues where it stopped. The report,
``docs/sweep/README.md`` and ``docs/sweep/<data>.png``, lists every result and plots held-out bits/dim
against training minutes (the curve each run records on 256 held-out images, and its final figure on the
whole held-out split).

Candidates (what matters at small budgets) are ``CANDIDATES[data]``: a base configuration and one change
at a time from it (width/depth, block sizes, 1D vs 2D, categorical vs mixture, learning rate and warm-up,
schedule, batch size, dropout, pre- vs post-layer-norm, precision).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from image_transformer.training import budget
from image_transformer.zoo import RECIPES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "sweep"
DATA = {
    "cifar": "cifar10-subset:" + str(ROOT / ".." / "shared" / "data" / "cifar10-lossless-subset"),
    "mnist": "mnist:" + str(ROOT / ".." / "shared" / "data" / "mnist"),
}
# held-out images evaluated per screening run (0 = all): MNIST's 10,000 take minutes, so they are spread
EVAL_LIMIT = {"cifar": 0, "mnist": 2000}

# name -> (preset, model settings, training settings); one change at a time from "base", the settings the
# sweep started from (CIFAR: cifar10-1d-dmol-tiny, batch 8, lr 2e-3, warm-up 50; MNIST: the mnist-tiny recipe the
# README's main job had then)
# (the mixture input without tensor2tensor's ReLU: the model measured before the sweep, and its first rows)
_CIFAR_BASE = ("cifar10-1d-dmol-tiny", dict(pixel_input_relu=False), dict(batch_size=8, lr=2e-3, warmup=50))
_MNIST_BASE = ("mnist-tiny", {}, dict(batch_size=16, lr=2e-3, warmup=100))
_FP32 = dict(precision="fp32")  # cifar10-cpu's candidates from before its recipe trained in bf16


def _vary(base: tuple[str, dict, dict], preset: str | None = None, model: dict | None = None,
          train: dict | None = None) -> tuple[str, dict, dict]:
    return (preset or base[0], {**base[1], **(model or {})}, {**base[2], **(train or {})})


CANDIDATES: dict[str, dict[str, tuple[str, dict, dict]]] = {
    "cifar": {
        "base": _CIFAR_BASE,
        "dropout0": _vary(_CIFAR_BASE, model=dict(dropout=0.0)),
        "linear": _vary(_CIFAR_BASE, train=dict(schedule="linear")),
        "lr4e-3": _vary(_CIFAR_BASE, train=dict(lr=4e-3)),
        "pre-norm-lr5e-3": _vary(_CIFAR_BASE, model=dict(norm="pre"), train=dict(lr=5e-3)),
        "batch16": _vary(_CIFAR_BASE, train=dict(batch_size=16)),
        "wide-d256": _vary(_CIFAR_BASE, model=dict(hidden_size=256, ffn_size=512)),
        "2d-4x16": _vary(_CIFAR_BASE, model=dict(attention="local_2d", query_shape=(4, 16), memory_flange=(4, 8))),
        "categorical": _vary(_CIFAR_BASE, preset="cifar10-1d-cat-tiny"),
        "blocks256": _vary(_CIFAR_BASE, model=dict(query_length=256, memory_length=256)),
        "deep-6l": _vary(_CIFAR_BASE, model=dict(num_layers=6)),
        "warmup200": _vary(_CIFAR_BASE, train=dict(warmup=200)),
        "pre-norm": _vary(_CIFAR_BASE, model=dict(norm="pre")),
        "bf16": _vary(_CIFAR_BASE, train=dict(precision="bf16")),
        "cifar10-cpu": ("cifar10-cpu", {}, {}),  # the winners together: the preset and its recipe
        "cifar10-cpu-no-conv": ("cifar10-cpu", dict(conv_size=0), _FP32),  # the preset before its convolutions
        # the preset as first made (4 heads of 32, not 2 of 64; no convolutions)
        "heads4": ("cifar10-cpu", dict(conv_size=0, num_heads=4), _FP32),
        # what a convolutional peer has and the Image Transformer lacks, from cifar10-cpu as it was before them:
        # the neighbourhood before the first block (a masked convolution stem), a causal convolution in every
        # block (PixelSNAIL); then, with the convolution, bf16 autocast
        "stem5": ("cifar10-cpu", dict(conv_size=0, neighbourhood=5), _FP32),
        "stem7": ("cifar10-cpu", dict(conv_size=0, neighbourhood=7), _FP32),
        "conv3": ("cifar10-cpu", dict(conv_size=3), _FP32),
        "conv5": ("cifar10-cpu", dict(conv_size=5), _FP32),
        "conv3-bf16": ("cifar10-cpu", dict(conv_size=3), dict(precision="bf16")),
    },
    "mnist": {
        "base": _MNIST_BASE,
        "dropout0": _vary(_MNIST_BASE, model=dict(dropout=0.0)),
        "linear": _vary(_MNIST_BASE, train=dict(schedule="linear")),
        "pre-norm-lr4e-3": _vary(_MNIST_BASE, model=dict(norm="pre"), train=dict(lr=4e-3)),
        "batch32": _vary(_MNIST_BASE, train=dict(batch_size=32)),
        "wide-d192": _vary(_MNIST_BASE, model=dict(hidden_size=192, ffn_size=384)),
        "mnist-cpu": ("mnist-cpu", {}, {}),  # the CIFAR winners applied to MNIST: the preset and its recipe
        # the preset before its convolutions and bf16, and as first made (blocks of 112)
        "mnist-cpu-no-conv": ("mnist-cpu", dict(conv_size=0), _FP32),
        "blocks112": ("mnist-cpu", dict(conv_size=0, query_length=112, memory_length=112), _FP32),
    },
}


def report(data: str) -> None:
    """Write docs/sweep/README.md (all data sets) and docs/sweep/<data>.png from the result files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted((json.loads(p.read_text()) | {"file": p.name} for p in (DOCS / "RESULTS").glob("*.json")),
                     key=lambda r: (r["sweep_data"], r["budget_minutes"], r["clock"], r["bits_per_dim"]))
    lines = ["# Sweep: held-out bits/dim for a training budget", "",
             "Made by `benchmarks/sweep.py` (each row one `benchmarks/budget.py` run, 2 threads, on the 2-core "
             "development CPU). `cifar`: the lossless CIFAR-10 subset, trained on the first 3,000 images of "
             "data_batch_1, evaluated on its last 1,000 plus the 20 test images. `mnist`: the full MNIST training "
             "set; held-out figures on the test images (all 10,000, or as many as the `eval` column says, spread "
             "evenly). Rows are sorted by budget, then bits/dim. Runs are sequential. The budget's clock is `wall` "
             "(wall-clock minutes, the budget's definition) or `cpu` (the process's CPU minutes per thread: "
             "used for screening while other work shared the CPU, which it disturbs much less).", "",
             "| data | budget (min) | name | preset | model changes | training | steps | img/s | eval "
             "| bits/dim | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        model = ", ".join(f"{k}={v}" for k, v in r["model_settings"].items()) or "-"
        train = ", ".join(f"{k}={v}" for k, v in r["train_settings"].items()) or "-"
        lines.append(f"| {r['sweep_data']} | {r['budget_minutes']:g} {r['clock']} | {r['name']} | {r['preset']} "
                     f"| {model} | {train} "
                     f"| {r['steps']} | {r['images_per_sec']:.1f} | {r['eval_images']} | {r['bits_per_dim']:.4f} "
                     f"| {r.get('note', '')} |")
    DOCS.mkdir(parents=True, exist_ok=True)
    for d in sorted({r["sweep_data"] for r in results}):
        lines += ["", f"![{d}]({d}.png)"]
    (DOCS / "README.md").write_text("\n".join(lines) + "\n")
    mine = [r for r in results if r["sweep_data"] == data]
    if not mine:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in mine:
        curve = r["curve"]
        label = f"{r['name']} ({r['budget_minutes']:g} min {r['clock']}): {r['bits_per_dim']:.3f}"
        line, = ax.plot([m for m, _ in curve], [b for _, b in curve], marker=".", alpha=0.8, label=label)
        ax.plot([r["minutes"]], [r["bits_per_dim"]], marker="*", markersize=10, color=line.get_color())
    ax.set_xlabel("training minutes (2 threads)")
    ax.set_ylabel("held-out bits/dim (dots: 256 images; star: whole split)")
    ax.set_title(f"{data}: bits/dim against training time")
    lows = sorted(b for r in mine for _, b in r["curve"])
    if lows:
        ax.set_ylim(min(lows) - 0.05, lows[len(lows) // 2] + 0.4)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(DOCS / f"{data}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", choices=sorted(DATA))
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--only", nargs="+", help="run only these candidates")
    p.add_argument("--eval-limit", type=int, help="held-out images to evaluate (0 = all; default: EVAL_LIMIT)")
    p.add_argument("--note", default="", help="a note stored with each result (e.g. 'CPU shared')")
    p.add_argument("--report", action="store_true", help="only rewrite the table and plot")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=sorted(budget.CLOCKS), default="wall",
                   help="wall (the budget's definition) or cpu (CPU minutes per thread: screening on a shared CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.report:
        report(args.data)
        return
    names = args.only or list(CANDIDATES[args.data])
    unknown = [n for n in names if n not in CANDIDATES[args.data]]
    if unknown:
        p.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES[args.data])}")
    (DOCS / "RESULTS").mkdir(parents=True, exist_ok=True)
    for name in names:
        path = DOCS / "RESULTS" / f"{args.data}-{args.minutes:g}min-{args.clock}-{name}.json"
        if path.exists():
            print(f"{name}: done before ({path.name})")
            continue
        preset, model, train = CANDIDATES[args.data][name]
        result: dict[str, Any] = budget.run(DATA[args.data], args.minutes, preset, model, train,
                                            eval_limit=(EVAL_LIMIT[args.data] if args.eval_limit is None
                                                        else args.eval_limit),
                                            progress=False, clock=args.clock,
                                            curve_points=5)
        recipe = {k: v for k, v in {**RECIPES.get(preset, {}), **train}.items() if k not in ("steps", "max_minutes")}
        result |= {"name": name, "sweep_data": args.data, "budget_minutes": args.minutes, "model_settings": model,
                   "train_settings": recipe, "note": args.note}
        result["data"] = result["data"].replace(str(ROOT / ".."), "..")
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{name}: {result['bits_per_dim']:.4f} bits/dim, {result['steps']} steps, "
              f"{result['images_per_sec']:.1f} img/s", flush=True)
        report(args.data)


if __name__ == "__main__":
    main()
