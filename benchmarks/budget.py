"""Bits/dim for a budget: train a preset for M minutes of wall clock, then evaluate the held-out split.

    python benchmarks/budget.py cifar10-subset:../shared/data/cifar10-lossless-subset --minutes 10 --preset cifar10-cpu
    python benchmarks/budget.py mnist:../shared/data/mnist --minutes 10 --preset mnist-cpu
    python benchmarks/budget.py mnist:../shared/data/mnist --minutes 1 --preset mnist-tiny \\
        --set norm=pre --train lr=3e-3

DATA is any data spec of ``image-transformer train --data`` (its train split trains, its test split is
held out), or ``cifar10-subset:PATH``: the lossless CIFAR-10 subset split as tools/make_cifar_holdout.py makes it
(train on the first 3,000 images of ``data_batch_1``; hold out its last 1,000 plus the 20 images of ``test_batch``).

Training is the library's ``Trainer`` with ``max_minutes = M`` (``image_transformer.training.budget.run``): the clock
counts training only (the periodic evaluations that draw the curve are not counted), and the preset's recipe (see
``zoo.RECIPES``) sets batch size, learning rate, schedule and precision unless ``--train key=value`` overrides them.
Afterwards the whole held-out split (or ``--eval-limit`` images spread over it) is evaluated. Prints bits/dim, steps,
images/s; ``--json`` also writes them, with the curve of held-out bits/dim against minutes, for the sweep.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from image_transformer.training.budget import CLOCKS, run
from image_transformer.zoo import PRESETS


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
    print(f"  held-out bits/dim {result['bits_per_dim']:.4f} ({result['eval_images']} images), "
          f"steps {result['steps']}, "
          f"images/s {result['images_per_sec']:.2f}, trained {result['minutes']:.2f} min, "
          f"{result['parameters'] / 1e6:.2f}M parameters")
    print("  curve (minutes, bits/dim on 256 held-out images): "
          + ", ".join(f"({m:.1f}, {b:.3f})" for m, b in result["curve"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
