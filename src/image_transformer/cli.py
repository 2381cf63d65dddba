"""The command line: one function per subcommand, thin over the library."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import codec
from .checkpoint import CHECKPOINT_NAME, CheckpointError, average_checkpoints, build_model, load_model, read_checkpoint
from .config import PRESETS, ImageTransformerConfig, parse_size
from .data import DataError, load_dataset
from .images import area_downsample, image_format, read_image, save_grid, save_image
from .metrics import spread
from .model import ImageTransformer
from .superres import SuperResolutionConfig, SuperResolutionTransformer, format_superres_report, superres_report
from .train import (
    PRECISIONS, Trainer, TrainConfig, TrainingStopped, evaluate, init_distributed, resolve_device, run_lock, world,
)

DEFAULT_DATA = "mnist-slice"
DEFAULT_PRESET = "mnist-tiny"

# model options the command line may override: (flag, config field, type, help)
MODEL_OPTIONS = [
    ("--attention", "attention", str, "local_1d | local_2d | global"),
    ("--distribution", "distribution", str, "categorical (256-way softmax) | dmol (discretized logistic mixture)"),
    ("--hidden-size", "hidden_size", int, "model width d"),
    ("--num-layers", "num_layers", int, "number of decoder layers"),
    ("--num-heads", "num_heads", int, "attention heads"),
    ("--ffn-size", "ffn_size", int, "feed-forward hidden width"),
    ("--dropout", "dropout", float, "dropout on embeddings and residual branches"),
    ("--query-length", "query_length", int, "local_1d: positions per query block"),
    ("--memory-length", "memory_length", int, "local_1d: earlier positions each query block attends to"),
    ("--query-shape", "query_shape", str, "local_2d: query block ROWSxCOLS on the position grid, e.g. 8x16"),
    ("--memory-flange", "memory_flange", str, "local_2d: memory extension ROWSxCOLS (up, and left/right)"),
    ("--position-encoding", "position_encoding", str, "sinusoidal | learned"),
    ("--num-mixtures", "num_mixtures", int, "dmol: mixture components"),
]


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, refused with a clear message otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


POSITIVE, NON_NEGATIVE = _int_at_least(1), _int_at_least(0)

# what to do about an OSError, by errno
OS_ERROR_HINTS = {
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


def _check_output(path: str | Path, kind: str = "file") -> Path:
    """Refuse an output path before any work is done: ``kind`` "image" needs an image extension we write,
    "folder" a folder (made if missing); every kind a place this process may write."""
    path = Path(path)
    if kind == "image":
        image_format(path)
    if kind != "folder" and path.is_dir():
        raise ValueError(f"{path}: is a folder; give a file name")
    if path.exists() and kind != "folder":
        if not os.access(path, os.W_OK):
            raise ValueError(f"{path}: not writable; check its permissions or write elsewhere")
        return path
    folder = path if kind == "folder" else path.parent
    while not folder.exists() and folder != folder.parent:  # the nearest folder that exists
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: cannot write into {folder} (read-only or no permission); write elsewhere")
    return path


class OutputRescued(ValueError):
    """An output could not be written where asked, and was written to a temporary folder instead."""


def _save_or_rescue(path: str | Path, save: Callable[[Path], Any]) -> Path:
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


def _as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    images = torch.from_numpy(np.ascontiguousarray(data.images))
    labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64)) if data.labels is not None else None
    return images, labels


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _model_config(args: argparse.Namespace, image_shape: tuple[int, int, int], num_classes: int | None) -> ImageTransformerConfig:
    """Preset + command-line overrides + the data's image shape; refuses a preset that does not fit the data."""
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; known presets: {', '.join(sorted(PRESETS))}")
    values = dict(PRESETS[args.preset])
    h, w, c = image_shape
    preset_size = tuple(values.get("image_size", (h, w)))
    if preset_size != (h, w) or values.get("channels", c) != c:
        raise ValueError(
            f"preset {args.preset!r} is for {preset_size[0]}x{preset_size[1]}x{values.get('channels', c)} images but "
            f"the data holds {h}x{w}x{c}; pick another preset or pass --image-size to resize folder data"
        )
    values.update(image_size=(h, w), channels=c)
    for flag, field, _, _ in MODEL_OPTIONS:
        value = getattr(args, field)
        if value is not None:
            values[field] = parse_size(value) if field in ("query_shape", "memory_flange") else value
    if args.class_conditional:
        if not num_classes:
            raise ValueError("--class-conditional needs labelled data, but this data set has no labels")
        values["num_classes"] = num_classes
    return ImageTransformerConfig(**values)


def _load_split(spec: str, split: str, image_size: tuple[int, int] | None) -> Any:
    data = load_dataset(spec, split, image_size=image_size)
    if len(data) == 0:
        raise DataError(f"{spec}: the {split} split holds no images")
    return data


def _load_generator(path: str) -> ImageTransformer:
    """An unconditional or class-conditional model (not a super-resolution one) from ``path``."""
    model = load_model(path)
    if isinstance(model, SuperResolutionTransformer):
        raise ValueError(f"{path}: a super-resolution model; use `image-transformer upscale`")
    return model


def _sample_labels(model: ImageTransformer, n: int, label: int | None) -> tuple[torch.Tensor | None, int | None]:
    """Labels for a sample grid: one row per class by default, or all ``label``; and the grid width."""
    k = model.config.num_classes
    if not k:
        if label is not None:
            raise ValueError("--label given but the model is unconditional")
        return None, None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long), None
    per_class = max(1, n // k)
    return torch.arange(k).repeat_interleave(per_class), per_class


# ----- subcommands -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """Train; under torchrun every process runs this and rank 0 writes the files, holding the run's lock."""
    _set_threads(args.threads)
    out = Path(args.out)
    writer = int(os.environ.get("RANK", "0")) == 0
    with run_lock(out) if writer else contextlib.nullcontext():
        return _train(args, out)


def _train(args: argparse.Namespace, out: Path) -> int:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    image_size = parse_size(args.image_size) if args.image_size else None
    # everything that can be refused is checked before a process group or a model exists
    if args.resume:
        state = read_checkpoint(out / CHECKPOINT_NAME)
        info = state.get("run_info", {})
        spec, image_size = info.get("data", args.data), info.get("image_size") or image_size
        cfg = TrainConfig(**{**state["train_config"], **overrides})
        model_cfg = build_model(state, str(out / CHECKPOINT_NAME)).config
    else:
        if (out / CHECKPOINT_NAME).exists() and not args.overwrite:
            raise ValueError(f"{out / CHECKPOINT_NAME} exists: pass --resume to continue that run, --overwrite to "
                             f"start again, or another --out")
        spec = args.data
        cfg = TrainConfig(**overrides)
    train_data = _load_split(spec, "train", image_size)
    test_data = _load_split(spec, "test", image_size)
    if not args.resume:
        model_cfg = _model_config(args, train_data.image_shape, train_data.num_classes)
        if args.task == "superres":
            model_cfg = SuperResolutionConfig(**model_cfg.to_dict(), input_size=parse_size(args.input_size),
                                              encoder_layers=args.encoder_layers or max(1, model_cfg.num_layers // 2))
    superres = isinstance(model_cfg, SuperResolutionConfig)
    model_shape = (*model_cfg.image_size, model_cfg.channels)
    for part in (train_data, test_data):
        if tuple(part.image_shape) != model_shape:
            raise ValueError(f"{part.source}: images are {part.image_shape} but the model expects {model_shape}")
    resolve_device(args.device)

    device = init_distributed(args.device)
    rank, size = world()
    say = print if rank == 0 else (lambda *a, **k: None)
    try:
        torch.manual_seed(cfg.seed)
        model = (SuperResolutionTransformer if superres else ImageTransformer)(model_cfg).to(device)
        train_x, train_y = _as_tensors(train_data)
        test_x, test_y = _as_tensors(test_data)
        if superres:  # the condition is the area-downsampled target
            train_y, test_y = area_downsample(train_x, model_cfg.input_size), area_downsample(test_x, model_cfg.input_size)
        elif not model_cfg.num_classes:
            train_y = test_y = None
        info = {"data": spec, "image_size": list(image_size) if image_size else None,
                "train_source": train_data.source, "test_source": test_data.source}
        say(f"data: {train_data.source}: {len(train_data)} train, {len(test_data)} test images of "
            f"{train_data.image_shape}")
        say(f"model: {model.num_parameters():,} parameters, {model_cfg.attention}, {model_cfg.distribution}, "
            f"d={model_cfg.hidden_size}, {model_cfg.num_layers} layers; {size} process(es) on {device}")
        trainer = Trainer(model, cfg, out, train_x, train_y, test_x, test_y, run_info=info,
                          progress=not args.quiet, compile=args.compile, tensorboard=args.tensorboard)
        if args.resume:
            trainer.resume()
            say(f"resumed {out / CHECKPOINT_NAME} at step {trainer.step}")
        try:
            trainer.train()
        except TrainingStopped as stopped:
            if rank == 0:
                print(stopped, file=sys.stderr)
            return 128 + stopped.signum
        except OSError as e:
            saved = trainer._saved_step()
            kept = (f"the checkpoint of step {saved} is kept: continue with `image-transformer train --out {out} "
                    f"--resume`" if isinstance(saved, int) else "no checkpoint was written")
            raise ValueError(f"{describe_os_error(e)}; {kept}") from None
        minutes = trainer.train_minutes  # over all sessions of the run
        # evaluation and samples use the weight average when there is one
        averaged = trainer.ema.applied(model) if trainer.ema is not None else contextlib.nullcontext()
        with averaged:
            if rank == 0:
                model.save_pretrained(out / "model")
            if args.final_eval:
                idx = spread(len(test_x), args.final_eval_images)
                result = evaluate(model, test_x[idx], test_y[idx] if test_y is not None else None,
                                  progress=not args.quiet)
                result.update(step=trainer.step, train_minutes=round(minutes, 2), data=test_data.source,
                              weights="ema" if trainer.ema is not None else "last")
                if rank == 0:
                    text = json.dumps(result, indent=2) + "\n"
                    _save_or_rescue(out / "eval.json", lambda p: p.write_text(text))
                say(f"test bits/dim: {result['bits_per_dim']:.4f} over {result['num_images']} images "
                    f"(step {trainer.step}, {minutes:.1f} min of training) -> {out / 'eval.json'}")
            if args.num_samples and rank == 0 and superres:
                report = superres_report(model, test_x, test_y, train_x, out, args.num_samples, cfg.seed,
                                         progress=not args.quiet)
                say(format_superres_report(report))
            elif args.num_samples and rank == 0:
                labels, nrow = _sample_labels(model, args.num_samples, None)
                n = len(labels) if labels is not None else args.num_samples
                samples = model.sample(n, labels=labels, generator=torch.Generator().manual_seed(cfg.seed),
                                       progress=not args.quiet)
                path = _save_or_rescue(out / "samples.png", lambda p: save_grid(samples, p, nrow=nrow, scale=2))
                say(f"samples: {path}")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    _check_output(args.output, "folder")
    model = average_checkpoints(args.checkpoints)
    model.save_pretrained(args.output)
    print(f"averaged {len(args.checkpoints)} checkpoints -> {args.output}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    base = Path(args.checkpoint)
    folder = base if base.is_dir() else base.parent
    out = _check_output(args.output if args.output else folder / f"eval-{args.split}.json")
    model = load_model(args.checkpoint)
    spec, image_size = args.data, parse_size(args.image_size) if args.image_size else None
    if spec is None:
        path = Path(args.checkpoint)
        path = path / CHECKPOINT_NAME if path.is_dir() else path
        info = read_checkpoint(path).get("run_info", {}) if path.is_file() else {}
        spec, image_size = info.get("data"), image_size or info.get("image_size")
        if spec is None:
            raise ValueError(f"{args.checkpoint}: no data recorded in the checkpoint; pass --data KIND:PATH")
    data = _load_split(spec, args.split, tuple(image_size) if image_size else None)
    x, y = _as_tensors(data)
    idx = spread(len(x), args.limit)
    x, y = x[idx], (y[idx] if y is not None else None)
    superres = isinstance(model, SuperResolutionTransformer)
    if superres:
        y = area_downsample(x, model.config.input_size)
        if args.samples:
            _check_output(folder, "folder")  # superres.json and superres.png go beside the checkpoint
    elif not model.config.num_classes:
        y = None
    result = evaluate(model, x, y, batch_size=args.batch_size, progress=True)
    result.update(checkpoint=str(args.checkpoint), data=data.source, split=args.split)
    print(f"{args.split} bits/dim: {result['bits_per_dim']:.4f} over {result['num_images']} images ({data.source})")
    if superres and args.samples:
        train_x = _as_tensors(_load_split(spec, "train", tuple(image_size) if image_size else None))[0]
        result["superres"] = superres_report(model, x, y, train_x, folder, args.samples, args.seed, progress=True)
        print(format_superres_report(result["superres"]))
    text = json.dumps(result, indent=2) + "\n"
    print(f"wrote {_save_or_rescue(out, lambda p: p.write_text(text))}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    _check_output(args.output, "image")
    model = _load_generator(args.checkpoint)
    labels, nrow = _sample_labels(model, args.num, args.label)
    n = len(labels) if labels is not None else args.num
    start = time.monotonic()
    samples = model.sample(n, labels=labels, temperature=args.temperature,
                           generator=torch.Generator().manual_seed(args.seed), use_cache=not args.no_cache,
                           progress=True)
    seconds = time.monotonic() - start
    path = _save_or_rescue(args.output, lambda p: save_grid(samples, p, nrow=nrow, scale=args.scale))
    print(f"{n} samples in {seconds:.1f} s ({n / seconds:.2f} images/s) -> {path}")
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    _check_output(args.output, "image")
    model = _load_generator(args.checkpoint)
    originals = torch.stack([read_image(p, model.image_shape) for p in args.input])
    model.known_prefix(args.rows)  # fail early with the allowed row counts
    if model.config.num_classes and args.label is None:
        raise ValueError("the model is class-conditional: pass --label")
    labels = _sample_labels(model, args.num, args.label)[0] if args.label is not None else None
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    for original in originals:
        batch = original[None].expand(args.num, -1, -1, -1).contiguous()
        completions = model.complete(batch, args.rows, labels=labels, temperature=args.temperature, generator=gen,
                                     progress=True)
        blanked = original.clone()
        blanked[args.rows :] = 128
        rows.append(torch.cat([blanked[None], completions, original[None]]))
    grid = torch.cat(rows)
    path = _save_or_rescue(args.output, lambda p: save_grid(grid, p, nrow=args.num + 2, scale=args.scale))
    print(f"completions (each row: input with the unknown part grey, {args.num} completions, original) -> {path}")
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    _check_output(args.output, "image")
    model = load_model(args.checkpoint)
    if not isinstance(model, SuperResolutionTransformer):
        raise ValueError(f"{args.checkpoint}: not a super-resolution model")
    lows = torch.stack([read_image(p, model.input_shape) for p in args.input])
    gen = torch.Generator().manual_seed(args.seed)
    sy, sx = (int(f) for f in model.config.scale)
    rows = []
    for low in lows:
        batch = low[None].expand(args.num, -1, -1, -1).contiguous()
        samples = model.sample(batch, temperature=args.temperature, generator=gen, progress=True)
        enlarged = low.repeat_interleave(sy, 0).repeat_interleave(sx, 1)
        rows.append(torch.cat([enlarged[None], samples]))
    grid = torch.cat(rows)
    path = _save_or_rescue(args.output, lambda p: save_grid(grid, p, nrow=args.num + 1, scale=args.scale))
    print(f"upscaled (each row: input enlarged, {args.num} samples at temperature {args.temperature}) -> {path}")
    return 0


def _report_coding(size: int, model: ImageTransformer, images: torch.Tensor, labels: torch.Tensor | None) -> str:
    """The file's size and bits/dim beside the model's own bits/dim for the same images."""
    dims = images.numel()
    model_bpd = evaluate(model, images, labels, progress=True)["bits_per_dim"]
    return (f"{size:,} bytes for {len(images)} images of {'x'.join(map(str, model.image_shape))}: "
            f"{8 * size / dims:.4f} bits/dim (the model's own: {model_bpd:.4f} bits/dim)")


def cmd_compress(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    out = _check_output(args.output)
    model = _load_generator(args.checkpoint)
    if bool(args.images) == bool(args.data):
        raise ValueError("give image files or --data KIND:PATH (one of them)")
    if args.data:
        data = _load_split(args.data, args.split, None)
        images, labels = _as_tensors(data)
        idx = torch.arange(min(len(images), args.limit) if args.limit else len(images))
        images = images[idx]
        labels = labels[idx] if labels is not None and model.config.num_classes else None
        names = [f"{args.split}-{int(i):05d}.png" for i in idx]
    else:
        images = torch.stack([read_image(p, model.image_shape) for p in args.images])
        names = [Path(p).name for p in args.images]
        labels = None
    if model.config.num_classes and labels is None:
        if not args.label:
            raise ValueError("the model is class-conditional: pass --label (one for all images, or one per image)")
        if len(args.label) not in (1, len(images)):
            raise ValueError(f"--label: give one label or one per image ({len(images)}), got {len(args.label)}")
        labels = torch.tensor(args.label * (len(images) if len(args.label) == 1 else 1), dtype=torch.long)
    elif args.label and not model.config.num_classes:
        raise ValueError("--label given but the model is unconditional")
    start = time.monotonic()
    stream = codec.encode(model, images, labels, names=names, batch_size=args.batch_size, progress=True)
    seconds = time.monotonic() - start
    path = _save_or_rescue(out, lambda p: p.write_bytes(stream))
    print(f"compressed in {seconds:.1f} s ({len(images) / seconds:.2f} images/s) -> {path}")
    print(_report_coding(len(stream), model, images, labels))
    return 0


def _output_names(names: list[str] | None, count: int) -> list[str]:
    """Safe, distinct PNG file names for decoded images: a stream's names are its own basenames only."""
    chosen, seen = [], set()
    for i in range(count):
        name = Path(names[i]).name if names and i < len(names) and names[i] else ""
        stem = Path(name).stem if name not in ("", ".", "..") else f"image-{i:05d}"
        name = f"{stem}.png"
        if name in seen:
            name = f"{stem}-{i:05d}.png"
        seen.add(name)
        chosen.append(name)
    return chosen


def cmd_decompress(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    folder = _check_output(args.output, "folder")
    try:
        stream = Path(args.file).read_bytes()
    except OSError as e:
        raise ValueError(describe_os_error(e, args.file)) from None
    header, _ = codec.read_header(stream)  # a damaged file fails here, before the model loads
    model = _load_generator(args.model)
    start = time.monotonic()
    images, labels = codec.decode(stream, model, progress=True)
    seconds = time.monotonic() - start
    folder.mkdir(parents=True, exist_ok=True)
    names = _output_names(header.names, len(images))
    for image, name in zip(images, names):
        save_image(image, folder / name)
    print(f"decompressed {len(images)} images in {seconds:.1f} s ({len(images) / seconds:.2f} images/s) -> {folder}")
    print(_report_coding(len(stream), model, images, labels))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for name, values in sorted(PRESETS.items()):
        cfg = ImageTransformerConfig(**values)
        size = f"{cfg.image_size[0]}x{cfg.image_size[1]}x{cfg.channels}" if "image_size" in values else "any size"
        model_bits = f"{cfg.attention}, {cfg.distribution}, d={cfg.hidden_size}, {cfg.num_layers} layers, {cfg.num_heads} heads"
        print(f"{name:28s} {size:10s} {model_bits}")
    return 0


# ----- parser ------------------------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds an option's default to its help once: not when the help already states it, nor when it is None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    p = argparse.ArgumentParser(prog="image-transformer", description="Train, evaluate and sample Image Transformers; compress images losslessly with them.",
                                formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True)
    defaults = TrainConfig()

    t = sub.add_parser("train", help="train a model (then evaluate on the test split and write samples)",
                       formatter_class=fmt)
    t.add_argument("--data", default=DEFAULT_DATA,
                   help="KIND:PATH with KIND in mnist, fashion-mnist, cifar10, cifar100, npz, folder, celeba; "
                        "or mnist-slice (6,000 + 1,000 real MNIST images shipped with the package)")
    t.add_argument("--image-size", help="HxW: resize folder/celeba images to this size")
    t.add_argument("--preset", default=DEFAULT_PRESET, help="architecture preset (see `image-transformer presets`)")
    t.add_argument("--out", default="runs/mnist-tiny", help="run directory (checkpoint, logs, samples)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--class-conditional", action="store_true", help="condition on the data set's class labels")
    t.add_argument("--task", choices=["generate", "superres"], default="generate",
                   help="generate: unconditional or class-conditional images; superres: an encoder-decoder that "
                        "generates the image given its area-downsampled version")
    t.add_argument("--input-size", default="8x8", help="superres: low-resolution input size HxW")
    t.add_argument("--encoder-layers", type=POSITIVE, help="superres: encoder layers (default: half the decoder's)")
    g = t.add_argument_group("training (defaults from TrainConfig; on --resume, the run's own values)")
    g.add_argument("--steps", type=POSITIVE, help=f"total optimizer steps (default {defaults.steps})")
    g.add_argument("--batch-size", type=POSITIVE, dest="batch_size", help=f"images per step (default {defaults.batch_size})")
    g.add_argument("--lr", type=float, help=f"peak learning rate after warm-up (default {defaults.lr})")
    g.add_argument("--warmup", type=NON_NEGATIVE, help=f"linear warm-up steps, then 1/sqrt(step) decay (default {defaults.warmup})")
    g.add_argument("--clip-grad", type=float, dest="clip_grad", help=f"max gradient norm, 0 = off (default {defaults.clip_grad})")
    g.add_argument("--eval-every", type=POSITIVE, dest="eval_every", help=f"steps between evaluations (default {defaults.eval_every})")
    g.add_argument("--eval-images", type=NON_NEGATIVE, dest="eval_images",
                   help=f"test images (spread evenly over the split) for the periodic evaluation (default {defaults.eval_images})")
    g.add_argument("--checkpoint-every", type=POSITIVE, dest="checkpoint_every",
                   help=f"steps between checkpoints (default {defaults.checkpoint_every})")
    g.add_argument("--max-minutes", type=float, dest="max_minutes",
                   help="stop after this many minutes of training, 0 = no limit (default 0)")
    g.add_argument("--seed", type=int, help=f"seed for initialisation, data order, dropout and samples (default {defaults.seed})")
    g.add_argument("--grad-accum", type=POSITIVE, dest="grad_accum",
                   help="split each step's batch into K sequential micro-batches (same result, less memory) "
                        f"(default {defaults.grad_accum})")
    g.add_argument("--precision", choices=PRECISIONS, help="fp32, or bf16 autocast (default fp32)")
    g.add_argument("--ema", type=float, help="keep an exponential moving average of the weights with this decay, "
                                              "used for evaluation, samples and model/ (e.g. 0.9995; default off)")
    g.add_argument("--keep-checkpoints", type=NON_NEGATIVE, dest="keep_checkpoints",
                   help="also keep the last N checkpoints as checkpoint-STEP.pt, for `average` (default 0)")
    x = t.add_argument_group("execution")
    x.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun each process takes its LOCAL_RANK GPU)")
    x.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    x.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard (needs tensorboard)")
    x.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a checkpoint")
    m = t.add_argument_group("model (override the preset)")
    for flag, field, typ, text in MODEL_OPTIONS:
        m.add_argument(flag, dest=field, type=typ, help=text)
    t.add_argument("--final-eval", action=argparse.BooleanOptionalAction, default=True,
                   help="after training, evaluate bits/dim on the test split and write eval.json")
    t.add_argument("--final-eval-images", type=NON_NEGATIVE, default=0, help="test images (spread evenly over the split) for the final evaluation, 0 = all")
    t.add_argument("--num-samples", type=NON_NEGATIVE, default=16, help="samples written to samples.png after training (0 = none)")
    t.add_argument("--threads", type=POSITIVE, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="bits/dim of a checkpoint on a data split", formatter_class=fmt)
    e.add_argument("checkpoint", help="run directory, checkpoint.pt, or save_pretrained directory")
    e.add_argument("--data", help="KIND:PATH (default: the data the checkpoint was trained on)")
    e.add_argument("--image-size", help="HxW: resize folder/celeba images to this size")
    e.add_argument("--split", default="test", choices=["train", "test"], help="which split")
    e.add_argument("--limit", type=NON_NEGATIVE, default=0, help="evaluate N images spread evenly over the split (0 = all)")
    e.add_argument("--batch-size", type=POSITIVE, default=64, help="images per forward pass")
    e.add_argument("--samples", type=NON_NEGATIVE, default=16,
                   help="superres: held-out images to sample at temperatures 0.8/0.9/1.0 for consistency, PSNR, "
                        "SSIM and the nearest-neighbour MS-SSIM (0 = bits/dim only)")
    e.add_argument("--seed", type=int, default=0, help="superres: sampling seed")
    e.add_argument("-o", "--output", help="JSON file for the result (default: eval-SPLIT.json beside the checkpoint)")
    e.add_argument("--threads", type=POSITIVE, help="torch CPU threads")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="draw samples into a PNG grid", formatter_class=fmt)
    s.add_argument("checkpoint", help="run directory, checkpoint.pt, or save_pretrained directory")
    s.add_argument("-n", "--num", type=POSITIVE, default=64, help="number of samples (class-conditional: per class n/K)")
    s.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy")
    s.add_argument("--label", type=int, help="class-conditional models: sample this class only")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--no-cache", action="store_true", help="slow reference sampler that recomputes every step")
    s.add_argument("--scale", type=POSITIVE, default=2, help="enlarge pixels in the PNG")
    s.add_argument("-o", "--output", default="samples.png", help="PNG file")
    s.add_argument("--threads", type=POSITIVE, help="torch CPU threads")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("complete", help="keep the top rows of images and sample the rest", formatter_class=fmt)
    c.add_argument("checkpoint", help="run directory, checkpoint.pt, or save_pretrained directory")
    c.add_argument("--input", nargs="+", required=True, help="PNG image(s) of the model's size")
    c.add_argument("--rows", type=NON_NEGATIVE, required=True, help="number of top rows kept")
    c.add_argument("-n", "--num", type=POSITIVE, default=8, help="completions per input")
    c.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy")
    c.add_argument("--label", type=int, help="class label for class-conditional models")
    c.add_argument("--seed", type=int, default=0, help="random seed")
    c.add_argument("--scale", type=POSITIVE, default=2, help="enlarge pixels in the PNG")
    c.add_argument("-o", "--output", default="completions.png", help="PNG file")
    c.add_argument("--threads", type=POSITIVE, help="torch CPU threads")
    c.set_defaults(func=cmd_complete)

    u = sub.add_parser("upscale", help="sample high-resolution images from a low-resolution PNG (superres models)",
                       formatter_class=fmt)
    u.add_argument("checkpoint", help="run directory, checkpoint.pt, or save_pretrained directory")
    u.add_argument("--input", nargs="+", required=True, help="PNG image(s) of the model's input size")
    u.add_argument("-n", "--num", type=POSITIVE, default=4, help="samples per input")
    u.add_argument("--temperature", type=float, default=0.9, help="softmax temperature; 0 = greedy")
    u.add_argument("--seed", type=int, default=0, help="random seed")
    u.add_argument("--scale", type=POSITIVE, default=3, help="enlarge pixels in the PNG")
    u.add_argument("-o", "--output", default="upscaled.png", help="PNG file")
    u.add_argument("--threads", type=POSITIVE, help="torch CPU threads")
    u.set_defaults(func=cmd_upscale)

    cp = sub.add_parser("compress", help="store images losslessly, entropy-coded with a model's probabilities",
                        formatter_class=fmt)
    cp.add_argument("checkpoint", help="run directory, checkpoint.pt, or save_pretrained directory")
    cp.add_argument("images", nargs="*", help="image files of the model's size (PNG, JPEG, any Pillow image)")
    cp.add_argument("--data", help="compress a data split instead: KIND:PATH as in train")
    cp.add_argument("--split", default="test", choices=["train", "test"], help="split of --data")
    cp.add_argument("--limit", type=POSITIVE, help="with --data: only the first N images")
    cp.add_argument("--label", type=int, nargs="+", help="class-conditional models and image files: the class(es)")
    cp.add_argument("--batch-size", type=POSITIVE, default=64, help="images coded at once (stored in the file)")
    cp.add_argument("-o", "--output", required=True, help="compressed file to write (.itc)")
    cp.add_argument("--threads", type=POSITIVE, help="torch CPU threads")
    cp.set_defaults(func=cmd_compress)

    dc = sub.add_parser("decompress", help="restore the images of a compressed file as PNGs", formatter_class=fmt)
    dc.add_argument("file", help="compressed file (.itc)")
    dc.add_argument("--model", required=True, help="the model that compressed it: run directory, checkpoint.pt, "
                                                   "or save_pretrained directory")
    dc.add_argument("-o", "--output", required=True, help="folder for the PNGs (original names)")
    dc.add_argument("--threads", type=POSITIVE, help="torch CPU threads")
    dc.set_defaults(func=cmd_decompress)

    av = sub.add_parser("average", help="average the weights of several checkpoints of one architecture",
                        formatter_class=fmt)
    av.add_argument("checkpoints", nargs="+", help="checkpoint files or run/pretrained directories")
    av.add_argument("-o", "--output", required=True, help="pretrained directory to write (config.json + weights)")
    av.set_defaults(func=cmd_average)

    pr = sub.add_parser("presets", help="list the architecture presets", formatter_class=fmt)
    pr.set_defaults(func=cmd_presets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, CheckpointError, FloatingPointError) as e:  # DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
