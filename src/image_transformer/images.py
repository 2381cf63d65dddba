"""uint8 images as tensors, the type every layer passes: their sizes, channels, checks and resampling.

Images are uint8 tensors (B, H, W, C) (or numpy arrays of that layout), C = 1 (grey), 2 (grey + alpha), 3 (RGB)
or 4 (RGBA). Reading and writing image files is :mod:`image_transformer.files.image_files`'s.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

CHANNEL_NAMES = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}
HALF_RANGE = 127.5  # intensities 0..255 <-> [-1, 1], as the logistic mixture and the pixel input read them


def to_unit(values: Tensor, dtype: torch.dtype) -> Tensor:
    """Intensities 0..255 (any dtype) -> [-1, 1] in ``dtype``."""
    return values.to(dtype) / HALF_RANGE - 1.0


def from_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> the nearest intensity 0..255 (long), clipped."""
    return torch.round((x + 1.0) * HALF_RANGE).clamp(0, 255).long()


def parse_size(value: Any, name: str = "size", positive: bool = False) -> tuple[int, int]:
    """(H, W) from an int (a square), a pair of ints, or text "HxW" ("8" is 8x8).

    Raises a ValueError naming ``name``; with ``positive``, sizes below 1 are refused too.
    """
    if isinstance(value, str):
        try:
            parts = [int(p) for p in value.lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise ValueError(f"expected ROWSxCOLS such as 8x16 (or one number for a square), got {value!r}")
        value = (parts[0], parts[-1])
    if isinstance(value, numbers.Integral):
        value = (value, value)
    try:
        h, w = value
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if positive and (h < 1 or w < 1):
        raise ValueError(f"{name} must be positive, got {h}x{w}")
    return (h, w)


# ----- checks ------------------------------------------------------------------------------------------------
def as_tensor(images: Any, name: str) -> Tensor:
    """A torch tensor of real numbers from a tensor or numpy array; a ValueError naming ``name`` otherwise."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (or numpy array), got {type(images).__name__}")
    if images.dtype.is_complex or images.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {images.dtype}")
    return images


def check_images(images: Tensor, shape: tuple[int, int, int], name: str = "images") -> None:
    """Raise ValueError unless ``images`` is an integer tensor (B, H, W, C) with values in [0, 255]."""
    h, w, c = shape
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of dtype uint8, got {type(images).__name__}")
    if images.dtype.is_floating_point or images.dtype.is_complex or images.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers in [0, 255] (dtype uint8), got dtype {images.dtype}")
    if images.dim() != 4 or tuple(images.shape[1:]) != (h, w, c):
        raise ValueError(f"{name} must have shape (B, {h}, {w}, {c}), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and images.numel() and (images.min() < 0 or images.max() > 255):
        raise ValueError(
            f"{name} values must be in [0, 255], got range [{int(images.min())}, {int(images.max())}]"
        )


# ----- area (box) downsampling -------------------------------------------------------------------------------
def _blocks(images: Tensor, size: Any) -> tuple[int, int, int, int]:
    """(h, w, fh, fw): the target size and the (fh, fw) pixel blocks that each target pixel averages."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, H, W, C), got {tuple(images.shape)}")
    h, w = parse_size(size, positive=True)
    H, W = images.shape[1], images.shape[2]
    if H % h or W % w:
        raise ValueError(f"images of size {H}x{W} cannot be area-downsampled to {h}x{w}: "
                         f"the image size must be a multiple of the target size")
    return h, w, H // h, W // w


def area_downsample_float(images: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Box (area) averaging without rounding: (B, H, W, C) -> float64 (B, h, w, C).

    Each output pixel is the mean of the (H/h) x (W/w) block it covers; H and W must be multiples of h and w.
    Any real dtype is accepted (values are not range-checked).
    """
    images = as_tensor(images, "images")
    h, w, fh, fw = _blocks(images, size)
    b, _, _, c = images.shape
    return images.double().reshape(b, h, fh, w, fw, c).mean(dim=(2, 4))


def bicubic_downsample_float(images: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Bicubic downsampling without rounding or clipping: (B, H, W, C) -> float64 (B, h, w, C).

    The anti-aliased bicubic filter (Keys, a = -0.5, widened by the scale factor: PIL's ``Image.BICUBIC`` resize,
    which it matches to float precision) of ``torch.nn.functional.interpolate(..., antialias=True)``. Any size.
    """
    images = as_tensor(images, "images")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, H, W, C), got {tuple(images.shape)}")
    h, w = parse_size(size, positive=True)
    x = images.double().permute(0, 3, 1, 2)  # (B, C, H, W)
    out = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return out.permute(0, 2, 3, 1)


def area_downsample(images: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Box (area) averaging of 8-bit images: uint8 (B, H, W, C) -> uint8 (B, h, w, C).

    Each output pixel is the mean of the (H/h) x (W/w) block it covers, rounded to the nearest integer
    (exact integer arithmetic; halves round up). H and W must be multiples of h and w (ValueError otherwise).
    Any integer dtype with values in [0, 255] is accepted.
    """
    images = as_tensor(images, "images")
    h, w, fh, fw = _blocks(images, size)
    check_images(images, tuple(images.shape[1:]))
    b, _, _, c = images.shape
    total = images.long().reshape(b, h, fh, w, fw, c).sum(dim=(2, 4))
    area = fh * fw
    return ((2 * total + area) // (2 * area)).to(torch.uint8)


def enlarge(images: Tensor, factor: tuple[int, int]) -> Tensor:
    """Nearest-neighbour upsampling for display: (..., h, w, C) -> (..., h * fy, w * fx, C)."""
    fy, fx = factor
    return images.repeat_interleave(fy, -3).repeat_interleave(fx, -2)


def repeat_image(image: Tensor, n: int) -> Tensor:
    """(H, W, C) -> a batch of ``n`` copies (n, H, W, C)."""
    return image[None].expand(n, -1, -1, -1).contiguous()


