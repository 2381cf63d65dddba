"""Models by name: the trained models shipped inside the package, their cards, and Hub-style resolution.

A shipped model is a folder ``image_transformer/pretrained/NAME/`` in the Hugging Face Hub's layout:

    config.json               the architecture (what ``save_pretrained`` writes)
    model.safetensors         the weights (half precision on disk when that moves test bits/dim by < 0.01;
                              loading restores the model's float32)
    README.md                 the model card: a YAML header (data, licence, command, steps, minutes, hardware,
                              test bits/dim, the test slice, the sample grid) and the same in words
    test_slice.safetensors    a few test images (uint8) and their indices in the test split, with whose
                              bits/dim, written in the card, the tests check the weights
    samples.png               the sample grid the card shows

``tools/ship_model.py`` writes such a folder from a finished training run (``tools/train_zoo.sh`` runs it after
training each model); dropping the folder into the package makes the model loadable by name, listed by
``image-transformer models`` and checked by the test suite.

:func:`resolve` turns what a user types into a local folder: a file or model folder that exists, else a
shipped name, else a Hub repo id (``hf-hub:USER/NAME`` anywhere; a bare ``USER/NAME`` in ``from_pretrained``,
as the Hub's own loaders take it), downloaded into the Hub's cache by ``huggingface_hub`` (which honours
``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import yaml
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

# the files of a model folder (this module is below checkpoint.py and pretrained.py, which read and write them)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"  # the Hub's name for a model's weights (huggingface_hub's SAFETENSORS_SINGLE_FILE)
OLD_WEIGHTS_NAME = "weights.safetensors"  # what save_pretrained wrote in version 0.1; still read
CARD_NAME = "README.md"
CHECKPOINT_NAME = "checkpoint.pt"  # a training run's
SHIPPED = Path(__file__).resolve().parents[1] / "pretrained"  # tests point this at a temporary folder
HUB_PREFIX = "hf-hub:"  # the prefix timm uses for a Hub repo where a path or a name is also accepted
SLICE_NAME = "test_slice.safetensors"
GRID_NAME = "samples.png"
# held-out images' out-of-distribution scores (their percentiles), for placing a new image among them: written by
# `image-transformer score --write-reference`, read by the demo's Likelihood tab
REFERENCE_NAME = "ood_reference.json"
# the training files a run (and the model it made) left out, one per line: JPEG versions of images held out
# elsewhere, say, so that anyone can check that the model never saw what it is scored on
LEFT_OUT_NAME = "left-out.txt"
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, SLICE_NAME, GRID_NAME)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]*$")  # never a path, never a repo id
HUB_FILES = [CONFIG_NAME, "*.safetensors", CARD_NAME, "*.png", REFERENCE_NAME,
             "left-out*.txt"]  # what a Hub download fetches
HOW_TO_TRAIN = ("tools/train_zoo.sh trains them (an hour or more each on a CPU) and tools/ship_model.py writes a "
                "finished run into {folder}/NAME/")


class UnknownModel(ValueError):
    """Neither a file or folder that exists, nor a shipped model's name, nor a Hub repo that could be read."""


class ModelFolderError(ValueError):
    """A shipped model's folder is incomplete, its card unreadable or at odds with its config, or a file kept beside
    a model (its out-of-distribution reference) unreadable."""


def is_pretrained_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``save_pretrained`` (it holds ``config.json``)."""
    return (Path(path) / CONFIG_NAME).is_file()


# ----- the model card: README.md, a YAML header (as on the Hub) and the same in words --------------------------------
CARD_KEYS = ("model_type", "config", "test", "slice", "data", "command", "steps", "train_minutes", "hardware")


def write_card(folder: str | Path, name: str, meta: dict[str, Any], summary: str) -> Path:
    """The card of the model ``name`` into ``folder``: ``meta`` (JSON-plain values, at least :data:`CARD_KEYS`) as
    its YAML header, then :func:`card_body` with ``summary`` as its first paragraph."""
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    path = Path(folder) / CARD_NAME
    path.write_text(f"---\n{header}---\n\n{card_body(name, meta, summary)}", encoding="utf-8")
    return path


def read_card(folder: str | Path) -> dict[str, Any]:
    """The machine-readable header of a model card (``README.md``'s YAML front matter, as on the Hub)."""
    path = Path(folder) / CARD_NAME
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        raise ModelFolderError(f"{path}: no YAML header (a card starts with a block between two '---' lines)")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as e:
        raise ModelFolderError(f"{path}: unreadable YAML header ({e})") from None
    if not isinstance(meta, dict):
        raise ModelFolderError(f"{path}: the YAML header is not a mapping")
    return meta


def card_body(name: str, meta: dict[str, Any], summary: str) -> str:
    """The card's text below its header: the model, data, licence, figures, stages and how to use and remake it."""
    test, data = meta["test"], meta["data"]
    stages = "".join(f"; stage {i}: {s['steps']:,} steps, {s['train_minutes']:.1f} minutes on {s['data']}"
                     for i, s in enumerate(meta.get("stages", []), 1))
    left = [f"| left out of training | {e['files']:,} files of {e['data']}, listed in `{e['file']}` |"
            for e in meta.get("left_out", [])]
    others = [f"| bits/dim elsewhere | {e['bits_per_dim']:.4f} over {e['images']:,} images of {e['data']} "
              f"(float32 weights, `{e['file']}`) |" for e in meta.get("other_evaluations", [])]
    kind = meta["model_type"]
    use = (f"image-transformer upscale {name} --data {data['spec']} --index 0 1 2 -o upscaled.png"
           if kind == "SuperResolutionTransformer" else f"image-transformer sample {name} -n 16 -o samples.png")
    lines = [
        f"# {name}", "", summary, "",
        "| | |", "|---|---|",
        f"| model | `{kind}`, {meta['parameters']:,} parameters, {meta['config']['attention']} attention, "
        f"{meta['config']['distribution']} output |",
        f"| data | {data.get('description', data['spec'])} |",
        f"| licence | {data.get('licence', 'see the data set')} |",
        f"| test bits/dim | **{test['bits_per_dim']:.4f}** over {test['images']:,} test images"
        f"{'' if test.get('full_split') else ' (spread over the split)'}, weights as shipped "
        f"({meta['weights_dtype']}; {test['bits_per_dim_float32']:.4f} before rounding) |",
        f"| training | {meta['steps']:,} steps, {meta['train_minutes']:.1f} minutes on {meta['hardware']}{stages} |",
        *left,
        *others,
        "",
    ]
    if "superres" in test:
        lines += ["Super-resolution report on held-out images (`image-transformer eval --samples`):", "",
                  "```json", json.dumps(test["superres"], indent=2), "```", ""]
    lines += [f"![samples]({GRID_NAME})", "", "## Use", "", "```bash", use, "```", "", "```python",
              f"from image_transformer import {kind}", f"model = {kind}.from_pretrained({name!r})", "```", "",
              "## How it was made", "", "```bash", *meta["command"], "```", "",
              f"The test slice in `{SLICE_NAME}` (test images {meta['slice']['indices']}) gives "
              f"{meta['slice']['bits_per_dim']:.4f} bits/dim with these weights; the test suite checks it.", ""]
    return "\n".join(lines)


# ----- the shipped models -----------------------------------------------------------------------------------
def shipped_names() -> list[str]:
    """The names of the model folders in the package (complete or not: :func:`problems` says)."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name))


def names_text() -> str:
    """The shipped names for an error message, or why there are none."""
    names = shipped_names()
    if names:
        return "shipped models: " + ", ".join(names)
    return "no trained models are shipped in this installation yet (" + HOW_TO_TRAIN.format(folder=SHIPPED) + ")"


def problems(name: str) -> list[str]:
    """What is wrong with the shipped folder ``name`` (empty when it is complete and its card matches)."""
    folder = SHIPPED / name
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        return [f"{folder}: missing {', '.join(missing)}"]
    found = []
    try:
        meta = read_card(folder)
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (ModelFolderError, json.JSONDecodeError, UnicodeDecodeError) as e:
        return [str(e)]
    for key in CARD_KEYS:
        if key not in meta:
            found.append(f"{folder / CARD_NAME}: the header has no {key!r}")
    if meta.get("model_type") != config.get("model_type") or meta.get("config") != config.get("config"):
        found.append(f"{folder / CARD_NAME}: its model_type/config differ from {CONFIG_NAME}")
    return found


def shipped_folder(name: str) -> Path:
    """The folder of the shipped model ``name``; an error naming what is missing when it is incomplete."""
    if name not in shipped_names():
        raise UnknownModel(f"{name!r}: not a shipped model; {names_text()}")
    found = problems(name)
    if found:
        raise ModelFolderError(f"shipped model {name!r} is incomplete: " + "; ".join(found))
    return SHIPPED / name


def card_text(name: str) -> str:
    """The model card of the shipped model ``name`` (its README.md)."""
    return (shipped_folder(name) / CARD_NAME).read_text(encoding="utf-8")


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def listing() -> list[dict[str, Any]]:
    """One row per shipped folder: name, model type, data, parameters, size on disk, test bits/dim, problems."""
    rows = []
    for name in shipped_names():
        folder, found = SHIPPED / name, problems(name)
        row: dict[str, Any] = {"name": name, "problems": found, "size_bytes": folder_size(folder)}
        if not found:
            meta = read_card(folder)
            row.update(model_type=meta["model_type"], data=meta["data"].get("name", meta["data"].get("spec")),
                       parameters=meta.get("parameters"), test_bits_per_dim=meta["test"]["bits_per_dim"],
                       test_images=meta["test"]["images"])
        rows.append(row)
    return rows


# ----- from what a user types to a folder -----------------------------------------------------------------------
def _is_repo_id(text: str) -> bool:
    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def hub_download(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                 local_files_only: bool = False, token: str | bool | None = None,
                 force_download: bool = False) -> Path:
    """The local snapshot of a Hub model repo (its config, weights, card and images), from the Hub's cache
    when it is there or ``HF_HUB_OFFLINE=1`` is set, else downloaded into it."""
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                   token=token, force_download=force_download, allow_patterns=HUB_FILES)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise UnknownModel(f"{repo_id!r}: not in the Hub's local cache, and it could not be downloaded (offline "
                           f"mode, HF_HUB_OFFLINE=1 or local_files_only, or no network: {type(e).__name__}); "
                           f"{names_text()}") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise UnknownModel(f"{repo_id!r}: could not be read from the Hugging Face Hub ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); {names_text()}") from None
    if not is_pretrained_dir(folder):
        raise UnknownModel(f"Hub repo {repo_id!r} holds no {CONFIG_NAME}: not an image-transformer model")
    return Path(folder)


def resolve(name_or_path: str | Path, *, repo_id: bool = False, **hub: Any) -> Path:
    """A local file or folder for what a user typed, in this order: a file, or a folder holding a model
    (``config.json`` or ``checkpoint.pt``), that exists; the name of a shipped model; ``hf-hub:USER/NAME``
    (and, with ``repo_id``, a bare ``USER/NAME`` as ``from_pretrained`` takes it): the repo's snapshot in the
    Hub's cache, downloaded if needed (``hub``: :func:`hub_download`'s options). Anything else is an
    :class:`UnknownModel` error that lists the shipped names."""
    text = str(name_or_path)
    if text.startswith(HUB_PREFIX):
        return hub_download(text[len(HUB_PREFIX):], **hub)
    path = Path(text).expanduser()
    if path.is_file() or (path.is_dir() and (is_pretrained_dir(path) or (path / CHECKPOINT_NAME).is_file())):
        return path
    if text in shipped_names():
        return shipped_folder(text)
    if path.exists():
        return path  # a folder that holds no model: the loader says what it lacks
    if repo_id and _is_repo_id(text):
        return hub_download(text, **hub)
    hint = f" (for a Hub repo, write {HUB_PREFIX}{text})" if _is_repo_id(text) else ""
    if os.sep in text or text.startswith((".", "~")):  # a path, not a name
        raise UnknownModel(f"{text}: no such file or folder{hint}")
    raise UnknownModel(f"{text}: no such file or folder, and not the name of a shipped model; {names_text()}")


def is_named(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names a model (shipped or on the Hub) rather than a path on this machine."""
    text = str(name_or_path)
    return text.startswith(HUB_PREFIX) or (text in shipped_names() and not Path(text).exists())


def reference_path(name_or_path: str | Path) -> Path:
    """Where the out-of-distribution reference scores of a model (shipped name, folder or checkpoint) live: beside
    its config or checkpoint."""
    path = resolve(name_or_path)
    return (path if path.is_dir() else path.parent) / REFERENCE_NAME


def write_reference(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (:func:`ood.reference`'s) to ``path`` (see :func:`reference_path`), a line per score."""
    columns = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in record["percentiles"].items())
    text = (f'{{"source": {json.dumps(record["source"])}, "images": {record["images"]},\n'
            f' "percentiles": {{\n{columns}\n }}}}\n')
    path = Path(path)
    path.write_text(text)
    return path


def read_reference(name_or_path: str | Path) -> dict[str, Any] | None:
    """The model's reference scores (see :data:`REFERENCE_NAME`), or None when it keeps none (or is no file or folder
    here). A file that is there but cannot be read as reference scores is a :class:`ModelFolderError` naming it and
    what is wrong, not "none": whoever wrote it expects it to be used."""
    try:
        path = reference_path(name_or_path)
    except UnknownModel:  # a model held in memory under a name, with no folder to keep anything in
        return None
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_bytes())
    except OSError as e:
        raise ModelFolderError(f"{path}: the out-of-distribution reference cannot be read "
                               f"({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ModelFolderError(f"{path}: the out-of-distribution reference is not JSON ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("percentiles"), dict):
        raise ModelFolderError(f"{path}: not an out-of-distribution reference (no \"percentiles\" mapping): write it "
                               f"again with `image-transformer score MODEL --data SPEC --write-reference`")
    return record


# ----- checking a model against its test slice -------------------------------------------------------------------
def read_slice(folder: str | Path) -> dict[str, torch.Tensor]:
    """A shipped folder's test slice: ``images`` uint8 (N, H, W, C), ``indices`` (N,), and ``labels`` if any."""
    return safetensors.torch.load_file(str(Path(folder) / SLICE_NAME))
