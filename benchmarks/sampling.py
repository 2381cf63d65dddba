"""Sampling speed: the cached sampler against the recompute-everything reference, side by side.

    python benchmarks/sampling.py                # 32x32x3, 4 layers, d 256, 1D and 2D local
    python benchmarks/sampling.py --quick        # smaller, for a smoke run

The reference re-runs the whole network over the whole image for every generated sub-pixel, so its
cost per position is the same at every step; it is timed on the last ``--reference-steps`` positions
of the generation order (after a cached run has filled the image) and its time per image is that cost
times the number of positions. The cached sampler is timed over whole images. Both use the same batch,
weights and thread count in the same process. A scaling table times the cached sampler at 16x16,
32x32 and 64x64: linear scaling means a constant time per position.
"""

from __future__ import annotations

import argparse
import time

import torch

from image_transformer import ImageTransformer, ImageTransformerConfig


def build(size: int, attention: str, args: argparse.Namespace) -> ImageTransformer:
    cfg = ImageTransformerConfig(
        image_size=(size, size), channels=3, hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
        ffn_size=4 * args.hidden, dropout=0.0, attention=attention, query_length=256, memory_length=256,
        query_shape=(8, 24), memory_flange=(8, 24),
    )
    torch.manual_seed(0)
    return ImageTransformer(cfg).eval()


def time_cached(model: ImageTransformer, batch: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    images = model.sample(batch, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start, images


def time_reference(model: ImageTransformer, images: torch.Tensor, steps: int) -> float:
    """Seconds per generated position of the recompute-everything sampler."""
    values = model._to_positions(images).clone()
    start_step = model.layout.n - steps
    start = time.perf_counter()
    with torch.no_grad():
        model._generate(values, start_step, None, 1.0, torch.Generator().manual_seed(1), use_cache=False,
                        progress=False)
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="images sampled at once")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--reference-steps", type=int, default=24, help="positions timed for the reference")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="16x16 and fewer layers: a smoke run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.layers, args.hidden, args.reference_steps = 2, 64, 8
    size = 16 if args.quick else 32
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.layers} layers, d {args.hidden}")

    print(f"\n{size}x{size}x3: cached vs reference (same batch, same weights)")
    print(f"{'attention':10s} {'cached img/s':>13s} {'reference img/s':>16s} {'speed-up':>9s} "
          f"{'cached ms/pos':>14s} {'reference ms/pos':>17s}")
    for attention in ("local_1d", "local_2d"):
        model = build(size, attention, args)
        n = model.layout.n
        seconds, images = time_cached(model, args.batch)
        per_pos_ref = time_reference(model, images, args.reference_steps)
        cached_rate = args.batch / seconds
        reference_rate = args.batch / (per_pos_ref * n)
        print(f"{attention:10s} {cached_rate:13.4f} {reference_rate:16.6f} {cached_rate / reference_rate:8.0f}x "
              f"{1000 * seconds / n:14.3f} {1000 * per_pos_ref:17.1f}")

    sizes = (8, 16) if args.quick else (16, 32, 64)
    print("\ncached sampler scaling (local_1d): linear in pixels = constant ms per position")
    print(f"{'size':>8s} {'positions':>10s} {'seconds/batch':>14s} {'ms/position':>12s}")
    for s in sizes:
        model = build(s, "local_1d", args)
        seconds, _ = time_cached(model, args.batch)
        print(f"{s:>5d}x{s:<2d} {model.layout.n:10d} {seconds:14.2f} {1000 * seconds / model.layout.n:12.3f}")


if __name__ == "__main__":
    main()
