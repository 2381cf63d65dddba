"""Sampling speed: the cached one-position step against the arithmetic floor and the recompute reference.

    python benchmarks/sampling.py                 # the full table (about 10 minutes on 2 cores)
    python benchmarks/sampling.py --quick         # tiny sizes, a smoke run (seconds)

Model: d 256, 4 layers, 4 heads, ffn 512, random weights (speed does not depend on them), 2 threads.

What is timed, each figure ``--repeats`` times, round-robin over the configurations so that a noisy
neighbour spreads over all of them; printed as median [min - max]:

- ms/pos: the cached sampler's seconds per generation step, over a window of steady-state steps
  (``--window`` steps after the first ``--skip``, where the 1D memory is full). The window is cut out of
  a real ``model.sample`` call by wrapping the distribution's ``sample``, which every step calls once.
- img/s: batch / (ms/pos x positions), the steady-state rate for whole images.
- forward: one parallel pass (``log_prob``) over the same batch of whole images: the arithmetic floor
  the step competes with (the step does the same matmuls, one position at a time).
- sample/fwd: seconds to sample the batch (ms/pos x positions) over the forward pass.
- vs ref: how many times faster than the recompute-everything reference (each step re-runs the whole
  network over the whole image; timed on ``--reference-steps`` steps at batch 4).
- floor: bytes each step must read (all weights, and the visible keys and values of every layer)
  divided by this machine's measured memory read bandwidth: the step cannot beat this from DRAM.

It also compares, at batch 4: 2D local against 1D local at the same query size and the same
average visible memory, and the logistic mixture (a pixel per step) against the categorical model
(a sub-pixel per step), as seconds per image.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from image_transformer import ImageTransformer, ImageTransformerConfig


class _Done(Exception):
    pass


def build(size: int, args: argparse.Namespace, **kw) -> ImageTransformer:
    cfg = dict(image_size=(size, size), channels=3, hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
               ffn_size=2 * args.hidden, dropout=0.0, attention="local_1d", query_length=args.block,
               memory_length=args.block)
    torch.manual_seed(0)
    return ImageTransformer(ImageTransformerConfig(**{**cfg, **kw})).eval()


def step_ms(model: ImageTransformer, batch: int, skip: int, window: int) -> float:
    """Milliseconds per cached step over steps [skip, skip + window) of a real ``sample`` call."""
    stamps: dict[str, float] = {}
    draw = model.dist.sample
    count = 0

    def timed(params, *a, **k):
        nonlocal count
        if count == skip:
            stamps["start"] = time.perf_counter()
        if count == skip + window:
            stamps["end"] = time.perf_counter()
            raise _Done
        count += 1
        return draw(params, *a, **k)

    model.dist.sample = timed
    try:
        model.sample(batch, generator=torch.Generator().manual_seed(0))
        stamps["end"] = time.perf_counter()  # the image ended inside the window
    except _Done:
        pass
    finally:
        model.dist.sample = draw
    return 1000 * (stamps["end"] - stamps["start"]) / (count - skip)


def image_seconds(model: ImageTransformer, batch: int) -> float:
    start = time.perf_counter()
    model.sample(batch, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def forward_seconds(model: ImageTransformer, batch: int) -> float:
    x = torch.randint(0, 256, (batch, *model.image_shape), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        start = time.perf_counter()
        model.log_prob(x)
        return time.perf_counter() - start


def reference_ms(model: ImageTransformer, batch: int, steps: int) -> float:
    """Milliseconds per step of the recompute-everything sampler, on the last ``steps`` steps."""
    values = torch.randint(0, 256, (batch, model.layout.n, model.dist.values_per_position))
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(values, model.layout.n - steps, temperature=1.0, generator=torch.Generator().manual_seed(1),
                       use_cache=False)
    return 1000 * (time.perf_counter() - start) / steps


def read_bandwidth() -> float:
    """Bytes per second of one large streaming read (a sum over 400 MB)."""
    a = torch.ones(100_000_000)
    a.sum()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        a.sum()
        times.append(time.perf_counter() - start)
    return a.numel() * 4 / min(times)


def mean_visible(model: ImageTransformer, skip: int, window: int) -> float:
    """Average number of positions a step attends to, over the timed window."""
    layout = model.layout
    steps = range(skip, min(skip + window, layout.n))
    return sum(int(layout.visible(int(layout.order[t])).numel()) for t in steps) / len(steps)


def floor_ms(model: ImageTransformer, batch: int, bandwidth: float, skip: int, window: int) -> float:
    """Bytes a step reads over the window (weights + visible keys and values) / bandwidth, in ms."""
    weights = sum(p.numel() for p in model.parameters()) * 4
    kv = batch * model.config.num_layers * mean_visible(model, skip, window) * 2 * model.config.hidden_size * 4
    return 1000 * (weights + kv) / bandwidth


def fmt(xs: list[float], spec: str = ".3f") -> str:
    if len(xs) == 1:
        return f"{xs[0]:{spec}}"
    return f"{statistics.median(xs):{spec}} [{min(xs):{spec}}-{max(xs):{spec}}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--block", type=int, default=256, help="1D query and memory length")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 32, 64])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--skip", type=int, default=512, help="steps before the timed window")
    p.add_argument("--window", type=int, default=768, help="steps timed per figure")
    p.add_argument("--reference-steps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny model and sizes: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.layers, args.hidden, args.block, args.batches, args.sizes = 2, 64, 32, [1, 4], [8, 16]
        args.skip, args.window, args.reference_steps, args.repeats = 64, 64, 2, 2
    torch.set_num_threads(args.threads)
    bandwidth = read_bandwidth()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d {args.hidden}, {args.layers} layers, "
          f"1D query/memory {args.block}; memory read bandwidth {bandwidth / 1e9:.1f} GB/s; "
          f"median [min-max] of {args.repeats} repeats")

    models = {s: build(s, args) for s in args.sizes}
    steps: dict[tuple[int, int], list[float]] = {(s, b): [] for s in args.sizes for b in args.batches}
    forward: dict[tuple[int, int], list[float]] = {(s, b): [] for s in args.sizes for b in args.batches}
    ref_batch = 4 if 4 in args.batches else args.batches[0]
    reference: list[float] = []
    for _ in range(args.repeats):
        for s, model in models.items():
            for b in args.batches:
                steps[s, b].append(step_ms(model, b, args.skip, args.window))
                forward[s, b].append(forward_seconds(model, b))
        reference.append(reference_ms(models[args.sizes[0]], ref_batch, args.reference_steps))

    for s, model in models.items():
        n = model.layout.n
        print(f"\n{s}x{s}x3, 1D local, categorical ({n} steps per image)")
        print(f"{'batch':>5s} {'ms/pos':>22s} {'floor ms':>9s} {'img/s':>9s} {'forward s':>22s} "
              f"{'sample/fwd':>10s} {'img/s vs b' + str(ref_batch):>13s}")
        base = statistics.median(steps[s, ref_batch]) / ref_batch
        for b in args.batches:
            ms = statistics.median(steps[s, b])
            ratio = ms * n / 1000 / statistics.median(forward[s, b])
            print(f"{b:5d} {fmt(steps[s, b]):>22s} {floor_ms(model, b, bandwidth, args.skip, args.window):9.3f} "
                  f"{1000 * b / (ms * n):9.3f} {fmt(forward[s, b]):>22s} {ratio:9.1f}x {base * b / ms:12.1f}x")
    s0 = args.sizes[0]
    speedup = statistics.median(reference) / statistics.median(steps[s0, ref_batch])
    print(f"\nrecompute reference at {s0}x{s0}x3, batch {ref_batch}: {fmt(reference, '.1f')} ms/pos; "
          f"the cached step is {speedup:.0f}x faster")

    # 2D vs 1D at the same query size and average visible memory; mixture vs categorical
    size, b = args.sizes[0], ref_batch
    q = args.block
    qw = min(q // 8, 3 * size)
    two_d = build(size, args, attention="local_2d", query_shape=(8, qw), memory_flange=(4, max(qw // 4, 1)))
    dmol = build(size, args, distribution="dmol")
    one_d = models[size]
    per_pos = {"1d": [], "2d": []}
    per_image = {"categorical": [], "dmol": []}
    for _ in range(args.repeats):
        per_pos["1d"].append(step_ms(one_d, b, args.skip, args.window))
        per_pos["2d"].append(step_ms(two_d, b, args.skip, args.window))
        per_image["categorical"].append(image_seconds(one_d, b) / b)
        per_image["dmol"].append(image_seconds(dmol, b) / b)
    print(f"\nbatch {b}, {size}x{size}x3: 2D local (query 8x{qw}, flange 4x{max(qw // 4, 1)}: "
          f"{mean_visible(two_d, args.skip, args.window):.0f} positions seen on average) vs 1D local "
          f"(query/memory {q}: {mean_visible(one_d, args.skip, args.window):.0f}), per position")
    print(f"  1D {fmt(per_pos['1d'])} ms/pos, 2D {fmt(per_pos['2d'])} ms/pos: 2D/1D = "
          f"{statistics.median(per_pos['2d']) / statistics.median(per_pos['1d']):.2f}")
    print(f"  categorical {fmt(per_image['categorical'])} s/image, logistic mixture {fmt(per_image['dmol'])} "
          f"s/image: {statistics.median(per_image['categorical']) / statistics.median(per_image['dmol']):.2f}x "
          f"fewer seconds per image with the mixture")


if __name__ == "__main__":
    main()
