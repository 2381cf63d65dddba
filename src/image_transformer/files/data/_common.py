"""Shared by every format: the data a loader returns, the error it raises, the class names of the known sets, and
the small checks every loader makes (a private module: its names are for the loaders beside it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ...images import parse_size

DATASET_KINDS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "npz", "folder", "celeba")
SLICE_DIR = Path(__file__).resolve().parents[2] / "datasets" / "mnist-slice"

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

BOX = getattr(Image, "Resampling", Image).BOX  # area averaging
PROGRESS_THRESHOLD = 2000  # show a progress bar when decoding more image files than this


class DataError(ValueError):
    """A data set could not be read; the message names the file or folder and the problem."""


@dataclass
class ImageData:
    """Images (uint8, N x H x W x C, C in {1, 2, 3, 4}) with optional int64 class labels."""

    images: np.ndarray
    labels: np.ndarray | None
    num_classes: int | None
    class_names: list[str] | None
    source: str
    # each image's file, relative to the split's folder ("airplane/0001.jpg"), where the data comes from files
    names: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8 or self.images.ndim != 4 \
                or self.images.shape[-1] not in (1, 2, 3, 4):
            shape = getattr(self.images, "shape", None)
            dtype = getattr(self.images, "dtype", type(self.images).__name__)
            raise DataError(f"{self.source}: images must be a uint8 array of shape (N, H, W, 1 to 4), "
                            f"got {dtype} {shape}")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (len(self.images),):
                raise DataError(f"{self.source}: {len(self.images)} images but labels of shape {labels.shape}")
            self.labels = labels.astype(np.int64, copy=False)
        if self.names is not None and len(self.names) != len(self.images):
            raise DataError(f"{self.source}: {len(self.images)} images but {len(self.names)} file names")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        _, h, w, c = self.images.shape
        return (int(h), int(w), int(c))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The images as a uint8 tensor (N, H, W, C) and the labels as int64 (N,) (or None)."""
        images = torch.from_numpy(np.ascontiguousarray(self.images))
        labels = torch.from_numpy(np.asarray(self.labels, dtype=np.int64)) if self.labels is not None else None
        return images, labels

    def subset(self, index: Any) -> "ImageData":
        """A new ImageData with ``images[index]`` (numpy-style: slice, int array, bool mask; an int keeps one)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        names = None if self.names is None else np.asarray(self.names, dtype=object)[index].tolist()
        return ImageData(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            num_classes=self.num_classes,
            class_names=None if self.class_names is None else list(self.class_names),
            source=self.source,
            names=names,
        )


def check_split(split: str, where: Any, allowed: Sequence[str] = ("train", "test")) -> str:
    if split not in allowed:
        raise DataError(f"{where}: unknown split {split!r}; expected one of {', '.join(allowed)}")
    return split


def require_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def size_or_none(value: Any) -> tuple[int, int] | None:
    """``image_size`` as (H, W), or None; a DataError for anything else."""
    if value is None:
        return None
    try:
        return parse_size(value, "image_size", positive=True)
    except ValueError as e:
        raise DataError(str(e)) from None
