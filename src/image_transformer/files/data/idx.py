"""MNIST / Fashion-MNIST idx files, gzipped or raw."""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ._common import MNIST_CLASSES, DataError, ImageData, check_split, require_exists

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
    require_exists(path)
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
    require_exists(root)
    check_split(split, root)
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
