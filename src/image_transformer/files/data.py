"""Image data sets read from the formats people already have on disk.

Every loader returns an :class:`ImageData` holding ``uint8`` images of shape (N, H, W, C) with C in {1, 2, 3, 4}
(grey, grey + alpha, RGB, RGBA)
and, when the data set has them, ``int64`` class labels. Every problem with the input (missing file, truncated
or corrupt file, inconsistent shapes) raises :class:`DataError`, whose message names the file or folder.

Supported layouts:

* MNIST / Fashion-MNIST idx files, gzipped or raw (:func:`load_mnist`, :func:`read_idx`);
* CIFAR-10 / CIFAR-100 python pickle batches (:func:`load_cifar`);
* downsampled-ImageNet style ``.npz`` files (:func:`load_npz`);
* folders or tar archives of png/jpg/bmp/webp images, flat or one subfolder per class (:func:`load_image_folder`);
* aligned CelebA faces, centre-cropped and area-resized (:func:`load_celeba`);
* ``"KIND:PATH"`` specs, the shipped ``"mnist-slice"`` and a shipped model's test images ``"slice:NAME"``
  (:func:`load_dataset`).

For torch: :func:`to_tensor_dataset`, and super-resolution pairs (:func:`make_pairs`,
:class:`SuperResolutionPairs`).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..images import area_downsample, as_tensor, check_images, parse_size
from .folders import SLICE_NAME, UnknownModel, read_slice, shipped_folder
from .image_files import normalise_mode

__all__ = [
    "DataError",
    "ImageData",
    "read_idx",
    "load_mnist",
    "load_cifar",
    "load_npz",
    "load_image_folder",
    "load_celeba",
    "load_dataset",
    "load_split",
    "to_tensor_dataset",
    "make_pairs",
    "SuperResolutionPairs",
    "DATASET_KINDS",
]

DATASET_KINDS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "npz", "folder", "celeba")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SLICE_DIR = Path(__file__).resolve().parents[1] / "datasets" / "mnist-slice"

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_BOX = getattr(Image, "Resampling", Image).BOX  # area averaging
PROGRESS_THRESHOLD = 2000  # show a progress bar when decoding more image files than this


class DataError(ValueError):
    """A data set could not be read; the message names the file or folder and the problem."""


# ----- the common container ------------------------------------------------------------------------------
@dataclass
class ImageData:
    """Images (uint8, N x H x W x C, C in {1, 2, 3, 4}) with optional int64 class labels."""

    images: np.ndarray
    labels: np.ndarray | None
    num_classes: int | None
    class_names: list[str] | None
    source: str

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
        return ImageData(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            num_classes=self.num_classes,
            class_names=None if self.class_names is None else list(self.class_names),
            source=self.source,
        )


def _check_split(split: str, where: Any, allowed: Sequence[str] = ("train", "test")) -> str:
    if split not in allowed:
        raise DataError(f"{where}: unknown split {split!r}; expected one of {', '.join(allowed)}")
    return split


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")


# ----- idx (MNIST) -----------------------------------------------------------------------------------------
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open_maybe_gzip(path: Path) -> tuple[io.BufferedIOBase, bool]:
    """Open ``path`` for reading, un-gzipping it when it starts with the gzip magic bytes (whatever its name)."""
    f = open(path, "rb")
    gz = f.read(2) == b"\x1f\x8b"
    if gz:
        f.close()
        return gzip.open(path, "rb"), True  # type: ignore[return-value]
    f.seek(0)
    return f, False  # type: ignore[return-value]


def _read_exactly(f: io.BufferedIOBase, buffer: memoryview) -> int:
    got = 0
    while got < len(buffer):
        n = f.readinto(buffer[got:])
        if not n:
            break
        got += n
    return got


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read any idx file (the MNIST format), gzipped or raw, into an array of native byte order.

    Checks the magic number (two zero bytes, a known type code, at least one dimension) and that the amount
    of data matches the dimensions in the header; a truncated file raises DataError with expected vs. actual bytes.
    """
    path = Path(path)
    _require_exists(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an idx file")
    try:
        f, gz = _open_maybe_gzip(path)
        with f:
            magic = f.read(4)
            if len(magic) < 4:
                raise DataError(f"{path}: too short for an idx file ({len(magic)} bytes)")
            if magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES or magic[3] == 0:
                raise DataError(f"{path}: bad idx magic number 0x{magic.hex()} (expected 0x0000 + type code "
                                f"08/09/0b/0c/0d/0e + number of dimensions); not an idx file?")
            dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated idx header: {ndim} dimensions need {4 * ndim} bytes, "
                                f"found {len(raw_dims)}")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            count = math.prod(dims)
            expected = count * dtype.itemsize
            if not gz:  # the size is known: check it before allocating anything
                actual = path.stat().st_size - 4 - 4 * ndim
                if actual < expected:
                    raise DataError(f"{path}: truncated idx file: header {dims} needs {expected} bytes of data, "
                                    f"found {actual}")
            try:
                data = np.empty(count, dtype=dtype)
            except (MemoryError, ValueError):
                raise DataError(f"{path}: idx header {dims} claims {expected} bytes of data; corrupt header?") from None
            got = _read_exactly(f, memoryview(data).cast("B"))
            if got < expected:
                raise DataError(f"{path}: truncated idx file: header {dims} needs {expected} bytes of data, "
                                f"found {got}")
            extra = len(f.read(1 << 16))
            if extra:
                raise DataError(f"{path}: idx file is longer than its header {dims} says: expected {expected} "
                                f"bytes of data, found at least {expected + extra}")
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read idx file ({type(exc).__name__}: {exc})") from exc
    data = data.reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else data


def _find_file(root: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def load_mnist(root: str | os.PathLike, split: str) -> ImageData:
    """MNIST or Fashion-MNIST from a folder of idx files (``train-images-idx3-ubyte[.gz]``, ``t10k-...``).

    ``split`` is "train" or "test". Gzipped and raw files are both accepted (also the ``-images.idx3-ubyte``
    spelling some mirrors use).
    """
    root = Path(root)
    _require_exists(root)
    _check_split(split, root)
    prefix = "train" if split == "train" else "t10k"
    found = {}
    for part, ndim in (("images", 3), ("labels", 1)):
        base = [f"{prefix}-{part}-idx{ndim}-ubyte", f"{prefix}-{part}.idx{ndim}-ubyte"]
        names = [n + ext for n in base for ext in (".gz", "")]
        path = _find_file(root, names)
        if path is None:
            raise DataError(f"{root}: no {split} {part} file (looked for {names[0]} or {names[1]})")
        array = read_idx(path)
        if array.ndim != ndim or array.dtype != np.uint8:
            raise DataError(f"{path}: expected a {ndim}-dimensional uint8 idx file of {part}, "
                            f"got {array.ndim} dimensions of {array.dtype}")
        found[part] = (path, array)
    (image_path, images), (label_path, labels) = found["images"], found["labels"]
    if len(images) != len(labels):
        raise DataError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels")
    if len(labels) and labels.max() >= 10:
        raise DataError(f"{label_path}: labels must be 0..9, found {int(labels.max())}")
    return ImageData(images=images[..., None], labels=labels.astype(np.int64), num_classes=10,
                     class_names=list(MNIST_CLASSES), source=f"MNIST idx files in {root} ({split} split)")


# ----- CIFAR python pickles --------------------------------------------------------------------------------
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch needs nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not part of a CIFAR batch)")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 renamed numpy.core
        return super().find_class(module, name)


def _str_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any failure here means a corrupt or foreign file
        raise DataError(f"{path}: cannot unpickle CIFAR file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return _str_keys(obj)


def _names(values: Any) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _cifar_dirs(root: Path) -> dict[str, Path]:
    """{"cifar10": dir, "cifar100": dir} for the CIFAR folders found at or under ``root``."""
    found: dict[str, Path] = {}
    for folder in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if not folder.is_dir():
            continue
        if "cifar10" not in found and ((folder / "test_batch").is_file() or any(folder.glob("data_batch_*"))):
            found["cifar10"] = folder
        if "cifar100" not in found and (folder / "meta").is_file() and \
                ((folder / "train").is_file() or (folder / "test").is_file()):
            found["cifar100"] = folder
    return found


def load_cifar(root: str | os.PathLike, split: str, kind: str | None = None) -> ImageData:
    """CIFAR-10 or CIFAR-100 from the python pickle batches.

    ``root`` is the folder holding the batch files or its parent holding ``cifar-10-batches-py`` /
    ``cifar-100-python``. CIFAR-10 train uses whichever of ``data_batch_1..5`` exist; test uses ``test_batch``.
    CIFAR-100 uses ``train`` / ``test`` and the fine labels. ``kind`` ("cifar10" / "cifar100") picks one when
    both are present (default: CIFAR-10 if found).
    """
    root = Path(root)
    _require_exists(root)
    _check_split(split, root)
    dirs = _cifar_dirs(root)
    if kind is not None:
        if kind not in ("cifar10", "cifar100"):
            raise DataError(f"{root}: unknown CIFAR kind {kind!r}; expected cifar10 or cifar100")
        if kind not in dirs:
            what = "data_batch_N / test_batch" if kind == "cifar10" else "train / test + meta"
            raise DataError(f"{root}: no {kind} pickle files ({what}) in this folder or its "
                            f"{'cifar-10-batches-py' if kind == 'cifar10' else 'cifar-100-python'} subfolder")
    elif dirs:
        kind = "cifar10" if "cifar10" in dirs else "cifar100"
    else:
        raise DataError(f"{root}: no CIFAR pickle files (data_batch_N / test_batch or train / test + meta) "
                        f"in this folder or a cifar-10-batches-py / cifar-100-python subfolder")
    folder = dirs[kind]
    if kind == "cifar10":
        files = (sorted(folder.glob("data_batch_*"), key=lambda p: _natural_key(p.name)) if split == "train"
                 else [folder / "test_batch"])
        label_key, meta_file, names_key, num_classes = "labels", folder / "batches.meta", "label_names", 10
    else:
        files = [folder / split]
        label_key, meta_file, names_key, num_classes = "fine_labels", folder / "meta", "fine_label_names", 100
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"{folder}: no {kind} {split} batch file")

    images, labels = [], []
    for path in files:
        batch = _load_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{path}: missing key {'data' if 'data' not in batch else label_key!r}; "
                            f"keys present: {sorted(map(str, batch))}")
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
            raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got "
                            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
        try:
            lab = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: {label_key!r} is not a list of integers") from exc
        if len(lab) != len(data):
            raise DataError(f"{path}: {len(data)} images but {len(lab)} labels")
        if len(lab) and (lab.min() < 0 or lab.max() >= num_classes):
            raise DataError(f"{path}: labels must be in 0..{num_classes - 1}, found {lab.min()}..{lab.max()}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)

    class_names = list(CIFAR10_CLASSES) if kind == "cifar10" else [f"class_{i}" for i in range(100)]
    if meta_file.is_file():
        meta = _load_pickle(meta_file)
        if names_key in meta and len(meta[names_key]) == num_classes:
            class_names = _names(meta[names_key])
    name = "CIFAR-10" if kind == "cifar10" else "CIFAR-100"
    return ImageData(
        images=np.ascontiguousarray(np.concatenate(images)),
        labels=np.concatenate(labels),
        num_classes=num_classes,
        class_names=class_names,
        source=f"{name} python batches in {folder} ({split} split: {', '.join(f.name for f in files)})",
    )


# ----- npz (downsampled ImageNet) ----------------------------------------------------------------------------
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
                    shape, _, _ = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(f)
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
    files = sorted(folder.glob("*.npz"), key=lambda p: _natural_key(p.name))
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
    _require_exists(path)
    _check_split(split, path, ("train", "test", "val"))
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


# ----- image folders and archives --------------------------------------------------------------------------
@dataclass
class _Entry:
    parts: tuple[str, ...]  # path relative to the data root, split into components
    ref: Any  # a filesystem Path, or a TarInfo of an open archive
    order: int = 0  # position in the archive (tar) for sequential reading


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _wanted(parts: Sequence[str]) -> bool:
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False  # hidden files and macOS resource forks ("._x.jpg" is not an image)
    return parts[-1].lower().endswith(IMAGE_EXTENSIONS)


class _Source:
    """The image files of a folder or tar archive, with a uniform way to read them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tar: tarfile.TarFile | None = None
        entries: list[_Entry] = []
        if _is_archive(root):
            try:
                self.tar = tarfile.open(root, "r:*")
                members = self.tar.getmembers()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                self.close()
                raise DataError(f"{root}: cannot read tar archive ({type(exc).__name__}: {exc})") from exc
            for i, m in enumerate(members):
                parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
                if m.isfile() and parts and _wanted(parts):
                    entries.append(_Entry(parts, m, i))
            tops = {e.parts[0] for e in entries if len(e.parts) > 1}
            if len(tops) == 1 and all(len(e.parts) > 1 for e in entries):  # strip the archive's top folder
                entries = [_Entry(e.parts[1:], e.ref, e.order) for e in entries]
                self.description = f"{root}:{tops.pop()}/"
            else:
                self.description = str(root)
        elif root.is_dir():
            seen: set[str] = set()
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                real = os.path.realpath(dirpath)
                if real in seen:  # a symlink loop
                    dirnames[:] = []
                    continue
                seen.add(real)
                dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
                rel = Path(dirpath).relative_to(root).parts
                for name in filenames:
                    parts = (*rel, name)
                    if _wanted(parts):
                        entries.append(_Entry(parts, Path(dirpath) / name))
            self.description = str(root)
        else:
            raise DataError(f"{root}: not a folder or a .tar/.tar.gz/.tgz archive of images")
        entries.sort(key=lambda e: e.parts)
        for i, e in enumerate(entries):
            if not self.tar:
                e.order = i
        self.entries = entries

    def name(self, entry: _Entry) -> str:
        return f"{self.root}:{entry.ref.name}" if self.tar else str(entry.ref)

    def read(self, entry: _Entry) -> bytes:
        try:
            if self.tar:
                f = self.tar.extractfile(entry.ref)
                if f is None:
                    raise OSError("not a regular file")
                return f.read()
            return Path(entry.ref).read_bytes()
        except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
            raise DataError(f"{self.name(entry)}: cannot read file ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        if self.tar:
            self.tar.close()


_SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val", "valid"), "val": ("val", "valid", "test")}


def _select_split(entries: list[_Entry], split: str | None, where: str) -> tuple[list[_Entry], str]:
    """Restrict to the ``split`` subfolder if the data has train/ and test/ (or val/) subfolders."""
    tops = {e.parts[0] for e in entries if len(e.parts) > 1}
    if "train" not in tops or not tops & {"test", "val", "valid"}:
        note = "" if split is None else f"; no train/test subfolders, so all images are used for the {split} split"
        return entries, note
    if split is None:
        raise DataError(f"{where}: has {'/'.join(sorted(tops & {'train', 'test', 'val', 'valid'}))} "
                        f"subfolders; pass split='train' or 'test'")
    for folder in _SPLIT_ALIASES.get(split, (split,)):
        if folder in tops:
            chosen = [_Entry(e.parts[1:], e.ref, e.order) for e in entries if e.parts[0] == folder and len(e.parts) > 1]
            return chosen, f"; {folder}/ subfolder"
    raise DataError(f"{where}: no {split}/ subfolder (found {', '.join(sorted(tops))})")


def _common_channels(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack decoded images (H, W) / (H, W, 2 | 3 | 4) with one channel layout for all, (N, H, W, C).

    Colour if any image has colour (grey is repeated into R, G and B, as PIL's L -> RGB does); an alpha channel
    if any image has one that is not fully opaque (images without one get 255), so that opaque RGBA files stay
    RGB, as before 2- and 4-channel images were supported.
    """
    shaped = [a[..., None] if a.ndim == 2 else a for a in arrays]
    colour = any(a.shape[-1] >= 3 for a in shaped)
    alpha = any(a.shape[-1] in (2, 4) and a[..., -1].min() < 255 for a in shaped)
    out = []
    for a in shaped:
        c = a.shape[-1]
        base = a[..., :3] if c >= 3 else (np.repeat(a[..., :1], 3, axis=-1) if colour else a[..., :1])
        if alpha:
            opacity = a[..., -1:] if c in (2, 4) else np.full(a.shape[:2] + (1,), 255, np.uint8)
            base = np.concatenate([base, opacity], axis=-1)
        out.append(base)
    return np.stack(out)


def _decode(source: _Source, entries: list[_Entry], crop: Any, image_size: tuple[int, int] | None,
            desc: str) -> np.ndarray:
    """Decode ``entries`` (in their list order) to one uint8 (N, H, W, C) array."""
    out: list[np.ndarray | None] = [None] * len(entries)
    first: tuple[str, tuple[int, int]] | None = None
    reading_order = sorted(range(len(entries)), key=lambda i: entries[i].order)  # sequential in archives
    bar = tqdm(total=len(entries), desc=desc, unit="img",
               disable=None if len(entries) > PROGRESS_THRESHOLD else True)
    try:
        for i in reading_order:
            entry = entries[i]
            name = source.name(entry)
            raw = source.read(entry)
            try:
                with Image.open(io.BytesIO(raw)) as opened:
                    opened.load()
                    img = normalise_mode(opened)
            except UnidentifiedImageError:
                raise DataError(f"{name}: cannot decode image (not a recognised image format, or corrupt)") from None
            except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
                raise DataError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
            box = crop(img.width, img.height) if callable(crop) else crop
            if box is not None:
                top, left, height, width = (int(v) for v in box)
                if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > img.height \
                        or left + width > img.width:
                    raise DataError(f"{name}: crop (top={top}, left={left}, height={height}, width={width}) "
                                    f"does not fit in the {img.height}x{img.width} image")
                img = img.crop((left, top, left + width, top + height))
            if image_size is not None:
                if (img.height, img.width) != tuple(image_size):
                    img = img.resize((image_size[1], image_size[0]), _BOX)
            else:
                size = (img.height, img.width)
                if first is None:
                    first = (name, size)
                elif size != first[1]:
                    raise DataError(
                        f"images differ in size: {first[0]} is {first[1][0]}x{first[1][1]} but {name} is "
                        f"{size[0]}x{size[1]} (HxW{', after cropping' if box is not None else ''}); "
                        f"pass image_size=(H, W) (--image-size HxW) to resize them all")
            array = np.asarray(img, dtype=np.uint8)
            out[i] = array
            bar.update(1)
    finally:
        bar.close()
    if not out:
        raise DataError(f"{desc}: no images")
    return _common_channels(out)  # type: ignore[arg-type]


def _image_size(value: Any) -> tuple[int, int] | None:
    """``image_size`` as (H, W), or None; a DataError for anything else."""
    if value is None:
        return None
    try:
        return parse_size(value, "image_size", positive=True)
    except ValueError as e:
        raise DataError(str(e)) from None


def load_image_folder(root: str | os.PathLike, split: str | None = None,
                      image_size: tuple[int, int] | None = None,
                      crop: tuple[int, int, int, int] | None = None) -> ImageData:
    """Images (png/jpg/jpeg/bmp/webp) from a folder or a .tar/.tar.gz/.tgz archive (read in place).

    If the folder (or the archive's single top folder) has ``train/`` and ``test/`` (or ``val/``) subfolders,
    the one named by ``split`` is used; otherwise all images are used whatever ``split`` is.
    One subfolder per class gives labels (classes = sorted subfolder names); a flat folder gives no labels.
    Images become RGB, or stay grayscale (C=1) if every image is grayscale; with an alpha channel (grey + alpha,
    C=2, or RGBA, C=4) where any image has one that is not fully opaque. ``crop`` = (top, left, height,
    width) is applied first, then an area-averaging (PIL BOX) resize to ``image_size`` = (H, W). Without
    ``image_size`` all images must have the same size.
    """
    root = Path(root)
    _require_exists(root)
    image_size = _image_size(image_size)
    source = _Source(root)
    try:
        entries, note = _select_split(source.entries, split, source.description)
        if not entries:
            raise DataError(f"{source.description}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found"
                            + (f" for the {split} split" if split else ""))
        loose = [e for e in entries if len(e.parts) == 1]
        if loose and len(loose) != len(entries):
            nested = next(e for e in entries if len(e.parts) > 1)
            raise DataError(f"{source.description}: mixes loose images ({'/'.join(loose[0].parts)}) with images "
                            f"in class subfolders ({'/'.join(nested.parts)}); use one layout")
        if loose:
            labels, class_names = None, None
        else:
            class_names = sorted({e.parts[0] for e in entries})
            index = {name: i for i, name in enumerate(class_names)}
            entries.sort(key=lambda e: (e.parts[0], e.parts[1:]))
            labels = np.array([index[e.parts[0]] for e in entries], dtype=np.int64)
        images = _decode(source, entries, crop, image_size, source.description)
    finally:
        source.close()
    layout = "flat" if class_names is None else f"{len(class_names)} classes"
    return ImageData(images=images, labels=labels, num_classes=None if class_names is None else len(class_names),
                     class_names=class_names, source=f"image folder {source.description} ({layout}{note})")


# CelebA aligned faces: the paper's square crop, given for the half-resolution 89x109 (WxH) images.
_CELEBA_REF = (89, 109)  # width, height
_CELEBA_CROP = (20, 10, 69)  # top, left, side


def _celeba_crop(width: int, height: int) -> tuple[int, int, int, int]:
    sx, sy = width / _CELEBA_REF[0], height / _CELEBA_REF[1]
    top, left, side = _CELEBA_CROP
    side_px = int(round(side * min(sx, sy)))
    return (int(round(top * sy)), int(round(left * sx)), side_px, side_px)


def load_celeba(root: str | os.PathLike, split: str, image_size: int | tuple[int, int] = 32,
                num_test: int = 1000) -> ImageData:
    """Aligned CelebA faces from a flat folder or archive, sorted by file name, centre-cropped and area-resized.

    The crop is 69x69 at row 20, column 10 for the 89x109 half-resolution images, scaled proportionally for
    other sizes (138x138 at row 40, column 20 for the full 178x218). "train" is all but the last ``num_test``
    images, "test" the last ``num_test``. No labels.
    """
    root = Path(root)
    _require_exists(root)
    _check_split(split, root)
    size = _image_size(image_size)
    source = _Source(root)
    try:
        entries = sorted(source.entries, key=lambda e: (e.parts[-1], e.parts))
        if not entries:
            raise DataError(f"{source.description}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
        if num_test < 0 or len(entries) <= num_test:
            raise DataError(f"{source.description}: {len(entries)} images, not enough for a test split of "
                            f"{num_test} plus training images")
        cut = len(entries) - num_test
        entries = entries[:cut] if split == "train" else entries[cut:]
        images = _decode(source, entries, _celeba_crop, size, source.description)
    finally:
        source.close()
    images = images[..., :3] if images.shape[-1] == 4 else images[..., :1] if images.shape[-1] == 2 else images
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return ImageData(images=images, labels=None, num_classes=None, class_names=None,
                     source=f"CelebA faces in {source.description} ({split} split: {len(images)} images, "
                            f"centre crop, {size[0]}x{size[1]})")  # type: ignore[index]


# ----- specs ------------------------------------------------------------------------------------------------
CACHED_SPLITS = 4  # decoded folder/celeba splits kept in memory, the least recently used dropped first
_CACHE: OrderedDict[tuple, ImageData] = OrderedDict()


def _cached(key: tuple, load: Callable[[], ImageData]) -> ImageData:
    """``load()``'s data for ``key``, decoded once while it stays among the last :data:`CACHED_SPLITS` used."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
    else:
        _CACHE[key] = load()
        while len(_CACHE) > CACHED_SPLITS:
            _CACHE.popitem(last=False)
    return _CACHE[key]


def _copy(data: ImageData) -> ImageData:
    return ImageData(images=data.images.copy(), labels=None if data.labels is None else data.labels.copy(),
                     num_classes=data.num_classes,
                     class_names=None if data.class_names is None else list(data.class_names), source=data.source)


def load_dataset(spec: str, split: str, image_size: tuple[int, int] | None = None) -> ImageData:
    """Load ``spec`` = "KIND:PATH" (KIND in mnist, fashion-mnist, cifar10, cifar100, npz, folder, celeba),
    the built-in "mnist-slice" (6000 train / 1000 test MNIST images shipped with the package), or "slice:NAME"
    (the few test images shipped beside the trained model NAME; a test split only).

    ``image_size`` = (H, W) resizes folder and celeba data; other kinds must already have that size.
    Decoded folder/celeba data is cached in memory per (spec, split, image_size) while the file or folder is
    unchanged, for the last few splits used; each call returns a copy.
    """
    size = _image_size(image_size)
    spec = str(spec)
    if spec.strip() in ("mnist-slice", "mnist-slice:"):
        data = load_mnist(SLICE_DIR, split)
        data.source = f"mnist-slice (first 6000 train / 1000 test MNIST images shipped in {SLICE_DIR}; {split} split)"
        return _check_size(data, size, spec)
    kind, sep, path_text = spec.partition(":")
    kind = kind.strip().lower()
    if sep and kind == "slice":
        return _check_size(load_model_slice(path_text.strip(), split), size, spec)
    if not sep or kind not in DATASET_KINDS:
        raise DataError(f"unknown data spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(DATASET_KINDS)}, "
                        f"the built-in 'mnist-slice', or 'slice:NAME' (a shipped model's test images)")
    if not path_text:
        raise DataError(f"data spec {spec!r} has no path after '{kind}:'")
    path = Path(path_text).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (from data spec {spec!r})")

    if kind in ("folder", "celeba"):
        stat = path.stat()
        key = (spec, split, size, stat.st_mtime_ns, stat.st_size)
        if kind == "folder":
            return _copy(_cached(key, lambda: load_image_folder(path, split, image_size=size)))
        return _copy(_cached(key, lambda: load_celeba(path, split, image_size=size or 32)))
    if kind in ("mnist", "fashion-mnist"):
        data = load_mnist(path, split)
        if kind == "fashion-mnist":
            data.class_names = list(FASHION_MNIST_CLASSES)
            data.source = data.source.replace("MNIST", "Fashion-MNIST", 1)
    elif kind in ("cifar10", "cifar100"):
        data = load_cifar(path, split, kind=kind)
    else:
        data = load_npz(path, split)
    return _check_size(data, size, spec)


def load_model_slice(name: str, split: str) -> ImageData:
    """The test images shipped beside the trained model ``name`` (its card records their bits/dim); the train
    split is empty. Raises :class:`DataError` naming the shipped models for an unknown name."""
    split = _check_split(split, f"slice:{name}")
    try:
        folder = shipped_folder(name)
    except UnknownModel as e:
        raise DataError(f"slice:{name}: {e}") from None
    if not (folder / SLICE_NAME).is_file():
        raise DataError(f"slice:{name}: {folder} has no {SLICE_NAME}")
    part = read_slice(folder)
    images = part["images"].numpy()
    labels = part["labels"].numpy() if "labels" in part else None
    source = (f"slice:{name} ({len(images)} test images shipped with the model {name}, test indices "
              f"{part['indices'].tolist()}; {split} split)")
    if split == "train":
        images, labels = images[:0], None if labels is None else labels[:0]
    return ImageData(images, labels, None, None, source)


def load_split(spec: str, split: str, image_size: tuple[int, int] | None = None) -> ImageData:
    """:func:`load_dataset`, refusing a split that holds no images."""
    data = load_dataset(spec, split, image_size=image_size)
    if len(data) == 0:
        raise DataError(f"{spec}: the {split} split holds no images")
    return data


def _check_size(data: ImageData, size: tuple[int, int] | None, spec: str) -> ImageData:
    h, w, _ = data.image_shape
    if size is not None and size != (h, w):
        raise DataError(f"{spec}: the data is {h}x{w} but image size {size[0]}x{size[1]} was requested; only "
                        f"folder and celeba data can be resized")
    return data


# ----- torch -----------------------------------------------------------------------------------------------
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
