"""Downsampled-ImageNet style ``.npz`` files (one file, or a folder of ``train*`` / ``val*`` files)."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._common import DataError, ImageData, check_split, natural_key, require_exists


def _npz_open(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from exc
    if magic == b"\x93NUMPY":
        raise DataError(f"{path}: is a single .npy array, expected an .npz archive with a 'data' array")
    if not magic.startswith(b"PK"):
        raise DataError(f"{path}: not an .npz file (an .npz is a zip archive; this file starts with {magic!r})")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read .npz file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array, expected an .npz archive with a 'data' array")
    return npz


def _npz_get(npz: Any, path: Path, key: str) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read array {key!r} ({type(exc).__name__}: {exc})") from exc


def _npz_data_shape(path: Path) -> tuple[int, ...]:
    """Shape of the ``data`` array of an .npz file, read from the .npy header without loading the array."""
    try:
        with zipfile.ZipFile(path) as zf:
            if "data.npy" not in zf.namelist():
                keys = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
                raise DataError(f"{path}: no 'data' array in this .npz file (arrays present: {keys})")
            with zf.open("data.npy") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                header_bytes = f.tell()
            # the header is only a claim: an array larger than the stored member is refused before anything
            # is allocated for it
            claimed = math.prod(shape) * np.dtype(dtype).itemsize
            stored = zf.getinfo("data.npy").file_size - header_bytes
            if claimed > stored:
                raise DataError(f"{path}: its 'data' header claims an array of shape {tuple(shape)} ({claimed:,} "
                                f"bytes) but the file holds {stored:,}: damaged or forged")
            return tuple(shape)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read .npz file ({type(exc).__name__}: {exc})") from exc


def _npz_image_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """(H, W, C) for a ``data`` array of shape (N, 3*H*W) / (N, H*W) / (N, H, W) / (N, H, W, C)."""
    if len(shape) == 2:
        size = shape[1]
        for c in (3, 1):
            side = int(round((size / c) ** 0.5))
            if size % c == 0 and side * side * c == size and side > 0:
                return (side, side, c)
        raise DataError(f"{path}: 'data' rows of {size} values are not 3*H*H (RGB) or H*H (grayscale) pixels")
    if len(shape) == 3:
        return (shape[1], shape[2], 1)
    if len(shape) == 4 and shape[3] in (1, 2, 3, 4):
        return (shape[1], shape[2], shape[3])
    raise DataError(f"{path}: 'data' has shape {shape}; expected (N, 3*H*W), (N, H, W) or (N, H, W, C) with C 1 to 4 "
                    f"(flat rows are read as RGB or grey only: 2- and 4-channel data must be (N, H, W, C))")


def _npz_to_hwc(data: np.ndarray, hwc: tuple[int, int, int], path: Path) -> np.ndarray:
    h, w, c = hwc
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or (data.size and (data.min() < 0 or data.max() > 255)):
            raise DataError(f"{path}: 'data' must hold uint8 pixel values 0..255, got {data.dtype}")
        data = data.astype(np.uint8)
    if data.ndim == 2:
        return data.reshape(-1, c, h, w).transpose(0, 2, 3, 1)  # CHW planar rows
    return data.reshape(-1, h, w, c)


def _npz_files(folder: Path, split: str) -> list[Path]:
    files = sorted(folder.glob("*.npz"), key=lambda p: natural_key(p.name))
    if split == "train":
        return [p for p in files if p.name.startswith("train")]
    return [p for p in files if p.name.startswith(("val", "test"))]


def load_npz(path: str | os.PathLike, split: str) -> ImageData:
    """Downsampled-ImageNet style ``.npz`` data: a ``data`` array and an optional ``labels`` array.

    ``data`` is (N, 3*H*W) in CHW planar order with H = W inferred from the row length (3072 -> 32x32,
    12288 -> 64x64; an (N, H*W) array is read as grayscale), or (N, H, W) / (N, H, W, C).
    ``path`` is a single .npz file (used for any split) or a folder holding ``train*.npz`` files (e.g.
    ``train_data_batch_1..10.npz``) and ``val*.npz`` / ``test*.npz`` files; the files of the split are
    concatenated in natural sort order.

    Labels: ImageNet's are 1-based (1..1000). If the smallest label over all the .npz files of the file/folder
    is 1 (so there is no class 0), 1 is subtracted. ``num_classes`` is the largest (shifted) label + 1 over
    the same files, so train and test agree.
    """
    path = Path(path)
    require_exists(path)
    check_split(split, path, ("train", "test", "val"))
    if path.is_dir():
        files = _npz_files(path, split)
        if not files:
            pattern = "train*.npz" if split == "train" else "val*.npz or test*.npz"
            raise DataError(f"{path}: no {pattern} files for the {split} split")
        label_files = _npz_files(path, "train") + _npz_files(path, "test")
    else:
        files = label_files = [path]

    # labels of every file of the folder, to decide 0- vs 1-based and num_classes consistently across splits
    all_labels: dict[Path, np.ndarray | None] = {}
    for f in label_files:
        npz = _npz_open(f)
        with npz:
            if "labels" in npz.files:
                lab = _npz_get(npz, f, "labels")
                if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
                    raise DataError(f"{f}: 'labels' must be a 1-D integer array, got {lab.dtype} {lab.shape}")
                all_labels[f] = lab.astype(np.int64)
            else:
                all_labels[f] = None
    has_labels = {all_labels[f] is not None for f in files}
    if len(has_labels) > 1:
        raise DataError(f"{path}: some .npz files have 'labels' and some do not "
                        f"({', '.join(f.name for f in files if all_labels[f] is None)} lack them)")
    known = [lab for lab in all_labels.values() if lab is not None and len(lab)]
    shift = 0
    num_classes = None
    if known:
        low = min(int(lab.min()) for lab in known)
        if low < 0:
            raise DataError(f"{path}: negative labels ({low})")
        shift = 1 if low == 1 else 0
        num_classes = max(int(lab.max()) for lab in known) + 1 - shift

    shapes = [_npz_data_shape(f) for f in files]
    hwc = _npz_image_shape(shapes[0], files[0])
    for f, shape in zip(files, shapes):
        if _npz_image_shape(shape, f) != hwc:
            raise DataError(f"{f}: images of {_npz_image_shape(shape, f)} but {files[0].name} has {hwc}")
    total = sum(shape[0] for shape in shapes)
    images = np.empty((total, *hwc), dtype=np.uint8)  # filled file by file: no 2x peak memory on concatenation
    labels = np.empty(total, dtype=np.int64) if all_labels[files[0]] is not None else None
    start = 0
    for f, shape in zip(files, shapes):
        npz = _npz_open(f)
        with npz:
            data = _npz_get(npz, f, "data")
        n = len(data)
        images[start:start + n] = _npz_to_hwc(data, hwc, f)
        if labels is not None:
            lab = all_labels[f]
            assert lab is not None
            if len(lab) != n:
                raise DataError(f"{f}: {n} images but {len(lab)} labels")
            labels[start:start + n] = lab - shift
        start += n
    note = ", labels shifted from 1-based" if shift else ""
    names = ", ".join(f.name for f in files) if len(files) <= 3 else f"{len(files)} files"
    return ImageData(images=images, labels=labels, num_classes=num_classes if labels is not None else None,
                     class_names=None, source=f"npz data in {path} ({split} split: {names}{note})")
