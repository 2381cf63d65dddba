"""Pretrained folders: the models files know by name, their ``config.json`` + ``model.safetensors``, and loading a
model from whatever names it.

Files record a model's class name as its ``model_type``; any :class:`PretrainedModel` subclass is read back by it,
so this module reads every model without importing the modules that define them. A pretrained directory
follows the Hugging Face Hub's layout (``config.json`` + ``model.safetensors`` + ``README.md``, through
``huggingface_hub.ModelHubMixin``); directories written before that (``weights.safetensors``) still load.
Names of shipped models and Hub repo ids are resolved to directories by :mod:`image_transformer.files.folders`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, ClassVar, Iterator

import safetensors.torch
import torch
from huggingface_hub import ModelCard, ModelHubMixin
from safetensors import SafetensorError
from torch import nn

from .checkpoint import CheckpointError, atomic_write, read_checkpoint
from .folders import CHECKPOINT_NAME, CONFIG_NAME, OLD_WEIGHTS_NAME, WEIGHTS_NAME, is_pretrained_dir, resolve

FORMAT_VERSION = 1
PAPER_URL = "https://arxiv.org/abs/1802.05751"
# the model classes files can name, by the ``model_type`` they record (the class name): every subclass of
# PretrainedModel, registered as it is defined (this layer is below the modules that define them);
# image_transformer.zoo.MODEL_CLASSES is this registry, filled
MODEL_TYPES: dict[str, type["PretrainedModel"]] = {}


# ----- the models files name -------------------------------------------------------------------------------
class PretrainedModel(nn.Module, ModelHubMixin, library_name="image-transformer", paper_url=PAPER_URL,
                      tags=["image-transformer", "autoregressive", "pytorch"]):
    """A model that files know by name: ``config`` (a ``config_class``) rebuilds it, ``save_pretrained`` and
    ``from_pretrained`` write and read it. Its subclasses are the model types files name (:data:`MODEL_TYPES`).

    The Hub's conventions come from ``huggingface_hub.ModelHubMixin``: ``save_pretrained(dir)`` writes
    ``config.json``, ``model.safetensors`` and a ``README.md`` model card (kept if one is there), ``push_to_hub``
    uploads that folder, and ``from_pretrained`` reads a shipped model's name, a local folder or a Hub repo id.
    """

    config_class: ClassVar[type]
    config: Any
    # What a kind of model can do, said by its class, so that the tasks, the command line and the demo ask the
    # model rather than its type:
    pipeline_tag: ClassVar[str]  # the Hub's task name, for the model card
    tasks: ClassVar[tuple[str, ...]]  # the tasks it serves, named as image_transformer.tasks' functions
    low_resolution_input: ClassVar[bool]  # True: it draws images given a low-resolution one (super-resolution)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        MODEL_TYPES[cls.__name__] = cls

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode inside the block (sampling, scoring and coding run in it), the model's own mode after it."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weights saved by an earlier version, renamed to this one's parameter names (none to rename here)."""
        return state

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook: ``config.json`` + ``model.safetensors`` (``save_pretrained`` adds the card)."""
        save_pretrained(self, save_directory)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The ``README.md`` that ``save_pretrained`` writes when the folder has none: Hub metadata and how to load."""
        return ModelCard(default_card(self))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, map_location: str | torch.device = "cpu", *,
                        revision: str | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, token: str | bool | None = None,
                        force_download: bool = False) -> "PretrainedModel":
        """Load a model (in eval mode) from the name of a shipped model (``"mnist"``, see
        ``image-transformer models``), a folder written by ``save_pretrained`` (either layout), or a Hub repo id
        (``"user/name"``, downloaded into the Hub's cache; ``HF_HUB_OFFLINE=1`` or ``local_files_only`` read
        only the cache). On this class, any model type; on a subclass, that type only."""
        folder = resolve(pretrained_model_name_or_path, repo_id=True, revision=revision, cache_dir=cache_dir,
                         local_files_only=local_files_only, token=token, force_download=force_download)
        return load_pretrained(None if cls is PretrainedModel else cls, folder, map_location)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
                         force_download: bool = False, local_files_only: bool = False,
                         token: str | bool | None = None, map_location: str | torch.device = "cpu",
                         **kwargs: Any) -> "PretrainedModel":
        """The mixin's hook, for code that calls it directly: the same as :meth:`from_pretrained`."""
        return cls.from_pretrained(model_id, map_location, revision=revision, cache_dir=cache_dir,
                                   local_files_only=local_files_only, token=token, force_download=force_download)


def default_card(model: "PretrainedModel") -> str:
    """A minimal model card: the Hub's metadata header and how to load the folder (shipped models get a full one)."""
    kind = type(model).__name__
    pipeline = model.pipeline_tag
    return (f"---\nlibrary_name: image-transformer\npipeline_tag: {pipeline}\n"
            f"tags:\n- image-transformer\n- autoregressive\n- pytorch\n---\n\n"
            f"# {kind}\n\nAn Image Transformer ({PAPER_URL}) with {model.num_parameters():,} parameters, written by "
            f"`save_pretrained` of the `image-transformer` library. Load it with\n\n```python\n"
            f"from image_transformer import {kind}\nmodel = {kind}.from_pretrained(\"path/to/this/folder\")\n```\n")


def model_record(model: PretrainedModel) -> dict[str, Any]:
    """What identifies a model's architecture in every file we write."""
    return {"model_type": type(model).__name__, "config": model.config.to_dict(), "format_version": FORMAT_VERSION}


def model_from_config(config: Any) -> PretrainedModel:
    """A new model of the kind ``config`` describes (the model class whose ``config_class`` it is)."""
    for cls in MODEL_TYPES.values():
        if type(config) is cls.config_class:
            return cls(config)
    raise TypeError(f"no model is registered for {type(config).__name__}")


def build_model(record: dict[str, Any], source: str) -> PretrainedModel:
    """Instantiate the architecture described by ``model_record`` output."""
    kind, known = record.get("model_type"), MODEL_TYPES
    if kind not in known:
        raise CheckpointError(f"{source}: unknown model_type {kind!r}; expected one of {sorted(known)}")
    cls = known[kind]
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
    # weights stored in half precision (shipped models) come back in the model's own precision
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in state.items()}
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


def save_weights(model: PretrainedModel, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """The model's weights as a safetensors file (atomically); ``dtype`` stores floating-point ones in, e.g.,
    half precision (loading restores the model's own)."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    data = safetensors.torch.save(state, metadata={"format": "pt"})  # "pt": what the Hub's loaders look for
    atomic_write(path, lambda f: f.write(data))


def save_pretrained(model: PretrainedModel, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    """``config.json`` + ``model.safetensors`` (a ``weights.safetensors`` of the old layout is removed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / WEIGHTS_NAME, dtype)
    (directory / OLD_WEIGHTS_NAME).unlink(missing_ok=True)
    text = json.dumps(model_record(model), indent=2) + "\n"
    atomic_write(directory / CONFIG_NAME, lambda f: f.write(text.encode()))


def weights_file(directory: str | Path) -> Path:
    """A pretrained directory's weights: ``model.safetensors``, or ``weights.safetensors`` in a folder written
    by version 0.1."""
    directory = Path(directory)
    new, old = directory / WEIGHTS_NAME, directory / OLD_WEIGHTS_NAME
    return old if old.is_file() and not new.is_file() else new


def load_pretrained(cls: type | None, directory: str | Path,
                    map_location: str | torch.device = "cpu") -> PretrainedModel:
    """Load a ``save_pretrained`` directory; ``cls`` (if given) must match the stored model type."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, weights_file(directory)
    for p in (config_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: not found (a pretrained directory holds {CONFIG_NAME} and {WEIGHTS_NAME}, "
                                  f"or {OLD_WEIGHTS_NAME} when written before version 0.2)")
    try:
        record = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{config_path}: not an image-transformer config (a JSON object is expected)")
    if cls is not None and record.get("model_type") != cls.__name__:
        raise CheckpointError(f"{config_path}: holds a model of type {record.get('model_type')!r}, not {cls.__name__}")
    model = build_model(record, str(config_path))
    try:
        state = safetensors.torch.load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({e})") from None
    load_weights(model, state, str(weights_path))
    return model.to(map_location).eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu", ema: bool = True) -> PretrainedModel:
    """A model (in eval mode) from a run directory, a training checkpoint file, a pretrained directory, the name
    of a shipped model (``image-transformer models``) or ``hf-hub:USER/NAME`` (a Hub repo).

    With ``ema`` and a checkpoint that holds an exponential moving average, the averaged weights are used.
    """
    path = resolve(path)
    if path.is_dir():
        if is_pretrained_dir(path):
            return load_pretrained(None, path, map_location)
        if (path / CHECKPOINT_NAME).is_file():
            path = path / CHECKPOINT_NAME
        elif is_pretrained_dir(path / "model"):  # a finished run whose optimizer checkpoint was deleted
            return load_pretrained(None, path / "model", map_location)
        else:
            raise CheckpointError(f"{path}: holds neither {CHECKPOINT_NAME} nor {CONFIG_NAME} + {WEIGHTS_NAME} "
                                  f"(nor a model/ folder holding them)")
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
