"""Figures drawn from numbers with matplotlib: heat maps of per-pixel bits, ROC curves and score histograms of the
out-of-distribution scores, the training curve. matplotlib is imported only when a figure is drawn (it costs a
second).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..metrics import auroc, roc_curve


def _figure(panels: int, size: tuple[float, float]) -> tuple[Any, Any, list[Any]]:
    """A figure of ``panels``, three to a row, drawn with matplotlib's object interface (safe in threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # only when drawing: importing it costs a second
    from matplotlib.figure import Figure

    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), dpi=100)
    canvas = FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    return fig, canvas, axes


def heat_map(values: torch.Tensor | np.ndarray, label: str, title: str = "", size: float = 4.0) -> np.ndarray:
    """A (H, W) array of numbers drawn as a heat map with a colour bar, as a uint8 RGB image (h, w, 3).

    Each value is one block of colour (no smoothing). Drawn with matplotlib's object interface, not pyplot, so
    that threads (a web server's) can draw at once.
    """
    values = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"a heat map needs a (H, W) array, got shape {values.shape}")
    fig, canvas, (ax,) = _figure(1, (size * 1.25, size))
    shown = ax.imshow(values, cmap="inferno", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=ax, label=label)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def plot_roc(curves: dict[str, dict[str, tuple[Any, Any]]], path: str | Path) -> Path:
    """ROC curves: one panel per other set (``curves``: set -> score -> (in scores, out scores)), one line per
    score, its AUROC in the legend."""
    fig, _, axes = _figure(max(1, len(curves)), (4.2, 4.0))
    for ax, (name, scores) in zip(axes, curves.items()):
        for score, (inside, outside) in scores.items():
            fpr, tpr, _ = roc_curve(inside, outside)
            ax.plot(fpr, tpr, label=f"{score} ({auroc(inside, outside):.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
        ax.set_title(f"vs {_short(name)}", fontsize=9)
        ax.set_xlabel("false positive rate (in-distribution flagged)")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_score_histograms(sets: dict[str, dict[str, Any]], scores: Sequence[str], path: str | Path) -> Path:
    """One panel per score, a histogram per set (``sets``: set -> score -> values), the first set's filled."""
    fig, _, axes = _figure(max(1, len(scores)), (4.0, 3.2))
    for ax, score in zip(axes, scores):
        values = {name: np.asarray(table[score], dtype=np.float64) for name, table in sets.items()}
        everything = np.concatenate(list(values.values()))
        lo, hi = np.quantile(everything, [0.001, 0.999]) if len(everything) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 60)
        for i, (name, v) in enumerate(values.items()):
            ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, density=True, alpha=0.5 if i == 0 else 0.9,
                    histtype="stepfilled" if i == 0 else "step", label=_short(name))
        ax.set_title(score, fontsize=9)
        ax.set_xlabel("bits/dim")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def plot_curve(metrics_path: str | Path, path: str | Path) -> Path:
    """Training curve from a ``metrics.jsonl`` log: train and eval bits/dim against the step."""
    import matplotlib  # only when plotting: importing it costs a second

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    train = [(r["step"], r["train_bits_per_dim"]) for r in records if "train_bits_per_dim" in r]
    evals = [(r["step"], r["eval_bits_per_dim"]) for r in records if "eval_bits_per_dim" in r]
    if train:
        ax.plot(*zip(*train), label="train (one batch)", alpha=0.6)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval (held out)")
    values = [v for _, v in train + evals]
    if values:  # the first steps' bits/dim can be 5x the rest: clip them so the slow part stays readable
        top = min(max(values), 2 * float(np.median(values)))
        ax.set_ylim(min(values) * 0.95, top * 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("bits / dim")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
