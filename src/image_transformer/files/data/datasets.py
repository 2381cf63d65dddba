"""torch Datasets over :class:`ImageData`, for a user's own ``DataLoader``: images and labels, or super-resolution
pairs."""

from __future__ import annotations

import numpy as np
import torch

from ...images import area_downsample, as_tensor, check_images, parse_size
from ._common import ImageData


def to_tensor_dataset(data: ImageData) -> torch.utils.data.Dataset:
    """A torch Dataset of (uint8 image tensor (H, W, C), int64 label tensor; -1 when there are no labels)."""
    images = np.ascontiguousarray(data.images)
    if not images.flags.writeable:
        images = images.copy()
    labels = (torch.from_numpy(np.ascontiguousarray(data.labels, dtype=np.int64)) if data.labels is not None
              else torch.full((len(images),), -1, dtype=torch.int64))
    return torch.utils.data.TensorDataset(torch.from_numpy(images), labels)


def make_pairs(images: torch.Tensor, input_size: tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) from uint8 images (B, H, W, C): inputs = ``area_downsample(images, input_size)``.

    ``targets`` is ``images`` itself (as uint8); H and W must be multiples of ``input_size``.
    """
    images = as_tensor(images, "images")
    inputs = area_downsample(images, input_size)
    return inputs, images.to(torch.uint8)


class SuperResolutionPairs(torch.utils.data.Dataset):
    """(low-resolution input uint8 (h, w, C), target uint8 (H, W, C)) pairs, downsampled on the fly.

    ``images`` is a uint8 tensor or array (N, H, W, C), or a Dataset whose items are images (H, W, C) or
    tuples whose first element is the image (e.g. :func:`to_tensor_dataset`). Inputs are made by
    :func:`~image_transformer.images.area_downsample` to ``input_size``.
    """

    def __init__(self, images: torch.Tensor | np.ndarray | torch.utils.data.Dataset,
                 input_size: tuple[int, int] | int):
        self.input_size = parse_size(input_size, "input_size", positive=True)
        if isinstance(images, (torch.Tensor, np.ndarray)):
            images = as_tensor(images, "images")
            area_downsample(images[:1], self.input_size)  # refuses sizes that are not multiples now
            check_images(images, tuple(images.shape[1:]))
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.images[index]
        if isinstance(item, (tuple, list)):
            item = item[0]
        image = as_tensor(item, f"item {index}")
        if image.dim() != 3:
            raise ValueError(f"item {index}: expected an image (H, W, C), got shape {tuple(image.shape)}")
        inputs, target = make_pairs(image[None], self.input_size)
        return inputs[0], target[0]
