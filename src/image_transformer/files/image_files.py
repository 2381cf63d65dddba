"""Image files: reading any Pillow image into a model's shape (one 16-bit rule), writing images and grids, the
lossless formats the codec is compared with. Figures drawn from numbers are in :mod:`.plots`.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..images import CHANNEL_NAMES

PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # channels -> Pillow's mode


def to_pil(array: np.ndarray) -> Image.Image:
    """A uint8 (H, W, C) array as a Pillow image of the mode of its channels."""
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array, PIL_MODES[array.shape[-1]])


# ----- Pillow images of any mode, fitted to a model -----------------------------------------------------------
_GRAY_MODES = ("1", "L")
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def normalise_mode(img: Image.Image) -> Image.Image:
    """An 'L' (grey), 'LA' (grey + alpha), 'RGB' or 'RGBA' image; 16-bit/float grey is scaled from 0..65535 to 0..255;
    palette images with transparency become RGBA."""
    if img.mode in _GRAY_MODES:
        return img if img.mode == "L" else img.convert("L")
    if img.mode in _WIDE_GRAY_MODES:
        wide = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), "L")
    if img.mode in ("LA", "RGB", "RGBA"):
        return img
    if img.mode in ("La", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("LA" if img.mode == "La" else "RGBA")
    if img.mode == "RGBa" or "transparency" in img.info:
        return img.convert("RGBA")
    return img.convert("RGB")


def _channels_to(array: np.ndarray, c: int) -> tuple[np.ndarray, list[str], list[str]]:
    """(H, W, c_in) -> (H, W, c), and the notes on what changed: (array, lossless notes, lossy notes)."""
    c_in = array.shape[-1]
    colour, alpha = (array[..., :-1], array[..., -1]) if c_in in (2, 4) else (array, None)
    kept, lost = [], []
    grey_out = c in (1, 2)
    if grey_out and colour.shape[-1] == 3:
        if (colour == colour[..., :1]).all():
            colour = colour[..., :1]
            kept.append("its RGB channels are equal: read as grey")
        else:
            colour = np.asarray(Image.fromarray(colour, "RGB").convert("L"))[..., None]
            lost.append("colour converted to grey")
    elif not grey_out and colour.shape[-1] == 1:
        colour = colour.repeat(3, -1)
        kept.append("grey repeated into RGB")
    if c in (2, 4) and alpha is None:
        alpha = np.full(colour.shape[:2], 255, np.uint8)
        kept.append("an opaque alpha channel added")
    elif c not in (2, 4) and alpha is not None:
        if (alpha == 255).all():
            kept.append("its fully opaque alpha channel dropped")
        else:  # composite over black, the background of the digits and faces these models know
            colour = np.round(colour * (alpha[..., None] / 255.0)).astype(np.uint8)
            lost.append("transparency flattened onto black")
        alpha = None
    out = colour if alpha is None else np.concatenate([colour, alpha[..., None]], -1)
    return np.ascontiguousarray(out), kept, lost


def fit_image(img: Image.Image, shape: tuple[int, int, int], fit: bool = False) -> tuple[Tensor, list[str]]:
    """A Pillow image of any mode and size as uint8 (H, W, C) of ``shape``, and notes on what was changed.

    Changes that lose nothing are always made: grey repeated into RGB, RGB whose channels are all equal read as
    grey, a fully opaque alpha channel dropped (or an opaque one added). Changes that lose something (colour to
    grey, transparency flattened onto black) and any change of size are made only with ``fit``; without it a
    ValueError says what differs and that fitting would do it. Fitting a size crops the centre to the model's
    aspect ratio, then resizes: area averaging when shrinking, bicubic when enlarging.
    """
    h, w, c = shape
    img = normalise_mode(img)
    array = np.asarray(img, dtype=np.uint8)
    array = array[..., None] if array.ndim == 2 else array
    c_in = array.shape[-1]
    array, kept, lost = _channels_to(array, c)
    size = (img.height, img.width)
    problems = []
    if lost and not fit:
        problems.append(f"it is {CHANNEL_NAMES[c_in]} but the model takes {CHANNEL_NAMES[c]} "
                        f"images ({', '.join(lost)} would fit it)")
    if size != (h, w) and not fit:
        problems.append(f"it is {size[0]}x{size[1]} but the model takes {h}x{w}")
    if problems:
        raise ValueError(f"the image does not fit the model: {'; '.join(problems)}. Tick \"fit to the model\" to "
                         f"convert and resize it, or give a {CHANNEL_NAMES[c]} image of {h}x{w} pixels")
    notes = kept + lost
    if size != (h, w):
        ih, iw = size
        if ih * w > iw * h:  # taller than the model's aspect: crop rows
            ch, cw = max(1, round(iw * h / w)), iw
        else:
            ch, cw = ih, max(1, round(ih * w / h))
        top, left = (ih - ch) // 2, (iw - cw) // 2
        shrink = ch >= h and cw >= w
        resample = getattr(Image, "Resampling", Image).BOX if shrink else getattr(Image, "Resampling", Image).BICUBIC
        pil = Image.fromarray(array[..., 0] if c == 1 else array, PIL_MODES[c])
        pil = pil.crop((left, top, left + cw, top + ch)).resize((w, h), resample)
        array = np.asarray(pil, dtype=np.uint8).reshape(h, w, c)
        cropped = f", centre {ch}x{cw} kept" if (ch, cw) != size else ""
        notes.append(f"resized from {ih}x{iw} to {h}x{w}{cropped} ({'area' if shrink else 'bicubic'})")
    return torch.from_numpy(array.copy()), notes


# ----- files -------------------------------------------------------------------------------------------------
PIXEL_BUDGET_ENV = "IMAGE_TRANSFORMER_MAX_PIXELS"
# a 40-megapixel photograph: far above any model's size, far below what a crafted header can claim
DEFAULT_PIXEL_BUDGET = 40_000_000


def pixel_budget() -> int:
    """The most pixels an image the library reads may have: ``IMAGE_TRANSFORMER_MAX_PIXELS``, else 40 million."""
    text = os.environ.get(PIXEL_BUDGET_ENV)
    if text is None:
        return DEFAULT_PIXEL_BUDGET
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{PIXEL_BUDGET_ENV}={text!r}: expected a positive number of pixels")
    return value


def open_image(source: str | Path | bytes | IO[bytes], name: str | None = None) -> Image.Image:
    """An image file decoded by Pillow, refused before decoding when its header claims more pixels than
    :func:`pixel_budget` (or than Pillow's own decompression-bomb limit): a ValueError naming ``name`` (the path by
    default) for that and for anything unreadable."""
    name = name or (str(source) if isinstance(source, (str, Path)) else "the image")
    budget = pixel_budget()

    def pillow(step: Callable[[], Any]) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return step()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"{name}: refused, its header claims more pixels than an image should have ({e})") \
                from None
        except UnidentifiedImageError:
            raise ValueError(f"{name}: cannot read this file as an image (not a format Pillow reads)") from None
        except Exception as e:  # noqa: BLE001 - Pillow raises many types (OSError, ValueError, struct.error, ...)
            raise ValueError(f"{name}: cannot read this file as an image ({type(e).__name__}: {e})") from None

    img = pillow(lambda: Image.open(io.BytesIO(source) if isinstance(source, bytes) else source))
    if img.width * img.height > budget:  # the header's claim, checked before anything is decoded
        raise ValueError(f"{name}: {img.width}x{img.height} = {img.width * img.height:,} pixels, over the limit of "
                         f"{budget:,} ({PIXEL_BUDGET_ENV} sets it)")
    pillow(img.load)
    return img


def read_image(path: str | Path, shape: tuple[int, int, int]) -> Tensor:
    """One image file as uint8 (H, W, C), converted to grey, grey + alpha, RGB or RGBA as ``shape`` asks; it must
    have that size. Wide grey (16-bit, 32-bit, float) is scaled from 0..65535, as everywhere else."""
    h, w, c = shape
    img = normalise_mode(open_image(path)).convert(PIL_MODES[c])
    if img.size != (w, h):
        raise ValueError(f"{path}: image is {img.size[1]}x{img.size[0]} but the model generates {h}x{w}")
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).reshape(h, w, c).copy())


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
# extension -> Pillow format: what an output file may be named
IMAGE_EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF",
                    ".tiff": "TIFF", ".webp": "WEBP"}
# the image files a data folder or archive is read from: the photo and lossless formats of the table above
FOLDER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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
    to_pil(grid).save(path)
    return path


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write one uint8 image (H, W, C) exactly as it is (no grid, no scaling), in the format of its extension."""
    image = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (H, W, C), got {image.dtype} {image.shape}")
    path = Path(path)
    to_pil(image).save(path, format=image_format(path))
    return path


# ----- the classical lossless codecs, for comparison with the model's ---------------------------------------
LOSSLESS_FORMATS = {"PNG": "PNG (optimize)", "WEBP": "WebP lossless (method 6)", "JXL": "JPEG XL lossless (effort 9)"}


def lossless_formats() -> list[str]:
    """The Pillow formats of :data:`LOSSLESS_FORMATS` this installation writes: JPEG XL needs the
    ``pillow-jxl-plugin`` package (registered with Pillow when imported)."""
    try:
        import pillow_jxl  # noqa: F401  (an optional plugin: importing it registers JPEG XL with Pillow)
    except ImportError:
        return ["PNG", "WEBP"]
    return ["PNG", "WEBP", "JXL"]


def lossless_bytes(image: torch.Tensor | np.ndarray, fmt: str) -> bytes:
    """One uint8 image (H, W, C) as a file of the lossless format ``fmt`` (a key of :data:`LOSSLESS_FORMATS`), at
    the settings that make it smallest; a JPEG XL file is decoded again and checked to be lossless."""
    array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if fmt not in LOSSLESS_FORMATS:
        raise ValueError(f"unknown lossless format {fmt!r}; known: {', '.join(LOSSLESS_FORMATS)}")
    if fmt == "JXL" and "JXL" not in lossless_formats():
        raise ValueError("JPEG XL needs the pillow-jxl-plugin package (pip install pillow-jxl-plugin)")
    pil = to_pil(array)
    buf = io.BytesIO()
    if fmt == "PNG":
        pil.save(buf, format="PNG", optimize=True)
    elif fmt == "WEBP":
        pil.save(buf, format="WEBP", lossless=True, method=6, quality=100, exact=True)  # keep colour under alpha 0
    else:
        pil.save(buf, format="JXL", lossless=True, effort=9)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        if not np.array_equal(back.reshape(array.shape), array):
            raise ValueError("the JPEG XL plugin did not write this image losslessly")
    return buf.getvalue()
