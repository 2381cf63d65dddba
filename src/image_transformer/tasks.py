"""What a user asks of a model: each task takes a model and tensors and returns tensors and plain records.

Sample, complete, upscale, compress and decompress (with what the coding cost), score (bits/dim of a split, the
bits of each pixel) and the paper's super-resolution report. The command line, the demo, ``tools/`` and
``benchmarks/`` call these rather than writing a task again; labels are resolved and checked here (the helpers
under "labels") and by the model (``check_labels``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import codec
from .files.image_files import save_grid
from .files.pretrained import PretrainedModel
from .images import enlarge, repeat_image
from .metrics import bits_per_dim, consistency, nearest_neighbour_ms_ssim, psnr, spread, ssim
from .nn.model import ImageTransformer, StepHook
from .nn.superres import SuperResolutionTransformer

TEMPERATURES = (0.8, 0.9, 1.0)  # the paper's super-resolution temperatures (table 6)
GREY = 128  # what the not-yet-known part of an image is shown as


# ----- where a task runs ----------------------------------------------------------------------------------
def world() -> tuple[int, int]:
    """(rank, world size) of this process in its torch.distributed group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, refusing CUDA when this machine has none."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}, "
                         f"CUDA build: {torch.version.cuda or 'none'}); run on the CPU (device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return dev


# ----- bits/dim of a split ------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: PretrainedModel, images: Tensor, condition: Tensor | None = None, batch_size: int = 64,
             progress: bool = False) -> dict[str, float]:
    """Mean bits/dim over ``images`` (uint8 (N, H, W, C)) given ``condition`` (one per image), in eval mode;
    shared out over the processes of a torch.distributed group when there is one."""
    rank, size = world()
    device = next(model.parameters()).device
    mine = torch.arange(rank, len(images), size)  # this process's share
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of bits/dim, count)
    with model.evaluating():
        starts = range(0, len(mine), batch_size)
        for start in tqdm(starts, disable=not progress or rank != 0, desc="eval", leave=False):
            idx = mine[start : start + batch_size]
            x = images[idx].to(device)
            y = condition[idx].to(device) if condition is not None else None
            bpd = bits_per_dim(model.log_prob(x, y))
            total += torch.stack([bpd.double().sum(), torch.tensor(float(len(x)), device=device)])
    if size > 1:
        torch.distributed.all_reduce(total)
    return {"bits_per_dim": float(total[0] / total[1].clamp(min=1)), "num_images": int(total[1])}


# ----- labels and sampling ------------------------------------------------------------------------------------
def sample_labels(model: PretrainedModel, n: int, label: int | None) -> tuple[Tensor | None, int | None]:
    """Labels for a sample grid: one row per class by default, or all ``label``; and the grid width."""
    num_classes = model.config.num_classes
    if not num_classes:
        if label is not None:
            raise ValueError("a class label was given but the model is unconditional")
        return None, None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long), None
    per_class = max(1, n // num_classes)
    return torch.arange(num_classes).repeat_interleave(per_class), per_class


def labels_for(model: PretrainedModel, n: int, label: int | None) -> Tensor | None:
    """``n`` copies of ``label`` for a class-conditional model (which needs one); None for any other model."""
    if not getattr(model.config, "num_classes", 0):
        return None
    if label is None or label < 0:
        raise ValueError(f"the model is class-conditional ({model.config.num_classes} classes): pick a class")
    return sample_labels(model, n, int(label))[0]


def labels_of_images(model: PretrainedModel, count: int, given: Sequence[int] | None) -> Tensor | None:
    """The labels of ``count`` images to code: one given label for all, or one per image; None for an unconditional
    model (which refuses any)."""
    if not getattr(model.config, "num_classes", 0):
        if given:
            raise ValueError("a class label was given but the model is unconditional")
        return None
    if not given:
        raise ValueError("the model is class-conditional: give a class label (one for all images, or one per image)")
    if len(given) not in (1, count):
        raise ValueError(f"give one class label or one per image ({count}), got {len(given)}")
    return torch.tensor(list(given) * (count if len(given) == 1 else 1), dtype=torch.long)


@torch.no_grad()
def sample(model: ImageTransformer, num: int, label: int | None = None, temperature: float = 1.0,
           generator: torch.Generator | None = None, use_cache: bool = True, progress: bool = False,
           on_step: StepHook | None = None) -> tuple[Tensor, int | None]:
    """A sample grid: ``num`` images (a class-conditional model: ``label``, or one row per class), uint8
    (N, H, W, C) on the CPU, and the grid's images per row (None: any)."""
    labels, nrow = sample_labels(model, num, label)
    n = len(labels) if labels is not None else num
    images = model.sample(n, labels=labels, temperature=temperature, generator=generator, use_cache=use_cache,
                          progress=progress, on_step=on_step)
    return images.cpu(), nrow


# ----- completion and super-resolution ------------------------------------------------------------------------
def blank_below(image: Tensor, rows: int) -> Tensor:
    """(H, W, C) with the rows from ``rows`` down in grey: what a completion is given."""
    blanked = image.clone()
    blanked[rows:] = GREY
    return blanked


@torch.no_grad()
def complete(model: ImageTransformer, image: Tensor, rows: int, num: int = 4, labels: Tensor | None = None,
             temperature: float = 1.0, generator: torch.Generator | None = None, progress: bool = False,
             on_step: StepHook | None = None) -> Tensor:
    """Keep the top ``rows`` rows of ``image`` (uint8 (H, W, C)) and sample the rest ``num`` times (``labels``:
    (num,) for a class-conditional model): (num + 2, H, W, C), the input with its unknown part grey, the
    completions, the original."""
    model.known_prefix(rows)  # the allowed row counts, before any work
    completions = model.complete(repeat_image(image, num), rows, labels=labels, temperature=temperature,
                                 generator=generator, progress=progress, on_step=on_step)
    return torch.cat([blank_below(image, rows)[None], completions.cpu(), image[None].cpu()])


@torch.no_grad()
def upscale(model: SuperResolutionTransformer, low: Tensor, num: int = 1, temperature: float = 0.9,
            generator: torch.Generator | None = None, progress: bool = False,
            on_step: StepHook | None = None) -> Tensor:
    """``num`` high-resolution samples (num, H, W, C) for the low-resolution image ``low`` (h, w, C)."""
    return model.sample(repeat_image(low, num), temperature=temperature, generator=generator, progress=progress,
                        on_step=on_step).cpu()


def upscale_row(model: SuperResolutionTransformer, low: Tensor, samples: Tensor,
                original: Tensor | None = None) -> Tensor:
    """A row to show: the input enlarged to the output size, the samples, and the original when there is one."""
    factor = tuple(int(f) for f in model.config.scale)
    row = [enlarge(low, factor)[None], samples]
    return torch.cat(row + ([original[None]] if original is not None else []))


# ----- compression --------------------------------------------------------------------------------------------
@dataclass
class Coded:
    """A compressed stream (or one decoded), its images and labels, the seconds it took, and the coder's own cost:
    -log2 p of every value under the coding tables, per image, which is the model's bits for these images."""

    stream: bytes
    images: Tensor
    labels: Tensor | None
    seconds: float
    bits: Tensor  # (N,) float64

    @property
    def dims(self) -> int:
        return self.images.numel()

    @property
    def model_bits_per_dim(self) -> float:
        return float(self.bits.sum()) / self.dims

    def file_bits_per_dim(self) -> float:
        return 8 * len(self.stream) / self.dims

    def report(self) -> str:
        """The file's size and bits/dim beside the model's own bits/dim for the same images."""
        shape = "x".join(map(str, self.images.shape[1:]))
        return (f"{len(self.stream):,} bytes for {len(self.images)} images of {shape}: "
                f"{self.file_bits_per_dim():.4f} bits/dim (the model's own: {self.model_bits_per_dim:.4f} bits/dim)")


def compress(model: ImageTransformer, images: Tensor, labels: Tensor | None = None, names: list[str] | None = None,
             batch_size: int = 64, progress: bool = False) -> Coded:
    """Code uint8 images (B, H, W, C) (and their labels) with the model's codec."""
    cost = codec.Cost.empty()
    start = time.monotonic()
    stream = codec.encode(model, images, labels, names=names, batch_size=batch_size, progress=progress, cost=cost)
    return Coded(stream, images.cpu(), labels, time.monotonic() - start, cost.per_image())


def decompress(stream: bytes, model: ImageTransformer, progress: bool = False) -> Coded:
    """Decode a stream of :func:`compress` with the model that wrote it."""
    cost = codec.Cost.empty()
    start = time.monotonic()
    images, labels = codec.decode(stream, model, progress=progress, cost=cost)
    return Coded(stream, images, labels, time.monotonic() - start, cost.per_image())


# ----- scores -------------------------------------------------------------------------------------------------
@torch.no_grad()
def likelihood(model: PretrainedModel, image: Tensor, labels: Tensor | None = None) -> tuple[float, Tensor]:
    """How well the model predicts ``image`` (uint8 (H, W, C)): its bits/dim, and the bits of each pixel (the sum
    over its channels of -log2 p of each sub-pixel given every earlier one), float (H, W). A super-resolution
    model is scored given the image's own area-downsampled version; a class-conditional one given ``labels`` (1,)."""
    images = image[None]
    condition = model.condition_for(images, labels)
    log_prob = model.log_prob(images, condition).cpu()  # (1, H, W, C) nats
    bits = -log_prob[0].double().sum(-1) / math.log(2.0)
    return float(bits_per_dim(log_prob)[0]), bits


# ----- the paper's super-resolution evaluation ----------------------------------------------------------
def superres_report(model: SuperResolutionTransformer, images: Tensor, inputs: Tensor,
                    train_images: Tensor | None, out: Path, num: int, seed: int,
                    temperatures: Sequence[float] = TEMPERATURES, progress: bool = False) -> dict[str, Any]:
    """Samples for ``num`` held-out inputs (spread over the split) at each temperature; the paper's metrics.

    Writes ``superres.png`` (rows: input enlarged, a sample per temperature, original; as the paper's
    table 6) and ``superres.json``. Consistency, in 0..255 intensity units: ``consistency_l2_bicubic`` is the
    paper's, the L2 distance between the low-resolution input and the bicubic-downsampled sample;
    ``consistency_area_rmse`` is ours, the RMS difference to the area-downsampled sample (the downsampling that
    made the inputs); PSNR (dB) and SSIM compare each sample with
    its original; the nearest-neighbour check finds, for each sample, the training image whose
    downsampled version is closest to the sample's downsampled version and reports their MS-SSIM.
    """
    idx = spread(len(images), num)
    originals, lows = images[idx], inputs[idx]
    report: dict[str, Any] = {"num_samples": len(idx), "temperatures": {}}
    columns = [enlarge(lows, tuple(int(f) for f in model.config.scale))]  # inputs enlarged for display
    for t in temperatures:
        samples = model.sample(lows, temperature=t, generator=torch.Generator().manual_seed(seed),
                               progress=progress).cpu()
        agreement = consistency(samples, lows)
        entry = {
            # the paper's consistency, and ours beside it (see metrics.consistency)
            "consistency_l2_bicubic": float(agreement["l2_bicubic"].mean()),
            "consistency_area_rmse": float(agreement["rmse"].mean()),
            "psnr_db": float(psnr(samples, originals).mean()),
            "ssim": float(ssim(samples, originals).mean()),
        }
        if train_images is not None:
            _, nn_ms_ssim = nearest_neighbour_ms_ssim(samples, train_images, model.config.input_size)
            entry["nearest_train_ms_ssim"] = float(nn_ms_ssim.mean())
        report["temperatures"][str(t)] = entry
        columns.append(samples)
    columns.append(originals)
    grid = torch.stack(columns, 1).flatten(0, 1)  # row per input: input, samples..., original
    report["grid"] = str(save_grid(grid, out / "superres.png", nrow=len(columns), scale=3))
    (out / "superres.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_superres_report(report: dict[str, Any]) -> str:
    lines = [f"super-resolution on {report['num_samples']} held-out images (grid: {report['grid']}):"]
    for t, e in report["temperatures"].items():
        nn_text = f", nearest-train MS-SSIM {e['nearest_train_ms_ssim']:.3f}" if "nearest_train_ms_ssim" in e else ""
        lines.append(f"  T={t}: consistency (paper's: L2 to the bicubic downsampling) {e['consistency_l2_bicubic']:.1f}, "
                     f"(ours: area RMSE) {e['consistency_area_rmse']:.2f}/255, PSNR {e['psnr_db']:.2f} dB, "
                     f"SSIM {e['ssim']:.3f}{nn_text}")
    return "\n".join(lines)
