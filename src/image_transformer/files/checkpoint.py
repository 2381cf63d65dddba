"""Files that survive: atomic writes, training checkpoints (read without running code), and errors that name the
file and what to do, with outputs rescued to a temporary folder when they cannot be written where asked.

Models' own folders (config + weights) are :mod:`image_transformer.files.pretrained`'s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .folders import CHECKPOINT_NAME

TEMP_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match the model asked for."""


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0666 & ~umask), as ``open`` would give it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give an ``OSError`` raised inside the block ``path`` as its file name when it has none (a failed
    ``write`` on a full disk has none), so that every file error names its file."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a partial file (a kill may leave
    the temporary ``NAME.*.tmp``, which :func:`stale_temporaries` finds). The file gets the umask's mode,
    like any other new file, not ``mkstemp``'s 0600.
    """
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TEMP_SUFFIX, dir=path.parent)
        try:
            os.fchmod(fd, file_mode())
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def stale_temporaries(folder: str | Path, name: str) -> list[Path]:
    """Temporary files :func:`atomic_write` left in ``folder`` for files matching the glob ``name`` when it was
    killed mid-write (only call this while no other process writes there)."""
    return sorted(Path(folder).glob(f"{name}.*{TEMP_SUFFIX}"))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a training state dict."""
    atomic_write(path, lambda f: torch.save(state, f))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` a training checkpoint, with errors that name the file.

    Checkpoints hold only tensors and plain values, so nothing in them runs code when they are opened;
    a file whose pickle names a function or class (which could run anything) is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        if "Unsupported global" in detail:
            code = detail.split(" was not an allowed global")[0].removeprefix("Unsupported global: GLOBAL ")
            raise CheckpointError(
                f"{path}: refused: opening it would run code ({code}); image-transformer checkpoints hold only "
                f"tensors and plain values. Open it with torch.load(weights_only=False) yourself only if you "
                f"trust where it came from") from None
        raise CheckpointError(f"{path}: unreadable checkpoint ({detail})") from None
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state or "model_type" not in state:
        raise CheckpointError(f"{path}: not an image-transformer training checkpoint")
    for key in ("model", "ema"):
        weights = state.get(key)
        if key == "ema" and weights is None:
            continue
        if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                    for k, v in weights.items()):
            raise CheckpointError(f"{path}: its {key!r} entry is not a mapping of parameter names to tensors: "
                                  f"damaged, or not written by image-transformer")
    return state


def run_info(path: str | Path) -> dict[str, Any]:
    """What a training run recorded about itself in its checkpoint (the data spec it trained on, the image size,
    ...), for a run folder or a checkpoint file; {} for a model folder or anything else without a checkpoint."""
    path = Path(path)
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    return read_checkpoint(path).get("run_info", {}) if path.is_file() else {}


# ----- errors that name the file, and outputs that survive them ----------------------------------------------
OS_ERROR_HINTS = {  # what to do about an OSError, by errno
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space (disk quota) or write elsewhere",
    errno.EACCES: "check the permissions or write elsewhere",
    errno.EPERM: "check the permissions or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENOENT: "check the path",
}


def describe_os_error(e: OSError, path: str | Path | None = None) -> str:
    """One line for an OSError: the file, what went wrong, and what to do."""
    name = e.filename if e.filename is not None else path
    hint = OS_ERROR_HINTS.get(e.errno, "check the path and try again")
    return f"{name if name is not None else 'a file'}: {e.strerror or e}; {hint}"


class OutputRescued(ValueError):
    """An output could not be written where asked, and was written to a temporary folder instead."""


def save_or_rescue(path: str | Path, save: Callable[[Path], Any]) -> Path:
    """``save(path)``; when that fails with an OSError (disk full, permissions changed), ``save`` into a new
    temporary folder instead so that finished work is not lost, and raise an error naming both places."""
    path = Path(path)
    try:
        save(path)
        return path
    except OSError as e:
        rescue = Path(tempfile.mkdtemp(prefix="image-transformer-")) / path.name
        try:
            save(rescue)
        except OSError:
            raise e from None
        raise OutputRescued(f"{describe_os_error(e, path)}. The result was written to {rescue} instead") from None
