"""Bits/dim for a budget: train a preset for M minutes of wall clock, then evaluate the held-out split.

    python benchmarks/budget.py cifar10-subset:../shared/data/cifar10-lossless-subset --minutes 10 --preset cifar10-cpu
    python benchmarks/budget.py mnist:../shared/data/mnist --minutes 10 --preset mnist-cpu
    python benchmarks/budget.py mnist:../shared/data/mnist --minutes 1 --preset mnist-tiny --set norm=pre --train lr=3e-3

DATA is any data spec of ``image-transformer train --data`` (its train split trains, its test split is
held out), or ``cifar10-subset:PATH``: the lossless CIFAR-10 subset split as tools/make_cifar_holdout.py makes it (train on the
first 3,000 images of ``data_batch_1``; hold out its last 1,000 plus the 20 images of ``test_batch``).

Training is the library's ``Trainer`` with ``max_minutes = M``: the clock counts training only (the periodic
evaluations that draw the curve are not counted), and the preset's recipe (see ``zoo.RECIPES``) sets
batch size, learning rate, schedule and precision unless ``--train key=value`` overrides them. Afterwards
the whole held-out split (or ``--eval-limit`` images spread over it) is evaluated. Prints bits/dim, steps,
images/s; ``--json`` also writes them, with the curve of held-out bits/dim against minutes, for the sweep.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from image_transformer import ImageTransformer
from image_transformer.zoo import PRESETS, RECIPES, preset
from image_transformer.files.data import load_dataset
from image_transformer.metrics import spread
from image_transformer.tasks import evaluate
from image_transformer.training.config import TrainConfig
from image_transformer.training.trainer import Trainer

# "wall": seconds of wall clock (the budget's definition); "cpu": this process's CPU seconds per thread, which
# a neighbour on a shared CPU disturbs much less (for screening sweeps while other work runs)
CLOCKS = {"wall": time.monotonic, "cpu": lambda: time.process_time() / torch.get_num_threads()}
SUBSET_TRAIN = 3000  # images of data_batch_1 that train; the rest of it, and test_batch, are held out


def load_split(spec: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """(train images, train labels, held-out images, held-out labels), uint8 (N, H, W, C)."""
    if spec.startswith("cifar10-subset:"):
        root = spec.split(":", 1)[1]
        train, test = load_dataset(f"cifar10:{root}", "train"), load_dataset(f"cifar10:{root}", "test")
        x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
        held_x = torch.cat([x[SUBSET_TRAIN:], torch.from_numpy(test.images)])
        held_y = torch.cat([y[SUBSET_TRAIN:], torch.from_numpy(test.labels)])
        return x[:SUBSET_TRAIN], y[:SUBSET_TRAIN], held_x, held_y
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    labels = (lambda d: torch.from_numpy(d.labels) if d.labels is not None else None)
    return torch.from_numpy(train.images), labels(train), torch.from_numpy(test.images), labels(test)


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(items: list[str], what: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"{what} {item!r}: expected key=value")
        out[key.replace("-", "_")] = parse_value(value)
    return out


def probe_step_seconds(config: Any, cfg: TrainConfig, images: torch.Tensor, labels: torch.Tensor | None) -> float:
    """Seconds per training step of a throwaway copy: spaces the curve's evaluations (not counted)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(ImageTransformer(config), cfg, tmp, images, labels, progress=False)
        trainer.train_step()
        t0 = time.perf_counter()
        for _ in range(2):
            trainer.train_step()
        return (time.perf_counter() - t0) / 2


def run(spec: str, minutes: float, preset_name: str, model_settings: dict[str, Any], train_settings: dict[str, Any],
        eval_limit: int = 0, curve_points: int = 8, out: str | None = None, progress: bool = True,
        clock: str = "wall", compile: bool = False) -> dict[str, Any]:
    """Train for ``minutes`` and evaluate; returns the result record (see the module docstring)."""
    train_x, train_y, held_x, held_y = load_split(spec)
    config = preset(preset_name, **model_settings)
    if config.num_classes == 0:
        train_y = held_y = None
    recipe = {**RECIPES.get(preset_name, {}), **train_settings}
    # the budget's minutes bind (a recipe's own max_minutes and steps give way to them)
    cfg = TrainConfig(**{"checkpoint_every": 10**9, "eval_images": 256, **recipe, "steps": 10**9,
                         "max_minutes": minutes, "eval_every": 10**9})
    # the curve: about ``curve_points`` evaluations on 256 held-out images, their time not counted
    cfg.eval_every = max(1, int(minutes * 60 / probe_step_seconds(config, cfg, train_x, train_y) / curve_points))
    torch.manual_seed(cfg.seed)
    model = ImageTransformer(config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, cfg, out or tmp, train_x, train_y, held_x, held_y, progress=progress,
                          compile=compile, clock=CLOCKS[clock])
        trainer.train()
        records = [json.loads(line) for line in trainer.log_path.read_text().splitlines()]
    curve = [(r["minutes"], r["eval_bits_per_dim"]) for r in records if "eval_bits_per_dim" in r]
    idx = spread(len(held_x), eval_limit) if eval_limit else torch.arange(len(held_x))
    t0 = time.perf_counter()
    result = evaluate(model, held_x[idx], held_y[idx] if held_y is not None else None, batch_size=64, progress=progress)
    last = records[-1]
    return {
        "data": spec, "preset": preset_name, "model": config.to_dict(), "train": {**vars(cfg)},
        "minutes": last["minutes"], "steps": last["step"], "images_per_sec": last["step"] * cfg.batch_size / (60 * last["minutes"]),
        "parameters": model.num_parameters(), "bits_per_dim": result["bits_per_dim"], "eval_images": result["num_images"],
        "eval_minutes": (time.perf_counter() - t0) / 60, "curve": curve, "threads": torch.get_num_threads(),
        "clock": clock, "compile": compile,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="data spec (e.g. mnist:PATH) or cifar10-subset:PATH")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock minutes of training")
    p.add_argument("--preset", required=True, help=f"one of: {', '.join(sorted(PRESETS))}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config override")
    p.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                   help="training override (batch_size, lr, warmup, schedule, precision, clip_grad, seed, ...)")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate this many held-out images (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: wall-clock minutes (default); cpu: CPU minutes per thread, for a shared machine")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (compiling is counted)")
    p.add_argument("--json", type=Path, help="also write the result (with the curve) here")
    p.add_argument("--out", help="keep the run folder here (default: a temporary folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args()
    if args.preset not in PRESETS:
        p.error(f"unknown preset {args.preset!r}; known: {', '.join(sorted(PRESETS))}")
    torch.set_num_threads(args.threads)
    result = run(args.data, args.minutes, args.preset, parse_settings(args.set, "--set", p),
                 parse_settings(args.train, "--train", p), args.eval_limit, out=args.out, progress=not args.quiet,
                 clock=args.clock, compile=args.compile)
    print(f"{args.preset} {' '.join(args.set + args.train)} on {args.data}, {args.minutes:g} min ({args.clock} clock), "
          f"{result['threads']} threads{', compiled' if args.compile else ''}:")
    print(f"  held-out bits/dim {result['bits_per_dim']:.4f} ({result['eval_images']} images), steps {result['steps']}, "
          f"images/s {result['images_per_sec']:.2f}, trained {result['minutes']:.2f} min, "
          f"{result['parameters'] / 1e6:.2f}M parameters")
    print("  curve (minutes, bits/dim on 256 held-out images): "
          + ", ".join(f"({m:.1f}, {b:.3f})" for m, b in result["curve"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
