"""Training and sampling on a GPU, against that GPU's own matmul ceilings, from one process in one run.

    python benchmarks/gpu.py                              # the table (rows stop at --budget-minutes, 4 by default)
    python benchmarks/gpu.py --markdown gpu.md            # the same, also as markdown for docs/results/gpu.md
    python benchmarks/gpu.py --device cpu --quick         # tiny sizes on the CPU: a smoke run of this script

What it measures, each figure ``--repeats`` times (median [min - max]):

- the matmul ceilings: TFLOP/s of square ``--matmul-size`` products of random bf16 and fp32 matrices (fp32 as torch
  runs it by default, without TF32), timed with CUDA events after a warm-up;
- training, for the paper presets at their batch: the trainer's own step (forward, backward, Adam, on random images)
  in fp32, bf16 autocast and bf16 autocast + torch.compile: seconds per step, images/s, TFLOP/s and the share of the
  ceiling of the precision it runs in (FLOPs counted by torch's FlopCounterMode at batch 1 with attention on its
  math path, masked entries included, times the batch), which attention kernel ran (the CUDA kernels a profiled
  step launched: flash, memory-efficient, cuDNN or math), the peak GPU memory and the compile time;
- sampling, for the same presets in fp32 at batch 1, 16 and 256: milliseconds per position of the cached sampler,
  eager against CUDA graphs, over a window of steady-state steps (after the first ``--skip`` steps, where the 1D
  memory is full), the images/s that makes, the ratio of sampling the batch (ms/pos x positions) to one parallel
  forward pass (``log_prob``) over the same batch, and the one-off seconds to capture the graph.

Rows that run out of GPU memory say so; rows past ``--budget-minutes`` are skipped and say so.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from image_transformer import ImageTransformer
from image_transformer.training.config import TrainConfig
from image_transformer.training.trainer import NegLogLikelihood, Trainer
from image_transformer.zoo import preset

# (preset, training batch): the paper's 1D presets; imagenet64 has 4x the positions of an image, so 1/4 the batch
PRESETS = [("cifar10-1d-cat", 64), ("cifar10-1d-dmol", 64), ("imagenet64-1d-cat", 16)]
QUICK = [("cifar10-1d-cat-tiny", 2), ("cifar10-1d-dmol-tiny", 2)]
# --quick also shrinks the images to 8x8: a smoke run of the script, not a measurement, and on a CPU without bf16
# kernels a 32x32 bf16 step takes seconds
SIZE: dict[str, Any] = {}
MODES = [("fp32", False), ("bf16", False), ("bf16", True)]
TRAIN_SHARE, GRAPH_SPEEDUP, BATCH_GAIN = 0.35, 3.0, 50.0  # the targets this run is read against


class _Done(Exception):
    pass


def med(xs: list[float], spec: str = ".3g") -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:{spec}}"
    return f"{statistics.median(xs):{spec}} [{min(xs):{spec}}-{max(xs):{spec}}]"


def failure(e: Exception) -> str:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "out of GPU memory"
    print(f"    {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    return f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call, by CUDA events on a GPU (the host clock elsewhere)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_tflops(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> list[float]:
    g = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    out = []
    for _ in range(repeats):
        s = timed(lambda: [a @ b for _ in range(10)], device)
        out.append(10 * 2 * n**3 / s / 1e12)
    return out


def driver_version() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----- training -------------------------------------------------------------------------------------------
def make_trainer(name: str, batch: int, precision: str, compile: bool, device: torch.device, folder: str
                 ) -> Trainer:
    torch.manual_seed(0)
    model = ImageTransformer(preset(name, **SIZE)).to(device)
    images = torch.randint(0, 256, (max(4 * batch, 64), *model.image_shape), dtype=torch.uint8)
    cfg = TrainConfig(steps=10**9, batch_size=batch, precision=precision, warmup=10, checkpoint_every=10**9)
    trainer = Trainer(model, cfg, folder, images, None, progress=False, compile=compile)
    model.train()
    return trainer


def flops_per_image(name: str, device: torch.device) -> int:
    """FLOPs of one training image's forward and backward pass, attention on its math path (FlopCounterMode)."""
    torch.manual_seed(0)
    model = ImageTransformer(preset(name, **SIZE)).to(device).train()
    x = torch.randint(0, 256, (1, *model.image_shape), dtype=torch.uint8, device=device)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        NegLogLikelihood(model)(x).backward()
    return counter.get_total_flops()


def attention_kernels(trainer: Trainer) -> str:
    """Which attention implementation the CUDA kernels of one profiled training step belong to."""
    if trainer.device.type != "cuda":
        return "cpu"
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        trainer.train_step()
        sync(trainer.device)
    names = {e.key.lower() for e in prof.key_averages()}
    found = [label for label, keys in (("flash", ("flash",)), ("mem-efficient", ("fmha", "efficient", "mem_eff")),
                                       ("cudnn", ("cudnn_fused", "cudnn_attn", "sdpa_cudnn")))
             if any(k in n for n in names for k in keys)]
    return "+".join(found) or "math"


def bench_training(name: str, batch: int, precision: str, compile: bool, device: torch.device, steps: int,
                   flops: int) -> dict[str, Any]:
    row: dict[str, Any] = {"preset": name, "batch": batch, "precision": precision, "compile": compile}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            trainer = make_trainer(name, batch, precision, compile, device, tmp)
            t0 = time.perf_counter()
            trainer.train_step()  # compiles, if it does
            sync(device)
            row["first_step_s"] = time.perf_counter() - t0
            trainer.train_step()
            times = [timed(trainer.train_step, device) for _ in range(steps)]
            row["attention"] = attention_kernels(trainer)
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            s = statistics.median(times)
            row.update(step_s=times, img_s=batch / s, tflops=flops * batch / s / 1e12)
        except Exception as e:  # a row that fails says why; the others still run
            row["error"] = failure(e)
        finally:
            trainer = None
            if compile:
                torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return row


# ----- sampling -------------------------------------------------------------------------------------------
def step_ms(model: ImageTransformer, batch: int, graphs: bool, skip: int, window: int) -> float:
    """Milliseconds per step over steps [skip, skip + window) of a real ``sample`` call (timed from its hook)."""
    device = model.head.weight.device
    stamps: dict[str, float] = {}

    def hook(values: torch.Tensor, t: int) -> None:
        if t == skip:
            sync(device)
            stamps["start"] = time.perf_counter()
        elif t == skip + window:
            sync(device)
            stamps["end"] = time.perf_counter()
            raise _Done

    try:
        model.sample(batch, generator=torch.Generator(device).manual_seed(0), on_step=hook, graphs=graphs)
    except _Done:
        pass
    return 1000 * (stamps["end"] - stamps["start"]) / window


def bench_sampling(name: str, batch: int, device: torch.device, repeats: int, skip: int, window: int
                   ) -> dict[str, Any]:
    row: dict[str, Any] = {"preset": name, "batch": batch}
    torch.manual_seed(0)
    model = ImageTransformer(preset(name, **SIZE)).to(device).eval()
    n = model.layout.n
    skip, window = min(skip, n - window - 1), min(window, n - 1)
    modes = [("eager", False)] + ([("graphs", True)] if device.type == "cuda" else [])
    for label, graphs in modes:
        try:
            if graphs:  # the one-off capture: the first call of this batch size
                t0 = time.perf_counter()
                step_ms(model, batch, True, 0, 1)
                row["capture_s"] = time.perf_counter() - t0
            row[label] = [step_ms(model, batch, graphs, skip, window) for _ in range(repeats)]
        except Exception as e:
            row[label + "_error"] = failure(e)
        model.__dict__.pop("_static_samplers", None)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    try:
        x = torch.randint(0, 256, (batch, *model.image_shape), dtype=torch.uint8, device=device)
        with torch.no_grad():
            model.log_prob(x)
            row["forward_s"] = [timed(lambda: model.log_prob(x), device) for _ in range(repeats)]
    except Exception as e:
        row["forward_error"] = failure(e)
    row["positions"] = n
    model.__dict__.pop("_static_samplers", None)

    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ----- the run --------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per row")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256], help="sampling batch sizes")
    p.add_argument("--skip", type=int, default=300, help="sampling steps before the timed window")
    p.add_argument("--window", type=int, default=64, help="sampling steps timed per figure")
    p.add_argument("--matmul-size", type=int, default=8192)
    p.add_argument("--budget-minutes", type=float, default=4.0, help="skip the rows that would start after this")
    p.add_argument("--no-compile", action="store_true", help="leave out the bf16 + compile rows")
    p.add_argument("--markdown", help="also write the tables as markdown to this file")
    p.add_argument("--quick", action="store_true", help="tiny presets and sizes: a smoke run")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():  # one line, not torch's traceback from deep inside
        print(f"benchmarks/gpu.py: no CUDA GPU on this machine (torch {torch.__version__}, CUDA "
              f"{torch.version.cuda or 'not built in'}); --device cpu --quick runs its smoke test on the CPU",
              file=sys.stderr)
        sys.exit(2)
    presets = PRESETS
    if args.quick:
        presets, args.repeats, args.steps, args.batches = QUICK, 2, 2, [1, 4]
        SIZE["image_size"] = (8, 8)
        args.skip, args.window, args.matmul_size = 32, 16, 512
    started = time.perf_counter()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"{datetime.date.today()}, {gpu}, driver {driver_version() if device.type == 'cuda' else '-'}, torch "
              f"{torch.__version__} (CUDA {torch.version.cuda}); command: python {' '.join(sys.argv)}")
    print(header, flush=True)

    def over(seconds_needed: float) -> bool:
        """Whether a row that takes about this long would end past the budget."""
        return time.perf_counter() - started + seconds_needed > 60 * args.budget_minutes

    ceiling = {"fp32": matmul_tflops(args.matmul_size, torch.float32, device, args.repeats),
               "bf16": matmul_tflops(args.matmul_size, torch.bfloat16, device, args.repeats)}
    print(f"matmul ceiling ({args.matmul_size}^3, random data): fp32 {med(ceiling['fp32'])} TFLOP/s, "
          f"bf16 {med(ceiling['bf16'])} TFLOP/s", flush=True)
    training: list[dict[str, Any]] = []
    sampling: list[dict[str, Any]] = []

    def report() -> str:
        text = render(header, args, ceiling, training, sampling, time.perf_counter() - started)
        if args.markdown:  # rewritten after every row: a run stopped from outside keeps what it measured
            with open(args.markdown, "w") as f:
                f.write(text + "\n")
        return text

    modes = [m for m in MODES if not (m[1] and args.no_compile)]
    flops = {name: flops_per_image(name, device) for name, _ in presets}
    for compiled in (False, True):  # the compiled rows last: they take longest to start
        for name, batch in presets:
            for precision, compile in modes:
                if compile != compiled:
                    continue
                if over(90 if compile else 20):
                    training.append({"preset": name, "batch": batch, "precision": precision, "compile": compile,
                                     "error": "skipped: over the time budget"})
                    continue
                row = bench_training(name, batch, precision, compile, device, args.steps, flops[name])
                training.append(row)
                print(f"  trained {name} {precision}{' compile' if compile else ''}: "
                      f"{row.get('error') or med(row['step_s']) + ' s/step'}", flush=True)
                report()
        if not compiled:
            for name, _ in presets:
                for batch in args.batches:
                    if over(15):
                        sampling.append({"preset": name, "batch": batch, "error": "skipped: over the time budget"})
                        continue
                    row = bench_sampling(name, batch, device, args.repeats, args.skip, args.window)
                    sampling.append(row)
                    print(f"  sampled {name} batch {batch}: eager {med(row.get('eager', []))}, graphs "
                          f"{med(row.get('graphs', []))} ms/pos", flush=True)
                    report()
    print("\n" + report())


def render(header: str, args: argparse.Namespace, ceiling: dict[str, list[float]], training: list[dict[str, Any]],
           sampling: list[dict[str, Any]], seconds: float) -> str:
    """The tables, as markdown."""
    lines = [f"Measured {header}", "",
             f"Matmul ceiling ({args.matmul_size}x{args.matmul_size}x{args.matmul_size}, random data, median [min-max] "
             f"of {args.repeats}): fp32 {med(ceiling['fp32'])} TFLOP/s, bf16 {med(ceiling['bf16'])} TFLOP/s.", "",
             "Training (the trainer's step: forward, backward, Adam; random images):", "",
             "| preset | batch | precision | s/step | img/s | TFLOP/s | of ceiling | attention | peak GiB "
             "| first step s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in training:
        label = r["precision"] + (" + compile" if r["compile"] else "")
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['batch']} | {label} | {r['error']} | | | | | | |")
            continue
        share = r["tflops"] / statistics.median(ceiling[r["precision"]])
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        lines.append(f"| {r['preset']} | {r['batch']} | {label} | {med(r['step_s'])} | {r['img_s']:.1f} | "
                     f"{r['tflops']:.1f} | {share:.0%} | {r['attention']} | {peak} | {r['first_step_s']:.1f} |")
    lines += ["", f"Sampling (fp32, random weights; ms per position over steps {args.skip}..{args.skip + args.window} "
                  f"of a real `sample` call; sample/forward = ms/pos x positions over one parallel `log_prob` of the "
                  f"same batch, for the faster path):", "",
              "| preset | batch | eager ms/pos | graphs ms/pos | graphs speed-up | img/s eager | img/s graphs | "
              "sample/forward | capture s |",
              "|---|---|---|---|---|---|---|---|---|"]
    rates: dict[tuple[str, int], float] = {}  # images/s of the faster path
    for r in sampling:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['batch']} | {r['error']} | | | | | | |")
            continue
        n, b = r["positions"], r["batch"]
        eager = statistics.median(r["eager"]) if "eager" in r else None
        graph = statistics.median(r["graphs"]) if "graphs" in r else None
        best = min(x for x in (eager, graph) if x is not None) if (eager or graph) else None
        if best is not None:
            rates[r["preset"], b] = b / (best * n / 1000)
        cell = lambda key: med(r[key]) if key in r else r.get(key + "_error", "-")  # noqa: E731
        img = lambda ms: f"{b / (ms * n / 1000):.3g}" if ms else "-"  # noqa: E731
        ratio = (f"{best * n / 1000 / statistics.median(r['forward_s']):.0f}x" if best and "forward_s" in r
                 else "-")
        lines.append(f"| {r['preset']} | {b} | {cell('eager')} | {cell('graphs')} | "
                     f"{f'{eager / graph:.1f}x' if eager and graph else '-'} | {img(eager)} | {img(graph)} | "
                     f"{ratio} | {r.get('capture_s', 0):.2f} |")
    first = args.batches[0]
    lines += ["", f"Images/s of each batch over batch {first}, the faster path of each: " + ", ".join(
        f"{name} b{b} {rate / rates[name, first]:.0f}x" for (name, b), rate in rates.items()
        if (name, first) in rates and b != first), ""]
    lines += targets(ceiling, training, sampling, rates, args.batches)
    lines += ["", f"Whole run so far: {seconds / 60:.1f} minutes."]
    return "\n".join(lines)


def targets(ceiling: dict[str, list[float]], training: list[dict[str, Any]], sampling: list[dict[str, Any]],
            rates: dict[tuple[str, int], float], batches: list[int]) -> list[str]:
    """The targets, each with what this run measured and whether it met it: bf16 training of the first preset at
    TRAIN_SHARE of the bf16 ceiling; sampling at the smallest batch GRAPH_SPEEDUP x faster per position with graphs
    than eager; the largest batch BATCH_GAIN x the images/s of the smallest (the faster path of each)."""
    def verdict(value: float | None, target: float) -> str:
        return "not measured" if value is None else ("met" if value >= target else "**not met**")

    lines = ["Targets:", ""]
    name = training[0]["preset"] if training else "-"
    for r in training:
        if r["preset"] == name and r["precision"] == "bf16":
            share = None if "error" in r else r["tflops"] / statistics.median(ceiling["bf16"])
            label = "bf16 + compile" if r["compile"] else "bf16"
            lines.append(f"- {label} training of {name} at batch {r['batch']}: "
                         f"{'-' if share is None else f'{share:.0%}'} of the bf16 ceiling (target "
                         f"{TRAIN_SHARE:.0%}): {verdict(share, TRAIN_SHARE)}")
    small, large = min(batches), max(batches)
    for r in sampling:
        if r["batch"] == small:
            speedup = (statistics.median(r["eager"]) / statistics.median(r["graphs"])
                       if "eager" in r and "graphs" in r else None)
            lines.append(f"- sampling {r['preset']} at batch {small}, graphs over eager per position: "
                         f"{'-' if speedup is None else f'{speedup:.1f}x'} (target {GRAPH_SPEEDUP:g}x): "
                         f"{verdict(speedup, GRAPH_SPEEDUP)}")
            if large == small:
                continue
            gain = (rates[r["preset"], large] / rates[r["preset"], small]
                    if (r["preset"], large) in rates and (r["preset"], small) in rates else None)
            lines.append(f"- sampling {r['preset']}, images/s at batch {large} over batch {small}: "
                         f"{'-' if gain is None else f'{gain:.0f}x'} (target {BATCH_GAIN:g}x): "
                         f"{verdict(gain, BATCH_GAIN)}")
    return lines


if __name__ == "__main__":
    main()
