"""CIFAR-10 / CIFAR-100 python pickle batches, read without running code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ._common import CIFAR10_CLASSES, DataError, ImageData, check_split, natural_key, require_exists

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
    require_exists(root)
    check_split(split, root)
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
        files = (sorted(folder.glob("data_batch_*"), key=lambda p: natural_key(p.name)) if split == "train"
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


HOLDOUT_TRAIN = 3000  # training images of the lossless CIFAR-10 subset; the rest of its data_batch_1 is held out


def cifar_holdout(root: str | os.PathLike, train: int = HOLDOUT_TRAIN) -> tuple[ImageData, ImageData]:
    """The lossless CIFAR-10 subset (``data_batch_1``'s first 4,000 training images, 20 test images) split for a
    held-out evaluation: train on the first ``train`` training images; hold out the rest of them and the test batch.
    ``root`` is what :func:`load_cifar` takes."""
    full, test = load_cifar(root, "train", "cifar10"), load_cifar(root, "test", "cifar10")
    if not 0 < train < len(full):
        raise DataError(f"{root}: cannot train on {train} of its {len(full)} training images and hold out the rest")
    held = ImageData(np.concatenate([full.images[train:], test.images]),
                     np.concatenate([full.labels[train:], test.labels]), full.num_classes, full.class_names,
                     f"{full.source} from image {train} on, and {test.source} (held out)")
    return full.subset(slice(0, train)), held
