"""What the experiment scripts share: the data, training to a budget (``image_transformer.training.budget.run``),
result files that let an interrupted experiment continue, and the markdown table and plot each one writes.

Every script takes ``--minutes`` (the training budget of each run) and ``--quick`` (a smoke run of seconds: tiny
budgets, few evaluation images, results in a temporary folder instead of ``docs/experiments/``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from image_transformer.training import budget  # train for a budget, evaluate the held-out split
from image_transformer.zoo import preset as make_config

ROOT = Path(__file__).resolve().parents[1]

DOCS = ROOT / "docs" / "experiments"
SHARED = ROOT / ".." / "shared" / "data"
DATA = {
    # the lossless CIFAR-10 subset: train on the first 3,000 images of data_batch_1, hold out its last 1,000 + 20
    "cifar": "cifar10-subset:" + str(SHARED / "cifar10-lossless-subset"),
    "mnist": "mnist:" + str(SHARED / "mnist"),
}
# held-out images per final evaluation (0 = all), spread over the split: enough to tell the configurations apart
# (the standard error of a mean over 256 CIFAR images is about 0.03 bits/dim) at a fraction of the training's time
EVAL_LIMIT = {"cifar": 256, "mnist": 1000}
CURVE_POINTS, CURVE_IMAGES = 3, 64  # the learning curve: a few evaluations on a few held-out images (not timed)
# training settings shared by every run of a data set (the budget sweep's winners: linear decay ending
# with the clock, no dropout): one budget, one recipe
TRAIN = {"cifar": dict(batch_size=8, lr=2e-3, warmup=50, schedule="linear", precision="fp32",
                       eval_images=CURVE_IMAGES),
         "mnist": dict(batch_size=16, lr=2e-3, warmup=100, schedule="linear", precision="fp32",
                       eval_images=CURVE_IMAGES)}
QUICK_MINUTES = 0.04  # a smoke run: a few steps per configuration


def parser(doc: str, default_minutes: float) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=default_minutes, help="training budget of each run (minutes)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: seconds per configuration, few evaluation images, output in a temporary folder")
    p.add_argument("--out", type=Path, help="output folder (default docs/experiments, or a temporary one with --quick)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=sorted(budget.CLOCKS), default="cpu",
                   help="cpu: CPU minutes per thread (steady on a shared machine; the default); wall: wall clock")
    p.add_argument("--only", nargs="+", help="run only these configurations (by name)")
    p.add_argument("--report", action="store_true", help="only rewrite the table and plot from the stored results")
    return p


def setup(args: argparse.Namespace) -> Path:
    """The output folder (made), the threads; in quick mode the budget shrinks to seconds."""
    torch.set_num_threads(args.threads)
    if args.quick:
        args.minutes = QUICK_MINUTES
        out = args.out or Path(tempfile.mkdtemp(prefix="experiment-quick-"))
    else:
        out = args.out or DOCS
    (out / "RESULTS").mkdir(parents=True, exist_ok=True)
    return out


def run_key(dataset: str, preset_name: str, model: dict, train: dict, threads: int, clock: str) -> str:
    """What decides a budget run's outcome: the data, the preset (its recipe), the model it resolves to, the
    training settings, threads and clock. Two experiments asking for the same key get the same run."""
    return json.dumps([dataset, preset_name, make_config(preset_name, **model).to_dict(), train, threads, clock],
                      sort_keys=True, default=list)


def _key_of(result: dict) -> str | None:
    try:
        return run_key(result["dataset"], result["preset"], result["model_settings"], result["train_settings"],
                       result["threads"], result["clock"])
    except (KeyError, TypeError, ValueError):
        return None


def cached(out: Path, experiment: str, name: str, minutes: float, compute: Callable[[], dict[str, Any]],
           key: str | None = None) -> dict:
    """The stored result of run ``name``; else that of the same run (same ``key``) made for another experiment,
    at the same budget; else ``compute()`` stored now (an interrupted experiment continues)."""
    path = out / "RESULTS" / f"{experiment}-{minutes:g}min-{name}.json"
    if path.exists():
        print(f"{name}: done before ({path.name})")
        return json.loads(path.read_text())
    same = [p for p in sorted((out / "RESULTS").glob(f"*-{minutes:g}min-*.json"))
            if key is not None and _key_of(json.loads(p.read_text())) == key]
    if same:
        print(f"{name}: the same run as {same[0].name}")
        result = json.loads(same[0].read_text()) | {"name": name, "same_run_as": same[0].name}
    else:
        result = compute() | {"name": name, "budget_minutes": minutes}
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def stored(out: Path, experiment: str, minutes: float) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "RESULTS").glob(f"{experiment}-{minutes:g}min-*.json"))]


def train_settings(args: argparse.Namespace, data: str, train: dict | None = None) -> dict:
    """The training settings of a run on ``data``: the data set's recipe, ``train`` over it, smaller with --quick."""
    return {**TRAIN[data], **(train or {}), **({"eval_images": 8, "batch_size": 2} if args.quick else {})}


def train_to_budget(args: argparse.Namespace, data: str, preset: str, model: dict, train: dict | None = None) -> dict:
    """One ``budget.run``: train ``preset`` (with ``model`` overrides) for the budget, evaluate the held-out split."""
    settings = train_settings(args, data, train)
    eval_limit = 8 if args.quick else EVAL_LIMIT[data]
    result = budget.run(DATA[data], args.minutes, preset, model, settings, eval_limit=eval_limit,
                        curve_points=2 if args.quick else CURVE_POINTS, progress=False, clock=args.clock)
    result["data"] = result["data"].replace(str(ROOT / ".."), "..")
    return result | {"dataset": data, "preset": preset, "model_settings": model, "train_settings": settings}


def run_configs(args: argparse.Namespace, out: Path, experiment: str, configs: dict, names: list[str],
                after_each: Callable[[], None] = lambda: None) -> None:
    """Train each named (data, preset, model settings) config to the budget without dropout (or reuse its stored
    result), print its figure, then call ``after_each`` (a report that grows as results come in)."""
    for name in names:
        data, preset, model = configs[name]
        model = {"dropout": 0.0, **model}
        key = run_key(data, preset, model, train_settings(args, data), args.threads, args.clock)
        r = cached(out, experiment, name, args.minutes, lambda: train_to_budget(args, data, preset, model), key)
        print(f"{name}: {r['bits_per_dim']:.4f} bits/dim after {r['steps']} steps", flush=True)
        after_each()


def command(script: str, args: argparse.Namespace) -> str:
    return f"python experiments/{script} --minutes {args.minutes:g} --clock {args.clock} --threads {args.threads}"


def write_markdown(path: Path, title: str, preface: list[str], header: list[str], rows: list[list[Any]],
                   image: str | None = None) -> None:
    lines = [f"# {title}", "", *preface, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if image:
        lines += ["", f"![{title}]({image})"]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def budget_line(args: argparse.Namespace, results: list[dict]) -> str:
    steps = ", ".join(f"{r['name']} {r['steps']}" for r in results)
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
    return (f"Budget: {args.minutes:g} minutes of training per run ({args.clock} clock, {threads}, the "
            f"2-core development CPU); steps reached: {steps}. Held-out bits/dim on {EVAL_LIMIT['cifar']} of "
            f"the CIFAR subset's 1,020 held-out images and {EVAL_LIMIT['mnist']} of MNIST's 10,000 test images, spread "
            f"over the split. Small models, short runs: a trend at small scale, "
            f"not the paper's numbers.")


def compare_report(args: argparse.Namespace, out: Path, experiment: str, configs: dict, title: str, claim: str,
                   script: str) -> None:
    """A table (one row per configuration) and a plot of held-out bits/dim against training minutes."""
    results = [r for r in stored(out, experiment, args.minutes) if r["name"] in configs]
    if not results:
        return
    rows = [[r["dataset"], r["name"], r["preset"],
             ", ".join(f"{k}={v}" for k, v in r["model_settings"].items()), f"{r['parameters'] / 1e6:.2f}M", r["steps"],
             f"{r['images_per_sec']:.1f}", f"{r['bits_per_dim']:.4f}"]
            for r in sorted(results, key=lambda r: r["name"])]
    preface = [claim, "", "**Ours**: " + budget_line(args, results), "", f"Command: `{command(script, args)}`"]
    write_markdown(out / f"{experiment}.md", title, preface,
                   ["data", "name", "preset", "model changes", "parameters", "steps", "images/s", "held-out bits/dim"],
                   rows, f"{experiment}.png")
    plt = pyplot()
    datasets = sorted({r["dataset"] for r in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, data in zip(axes[0], datasets):
        for r in results:
            if r["dataset"] != data:
                continue
            line, = ax.plot([m for m, _ in r["curve"]], [b for _, b in r["curve"]], ".-", label=r["name"])
            ax.plot([r["minutes"]], [r["bits_per_dim"]], "*", markersize=10, color=line.get_color())
        ax.set_xlabel(f"training minutes ({args.clock} clock)")
        ax.set_ylabel("held-out bits/dim (dots: 256 images; star: final)")
        ax.set_title(data)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{experiment}.png", dpi=110)
    plt.close(fig)
