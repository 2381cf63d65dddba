"""Training throughput against this CPU's ceiling: how much of the machine a training step uses.

    python benchmarks/training.py                  # the table (about 5 minutes on 2 cores)
    python benchmarks/training.py --quick          # tiny sizes, a smoke run (seconds)
    python benchmarks/training.py --preset cifar10-cpu --batch-size 8 --compile

In one run, with ``--threads`` threads (2 by default), each figure ``--repeats`` times, round-robin over the
configurations so that a noisy neighbour spreads over all of them, printed as median [min - max]:

- the matmul ceiling: GFLOP/s of square ``--matmul-size`` matmuls in fp32, and in bf16 where the CPU has it;
- for each model (a preset family at the batch it trains with) and each precision: the FLOPs of one
  training step (forward, backward; counted by torch's FlopCounterMode with attention on its math
  backend, so the attention matmuls are counted too, masked entries included: that is the work done),
  the seconds per step (forward, backward, Adam), images/s, GFLOP/s and the ratio to the ceiling of the
  precision it runs in.

The step is the trainer's own (``Trainer.train_step``) on random images, with dropout as the preset has it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from image_transformer import ImageTransformer
from image_transformer.training.config import TrainConfig
from image_transformer.training.trainer import NegLogLikelihood, Trainer, batch_indices
from image_transformer.zoo import PRESETS, preset

# (name, preset, overrides, batch): the families the sweep chooses from, at the sizes it trains
MODELS = [
    ("1d-cat d256", "cifar10-1d-cat-tiny", dict(hidden_size=256, ffn_size=512, dropout=0.0), 8),
    ("cifar10-1d-dmol-tiny", "cifar10-1d-dmol-tiny", {}, 8),
    ("cifar10-2d-cat-tiny", "cifar10-2d-cat-tiny", {}, 8),
    ("mnist-tiny", "mnist-tiny", {}, 16),
    ("cifar10-cpu", "cifar10-cpu", {}, 8),
    ("mnist-cpu", "mnist-cpu", {}, 16),
]
QUICK = [("tiny 8x8x3 1d", "tiny", dict(image_size=(8, 8), channels=3, query_length=32, memory_length=32), 4)]


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):8.3g} [{min(xs):.3g} - {max(xs):.3g}]"


def matmul_gflops(n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.matmul(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def has_bf16() -> bool:
    try:
        return "bf16" in open("/proc/cpuinfo").read()  # avx512_bf16 / amx_bf16
    except OSError:
        return False


def make_trainer(name: str, overrides: dict[str, Any], batch: int, precision: str, compile: bool,
                 folder: str) -> Trainer:
    torch.manual_seed(0)
    model = ImageTransformer(preset(name, **overrides))
    h, w, c = model.image_shape
    images = torch.randint(0, 256, (max(64, batch), h, w, c), dtype=torch.uint8)
    labels = torch.zeros(len(images), dtype=torch.long) if model.config.num_classes else None
    cfg = TrainConfig(steps=10**9, batch_size=batch, precision=precision, warmup=10, checkpoint_every=10**9)
    trainer = Trainer(model, cfg, folder, images, labels, progress=False, compile=compile)
    model.train()
    return trainer


def step_flops(trainer: Trainer) -> int:
    """FLOPs of one forward and backward pass of the trainer's batch, attention counted on its math path."""
    model = trainer.model
    loss = NegLogLikelihood(model)
    x = trainer.train_images[: trainer.cfg.batch_size]
    y = trainer.train_condition[: trainer.cfg.batch_size] if trainer.train_condition is not None else None
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        loss(x, y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def feeding_seconds(trainer: Trainer, steps: int = 50) -> float:
    """Seconds per step that the trainer spends choosing and copying its batch (the data stay in memory)."""
    t0 = time.perf_counter()
    for step in range(steps):
        idx = batch_indices(step, len(trainer.train_images), trainer.cfg.batch_size, trainer.cfg.seed)
        trainer.train_images[idx].contiguous()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat (after --warmup-steps)")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--preset", action="append", help="time these presets (repeatable) instead of the default set")
    p.add_argument("--batch-size", type=int, default=8, help="batch for --preset models")
    p.add_argument("--precision", nargs="+", default=None,
                   help="fp32 and/or bf16 (default: both where the CPU has bf16)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the training step")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.steps, args.warmup_steps, args.matmul_size = 1, 1, 1, 256
    bf16 = has_bf16()
    precisions = args.precision or (["fp32", "bf16"] if bf16 else ["fp32"])
    if args.preset:
        unknown = [n for n in args.preset if n not in PRESETS]
        if unknown:
            p.error(f"unknown preset(s) {unknown}; known: {', '.join(sorted(PRESETS))}")
        models = [(n, n, {}, args.batch_size) for n in args.preset]
    else:
        models = QUICK if args.quick else MODELS

    print(f"threads {args.threads}, torch {torch.__version__}, bf16 on this CPU: {bf16}, repeats {args.repeats}")
    ceiling: dict[str, list[float]] = {"fp32": []}
    if bf16:
        ceiling["bf16"] = []
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    runs = []  # (label, precision, compiled, trainer, flops)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, name, overrides, batch) in enumerate(models):
            for precision in precisions:
                for compiled in ([False, True] if args.compile else [False]):
                    trainer = make_trainer(name, overrides, batch, precision, compiled, f"{tmp}/{len(runs)}")
                    runs.append((label, batch, precision, compiled, trainer, step_flops(trainer), []))
        for r in range(args.repeats):
            for precision in ceiling:
                ceiling[precision].append(matmul_gflops(args.matmul_size, dtypes[precision]))
            for run in runs:
                trainer, times = run[4], run[6]
                for _ in range(args.warmup_steps if r == 0 else 1):
                    trainer.train_step()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step()
                times.append((time.perf_counter() - t0) / args.steps)

    print("\ndata feeding (batch indices and the copy of the batch, per step), "
          "against the fastest training step of that model:")
    for label, batch, precision, compiled, trainer, _, times in runs[:: max(1, len(runs) // len(models))]:
        feed = feeding_seconds(trainer)
        print(f"  {label:26} {feed * 1e3:8.3f} ms/step = {feed / min(times):.3%} of a step")
    print(f"\nmatmul ceiling ({args.matmul_size}x{args.matmul_size}), GFLOP/s, median [min - max]:")
    for precision, xs in ceiling.items():
        print(f"  {precision}: {med(xs)}")
    print("\ntraining step (forward + backward + Adam), median [min - max] over repeats:")
    print(f"  {'model':26} {'batch':>5} {'prec':>5} {'compile':>7} {'GFLOP':>7} {'s/step':>22} {'img/s':>8} "
          f"{'GFLOP/s':>8} {'of ceiling':>10}")
    for label, batch, precision, compiled, _, flops, times in runs:
        s = statistics.median(times)
        ceil = statistics.median(ceiling.get(precision, ceiling["fp32"]))
        gflops = flops / s / 1e9
        print(f"  {label:26} {batch:5d} {precision:>5} {str(compiled):>7} {flops / 1e9:7.1f} {med(times)} "
              f"{batch / s:8.2f} {gflops:8.1f} {gflops / ceil:10.0%}")


if __name__ == "__main__":
    main()
