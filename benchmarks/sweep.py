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
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import budget  # noqa: E402  (the benchmark beside this script)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "sweep"
DATA = {
    "cifar": "cifar10-subset:" + str(ROOT / ".." / "shared" / "data" / "cifar10-lossless-subset"),
    "mnist": "mnist:" + str(ROOT / ".." / "shared" / "data" / "mnist"),
}
# held-out images evaluated per screening run (0 = all): MNIST's 10,000 take minutes, so they are spread
EVAL_LIMIT = {"cifar": 0, "mnist": 2000}

# name -> (preset, model settings, training settings); one change at a time from "base"
_CIFAR_BASE = ("cifar10-1d-dmol-tiny", dict(dropout=0.0),
               dict(batch_size=8, lr=2e-3, warmup=50, schedule="rsqrt", precision="fp32"))
_MNIST_BASE = ("mnist-tiny", dict(dropout=0.0),
               dict(batch_size=16, lr=2e-3, warmup=100, schedule="rsqrt", precision="fp32"))


def _vary(base: tuple[str, dict, dict], preset: str | None = None, model: dict | None = None,
          train: dict | None = None) -> tuple[str, dict, dict]:
    return (preset or base[0], {**base[1], **(model or {})}, {**base[2], **(train or {})})


CANDIDATES: dict[str, dict[str, tuple[str, dict, dict]]] = {"cifar": {}, "mnist": {}}


def report(data: str) -> None:
    """Write docs/sweep/README.md (all data sets) and docs/sweep/<data>.png from the result files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted((json.loads(p.read_text()) | {"file": p.name} for p in (DOCS / "RESULTS").glob("*.json")),
                     key=lambda r: (r["sweep_data"], r["budget_minutes"], r["bits_per_dim"]))
    lines = ["# Sweep: held-out bits/dim for a training budget", "",
             "Made by `benchmarks/sweep.py` (each row one `benchmarks/budget.py` run, 2 threads, on the 2-core "
             "development CPU). `cifar`: the lossless CIFAR-10 subset, trained on the first 3,000 images of "
             "data_batch_1, evaluated on its last 1,000 plus the 20 test images. `mnist`: the full MNIST training "
             "set; held-out figures on the test images (all 10,000, or as many as the `eval` column says, spread "
             "evenly). Rows are sorted by budget, then bits/dim. Runs are sequential; a figure taken while the CPU "
             "was shared with other work is marked in `note`.", "",
             "| data | budget (min) | name | preset | model changes | training | steps | img/s | eval | bits/dim | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        model = ", ".join(f"{k}={v}" for k, v in r["model_settings"].items()) or "-"
        train = ", ".join(f"{k}={v}" for k, v in r["train_settings"].items()) or "-"
        lines.append(f"| {r['sweep_data']} | {r['budget_minutes']:g} | {r['name']} | {r['preset']} | {model} | {train} "
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
        label = f"{r['name']} ({r['budget_minutes']:g} min): {r['bits_per_dim']:.3f}"
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
    p.add_argument("--note", default="", help="a note stored with each result (e.g. 'CPU shared')")
    p.add_argument("--report", action="store_true", help="only rewrite the table and plot")
    p.add_argument("--threads", type=int, default=2)
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
        path = DOCS / "RESULTS" / f"{args.data}-{args.minutes:g}min-{name}.json"
        if path.exists():
            print(f"{name}: done before ({path.name})")
            continue
        preset, model, train = CANDIDATES[args.data][name]
        result: dict[str, Any] = budget.run(DATA[args.data], args.minutes, preset, model, train,
                                            eval_limit=EVAL_LIMIT[args.data], progress=False)
        result |= {"name": name, "sweep_data": args.data, "budget_minutes": args.minutes, "model_settings": model,
                   "train_settings": train, "note": args.note}
        result["data"] = result["data"].replace(str(ROOT / ".."), "..")
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{name}: {result['bits_per_dim']:.4f} bits/dim, {result['steps']} steps, "
              f"{result['images_per_sec']:.1f} img/s", flush=True)
        report(args.data)


if __name__ == "__main__":
    main()
