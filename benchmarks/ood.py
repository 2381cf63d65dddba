"""Out-of-distribution detection with the likelihood: raw bits/dim against the complexity-corrected scores.

    python benchmarks/ood.py --threads 2 --fashion-model runs/fashion-mnist \\
        --cifar folder:/tmp/cifar10-jpeg --celeba celeba:/tmp/celeba-10k

(``tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp``, the same for ``celeba-10k.tar.gz``; without
``--fashion-model`` a Fashion-MNIST model is trained first, ``mnist-cpu`` for ``--train-minutes``.)

In one run, every set ``--limit`` images spread evenly over its test split (the synthetic ones ``--limit`` drawn):

- the shipped ``mnist`` model: MNIST test against Fashion-MNIST test, MNIST rotated a quarter turn, MNIST inverted,
  uniform noise and constant images;
- a Fashion-MNIST model: Fashion-MNIST test against MNIST test (where raw likelihood famously fails: Nalisnick et
  al., 2019), and against noise;
- the shipped colour model ``cifar10-jpeg``: CIFAR-10 test (the JPEG copy it was trained on) against CelebA faces
  (centre crop, 32x32) and noise.

For each pair: AUROC of every score of ``ood.score_images`` (raw bits/dim; minus PNG, WebP, JPEG XL, minus the
best of them), and the typicality test's share of batches of ``--batch-test`` called atypical. Then the speed of
scoring: images/s of the shipped MNIST model's parallel pass (fp32, batch ``--batch-size``), median [min-max]
over ``--repeats``, against this CPU's fp32 matmul ceiling measured in the same run (FLOPs of one image counted
by torch's FlopCounterMode), and each codec's images/s. Last, how far ``--precision bf16`` moves the scores: for
every shipped model, the largest and mean |bf16 - fp32| bits/dim over its test slice and as many noise and constant
images (the figures behind ``ood.BF16_WITHIN``, the bound ``score --help`` promises).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from image_transformer import ood, tasks
from image_transformer.files.image_files import lossless_formats
from image_transformer.files.pretrained import load_model

SCORES = ["bits_per_dim", "minus_png", "minus_webp", "minus_jxl", "minus_best"]


def spread_text(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def train_fashion(data: str, minutes: float, out: Path, threads: int) -> Path:
    from image_transformer.cli import main

    print(f"training a Fashion-MNIST model for {minutes:g} minutes into {out}", flush=True)
    code = main(["train", "--preset", "mnist-cpu", "--data", data, "--out", str(out), "--max-minutes", str(minutes),
                 "--threads", str(threads), "--num-samples", "0", "--quiet", "--overwrite"])
    if code:
        sys.exit(f"training the Fashion-MNIST model failed ({code})")
    return out


def experiment(title: str, model_name: str, inside: str, outside: list[str], args: argparse.Namespace) -> list[str]:
    model = load_model(model_name)
    start = time.perf_counter()
    report = tasks.score(model, inside, outside, limit=args.limit, batch_test=args.batch_test, seed=0,
                         batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - start
    columns = [c for c in SCORES if c in report.scores]
    rows = [f"\n### {title}\n",
            f"model `{model_name}`; in-distribution `{inside}`, {len(report.inside.images)} images, "
            f"mean {float(report.inside.table['bits_per_dim'].mean()):.3f} bits/dim ({seconds:.0f} s)\n",
            "| other set | mean bits/dim | " + " | ".join(f"AUROC {c}" for c in columns)
            + " | typicality: batches flagged |",
            "|---|---|" + "---|" * len(columns) + "---|"]
    separation = report.separation()
    for s in report.outside:
        cells = " | ".join(f"{separation[s.name][c]['auroc']:.3f}" for c in columns)
        flagged = report.flagged.get(s.name)
        rows.append(f"| `{s.name}` | {float(s.table['bits_per_dim'].mean()):.3f} | {cells} | "
                    f"{'-' if flagged is None else f'{flagged:.2f}'} |")
    held = next((v for k, v in report.flagged.items() if k.endswith("(held-out half)")), None)
    if held is not None:
        rows.append(f"\nTypicality test (batches of {args.batch_test}, alpha 0.01): {held:.2f} of the in-distribution "
                    f"held-out half's batches flagged.")
    print("\n".join(rows), flush=True)
    return rows


def speed(args: argparse.Namespace) -> list[str]:
    model = load_model("mnist").eval()
    images = ood.synthetic("noise", args.batch_size, model.image_shape)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        model.log_prob(images[:1])
    flops = counter.get_total_flops()
    rates, fast = [], []
    reference = ood.model_bits(model, images, batch_size=args.batch_size)[0]  # also warms up
    low = ood.model_bits(model, images, batch_size=args.batch_size, precision="bf16")[0]
    for _ in range(args.repeats):  # the two precisions alternate, so that both see the same machine
        for precision, out in (("fp32", rates), ("bf16", fast)):
            start = time.perf_counter()
            ood.model_bits(model, images, batch_size=args.batch_size, precision=precision)
            out.append(args.batch_size / (time.perf_counter() - start))
    n = 1024
    ceilings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b
        ceilings[dtype] = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(10):
                a @ b
            ceilings[dtype].append(10 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    ceiling, bf16_ceiling = ceilings[torch.float32], ceilings[torch.bfloat16]
    achieved = [r * flops / 1e9 for r in rates]
    rows = ["\n### Speed of scoring\n",
            f"shipped `mnist` ({sum(p.numel() for p in model.parameters()):,} parameters, 28x28): one parallel pass, "
            f"fp32, batch {args.batch_size}, {torch.get_num_threads()} threads: **{spread_text(rates)} images/s**; "
            f"{flops / 1e9:.2f} GFLOP an image (FlopCounterMode, attention on its math path), so "
            f"{spread_text(achieved)} GFLOP/s against the fp32 matmul ceiling ({n}^3, same run) of "
            f"{spread_text(ceiling)} GFLOP/s: {statistics.median(achieved) / statistics.median(ceiling):.0%} of it; "
            f"200 images/s would need {200 * flops / 1e9:.0f} GFLOP/s.",
            f"With `--precision bf16`: **{spread_text(fast)} images/s**, against the bf16 matmul ceiling of "
            f"{spread_text(bf16_ceiling)} GFLOP/s "
            f"({statistics.median(fast) * flops / 1e9 / statistics.median(bf16_ceiling):.0%}"
            f" of it); bits/dim within {float((low - reference).abs().max()):.4f} of fp32's on these images.\n"]
    mnist = ood.synthetic("noise", 1, model.image_shape)  # sizes do not matter here, only the time
    from image_transformer.files.data import load_split
    digits = load_split("mnist:" + args.mnist, "test").tensors()[0][:args.codec_images]
    del mnist
    for fmt in lossless_formats():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ood.codec_bits(digits, fmt)
            times.append(len(digits) / (time.perf_counter() - start))
        rows.append(f"- {fmt} on {len(digits)} MNIST digits, {torch.get_num_threads()} threads: "
                    f"{spread_text(times, 0)} images/s")
    print("\n".join(rows), flush=True)
    return rows


def bf16_agreement(args: argparse.Namespace) -> list[str]:
    """|bf16 - fp32| bits/dim of each shipped model's scores, on its test slice and on noise and constant images."""
    from image_transformer.files.folders import read_slice, shipped_folder, shipped_names

    rows = ["\n### bf16 against fp32\n",
            f"`--precision bf16` against fp32, per image, {torch.get_num_threads()} threads, torch {torch.__version__} "
            f"(bf16 matmuls {'native' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'emulated'} on this CPU)\n",
            "| model | images | largest \\|bf16 - fp32\\| bits/dim | mean |", "|---|---|---|---|"]
    worst = 0.0
    for name in shipped_names():
        model = load_model(name).eval()
        part = read_slice(shipped_folder(name))
        held, labels = part["images"], part.get("labels")
        n = len(held)
        for what, images, y in ((f"its test slice ({n})", held, labels),
                                (f"noise ({n})", ood.synthetic("noise", n, model.image_shape), None),
                                (f"constant ({n})", ood.synthetic("constant", n, model.image_shape), None)):
            exact = ood.model_bits(model, images, y)[0]
            fast = ood.model_bits(model, images, y, precision="bf16")[0]
            gap = (fast - exact).abs()
            worst = max(worst, float(gap.max()))
            rows.append(f"| `{name}` | {what} | {float(gap.max()):.4f} | {float(gap.mean()):.4f} |")
    rows.append(f"\nThe largest: {worst:.4f} bits/dim; `ood.BF16_WITHIN` promises {ood.BF16_WITHIN:g}.")
    print("\n".join(rows), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", default="../shared/data/mnist", help="folder of MNIST's idx files")
    p.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist",
                   help="folder of Fashion-MNIST's idx files (Debian: dataset-fashion-mnist)")
    p.add_argument("--fashion-model", help="a Fashion-MNIST model (default: train one)")
    p.add_argument("--train-minutes", type=float, default=10.0, help="minutes to train the Fashion-MNIST model")
    p.add_argument("--cifar", help="CIFAR-10 data spec for the colour model, e.g. folder:/tmp/cifar10-jpeg "
                                   "(no colour rows without it)")
    p.add_argument("--celeba", help="CelebA data spec, e.g. celeba:/tmp/celeba-10k")
    p.add_argument("--limit", type=int, default=1000, help="images per set")
    p.add_argument("--batch-test", type=int, default=16, help="batch size of the typicality test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--codec-images", type=int, default=200, help="digits to time each codec on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], choices=["mnist", "fashion", "colour", "speed", "bf16"])
    p.add_argument("-o", "--output", help="also write the tables (Markdown) here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mnist, fashion = f"mnist:{args.mnist}", f"fashion-mnist:{args.fashion}"
    rows = [f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs visible; "
            f"{args.limit} images a set; codecs {', '.join(lossless_formats())}"]
    print(rows[0], flush=True)
    if "mnist" not in args.skip:
        rows += experiment("MNIST model", "mnist", mnist,
                           [fashion, f"rotated:{mnist}", f"inverted:{mnist}", "noise", "constant"], args)
    if "fashion" not in args.skip:
        model = args.fashion_model or str(train_fashion(fashion, args.train_minutes, Path("runs/ood/fashion-mnist"),
                                                        args.threads))
        rows += experiment("Fashion-MNIST model", model, fashion, [mnist, "noise"], args)
    if "colour" not in args.skip and args.cifar:
        rows += experiment("Colour model", "cifar10-jpeg", args.cifar,
                           [s for s in (args.celeba, "noise", "constant") if s], args)
    if "speed" not in args.skip:
        rows += speed(args)
    if "bf16" not in args.skip:
        rows += bf16_agreement(args)
    if args.output:
        Path(args.output).write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
