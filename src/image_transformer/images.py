"""PNG grids of images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one uint8 array (rows*H', cols*W', C), ``nrow`` images a row."""
    images = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y : y + h, x : x + w] = img
    return grid


# extensions of the formats that write grey and RGB grids
IMAGE_EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF",
                    ".tiff": "TIFF", ".webp": "WEBP"}


def image_format(path: str | Path) -> str:
    """The image format ``path``'s extension asks for; a ValueError naming the path when it names none we write."""
    ext = Path(path).suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        what = f"unknown image extension {ext!r}" if ext else "no image extension"
        raise ValueError(f"{path}: {what}; use .png (or {', '.join(e for e in IMAGE_EXTENSIONS if e != '.png')})")
    return IMAGE_EXTENSIONS[ext]


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None, scale: int = 1,
              padding: int = 2) -> Path:
    """Write a PNG grid of uint8 images (N, H, W, C); ``scale`` enlarges pixels (nearest neighbour)."""
    grid = make_grid(images, nrow=nrow, padding=padding)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write one uint8 image (H, W, C) exactly as it is (no grid, no scaling), in the format of its extension."""
    image = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (H, W, C), got {image.dtype} {image.shape}")
    path = Path(path)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, format=image_format(path))
    return path


def plot_curve(metrics_path: str | Path, path: str | Path) -> Path:
    """Training curve from a ``metrics.jsonl`` log: train and eval bits/dim against the step."""
    import json

    import matplotlib

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
