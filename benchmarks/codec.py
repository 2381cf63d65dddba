"""The model as a lossless codec, side by side with PNG, WebP and JPEG XL on the same images.

    python benchmarks/codec.py runs/mnist-full --data mnist:../shared/data/mnist
    python benchmarks/codec.py runs/cifar-holdout --data npz:/tmp/cifar-holdout   # tools/make_cifar_holdout.py

For the images of a split (``--limit`` for the first N), in one run:

- ours: ``codec.encode`` of all images (batches of ``--batch-size``), then ``codec.decode``, checked exact;
  bits/dim of the whole file and of the payload alone, and the payload's overhead over the model's own
  -log2 p of the same images (``log_prob``, the parallel pass).
- classical lossless codecs through Pillow: PNG (optimize=True), WebP lossless (method 6) and JPEG XL
  lossless (the ``pillow-jxl-plugin`` package from PyPI, effort 9) when it is installed; each as one file
  per image (summed) and as one mosaic holding all the images (sparing them their per-file headers).
  Raw is 8 bits/dim.
- speed: images/s and raw KB/s of encode and decode at batch 1 and at batch ``--batch-size``, and sampling the same
  number of images from the same model (the cached step the coder runs, without the coding), with the ratio of
  coding to sampling time; median [min-max] over ``--repeats``, taken round-robin on ``--speed-images`` images.
- ``--format-version 1`` codes with the older container and tables (the whole likelihood for every candidate value)
  for a before/after comparison.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from image_transformer import codec
from image_transformer.files.data import load_dataset
from image_transformer.files.image_files import LOSSLESS_FORMATS, lossless_bytes, lossless_formats
from image_transformer.files.pretrained import load_model
from image_transformer.tasks import evaluate


def encoded_size(image: np.ndarray, fmt: str) -> int:
    return len(lossless_bytes(image, fmt))


def mosaic(images: np.ndarray) -> np.ndarray:
    """All images tiled into one near-square image, no padding."""
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * h : (r + 1) * h, q * w : (q + 1) * w] = img
    return grid


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run folder, checkpoint or pretrained folder")
    p.add_argument("--data", required=True, help="KIND:PATH")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="first N images (0: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--speed-images", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-speed", action="store_true", help="only the compression table")
    p.add_argument("--speed-only", action="store_true", help="only the speed table")
    p.add_argument("--format-version", type=int, default=codec.FORMAT_VERSION, choices=[1, 2],
                   help="the stream format to write (1: the older tables and JSON header)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    data = load_dataset(args.data, args.split)
    images = torch.from_numpy(np.ascontiguousarray(data.images))
    labels = torch.from_numpy(np.asarray(data.labels, np.int64)) if data.labels is not None else None
    if args.limit:
        images = images[: args.limit]
        labels = labels[: args.limit] if labels is not None else None
    if not model.config.num_classes:
        labels = None
    print(f"{len(images)} images of {tuple(images.shape[1:])} from {data.source}; model {args.model} "
          f"({model.num_parameters():,} parameters, {model.config.attention}, {model.config.distribution}); "
          f"torch {torch.__version__}, {args.threads} threads")

    if not args.speed_only:
        compression_table(model, images, labels, args)
    if not args.skip_speed:
        speed_table(model, images, labels, args)


def compression_table(model, images: torch.Tensor, labels: torch.Tensor | None, args: argparse.Namespace) -> None:
    n, dims = len(images), images.numel()
    model_bpd = evaluate(model, images, labels, batch_size=args.batch_size)["bits_per_dim"]
    start = time.perf_counter()
    stream = codec.encode(model, images, labels, batch_size=args.batch_size, progress=True,
                          format_version=args.format_version)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded, got = codec.decode(stream, model, progress=True)
    decode_s = time.perf_counter() - start
    exact = torch.equal(decoded, images) and (labels is None or torch.equal(got, labels))
    header, payload = codec.read_header(stream)
    payload_bpd = 8 * len(payload) / dims
    print(f"\nours: exact round trip: {exact}; encode {encode_s:.1f} s, decode {decode_s:.1f} s "
          f"(batch {args.batch_size}, {n / encode_s:.2f} / {n / decode_s:.2f} images/s)")
    print(f"model's own -log2 p: {model_bpd:.4f} bits/dim; payload {payload_bpd:.4f} bits/dim "
          f"(overhead {100 * (payload_bpd / model_bpd - 1):+.3f}%); whole file with its "
          f"{len(stream) - len(payload)}-byte header ({100 * (len(stream) - len(payload)) / len(stream):.1f}% of "
          f"the file): {8 * len(stream) / dims:.4f} bits/dim")

    arr = images.numpy()
    formats = lossless_formats()
    print(f"\n{'codec':28s} {'per image':>10s} {'mosaic':>10s}   (bits/dim, same {n} images)")
    print(f"{'raw':28s} {8.0:10.4f} {8.0:10.4f}")
    best = math.inf
    for f in formats:
        per_image = 8 * sum(encoded_size(a, f) for a in arr) / dims
        whole = 8 * encoded_size(mosaic(arr), f) / dims
        best = min(best, per_image, whole)
        print(f"{LOSSLESS_FORMATS[f]:28s} {per_image:10.4f} {whole:10.4f}")
    if "JXL" not in formats:
        print("JPEG XL: not measured (pip install pillow-jxl-plugin)")
    ours = 8 * len(stream) / dims
    print(f"{'ours (whole file)':28s} {ours:10.4f} {ours:10.4f}")
    print(f"ours vs the best classical result: {100 * (1 - ours / best):.1f}% smaller")


def speed_table(model, images: torch.Tensor, labels: torch.Tensor | None, args: argparse.Namespace) -> None:
    n = len(images)
    k = min(args.speed_images, n)
    few = images[: min(4, n)]
    few_labels = labels[: len(few)] if labels is not None else None
    some, some_labels = images[:k], (labels[:k] if labels is not None else None)
    version = args.format_version
    print(f"\nspeed (median [min-max] of {args.repeats}, round-robin; format version {version})")
    for batch, x, y in ((1, few, few_labels), (args.batch_size, some, some_labels)):
        stream = codec.encode(model, x, y, batch_size=batch, format_version=version)
        jobs = {
            "encode": lambda: codec.encode(model, x, y, batch_size=batch, format_version=version),
            "decode": lambda: codec.decode(stream, model),
            # the same images drawn from the model, batch by batch: the cached step without the coding
            "sample": lambda: [model.sample(len(x[i : i + batch]), None if y is None else y[i : i + batch])
                               for i in range(0, len(x), batch)],
        }
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.repeats):
            for name, job in jobs.items():
                times[name] += timed(job, 1)
        kb = x.numel() / 1000
        rates = {name: [len(x) / t for t in ts] for name, ts in times.items()}
        print(f"batch {batch:3d} ({len(x)} images): "
              + "; ".join(f"{name} {fmt(r)} images/s ({fmt([kb / t for t in times[name]])} raw KB/s)"
                          for name, r in rates.items()))
        sample = statistics.median(times["sample"])
        print(f"          coding time / sampling time: encode {statistics.median(times['encode']) / sample:.2f}x, "
              f"decode {statistics.median(times['decode']) / sample:.2f}x")


if __name__ == "__main__":
    main()
