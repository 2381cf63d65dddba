"""Files: atomic training checkpoints, pretrained directories, loading either by path, and the models files name.

Every :class:`PretrainedModel` subclass is registered under its class name, the ``model_type`` that files
record, so this module reads any model without importing the modules that define them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch
import safetensors.torch
from safetensors import SafetensorError
from torch import nn

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
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


# ----- the models files name -------------------------------------------------------------------------------
MODEL_TYPES: dict[str, type["PretrainedModel"]] = {}  # model_type (the class name) -> class


class PretrainedModel(nn.Module):
    """A model that files know by name: ``config`` (a ``config_class``) rebuilds it, ``save_pretrained`` and
    ``from_pretrained`` write and read it. Subclasses are registered in :data:`MODEL_TYPES` as they are defined."""

    config_class: ClassVar[type]
    config: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        MODEL_TYPES[cls.__name__] = cls

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weights saved by an earlier version, renamed to this one's parameter names (none to rename here)."""
        return state

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``weights.safetensors`` to ``directory``."""
        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "PretrainedModel":
        """Load a model written by ``save_pretrained``."""
        return load_pretrained(cls, directory, map_location)


def model_record(model: PretrainedModel) -> dict[str, Any]:
    """What identifies a model's architecture in every file we write."""
    return {"model_type": type(model).__name__, "config": model.config.to_dict(), "format_version": FORMAT_VERSION}


def model_from_config(config: Any) -> PretrainedModel:
    """A new model of the kind ``config`` describes (the registered class whose ``config_class`` it is)."""
    for cls in MODEL_TYPES.values():
        if type(config) is cls.config_class:
            return cls(config)
    raise TypeError(f"no model is registered for {type(config).__name__}")


def build_model(record: dict[str, Any], source: str) -> PretrainedModel:
    """Instantiate the architecture described by ``model_record`` output."""
    kind = record.get("model_type")
    if kind not in MODEL_TYPES:
        raise CheckpointError(f"{source}: unknown model_type {kind!r}; expected one of {sorted(MODEL_TYPES)}")
    cls = MODEL_TYPES[kind]
    try:
        config = cls.config_class.from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad model config: {e}") from None
    return cls(config)


def load_weights(model: PretrainedModel, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` (of weights saved by any version) with an error that names the file and the first
    mismatches."""
    state = model.upgrade_state_dict(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}")
        raise CheckpointError(f"{source}: weights do not match the {type(model).__name__} architecture: "
                              + "; ".join(parts))
    model.load_state_dict(state)


def save_pretrained(model: PretrainedModel, directory: str | Path) -> None:
    """``config.json`` + ``weights.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / "weights.safetensors", lambda f: f.write(safetensors.torch.save(state)))
    text = json.dumps(model_record(model), indent=2) + "\n"
    atomic_write(directory / "config.json", lambda f: f.write(text.encode()))


def load_pretrained(cls: type | None, directory: str | Path,
                    map_location: str | torch.device = "cpu") -> PretrainedModel:
    """Load a ``save_pretrained`` directory; ``cls`` (if given) must match the stored model type."""
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "weights.safetensors"
    for p in (config_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: not found (a pretrained directory holds config.json and weights.safetensors)")
    try:
        record = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    if cls is not None and record.get("model_type") != cls.__name__:
        raise CheckpointError(f"{config_path}: holds a model of type {record.get('model_type')!r}, not {cls.__name__}")
    model = build_model(record, str(config_path))
    try:
        state = safetensors.torch.load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({e})") from None
    load_weights(model, state, str(weights_path))
    return model.eval()


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
    return state


def load_model(path: str | Path, map_location: str | torch.device = "cpu", ema: bool = True) -> PretrainedModel:
    """A model (in eval mode) from a run directory, a training checkpoint file, or a pretrained directory.

    With ``ema`` and a checkpoint that holds an exponential moving average, the averaged weights are used.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return load_pretrained(None, path, map_location)
        if (path / CHECKPOINT_NAME).is_file():
            path = path / CHECKPOINT_NAME
        else:
            raise CheckpointError(f"{path}: holds neither {CHECKPOINT_NAME} nor config.json + weights.safetensors")
    state = read_checkpoint(path)
    model = build_model(state, str(path))
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    load_weights(model, weights, str(path))
    return model.to(map_location).eval()


def average_checkpoints(paths: list[str | Path]) -> PretrainedModel:
    """A model whose weights are the mean of the (non-EMA) weights of ``paths``, all of one architecture."""
    if not paths:
        raise CheckpointError("average: no checkpoints given")
    models = [load_model(p, ema=False) for p in paths]
    first = model_record(models[0])
    for path, model in zip(paths[1:], models[1:]):
        if model_record(model) != first:
            raise CheckpointError(f"{path}: a different architecture from {paths[0]}; only checkpoints of one "
                                  f"model can be averaged")
    states = [m.state_dict() for m in models]
    averaged = {k: (torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.dtype.is_floating_point
                    else v) for k, v in states[0].items()}
    models[0].load_state_dict(averaged)
    return models[0]


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
