"""``KIND:PATH`` specs, the shipped MNIST slice and a shipped model's test images, and the cache of decoded splits."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Collection

from ..folders import SLICE_NAME, UnknownModel, read_slice, shipped_folder
from ._common import DATASET_KINDS, FASHION_MNIST_CLASSES, SLICE_DIR, DataError, ImageData, check_split, size_or_none
from .cifar import load_cifar
from .idx import load_mnist
from .image_folders import load_celeba, load_image_folder
from .npz import load_npz

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
                     class_names=None if data.class_names is None else list(data.class_names), source=data.source,
                     names=None if data.names is None else list(data.names))


def load_dataset(spec: str, split: str, image_size: tuple[int, int] | None = None,
                 leave_out: Collection[str] | None = None) -> ImageData:
    """Load ``spec`` = "KIND:PATH" (KIND in mnist, fashion-mnist, cifar10, cifar100, npz, folder, celeba),
    the built-in "mnist-slice" (6000 train / 1000 test MNIST images shipped with the package), or "slice:NAME"
    (the few test images shipped beside the trained model NAME; a test split only).

    ``image_size`` = (H, W) resizes folder and celeba data; other kinds must already have that size.
    Decoded folder/celeba data is cached in memory per (spec, split, image_size) while the file or folder is
    unchanged, for the last few splits used; each call returns a copy.

    ``leave_out``: files of an image folder's split to drop (``class/NNNN``, see :func:`load_image_folder`);
    other kinds of data have no file names, and a list for them is refused.
    """
    size = size_or_none(image_size)
    spec = str(spec)
    if leave_out is not None and not str(spec).strip().lower().startswith("folder:"):
        raise DataError(f"{spec}: a leave-out list names files of an image folder (folder:PATH); this data has "
                        f"no file names")
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
        left = None if leave_out is None else tuple(sorted(set(leave_out)))
        key = (spec, split, size, stat.st_mtime_ns, stat.st_size, left)
        if kind == "folder":
            return _copy(_cached(key, lambda: load_image_folder(path, split, image_size=size, leave_out=left)))
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
    split = check_split(split, f"slice:{name}")
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


def load_split(spec: str, split: str, image_size: tuple[int, int] | None = None,
               leave_out: Collection[str] | None = None) -> ImageData:
    """:func:`load_dataset`, refusing a split that holds no images."""
    data = load_dataset(spec, split, image_size=image_size, leave_out=leave_out)
    if len(data) == 0:
        raise DataError(f"{spec}: the {split} split holds no images")
    return data


def _check_size(data: ImageData, size: tuple[int, int] | None, spec: str) -> ImageData:
    h, w, _ = data.image_shape
    if size is not None and size != (h, w):
        raise DataError(f"{spec}: the data is {h}x{w} but image size {size[0]}x{size[1]} was requested; only "
                        f"folder and celeba data can be resized")
    return data
