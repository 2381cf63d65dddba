"""The local web demo: ``image-transformer demo`` serves five tabs (Sample, Complete, Upscale, Compress, Likelihood)
over the models it is given, on 127.0.0.1, with no network.

Two layers. The functions behind the tabs (:func:`sample_stream`, :func:`complete`, :func:`upscale`,
:func:`compress`, :func:`likelihood`, and :func:`prepare` for what a user uploads) take tensors and Pillow images and
return images and numbers: plain Python over the library, tested without a browser, each saying in a ValueError
what is wrong with its input. :func:`build_app` lays them out as Gradio tabs and :func:`launch` serves them.
Gradio is an optional extra (``pip install -e ".[demo]"``), imported by :func:`gradio` only when an app is built,
so the package and the command line start without it.

Every tab lists the loaded models that can do its job; a tab with none says so and what to load. Long work runs
in Gradio's queue, so one tab's sampling does not hold up another tab; sampling runs in a thread of its own and
stops at the next generation step when Cancel is pressed.
"""

# No ``from __future__ import annotations`` here: Gradio reads the type hints of the functions it calls (a parameter
# annotated ``gr.Request`` receives the request), and it resolves them only when they are objects, not text.
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import codec, tasks
from .files import folders
from .files.checkpoint import CheckpointError, run_info
from .files.data import load_split
from .files.image_files import LOSSLESS_FORMATS, fit_image, heat_map, lossless_bytes, lossless_formats, make_grid
from .files.pretrained import PretrainedModel, load_model
from .images import CHANNEL_NAMES, area_downsample, enlarge
from .metrics import spread
from .nn.model import ImageTransformer, StepHook
from .nn.superres import SuperResolutionTransformer
from .tasks import GREY, TEMPERATURES, labels_for, sample_labels

__all__ = ["DemoModel", "load_models", "cannot", "prepare", "held_out_images", "sample_stream", "Snapshot",
           "complete", "upscale", "UpscaleResult", "compress", "CompressResult", "likelihood", "build_app", "launch",
           "gradio", "TEMPERATURES", "GREY"]

HELD_OUT_LIMIT = 64  # held-out images offered per model
DISPLAY_PIXELS = 256  # images are enlarged (nearest neighbour) to about this many pixels on their longer side
JOBS = ("sample", "complete", "upscale", "compress", "likelihood")
CSS = (".pixels img, .pixels canvas { image-rendering: pixelated; } "  # enlarged pixels stay sharp
       ".preview img { width: 100%; height: 100%; object-fit: contain; } "  # a 28x28 upload shown large
       ".notice { border-left: 4px solid #f59e0b; padding-left: 12px; }")


# ----- the models ---------------------------------------------------------------------------------------------
@dataclass
class DemoModel:
    """A model the demo serves: its name (what was typed after ``--model``), the model, and its held-out images
    once asked for (see :func:`held_out_images`)."""

    name: str
    model: PretrainedModel
    _held_out: tuple[Tensor, Tensor | None, str] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> str:
        return f"`{self.name}`: {describe(self.model)}"

    def held_out(self) -> tuple[Tensor, Tensor | None, str]:
        """:func:`held_out_images` of this model, read once."""
        with self._lock:
            if self._held_out is None:
                self._held_out = held_out_images(self.name, self.model)
            return self._held_out


def describe(model: PretrainedModel) -> str:
    """One line: what kind of model, what images, how many parameters."""
    h, w, c = model.image_shape
    what = f"{h}x{w} {CHANNEL_NAMES[c]}"
    if isinstance(model, SuperResolutionTransformer):
        ih, iw, _ = model.input_shape
        kind = f"super-resolution {ih}x{iw} -> {what}"
    elif model.config.num_classes:
        kind = f"class-conditional ({model.config.num_classes} classes), {what}"
    else:
        kind = f"unconditional, {what}"
    return f"{kind}, {model.config.distribution}, {model.num_parameters() / 1e6:.2f}M parameters"


def load_models(sources: Sequence[str]) -> list[DemoModel]:
    """The models named by ``sources`` (run folders, checkpoints, model folders, shipped names, ``hf-hub:USER/NAME``,
    as :func:`~image_transformer.files.pretrained.load_model` takes them); with none, every complete shipped model."""
    if not sources:
        sources = [row["name"] for row in folders.listing() if not row["problems"]]
    models, seen = [], set()
    for source in sources:
        if source in seen:
            continue
        seen.add(source)
        models.append(DemoModel(str(source), load_model(source)))
    return models


def cannot(model: PretrainedModel, job: str, name: str = "this model") -> str | None:
    """Why ``model`` cannot do ``job`` (one of :data:`JOBS`), in a sentence; None when it can."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; known: {', '.join(JOBS)}")
    superres = isinstance(model, SuperResolutionTransformer)
    if job in ("sample", "complete", "compress") and superres:
        ih, iw, _ = model.input_shape
        h, w, _ = model.image_shape
        return (f"{name} is a super-resolution model ({ih}x{iw} -> {h}x{w}): it makes images only from low-resolution "
                f"ones, so it cannot {job} on its own; use it in the Upscale tab, and load an unconditional or "
                f"class-conditional model (e.g. a run of `image-transformer train`) for this tab")
    if job == "upscale" and not superres:
        return (f"{name} is not a super-resolution model: it has no low-resolution input to upscale from; load one "
                f"trained with `image-transformer train --task superres`")
    return None


def check_job(model: PretrainedModel, job: str, name: str = "this model") -> None:
    reason = cannot(model, job, name)
    if reason:
        raise ValueError(reason)


def held_out_images(source: str | Path, model: PretrainedModel,
                    limit: int = HELD_OUT_LIMIT) -> tuple[Tensor, Tensor | None, str]:
    """Up to ``limit`` held-out images of the model's size, (images uint8 (N, H, W, C), labels or None, where from):
    a shipped (or shipped-style) model folder's test slice, or the test split of the data a training run recorded
    (found from the current folder, as the run's command line gave it). A ValueError saying why when there are
    none."""
    path = folders.resolve(source)
    folder = path if path.is_dir() else path.parent
    if (folder / folders.SLICE_NAME).is_file():
        held = folders.read_slice(folder)
        idx = spread(len(held["images"]), limit)
        labels = held.get("labels")
        return held["images"][idx], labels[idx] if labels is not None else None, f"the test slice in {folder}"
    info = run_info(path) or run_info(folder.parent)  # a run folder or its checkpoint; a run's model/ folder
    spec = info.get("data")
    if not spec:
        raise ValueError(f"{source}: no held-out images: neither a test slice ({folders.SLICE_NAME}) nor a training run's "
                         f"record of its data; upload an image instead")
    size = info.get("image_size")
    try:
        data = load_split(spec, "test", tuple(size) if size else None)
    except ValueError as e:
        raise ValueError(f"{source}: its held-out images come from {spec}, which cannot be read from here "
                         f"({os.getcwd()}): {e}") from None
    images, labels = data.tensors()
    if tuple(images.shape[1:]) != tuple(model.image_shape):
        raise ValueError(f"{source}: its data {spec} holds {tuple(images.shape[1:])} images, not the model's "
                         f"{tuple(model.image_shape)}")
    idx = spread(len(images), limit)
    return images[idx], labels[idx] if labels is not None else None, f"the test split of {spec}"


# ----- inputs -------------------------------------------------------------------------------------------------
def prepare(image: Image.Image | np.ndarray | str | Path | None, shape: tuple[int, int, int],
            fit: bool = False) -> tuple[Tensor, list[str]]:
    """What a user gave (a Pillow image, an array or a file) as uint8 (H, W, C) of ``shape``, and notes on what was
    changed (see :func:`~image_transformer.images.fit_image`: a change of size or a lossy change of channels only
    with ``fit``, a ValueError saying what differs otherwise)."""
    if image is None:
        raise ValueError("no image: upload one (or draw one, or pick a held-out one)")
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                opened.load()
                image = opened
        except OSError as e:
            raise ValueError(f"{Path(image).name}: cannot read this file as an image ({e})") from None
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] > 4):
            raise ValueError(f"an image array must be uint8 (H, W) or (H, W, 1 to 4), got {image.dtype} {image.shape}")
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    return fit_image(image, shape, fit)


def drawing_image(value: Any) -> Image.Image | np.ndarray | None:
    """The picture of a sketch pad's value (Gradio's image editor gives {"background", "layers", "composite"}): the
    composite, None when nothing is drawn (no stroke on any layer)."""
    if isinstance(value, dict):
        layers = [np.asarray(layer) for layer in value.get("layers") or [] if layer is not None]
        if layers and not any(layer.ndim == 3 and layer.shape[-1] == 4 and layer[..., 3].any() for layer in layers):
            return None
        value = value.get("composite")
    if value is None:
        return None
    array = np.asarray(value)
    if array.size == 0 or (array.ndim == 3 and array.shape[-1] == 4 and not array[..., 3].any()):
        return None
    return value


# ----- Sample -------------------------------------------------------------------------------------------------
class Cancelled(Exception):
    """Sampling stopped at a generation step because it was asked to."""


@dataclass
class Snapshot:
    """Sampling under way: the images with the positions not drawn yet in grey, uint8 (N, H, W, C); generation steps
    done of the total; seconds so far; the grid's images per row."""

    images: Tensor
    done: int
    total: int
    seconds: float
    nrow: int | None
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.done >= self.total and not self.cancelled

    def rows_done(self, model: ImageTransformer) -> int:
        """Image rows complete in every image."""
        filled = torch.zeros(model.layout.n, dtype=torch.bool)
        filled[model.layout.order[: self.done].cpu()] = True
        rows = model.to_images(filled[None, :, None].expand(1, -1, model.dist.values_per_position))[0]
        full = rows.flatten(1).all(1)  # (H,)
        return int(full.long().cumprod(0).sum())


def partial_images(model: ImageTransformer, values: Tensor, done: int) -> Tensor:
    """``values`` (B, n, k) as images uint8 (B, H, W, C), the positions of generation steps >= ``done`` in grey."""
    filled = torch.zeros(model.layout.n, dtype=torch.bool)
    filled[model.layout.order[:done].cpu()] = True
    mask = model.to_images(filled[None, :, None].expand(1, -1, model.dist.values_per_position))
    images = model.to_images(values.detach().cpu().clone())
    return torch.where(mask, images, torch.full_like(images, GREY)).to(torch.uint8)


def sample_stream(model: ImageTransformer, num: int, temperature: float = 1.0, seed: int = 0,
                  label: int | None = None, *, stop: threading.Event | None = None,
                  every: float = 0.25) -> Iterator[Snapshot]:
    """Sample as ``image-transformer sample`` does, showing the images as they grow: a :class:`Snapshot` every
    ``every`` seconds, the last one finished, its images those of ``model.sample`` with the same arguments.

    A class-conditional model samples ``label``, or with None one row of images per class (``num`` // classes each,
    at least one). The sampler runs in a thread; setting ``stop`` (or closing this generator) ends it at the next
    generation step, and the last snapshot is then ``cancelled``.
    """
    check_job(model, "sample")
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"the number of images must be a positive integer, got {num!r}")
    labels, nrow = sample_labels(model, num, label)
    n = len(labels) if labels is not None else num
    halt = threading.Event()
    live: dict[str, Any] = {"values": None, "done": 0}
    result: dict[str, Any] = {}
    finished = threading.Event()

    def on_step(values: Tensor, t: int) -> None:
        live["values"], live["done"] = values, t
        if halt.is_set() or (stop is not None and stop.is_set()):
            raise Cancelled

    def work() -> None:
        try:
            result["images"] = model.sample(n, labels=labels, temperature=temperature,
                                            generator=torch.Generator().manual_seed(int(seed)), on_step=on_step)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = e
        finally:
            finished.set()

    total = model.layout.n
    blank = torch.full((n, *model.image_shape), GREY, dtype=torch.uint8)
    start = time.monotonic()
    thread = threading.Thread(target=work, name="image-transformer-sampling", daemon=True)
    thread.start()
    try:
        while not finished.wait(every):
            values, done = live["values"], live["done"]
            images = partial_images(model, values, done) if values is not None else blank
            yield Snapshot(images, done, total, time.monotonic() - start, nrow)
        error = result.get("error")
        if isinstance(error, Cancelled):
            values, done = live["values"], live["done"]
            images = partial_images(model, values, done) if values is not None else blank
            yield Snapshot(images, done, total, time.monotonic() - start, nrow, cancelled=True)
            return
        if error is not None:
            raise error
        yield Snapshot(result["images"].cpu(), total, total, time.monotonic() - start, nrow)
    finally:
        halt.set()
        thread.join(timeout=30)


# ----- Complete -----------------------------------------------------------------------------------------------
def complete(model: ImageTransformer, image: Tensor, rows: int, num: int = 4, temperature: float = 1.0,
             seed: int = 0, label: int | None = None, on_step: StepHook | None = None) -> Tensor:
    """:func:`tasks.complete` as ``image-transformer complete`` runs it: (num + 2, H, W, C), the input with its
    unknown part grey, the completions, the original."""
    check_job(model, "complete")
    model.known_prefix(rows)  # the allowed row counts, before any work
    return tasks.complete(model, image, rows, num, labels_for(model, num, label), temperature,
                          torch.Generator().manual_seed(int(seed)), on_step=on_step)


# ----- Upscale ------------------------------------------------------------------------------------------------
@dataclass
class UpscaleResult:
    """The low-resolution input (h, w, C), the original it was made from (H, W, C) or None, and the samples
    (num, H, W, C) at each temperature."""

    low: Tensor
    original: Tensor | None
    samples: dict[float, Tensor]


def upscale_input(model: SuperResolutionTransformer, image: Any, fit: bool = False) -> tuple[Tensor, Tensor | None,
                                                                                            list[str]]:
    """What a user gave to upscale: an image of the model's input size (taken as it is), or of its output size (area
    downsampled, as the training pairs were made, and kept as the original), or, with ``fit``, any image (fitted to
    the output size, then downsampled). (low (h, w, C), original or None, notes)."""
    check_job(model, "upscale")
    (ih, iw, c), (h, w, _) = model.input_shape, model.image_shape
    if isinstance(image, (str, Path)):
        image = Image.open(image)
    size = (image.height, image.width) if isinstance(image, Image.Image) else tuple(np.asarray(image).shape[:2])
    if size == (ih, iw):
        low, notes = prepare(image, model.input_shape, fit)
        return low, None, notes
    if size != (h, w) and not fit:
        raise ValueError(f"the image is {size[0]}x{size[1]}: the model upscales {ih}x{iw} images, or takes a {h}x{w} "
                         f"one and downsamples it to {ih}x{iw} first. Tick \"fit to the model\" to resize it to "
                         f"{h}x{w}")
    original, notes = prepare(image, model.image_shape, fit)
    low = area_downsample(original[None], model.config.input_size)[0]
    return low, original, notes + [f"area-downsampled to {ih}x{iw}, as the training inputs were"]


def upscale(model: SuperResolutionTransformer, low: Tensor, num: int = 1, seed: int = 0,
            temperatures: Sequence[float] = TEMPERATURES, original: Tensor | None = None,
            on_step: StepHook | None = None) -> UpscaleResult:
    """``num`` samples of the high-resolution image at each temperature for the low-resolution ``low`` (h, w, C),
    each temperature from the same seed (as ``image-transformer eval --samples`` does)."""
    check_job(model, "upscale")
    samples = {float(t): tasks.upscale(model, low, num, float(t), torch.Generator().manual_seed(int(seed)),
                                       on_step=on_step) for t in temperatures}
    return UpscaleResult(low, original, samples)


# ----- Compress -----------------------------------------------------------------------------------------------
@dataclass
class CompressResult:
    """A compressed file and how it compares: ``sizes`` are (codec, bytes of all the images) rows, the model's file
    first, then its coded pixels alone (the file less its header), and the raw pixels last; ``identical``: the file
    decodes to exactly the input."""

    stream: bytes
    decoded: Tensor
    identical: bool
    sizes: list[tuple[str, int]]
    dims: int
    model_bits_per_dim: float
    encode_seconds: float
    decode_seconds: float

    def bits_per_dim(self, size: int) -> float:
        return 8 * size / self.dims


def compress(model: ImageTransformer, images: Tensor, labels: Tensor | None = None,
             names: list[str] | None = None, uploaded_bytes: int | None = None) -> CompressResult:
    """Compress ``images`` (uint8 (B, H, W, C)) with the model's codec, decode the file again and compare, and size
    the same images as PNG, WebP and (with its plugin) JPEG XL files, each image its own file."""
    check_job(model, "compress")
    coded = tasks.compress(model, images, labels, names)
    stream = coded.stream
    back = tasks.decompress(stream, model)
    decoded, decoded_labels = back.images, back.labels
    identical = torch.equal(decoded, images.cpu()) and (labels is None or torch.equal(decoded_labels, labels.cpu()))
    payload = len(codec.read_header(stream)[1])
    sizes = [("Image Transformer (this model)", len(stream)),
             ("… its coded pixels alone, without the file's header", payload)]
    sizes += [(LOSSLESS_FORMATS[f], sum(len(lossless_bytes(image, f)) for image in images))
              for f in lossless_formats()]
    if uploaded_bytes is not None:
        sizes.append(("the files as uploaded", uploaded_bytes))
    sizes.append(("raw pixels (8 bits/dim)", images.numel()))
    return CompressResult(stream, decoded, identical, sizes, images.numel(), coded.model_bits_per_dim, coded.seconds,
                          back.seconds)


def size_table(result: CompressResult) -> str:
    """The sizes as a Markdown table: bytes, bits/dim and each against the model's file."""
    ours = result.sizes[0][1]
    lines = ["| codec | bytes | bits/dim | vs this model |", "|---|---:|---:|---:|"]
    for name, size in result.sizes:
        ratio = "" if size == ours and name == result.sizes[0][0] else f"{size / ours:.2f}x"
        lines.append(f"| {name} | {size:,} | {result.bits_per_dim(size):.3f} | {ratio} |")
    return "\n".join(lines)


# ----- Likelihood ---------------------------------------------------------------------------------------------
def likelihood(model: PretrainedModel, image: Tensor, label: int | None = None) -> tuple[float, Tensor]:
    """:func:`tasks.likelihood` given ``label`` for a class-conditional model: bits/dim and the bits of each pixel."""
    return tasks.likelihood(model, image, labels_for(model, 1, label))


# ----- display ------------------------------------------------------------------------------------------------
def display(images: Tensor, nrow: int | None = None, pixels: int = DISPLAY_PIXELS) -> np.ndarray:
    """A grid of images (N, H, W, C) as one uint8 array, each image enlarged (nearest neighbour) to about ``pixels``
    on its longer side when small, so that the browser shows pixels rather than a blur; RGB or grey."""
    if images.dim() == 3:
        images = images[None]
    h, w = images.shape[1:3]
    factor = max(1, pixels // max(h, w))
    if images.shape[-1] in (2, 4):  # drop alpha for display: the browser would show a checkerboard
        images = images[..., :-1]
    grid = make_grid(enlarge(images.cpu(), (factor, factor)), nrow=nrow, padding=2 * factor)
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def gradio() -> Any:
    """The ``gradio`` module; a ValueError saying how to install it when it is not there. (The page is built with
    its usage statistics off, and :func:`launch` turns them off for the process it serves from.)"""
    try:
        import gradio as gr  # optional: pip install -e ".[demo]"
    except ImportError:
        raise ValueError('the web demo needs Gradio, an optional dependency: pip install -e ".[demo]" '
                         '(or pip install gradio)') from None
    return gr


# ----- the web page -------------------------------------------------------------------------------------------
class Stops:
    """The stop flags of the work under way, by browser session and tab: Cancel sets those of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, set[threading.Event]] = {}

    def start(self, key: str) -> threading.Event:
        flag = threading.Event()
        with self._lock:
            self._flags.setdefault(key, set()).add(flag)
        return flag

    def finish(self, key: str, flag: threading.Event) -> None:
        with self._lock:
            self._flags.get(key, set()).discard(flag)

    def stop(self, key: str) -> int:
        """Set the flags of ``key``'s work; how many were set."""
        with self._lock:
            flags = list(self._flags.get(key, ()))
        for flag in flags:
            flag.set()
        return len(flags)


def step_reporter(report: Callable[[float, str], None], what: str, stop: threading.Event | None = None,
                  every: float = 0.2) -> StepHook:
    """An ``on_step`` hook that reports the fraction done of each sampling run (at most every ``every`` seconds)
    and stops it (raising :class:`Cancelled`) once ``stop`` is set."""
    last = [0.0]

    def hook(values: Tensor, t: int) -> None:
        if stop is not None and stop.is_set():
            raise Cancelled
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            total = values.shape[1]
            report(t / total, f"{what}: step {t:,} of {total:,}")

    return hook


FAILURES = (ValueError, CheckpointError, Cancelled)  # what a tab shows as a message (DataError, CodecError: ValueError)


def failure(e: BaseException) -> str:
    if isinstance(e, Cancelled):
        return "Cancelled."
    return f"**Cannot do that:** {e}"


def progress_bar(fraction: float, width: int = 24) -> str:
    """A bar of text: ``width`` blocks, the first ``fraction`` of them full."""
    full = max(0, min(width, round(fraction * width)))
    return "\u2588" * full + "\u2591" * (width - full)


def _to_pil(image: Tensor) -> Image.Image:
    array = image.cpu().numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _notes(notes: list[str]) -> str:
    return f" (input: {'; '.join(notes)})" if notes else ""


def _class_choices(model: PretrainedModel, every_class: bool) -> list[tuple[str, int]]:
    k = getattr(model.config, "num_classes", 0)
    if not k:
        return []
    first = [("one row per class", -1)] if every_class else []
    return first + [(f"class {i}", i) for i in range(k)]


class DemoApp:
    """The Gradio page over ``models``: one tab per job, built by :meth:`build`. ``workdir`` holds the files it
    hands to the browser (compressed files, held-out images)."""

    def __init__(self, models: Sequence[DemoModel], workdir: str | Path | None = None):
        self.gr = gradio()
        self.models = {m.name: m for m in models}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="image-transformer-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stops = Stops()

    # ----- helpers -----
    def able(self, job: str) -> list[str]:
        return [name for name, m in self.models.items() if cannot(m.model, job) is None]

    def pick(self, name: str | None, job: str) -> PretrainedModel:
        if not name or name not in self.models:
            raise ValueError("no model chosen: pick one above")
        model = self.models[name].model
        check_job(model, job, name)
        return model

    def none_here(self, job: str, what: str) -> None:
        """The notice of a tab that no loaded model can serve."""
        if not self.models:
            text = ("**No model is loaded.** Start the demo with one: `image-transformer demo --model RUN_FOLDER` (a "
                    "run of `image-transformer train`, a checkpoint, a model folder, a shipped model's name or "
                    "`hf-hub:USER/NAME`).")
        else:
            reasons = "\n".join(f"- {cannot(m.model, job, f'`{name}`')}" for name, m in self.models.items())
            text = f"**No loaded model can {what}.**\n\n{reasons}"
        self.gr.Markdown(text, elem_classes="notice")

    def model_picker(self, names: list[str], tab: str) -> Any:
        return self.gr.Dropdown(names, value=names[0], label="model", elem_id=f"{tab}-model")

    def class_picker(self, name: str, every_class: bool = False) -> Any:
        model = self.models[name].model
        choices = _class_choices(model, every_class)
        return self.gr.Dropdown(choices, value=choices[0][1] if choices else None, label="class",
                                visible=bool(choices))

    def class_update(self, name: str, every_class: bool = False) -> Any:
        choices = _class_choices(self.models[name].model, every_class) if name in self.models else []
        return self.gr.update(choices=choices, value=choices[0][1] if choices else None, visible=bool(choices))

    def upload(self, label: str, elem_id: str) -> Any:
        # type "pil" with image_mode None: the file's own mode (grey stays grey); PNG both ways, never lossy WebP
        return self.gr.Image(type="pil", image_mode=None, format="png", label=label, sources=["upload", "clipboard"],
                             elem_classes=["pixels", "preview"], height=260, elem_id=elem_id)

    def output_image(self, label: str, elem_id: str) -> Any:
        return self.gr.Image(type="numpy", format="png", label=label, interactive=False, elem_classes="pixels",
                             buttons=["download"], elem_id=elem_id)

    def held_out_row(self, picker: Any, target: Any, tab: str) -> None:
        """A number and a button that put the model's held-out image of that number into ``target``."""
        gr = self.gr
        with gr.Row():
            index = gr.Number(0, precision=0, minimum=0, label="held-out image #", scale=1, min_width=100,
                              elem_id=f"{tab}-held-index")
            button = gr.Button("Use a held-out image", scale=2, size="sm", elem_id=f"{tab}-held-out")
        status = gr.Markdown(elem_id=f"{tab}-input-status")

        def load(name: str, i: float) -> tuple[Any, str]:
            try:
                images, _, where = self.models[name].held_out()
            except (FAILURES + (KeyError,)) as e:
                return gr.skip(), failure(e)
            k = int(i or 0) % len(images)
            return _to_pil(images[k]), f"Held-out image {k} of {len(images)}, from {where}."

        button.click(load, [picker, index], [target, status], api_name=False)

    def key(self, request: Any, tab: str) -> str:
        return f"{getattr(request, 'session_hash', None)}/{tab}"

    def canceller(self, tab: str) -> Callable[..., str]:
        """The function of a tab's Cancel button: it sets the stop flag of that tab's work for this browser session,
        which ends the sampler at its next step; the work's own last message then says where it stopped. (Not
        Gradio's ``cancels``: that drops the event's last updates, and cannot stop a thread that is computing.)"""
        gr = self.gr

        def cancel(request: gr.Request) -> str:
            return "Stopping at the next step..." if self.stops.stop(self.key(request, tab)) else "Nothing to cancel."

        return cancel

    # ----- the page -----
    def build(self) -> Any:
        gr = self.gr
        with gr.Blocks(title="Image Transformer demo", analytics_enabled=False) as app:
            loaded = "\n".join(f"- {m.describe()}" for m in self.models.values()) or "- none"
            gr.Markdown("# Image Transformer\nLocal self-attention image models with exact likelihoods "
                        "(Parmar et al., 2018). Everything runs on this machine.\n\n"
                        f"<details><summary>Models loaded ({len(self.models)})</summary>\n\n{loaded}\n</details>")
            with gr.Tabs():
                with gr.Tab("Sample", id="sample"):
                    self.sample_tab()
                with gr.Tab("Complete", id="complete"):
                    self.complete_tab()
                with gr.Tab("Upscale", id="upscale"):
                    self.upscale_tab()
                with gr.Tab("Compress", id="compress"):
                    self.compress_tab()
                with gr.Tab("Likelihood", id="likelihood"):
                    self.likelihood_tab()
        return app

    def sample_tab(self) -> None:
        gr, names = self.gr, self.able("sample")
        gr.Markdown("Draw new images, one sub-pixel at a time in the model's generation order; the grid fills in as "
                    "the sampler goes (grey: not drawn yet).")
        if not names:
            return self.none_here("sample", "sample images")
        with gr.Row():
            with gr.Column(scale=1):
                picker = self.model_picker(names, "sample")
                label = self.class_picker(names[0], every_class=True)
                temperature = gr.Slider(0.0, 1.5, 1.0, step=0.05, label="temperature (0: greedy)")
                num = gr.Slider(1, 64, 16, step=1, label="number of images", elem_id="sample-num")
                seed = gr.Number(0, precision=0, label="seed")
                with gr.Row():
                    run = gr.Button("Sample", variant="primary", elem_id="sample-run")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="sample-cancel")
            with gr.Column(scale=2):
                out = self.output_image("samples", "sample-out")
                status = gr.Markdown(elem_id="sample-status")
        picker.change(lambda n: self.class_update(n, True), picker, label, api_name=False)

        def go(name: str, temperature: float, num: float, seed: float, label: int | None,
               request: gr.Request) -> Iterator[tuple[Any, str]]:
            key = self.key(request, "sample")
            stop = self.stops.start(key)
            try:
                model = self.pick(name, "sample")
                cls = None if label is None or label < 0 else int(label)
                for snap in sample_stream(model, int(num), float(temperature), int(seed or 0), cls, stop=stop):
                    rows = snap.rows_done(model)
                    if snap.cancelled:
                        text = f"Cancelled after {snap.seconds:.1f} s, at step {snap.done:,} of {snap.total:,}."
                    elif snap.finished:
                        n = len(snap.images)
                        text = (f"**{n} images in {snap.seconds:.1f} s** ({n / snap.seconds:.2f} images/s), "
                                f"temperature {temperature:g}, seed {int(seed or 0)}.")
                    else:
                        doing = "Stopping at the next step..." if stop.is_set() else "Sampling"  # Cancel pressed
                        text = (f"{doing} `{progress_bar(snap.done / snap.total)}` {rows} of "
                                f"{model.image_shape[0]} rows complete (step {snap.done:,} of {snap.total:,}), "
                                f"{snap.seconds:.1f} s.")
                    yield display(snap.images, snap.nrow), text
            except FAILURES as e:
                yield None, failure(e)
            finally:
                self.stops.finish(key, stop)

        # the status line is the progress indicator (a bar, the rows, the seconds): Gradio's own would cover the grid
        run.click(go, [picker, temperature, num, seed, label], [out, status], show_progress="hidden",
                  api_name="sample")
        cancel.click(self.canceller("sample"), None, status, queue=False, api_name=False)

    def complete_tab(self) -> None:
        gr, names = self.gr, self.able("complete")
        gr.Markdown("Keep the top rows of an image and let the model draw the rest, several times: each row of the "
                    "result shows the input (unknown part grey), the completions and the original.")
        if not names:
            return self.none_here("complete", "complete images")
        model = self.models[names[0]].model
        h, w, c = model.image_shape
        with gr.Row():
            with gr.Column(scale=1):
                picker = self.model_picker(names, "complete")
                source = gr.State("upload")  # the sub-tab last chosen: what to complete
                with gr.Tabs():
                    with gr.Tab("Upload", id="complete-upload") as upload_tab:
                        image = self.upload("image to complete", "complete-image")
                        self.held_out_row(picker, image, "complete")  # here: a held-out image is an upload
                    with gr.Tab("Draw", id="complete-draw") as draw_tab:
                        pad = gr.Sketchpad(value={"background": np.zeros((280, 280, 3), np.uint8), "layers": [],
                                                  "composite": None},
                                           canvas_size=(280, 280), fixed_canvas=True, type="numpy", image_mode="RGBA",
                                           brush=gr.Brush(default_size=22, colors=["#ffffff", "#808080", "#000000"],
                                                          default_color="#ffffff"),
                                           label="draw (white on black); resized to the model's size",
                                           elem_id="complete-pad")
                rows = gr.Slider(0, h, h // 2, step=1, label="top rows to keep", elem_id="complete-rows")
                label = self.class_picker(names[0])
                num = gr.Slider(1, 16, 4, step=1, label="completions", elem_id="complete-num")
                temperature = gr.Slider(0.0, 1.5, 1.0, step=0.05, label="temperature")
                seed = gr.Number(0, precision=0, label="seed")
                fit = gr.Checkbox(False, label="fit to the model (resize and convert an upload that does not match)")
                with gr.Row():
                    run = gr.Button("Complete", variant="primary", elem_id="complete-run")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="complete-cancel")
            with gr.Column(scale=2):
                out = self.output_image("input · completions · original", "complete-out")
                status = gr.Markdown(elem_id="complete-status")

        def changed(name: str) -> tuple[Any, Any]:
            mh = self.models[name].model.image_shape[0]
            return self.class_update(name), gr.update(maximum=mh, value=min(mh, mh // 2))

        picker.change(changed, picker, [label, rows], api_name=False)
        upload_tab.select(lambda: "upload", None, source, api_name=False)
        draw_tab.select(lambda: "drawing", None, source, api_name=False)

        def go(name: str, source: str, upload: Any, drawing: Any, rows: float, label: int | None, num: float,
               temperature: float, seed: float, fit: bool, request: gr.Request,
               progress: gr.Progress = gr.Progress()) -> tuple[Any, str]:
            key = self.key(request, "complete")
            stop = self.stops.start(key)
            try:
                model = self.pick(name, "complete")
                if source == "drawing":
                    given, fit = drawing_image(drawing), True  # a sketch has the pad's size: always fitted
                    if given is None:
                        raise ValueError("the sketch pad is empty: draw something, or upload an image")
                else:
                    given = upload
                x, notes = prepare(given, model.image_shape, fit)
                start = time.monotonic()
                hook = step_reporter(lambda f, d: progress(f, desc=d), "completing", stop)
                grid = complete(model, x, int(rows), int(num), float(temperature), int(seed or 0), label, hook)
                seconds = time.monotonic() - start
                return (display(grid, nrow=len(grid)),
                        f"**{int(num)} completions in {seconds:.1f} s**, the top {int(rows)} rows kept{_notes(notes)}.")
            except FAILURES as e:
                return None, failure(e)
            finally:
                self.stops.finish(key, stop)

        run.click(go, [picker, source, image, pad, rows, label, num, temperature, seed, fit], [out, status],
                  api_name="complete")
        cancel.click(self.canceller("complete"), None, status, queue=False, api_name=False)

    def upscale_tab(self) -> None:
        gr, names = self.gr, self.able("upscale")
        gr.Markdown("Give a face (or pick a held-out one): the model sees its low-resolution version and draws the "
                    "high-resolution image at temperatures " + ", ".join(map(str, TEMPERATURES)) + ".")
        if not names:
            return self.none_here("upscale", "upscale")
        with gr.Row():
            with gr.Column(scale=1):
                picker = self.model_picker(names, "upscale")
                image = self.upload("face (low or high resolution)", "upscale-image")
                self.held_out_row(picker, image, "upscale")
                num = gr.Slider(1, 4, 1, step=1, label="samples per temperature", elem_id="upscale-num")
                seed = gr.Number(0, precision=0, label="seed")
                fit = gr.Checkbox(False, label="fit to the model (resize and convert)")
                with gr.Row():
                    run = gr.Button("Upscale", variant="primary", elem_id="upscale-run")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="upscale-cancel")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="input and samples", columns=len(TEMPERATURES) + 2, height="auto",
                                     object_fit="contain", elem_classes="pixels", format="png", elem_id="upscale-out")
                status = gr.Markdown(elem_id="upscale-status")

        def go(name: str, upload: Any, num: float, seed: float, fit: bool, request: gr.Request,
               progress: gr.Progress = gr.Progress()) -> tuple[Any, str]:
            key = self.key(request, "upscale")
            stop = self.stops.start(key)
            try:
                model = self.pick(name, "upscale")
                if upload is None:
                    raise ValueError("no image: upload a face, or pick a held-out one")
                low, original, notes = upscale_input(model, upload, fit)
                start = time.monotonic()
                hook = step_reporter(lambda f, d: progress(f, desc=d), "upscaling", stop)
                result = upscale(model, low, int(num), int(seed or 0), original=original, on_step=hook)
                seconds = time.monotonic() - start
                pixels = DISPLAY_PIXELS // 2
                ih, iw, _ = model.input_shape
                items = [(display(low, pixels=pixels), f"{ih}x{iw} input")]
                for t, samples in result.samples.items():
                    items += [(display(s, pixels=pixels), f"T={t:g}") for s in samples]
                if original is not None:
                    items.append((display(original, pixels=pixels), "original"))
                return items, f"**{len(result.samples) * int(num)} samples in {seconds:.1f} s**{_notes(notes)}."
            except FAILURES as e:
                return None, failure(e)
            finally:
                self.stops.finish(key, stop)

        run.click(go, [picker, image, num, seed, fit], [gallery, status], api_name="upscale")
        cancel.click(self.canceller("upscale"), None, status, queue=False, api_name=False)

    def compress_tab(self) -> None:
        gr, names = self.gr, self.able("compress")
        formats = ", ".join(LOSSLESS_FORMATS[f] for f in lossless_formats())
        gr.Markdown("Compress images losslessly with the model: every sub-pixel is range-coded with its exact "
                    f"probability. The file is decoded again and compared with the input; its size is set beside "
                    f"{formats}.")
        if not names:
            return self.none_here("compress", "compress images")
        with gr.Row():
            with gr.Column(scale=1):
                picker = self.model_picker(names, "compress")
                files = gr.File(file_count="multiple", file_types=["image"], label="images to compress",
                                elem_id="compress-files")
                label = self.class_picker(names[0])
                fit = gr.Checkbox(False, label="fit to the model (resize and convert)")
                run = gr.Button("Compress", variant="primary", elem_id="compress-run")
                download = gr.File(label="compressed file (decompress: image-transformer decompress FILE --model M)",
                                   interactive=False, elem_id="compress-download")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="compress-status")
                out = self.output_image("uploaded (top) and decoded from the file (bottom)", "compress-out")
        picker.change(self.class_update, picker, label, api_name=False)

        def go(name: str, paths: list[str] | None, label: int | None, fit: bool,
               progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, str]:
            try:
                model = self.pick(name, "compress")
                if not paths:
                    raise ValueError("no images: upload one or more")
                prepared = [prepare(p, model.image_shape, fit) for p in paths]
                images = torch.stack([x for x, _ in prepared])
                labels = labels_for(model, len(images), label)
                names_ = [Path(p).name for p in paths]
                progress(0.1, desc="compressing and decoding")
                result = compress(model, images, labels, names_, sum(Path(p).stat().st_size for p in paths))
                folder = self.workdir / uuid.uuid4().hex
                folder.mkdir()
                path = folder / f"{Path(names_[0]).stem if len(names_) == 1 else 'images'}.itc"
                path.write_bytes(result.stream)
                count = f"all {len(images)} images" if len(images) > 1 else "the image"
                verdict = (f"**Decoded file = uploaded images: identical** ({count}, {result.dims:,} of "
                           f"{result.dims:,} values equal)" if result.identical else
                           "**Decoded file differs from the input**: this should not happen; please report it")
                notes = sorted({n for _, ns in prepared for n in ns})
                size, payload = len(result.stream), result.sizes[1][1]
                text = (f"{verdict}.\n\n**{size:,} bytes**, {result.bits_per_dim(size):.3f} bits/dim: {payload:,} "
                        f"bytes of coded pixels and a {size - payload:,}-byte header (the model's fingerprint, the "
                        f"names: one per file, however many images it holds); the model's own -log2 p: "
                        f"{result.model_bits_per_dim:.3f} bits/dim. Encoded in "
                        f"{result.encode_seconds:.1f} s, decoded in {result.decode_seconds:.1f} s{_notes(notes)}.\n\n"
                        + size_table(result))
                shown = display(torch.cat([images, result.decoded]), nrow=len(images))
                return str(path), shown, text
            except FAILURES as e:
                return None, None, failure(e)

        run.click(go, [picker, files, label, fit], [download, out, status], api_name="compress")

    def likelihood_tab(self) -> None:
        gr, names = self.gr, self.able("likelihood")
        gr.Markdown("How well does the model predict an image? Its bits per dimension, and a heat map of the bits "
                    "of each pixel: bright where the model is surprised.")
        if not names:
            return self.none_here("likelihood", "score images")
        with gr.Row():
            with gr.Column(scale=1):
                picker = self.model_picker(names, "likelihood")
                image = self.upload("image to score", "likelihood-image")
                self.held_out_row(picker, image, "likelihood")
                label = self.class_picker(names[0])
                fit = gr.Checkbox(False, label="fit to the model (resize and convert)")
                run = gr.Button("Score", variant="primary", elem_id="likelihood-run")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="likelihood-status")
                with gr.Row():
                    seen = self.output_image("the image as the model sees it", "likelihood-seen")
                    heat = gr.Image(type="numpy", format="png", label="bits per pixel", interactive=False,
                                    buttons=["download", "fullscreen"], elem_id="likelihood-heat")
        picker.change(self.class_update, picker, label, api_name=False)

        def go(name: str, upload: Any, label: int | None, fit: bool) -> tuple[Any, Any, str]:
            try:
                if not name or name not in self.models:
                    raise ValueError("no model chosen: pick one above")
                model = self.models[name].model
                x, notes = prepare(upload, model.image_shape, fit)
                start = time.monotonic()
                bpd, bits = likelihood(model, x, label)
                seconds = time.monotonic() - start
                picture = heat_map(bits, "bits (-log2 p, summed over the pixel's channels)",
                                   title=f"{bpd:.3f} bits/dim")
                text = (f"## {bpd:.3f} bits/dim\n{float(bits.sum()):,.0f} bits in all for {x.numel():,} sub-pixels "
                        f"(least surprising pixel {float(bits.min()):.2f} bits, most {float(bits.max()):.2f}); "
                        f"{seconds:.2f} s{_notes(notes)}.")
                return display(x), picture, text
            except FAILURES as e:
                return None, None, failure(e)

        run.click(go, [picker, image, label, fit], [seen, heat, status], api_name="likelihood")


def build_app(models: Sequence[DemoModel], workdir: str | Path | None = None) -> Any:
    """The demo page (a ``gradio.Blocks``, queued: each event has two workers, so one tab's long work leaves the
    others free), over ``models``."""
    app = DemoApp(models, workdir).build()
    return app.queue(default_concurrency_limit=2)


def launch(sources: Sequence[str], host: str = "127.0.0.1", port: int | None = None, *, block: bool = True,
           quiet: bool = False) -> Any:
    """Load the models named by ``sources`` and serve the demo at http://HOST:PORT (port None: the first free one
    from 7860). With ``block`` False it returns the running app (``app.close()`` stops it). The serving process
    sends no usage statistics (GRADIO_ANALYTICS_ENABLED=False unless the environment says otherwise)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    gradio()  # the missing-Gradio message before the models load
    models = load_models(sources)
    workdir = tempfile.mkdtemp(prefix="image-transformer-demo-")
    app = build_app(models, workdir)
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True, quiet=quiet,
               prevent_thread_lock=not block, ssr_mode=False, mcp_server=False, allowed_paths=[workdir],
               css=CSS)
    return app
