"""What a user asks of a model: each task takes a model and tensors and returns tensors and plain records.

The command line, the demo, ``tools/`` and ``benchmarks/`` call these rather than writing a task again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .files.image_files import save_grid
from .files.pretrained import PretrainedModel
from .images import enlarge
from .metrics import bits_per_dim, consistency, nearest_neighbour_ms_ssim, psnr, spread, ssim
from .nn.superres import SuperResolutionTransformer


# ----- scores ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: PretrainedModel, images: Tensor, condition: Tensor | None = None, batch_size: int = 64,
             progress: bool = False) -> dict[str, float]:
    """Mean bits/dim over ``images`` (uint8 (N, H, W, C)) given ``condition`` (one per image), in eval mode;
    shared out over the processes of a torch.distributed group when there is one."""
    group = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, size = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if group else (0, 1)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mine = torch.arange(rank, len(images), size)  # this process's share
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of bits/dim, count)
    try:
        starts = range(0, len(mine), batch_size)
        for start in tqdm(starts, disable=not progress or rank != 0, desc="eval", leave=False):
            idx = mine[start : start + batch_size]
            x = images[idx].to(device)
            y = condition[idx].to(device) if condition is not None else None
            bpd = bits_per_dim(model.log_prob(x, y))
            total += torch.stack([bpd.double().sum(), torch.tensor(float(len(x)), device=device)])
    finally:
        model.train(was_training)
    if size > 1:
        torch.distributed.all_reduce(total)
    return {"bits_per_dim": float(total[0] / total[1].clamp(min=1)), "num_images": int(total[1])}


# ----- sampling -------------------------------------------------------------------------------------------
def sample_labels(model: PretrainedModel, n: int, label: int | None) -> tuple[Tensor | None, int | None]:
    """Labels for a sample grid: one row per class by default, or all ``label``; and the grid width."""
    num_classes = model.config.num_classes
    if not num_classes:
        if label is not None:
            raise ValueError("--label given but the model is unconditional")
        return None, None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long), None
    per_class = max(1, n // num_classes)
    return torch.arange(num_classes).repeat_interleave(per_class), per_class


# ----- the paper's super-resolution evaluation ----------------------------------------------------------
def superres_report(model: SuperResolutionTransformer, images: Tensor, inputs: Tensor,
                    train_images: Tensor | None, out: Path, num: int, seed: int,
                    temperatures: Sequence[float] = (0.8, 0.9, 1.0), progress: bool = False) -> dict[str, Any]:
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
