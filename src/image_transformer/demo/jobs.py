"""The demo's jobs: the functions behind its tabs, plain Python over the task layer, tested without a browser.

:func:`sample_stream`, :func:`complete`, :func:`upscale`, :func:`compress`, :func:`likelihood`, and :func:`prepare`
for what a user uploads, take tensors and Pillow images and return images and numbers, each saying in a ValueError
what is wrong with its input. Every job first asks :func:`cannot` whether the model can do it.
"""

# No ``from __future__ import annotations`` here: Gradio reads the type hints of the functions it calls (a parameter
# annotated ``gr.Request`` receives the request), and it resolves them only when they are objects, not text.
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import codec, ood, tasks
from ..files import folders
from ..files.checkpoint import run_info
from ..files.data import load_split
from ..files.image_files import LOSSLESS_FORMATS, fit_image, lossless_bytes, lossless_formats, make_grid, open_image
from ..files.pretrained import PretrainedModel, load_model
from ..images import CHANNEL_NAMES, area_downsample, enlarge
from ..metrics import spread
from ..nn.model import ImageTransformer
from ..nn.sampling import Sampling, StepHook
from ..nn.superres import SuperResolutionTransformer
from ..tasks import GREY, TEMPERATURES, labels_for, sample_labels

HELD_OUT_LIMIT = 64  # held-out images offered per model
MAX_FILES = 64  # images one Compress request may hold
MAX_REQUEST_PIXELS = 64 * 1024 * 1024  # pixels the uploads of one request may hold together, before decoding


def request_pixels(paths: Sequence[str | Path]) -> int:
    """The pixels the image files ``paths`` claim in their headers, refused past :data:`MAX_REQUEST_PIXELS` before
    any of them is decoded (each is also held to the per-image budget when it is read)."""
    total = 0
    for path in paths:
        try:
            with Image.open(path) as img:  # reads the header only
                total += img.width * img.height
        except Exception:  # noqa: BLE001 - an unreadable file is refused by name when it is read
            continue
        if total > MAX_REQUEST_PIXELS:
            raise ValueError(f"the uploads hold more than {MAX_REQUEST_PIXELS:,} pixels together: send fewer or "
                             f"smaller images")
    return total
MAX_DRAWN = {"sample": 64, "complete": 16, "upscale": 4}  # images one request may draw: the page's slider limits


def check_count(job: str, num: Any) -> int:
    """How many images a request asks ``job`` to draw: a whole number from 1 to the job's limit."""
    top = MAX_DRAWN[job]
    if isinstance(num, bool) or not isinstance(num, (int, float)) or num != int(num) or not 1 <= num <= top:
        raise ValueError(f"the number of images must be a positive integer up to {top}, got {num!r}")
    return int(num)
MAX_SEED = 2**63 - 1  # torch's seeds are 64-bit
HEARTBEAT = 2.0  # seconds between snapshots of a sampler that has not moved


def generator(seed: Any) -> torch.Generator:
    """A CPU generator seeded with ``seed``, an integer in 0..2^63-1 (a ValueError otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or seed != int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"the seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))
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
    _reference: dict[str, Any] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> str:
        return f"`{self.name}`: {describe(self.model)}"

    def reference(self) -> dict[str, Any] | None:
        """The held-out images' out-of-distribution scores kept beside the model (see ``score --write-reference``),
        None without any; a ModelFolderError when the file kept is damaged (read again on the next call)."""
        with self._lock:
            if self._reference is None:
                self._reference = folders.read_reference(self.name) or {}
            return self._reference or None

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
    if model.low_resolution_input:
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
    if job in model.tasks:
        return None
    if model.low_resolution_input:
        ih, iw, _ = model.input_shape
        h, w, _ = model.image_shape
        return (f"{name} is a super-resolution model ({ih}x{iw} -> {h}x{w}): it makes images only from low-resolution "
                f"ones, so it cannot {job} on its own; use it in the Upscale tab, and load an unconditional or "
                f"class-conditional model (e.g. a run of `image-transformer train`) for this tab")
    if job == "upscale":
        return (f"{name} is not a super-resolution model: it has no low-resolution input to upscale from; load one "
                f"trained with `image-transformer train --task superres`")
    return f"{name} cannot {job}"


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
        raise ValueError(f"{source}: no held-out images: neither a test slice ({folders.SLICE_NAME}) "
                         "nor a training run's "
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
        image = open_image(image, Path(image).name)
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
    ``every`` seconds in which the sampler moved (or ``stop`` was set; else every :data:`HEARTBEAT` seconds), the last
    one finished, its images those of ``model.sample`` with the same arguments.

    A class-conditional model samples ``label``, or with None one row of images per class (``num`` // classes each,
    at least one). The sampler runs in a thread; setting ``stop`` (or closing this generator) ends it at the next
    generation step, and the last snapshot is then ``cancelled``.
    """
    check_job(model, "sample")
    num = check_count("sample", num)
    labels, nrow = sample_labels(model, num, label)
    n = len(labels) if labels is not None else num
    gen = generator(seed)
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
            options = Sampling(temperature=temperature, generator=gen, on_step=on_step)
            result["images"] = tasks.sample(model, num, label, options)[0]
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = e
        finally:
            finished.set()

    total = model.layout.n
    blank = torch.full((n, *model.image_shape), GREY, dtype=torch.uint8)
    start = time.monotonic()
    thread = threading.Thread(target=work, name="image-transformer-sampling", daemon=True)
    thread.start()
    shown: tuple[int, bool] | None = None
    last = start
    try:
        while not finished.wait(every):
            values, done = live["values"], live["done"]
            # A stalled sampler sends no copies of the same frame (a browser under load would queue them up and
            # show a Cancel late), only a heartbeat now and then for the seconds on the status line.
            state = (done, stop is not None and stop.is_set())
            if state == shown and time.monotonic() - last < HEARTBEAT:
                continue
            shown, last = state, time.monotonic()
            images = partial_images(model, values, done) if values is not None else blank
            yield Snapshot(images, done, total, last - start, nrow)
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
    num = check_count("complete", num)
    model.known_prefix(rows)  # the allowed row counts, before any work
    options = Sampling(temperature=temperature, generator=generator(seed), on_step=on_step)
    return tasks.complete(model, image, rows, num, label, options)


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
    (ih, iw, _), (h, w, _) = model.input_shape, model.image_shape
    if isinstance(image, (str, Path)):
        image = open_image(image, Path(image).name)
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
    num = check_count("upscale", num)
    generator(seed)  # the seed is checked once, before any work
    samples = {float(t): tasks.upscale(model, low, num, Sampling(temperature=float(t), generator=generator(seed),
                                                                  on_step=on_step)) for t in temperatures}
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
    if len(images) > MAX_FILES:
        raise ValueError(f"{len(images)} images: compress at most {MAX_FILES} at a time here (the command line takes "
                         f"any number)")
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


def placement(reference: dict[str, Any] | None, image: Tensor, bits_per_dim: float) -> str:
    """Markdown: the image's complexity-corrected scores and where it and its bits/dim fall among the held-out
    images of ``reference`` (:func:`ood.reference`); what is missing when there is no reference."""
    if not reference:
        return ("No reference scores are kept with this model, so the image cannot be placed among its training "
                "distribution's (`image-transformer score MODEL --data SPEC --write-reference` keeps them).")
    rows = ["| score | this image | higher than (held-out images) |", "|---|---|---|"]
    have = reference["percentiles"]
    kept = [c[len("minus_"):].upper() for c in have if c.startswith("minus_") and c != "minus_best"]
    codecs = [c for c in kept if c in lossless_formats()]
    table = ood.complexity_scores(torch.tensor([bits_per_dim], dtype=torch.float64), image[None], codecs)
    if len(codecs) < len(kept):  # the reference's best is over codecs this installation lacks
        table.pop("minus_best", None)
    shares = {}
    for column in ood.score_columns(table):
        if column in have:
            value = float(table[column][0])
            shares[column] = ood.percentile(reference, column, value)
            rows.append(f"| {column} | {value:.3f} | {shares[column]:.1f}% |")
    corrected = [share for column, share in shares.items() if column != "bits_per_dim"] or [shares["bits_per_dim"]]
    verdict = (f"**looks out of distribution**: its score is above {max(corrected):.1f}% of the held-out images'"
               if max(corrected) >= 99.0 else "within the range of the training distribution")
    return (f"Against {reference.get('images', '?')} held-out images ({reference.get('source', 'source unknown')}); "
            f"higher scores are less like the training data, and the corrected scores (bits/dim minus a generic "
            f"codec's) are the ones to trust: {verdict}.\n\n" + "\n".join(rows))


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
