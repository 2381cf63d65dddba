"""The command line: one function per subcommand, thin over the library.

Flags that several subcommands take are declared once, in parent parsers; the model and training flags are
made from the config dataclasses' fields (their types, limits and help), so a new field is a new flag.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from . import codec, demo, ood, tasks
from .cli_flags import (
    CHECKPOINT_HELP,
    MODEL_FLAGS,
    NON_NEGATIVE,
    POSITIVE,
    SUPERRES_FLAGS,
    TRAIN_FLAGS,
    Commands,
    HelpFormatter,
    add_config_flags,
    check_output,
    given,
    shown,
)
from .files import folders
from .files.checkpoint import CheckpointError, describe_os_error, save_or_rescue
from .files.data import DATASET_KINDS, ImageData, load_split
from .files.image_files import LOSSLESS_FORMATS, read_image, save_grid, save_image
from .files.pretrained import average_checkpoints, load_model
from .images import area_downsample, parse_size
from .metrics import spread
from .nn.config import ImageTransformerConfig, SuperResolutionConfig
from .nn.model import ImageTransformer
from .nn.sampling import Sampling
from .tasks import evaluate, format_superres_report, superres_report
from .training import TrainConfig, TrainingRun
from .training.distributed import resolve_device
from .training.guard import TrainingStopped
from .zoo import PRESETS, RECIPES, config_for, is_superres_preset, preset, recorded_data

DEFAULT_DATA = "mnist-slice"
DEFAULT_BATCH_TEST = 16  # score: the typicality test's batch
DEFAULT_PRESET = "mnist-cpu"  # the budget sweep's winner for MNIST: 10 minutes on 2 CPU cores
def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _model_config(args: argparse.Namespace, data: ImageData) -> ImageTransformerConfig:
    """The preset fitted to ``data`` with the model flags given (:func:`zoo.config_for`)."""
    return config_for(args.preset, data, given(args, MODEL_FLAGS), given(args, SUPERRES_FLAGS), args.task,
                      args.class_conditional)


def _load_generator(path: str) -> ImageTransformer:
    """An unconditional or class-conditional model (not a super-resolution one) from ``path``."""
    model = load_model(path)
    if "sample" not in model.tasks:
        raise ValueError(f"{path}: a super-resolution model; use `image-transformer upscale`")
    return model


# ----- subcommands -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """Train; under torchrun every process runs this and rank 0 writes the files, holding the run's lock."""
    _set_threads(args.threads)
    if args.init:
        flags = sorted(given(args, MODEL_FLAGS + SUPERRES_FLAGS)) + (["--class-conditional"] if args.class_conditional
                                                                      else [])
        if flags or args.task:
            raise ValueError(f"--init takes the architecture of {args.init}: "
                             f"drop the model flags {flags or ['--task']}")
        if args.resume:
            raise ValueError("--init starts a new run from a model's weights; --resume continues a run: give one")
    elif args.preset is None:
        args.preset = DEFAULT_PRESET
    name = args.preset or (Path(args.init).name if args.init else DEFAULT_PRESET)
    run = TrainingRun(
        out=Path(args.out or f"runs/{name}"), model_config=lambda data: _model_config(args, data), data=args.data,
        image_size=parse_size(args.image_size) if args.image_size else None,
        train=given(args, TRAIN_FLAGS), recipe=RECIPES.get(args.preset, {}), preset=args.preset, init=args.init,
        resume=args.resume, overwrite=args.overwrite, leave_out=args.leave_out,
        device=args.device, compile=args.compile, deterministic=args.deterministic, tensorboard=args.tensorboard,
        progress=not args.quiet,
        final_eval=args.final_eval, final_eval_images=args.final_eval_images, num_samples=args.num_samples,
    )
    try:
        run()
    except TrainingStopped as stopped:
        if run.writer:
            print(stopped, file=sys.stderr)
        return 128 + stopped.signum
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    check_output(args.output, "folder")
    model = average_checkpoints(args.checkpoints)
    model.save_pretrained(args.output)
    print(f"averaged {len(args.checkpoints)} checkpoints -> {args.output}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    base, named = Path(args.checkpoint), folders.is_named(args.checkpoint)
    # results go beside a checkpoint; for a model given by name (whose folder is not ours), here
    folder = Path(".") if named else base if base.is_dir() else base.parent
    default = f"eval-{base.name}-{args.split}.json" if named else f"eval-{args.split}.json"
    out = check_output(args.output if args.output else folder / default)
    model = load_model(args.checkpoint).to(resolve_device(args.device))
    spec, image_size = args.data, parse_size(args.image_size) if args.image_size else None
    if spec is None:  # the data the run trained on
        spec, recorded_size = recorded_data(args.checkpoint)
        image_size = image_size or recorded_size
    data = load_split(spec, args.split, tuple(image_size) if image_size else None)
    x, labels = data.tensors()
    idx = spread(len(x), args.limit)
    x = x[idx]
    condition = model.condition_for(x, labels[idx] if labels is not None else None)
    superres = model.low_resolution_input
    if superres and args.samples:
        check_output(out.parent, "folder")  # superres.json and superres.png go beside the result
    result = evaluate(model, x, condition, batch_size=args.batch_size, progress=True)
    result.update(checkpoint=str(args.checkpoint), data=data.source, split=args.split)
    print(f"{args.split} bits/dim: {result['bits_per_dim']:.4f} over {result['num_images']} images ({data.source})")
    if superres and len(x) > 1:
        result.update(tasks.input_gain(model, x, condition, result["bits_per_dim"], batch_size=args.batch_size))
        print(f"given another image's input (inputs shifted by one): {result['shuffled_input_bits_per_dim']:.4f} "
              f"bits/dim; the right input is worth {result['input_gain']:.4f} bits/dim")
    if superres and args.samples:
        train_x = load_split(spec, "train", tuple(image_size) if image_size else None).tensors()[0]
        result["superres"] = superres_report(model, x, condition, train_x, out.parent, args.samples, args.seed,
                                             progress=True)
        print(format_superres_report(result["superres"]))
    text = json.dumps(result, indent=2) + "\n"
    print(f"wrote {save_or_rescue(out, lambda p: p.write_text(text))}")
    return 0


def _pick_images(args: argparse.Namespace, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images a command works on, uint8 (N, H, W, C) of ``shape``: image files (``--input``), or the
    ``--index`` images of a data split (``--data``, resized to ``shape`` where the kind allows); and their labels
    when the data has some."""
    if bool(args.input) == bool(args.data):
        raise ValueError("give image files (--input) or a data set (--data KIND:PATH --index I ...), one of them")
    if args.input:
        return torch.stack([read_image(p, shape) for p in args.input]), None
    size = parse_size(args.image_size) if args.image_size else tuple(shape[:2])
    data = load_split(args.data, args.split, size)
    images, labels = data.tensors()
    if tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(f"{data.source}: images are {tuple(images.shape[1:])}, the model's are {tuple(shape)}")
    bad = [i for i in args.index if i >= len(images)]
    if bad:
        raise ValueError(f"--index {bad[0]}: the {args.split} split of {data.source} holds {len(images)} images "
                         f"(indices 0..{len(images) - 1})")
    idx = torch.tensor(args.index, dtype=torch.long)
    return images[idx], labels[idx] if labels is not None else None


def _grid_output(args: argparse.Namespace) -> None:
    """Before any work in a command that draws a PNG grid: the threads, and ``--output`` refused if unwritable."""
    _set_threads(args.threads)
    check_output(args.output, "image")


def _write_grid(args: argparse.Namespace, grid: torch.Tensor, nrow: int | None) -> Path:
    """``grid`` (N, H, W, C) to ``--output``, ``nrow`` images a row, enlarged ``--scale`` times (or rescued)."""
    return save_or_rescue(args.output, lambda p: save_grid(grid, p, nrow=nrow, scale=args.scale))


def cmd_sample(args: argparse.Namespace) -> int:
    _grid_output(args)
    model = _load_generator(args.checkpoint).to(resolve_device(args.device))
    start = time.monotonic()
    options = Sampling(temperature=args.temperature, generator=torch.Generator().manual_seed(args.seed),
                       use_cache=not args.no_cache, progress=True)
    samples, nrow = tasks.sample(model, args.num, args.label, options)
    seconds, n = time.monotonic() - start, len(samples)
    path = _write_grid(args, samples, nrow)
    print(f"{n} samples in {seconds:.1f} s ({n / seconds:.2f} images/s) -> {path}")
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    _grid_output(args)
    model = _load_generator(args.checkpoint)
    originals, data_labels = _pick_images(args, model.image_shape)
    missing = None if args.rows is not None else tasks.region(model.config.image_size, args.box, args.mask)
    if missing is None:
        model.known_prefix(args.rows)  # fail early with the allowed row counts
    if model.config.num_classes and args.label is None and data_labels is None:
        raise ValueError("the model is class-conditional: pass --label")
    options = Sampling(temperature=args.temperature, generator=torch.Generator().manual_seed(args.seed), progress=True)
    rows = []
    for i, original in enumerate(originals):
        label = args.label if args.label is not None or not model.config.num_classes else int(data_labels[i])
        rows.append(tasks.complete(model, original, args.rows, args.num, label, options) if missing is None else
                    tasks.fill_region(model, original, missing, args.num, label, args.particles, options)[0])
    path = _write_grid(args, torch.cat(rows), args.num + 2)
    print(f"completions (each row: input with the unknown part grey, {args.num} completions, original) -> {path}")
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    _grid_output(args)
    model = load_model(args.checkpoint)
    if "upscale" not in model.tasks:
        raise ValueError(f"{args.checkpoint}: not a super-resolution model")
    if args.input:
        lows, originals = _pick_images(args, model.input_shape)[0], None
    else:  # full-size images from a data set, downsampled as in training; the originals end each row
        originals = _pick_images(args, model.image_shape)[0]
        lows = area_downsample(originals, model.config.input_size)
    options = Sampling(temperature=args.temperature, generator=torch.Generator().manual_seed(args.seed), progress=True)
    rows = []
    for i, low in enumerate(lows):
        samples = tasks.upscale(model, low, args.num, options)
        rows.append(tasks.upscale_row(model, low, samples, originals[i] if originals is not None else None))
    width = args.num + (2 if originals is not None else 1)
    path = _write_grid(args, torch.cat(rows), width)
    last = ", original" if originals is not None else ""
    print(f"upscaled (each row: input enlarged, {args.num} samples at temperature {args.temperature}{last}) -> {path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """The shipped models, or one model's card."""
    if args.name:
        print(folders.card_text(args.name), end="")
        return 0
    rows = folders.listing()
    if not rows:
        print(f"No trained models are installed yet: {folders.SHIPPED} holds none.\n"
              f"{folders.HOW_TO_TRAIN.format(folder=folders.SHIPPED)}.\nUntil then, train your own: "
              f"`image-transformer train` (10 minutes of training, then an evaluation), then "
              f"`image-transformer sample runs/{DEFAULT_PRESET}`.")
        return 0
    print(f"{'name':16s} {'model':28s} {'data':36s} {'parameters':>11s} {'size':>8s} {'test bits/dim':>22s}")
    for row in rows:
        if row["problems"]:
            print(f"{row['name']:16s} INCOMPLETE: {'; '.join(row['problems'])}")
            continue
        bpd = f"{row['test_bits_per_dim']:.4f} ({row['test_images']:,} img)"
        print(f"{row['name']:16s} {row['model_type']:28s} {str(row['data'])[:36]:36s} {row['parameters']:>11,d} "
              f"{row['size_bytes'] / 1e6:>6.2f}MB {bpd:>22s}")
    print("`image-transformer models NAME` prints a model's card; use a name wherever a run folder is accepted, "
          "e.g. `image-transformer sample NAME -n 16`.")
    return 1 if any(row["problems"] for row in rows) else 0


def cmd_compress(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    out = check_output(args.output)
    model = _load_generator(args.checkpoint)
    if bool(args.images) == bool(args.data):
        raise ValueError("give image files or --data KIND:PATH (one of them)")
    if args.data:
        data = load_split(args.data, args.split, None)
        images, labels = data.tensors()
        idx = torch.arange(min(len(images), args.limit) if args.limit else len(images))
        images = images[idx]
        labels = labels[idx] if labels is not None and model.config.num_classes else None
        names = None  # no file names to keep: decompress numbers the images (a name each cost 17 bytes a file)
    else:
        images = torch.stack([read_image(p, model.image_shape) for p in args.images])
        names = [Path(p).name for p in args.images]
        labels = None
    if labels is None:  # the data's own labels, else those given
        labels = tasks.labels_for(model, len(images), args.label)
    coded = tasks.compress(model, images, labels, names, args.batch_size, progress=True)
    path = save_or_rescue(out, lambda p: p.write_bytes(coded.stream))
    print(f"compressed in {coded.seconds:.1f} s ({len(images) / coded.seconds:.2f} images/s) -> {path}")
    print(coded.report())
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
    folder = check_output(args.output, "folder")
    try:
        stream = Path(args.file).read_bytes()
    except OSError as e:
        raise ValueError(describe_os_error(e, args.file)) from None
    header, _ = codec.read_header(stream)  # a damaged file fails here, before the model loads
    names = _output_names(header.names, header.count)
    there = [name for name in names if (folder / name).exists()]
    if there and not args.overwrite:
        more = f" and {len(there) - 3} more" if len(there) > 3 else ""
        raise ValueError(f"{folder}: holds {', '.join(there[:3])}{more} already: pass --overwrite to replace them, "
                         f"or another -o")
    model = _load_generator(args.model)
    coded = tasks.decompress(stream, model, progress=True)
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(coded.images, names):
        save_image(image, folder / name)
    print(f"decompressed {len(coded.images)} images in {coded.seconds:.1f} s "
          f"({len(coded.images) / coded.seconds:.2f} images/s) -> {folder}")
    print(coded.report())
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    out = check_output(args.output)
    prefix = out.with_suffix("")
    pictures = tasks.heat_map_targets(args.heat_maps, [args.data, *args.ood])  # checked before any work
    model = load_model(args.checkpoint).to(resolve_device(args.device))
    background = load_model(args.background).to(resolve_device(args.device)) if args.background else None
    # unless given, the typicality test runs for batches of 16 where the data holds enough images (strict=False)
    batch_test = DEFAULT_BATCH_TEST if args.batch_test is None else args.batch_test
    report = tasks.score(model, args.data, args.ood, split=args.split, limit=args.limit, codecs=args.codecs,
                         background=background, batch_test=batch_test, alpha=args.alpha,
                         batch_size=args.batch_size, use_labels=args.use_labels, seed=args.seed, progress=True,
                         strict=args.batch_test is not None, precision=args.precision)
    print(report.format())
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [save_or_rescue(out, report.write_csv)]
    summary = json.dumps(report.summary(), indent=2) + "\n"
    written.append(save_or_rescue(prefix.with_suffix(".json"), lambda p: p.write_text(summary)))
    if args.ood and args.plots:
        written += report.plot(prefix)
    if args.write_reference:
        record = ood.reference(report.inside.table, report.inside.source)
        written.append(save_or_rescue(folders.reference_path(args.checkpoint),
                                      lambda p: folders.write_reference(p, record)))
    scored = {s.name: s for s in [report.inside, *report.outside]}
    for name, index in pictures:
        if index >= len(scored[name].images):
            print(f"--heat-maps {name}@{index}: {name} holds {len(scored[name].images)} images; no heat map",
                  file=sys.stderr)
            continue
        picture = tasks.heat_maps(model, scored[name].images[index][None], [f"{name}@{index}"])[0]
        slug = "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")[-40:]
        target = prefix.with_name(f"{prefix.name}-heat-{slug}-{index}.png")
        written.append(save_or_rescue(target, lambda p: save_image(picture, p)))
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The web demo: load the models, then serve until interrupted."""
    _set_threads(args.threads)
    auth = None
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth takes USER:PASS, both non-empty")
        auth = (user, password)
    demo.launch(args.model, host=args.host, port=args.port, auth=auth)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """Each preset: its image size, model and, below it, the training recipe `train --preset` starts from."""
    for name in sorted(PRESETS):
        values, cfg = PRESETS[name], preset(name)
        size = (f"{cfg.image_size[0]}x{cfg.image_size[1]}x{cfg.channels}" if "image_size" in values else "any size")
        kind = (f"super-resolution from {cfg.input_size[0]}x{cfg.input_size[1]}, {cfg.encoder_layers} encoder layers, "
                if is_superres_preset(name) else "class-conditional, " if cfg.num_classes else "")
        model_bits = (f"{kind}{cfg.attention}, {cfg.distribution}, d={cfg.hidden_size}, {cfg.num_layers} layers, "
                      f"{cfg.num_heads} heads")
        print(f"{name:34s} {size:10s} {model_bits}")
        recipe = RECIPES.get(name)
        text = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in recipe.items()) \
            if recipe else "TrainConfig's defaults"
        print(f"{'':34s} recipe: {text}")
    return 0


# ----- parser ------------------------------------------------------------------------------------------
def _add_train(cmds: Commands) -> None:
    t = cmds.command("train", "train a model (then evaluate on the test split and write samples)", cmd_train,
                     cmds.resize, cmds.threads)
    t.add_argument("--data", default=DEFAULT_DATA,
                   help=f"KIND:PATH with KIND in {', '.join(DATASET_KINDS)}; "
                        "or mnist-slice (6,000 + 1,000 real MNIST images shipped with the package)")
    t.add_argument("--preset", help=f"architecture preset (see `image-transformer presets`; default {DEFAULT_PRESET}); "
                                    "with --init, only its training recipe")
    t.add_argument("--init", help=f"start from the weights and architecture of a trained model (fine-tuning), with a "
                                  f"fresh optimizer and schedule: {CHECKPOINT_HELP}")
    t.add_argument("--leave-out", metavar="FILE",
                   help="a list of training files of a folder: data set to leave out, one per line as CLASS/NAME "
                        "(e.g. the JPEG versions of images held out elsewhere: tools/find_jpeg_twins.py); the run "
                        "keeps a copy as left-out.txt, and a resumed run uses its own")
    t.add_argument("--out", help="run directory (checkpoint, logs, samples); default runs/PRESET")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--class-conditional", action="store_true", help="condition on the data set's class labels")
    t.add_argument("--task", choices=["generate", "superres"],
                   help="generate (the default): unconditional or class-conditional images; superres: an "
                        "encoder-decoder that generates the image given its area-downsampled version (implied by a "
                        "super-resolution preset)")
    add_config_flags(t.add_argument_group("training (defaults from TrainConfig, or the preset's recipe where it has "
                                          "one: see `image-transformer presets`; on --resume, the run's own values)"),
                     TrainConfig, TRAIN_FLAGS, defaults={f: shown(getattr(TrainConfig(), f)) for f in TRAIN_FLAGS})
    x = t.add_argument_group("execution")
    x.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun each process takes its "
                                                   "LOCAL_RANK GPU)")
    x.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    x.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (slower on a GPU): a run and its resumption give the same weights bit "
                        "for bit on a GPU too (on the CPU they always do)")
    x.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard (needs tensorboard)")
    x.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a checkpoint")
    add_config_flags(t.add_argument_group("model (override the preset)"), ImageTransformerConfig, MODEL_FLAGS)
    input_size = SuperResolutionConfig.__dataclass_fields__["input_size"].default
    add_config_flags(t.add_argument_group("super-resolution model (--task superres)"), SuperResolutionConfig,
                     SUPERRES_FLAGS, defaults={"input_size": shown(input_size), "encoder_layers": "half the decoder's"})
    t.add_argument("--final-eval", action=argparse.BooleanOptionalAction, default=True,
                   help="after training, evaluate bits/dim on the test split and write eval.json")
    t.add_argument("--final-eval-images", type=NON_NEGATIVE, default=0,
                   help="test images (spread evenly over the split) for the final evaluation, 0 = all")
    t.add_argument("--num-samples", type=NON_NEGATIVE, default=16,
                   help="samples written to samples.png after training (0 = none)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_eval(cmds: Commands) -> None:
    e = cmds.command("eval", "bits/dim of a checkpoint on a data split", cmd_eval, cmds.checkpoint, cmds.resize,
                     cmds.split, cmds.seed, cmds.threads, cmds.device)
    e.add_argument("--data", help="KIND:PATH (default: the data the checkpoint was trained on)")
    e.add_argument("--limit", type=NON_NEGATIVE, default=0,
                   help="evaluate N images spread evenly over the split (0 = all)")
    e.add_argument("--batch-size", type=POSITIVE, default=64, help="images per forward pass")
    e.add_argument("--samples", type=NON_NEGATIVE, default=16,
                   help=f"superres: held-out images to sample at temperatures {'/'.join(map(str, tasks.TEMPERATURES))} "
                        f"for consistency, PSNR, SSIM and the nearest-neighbour MS-SSIM, written as superres.png and "
                        f"superres.json beside the result (0 = bits/dim only)")
    e.add_argument("-o", "--output", help="JSON file for the result (default: eval-SPLIT.json beside the checkpoint)")


def _add_drawing(cmds: Commands) -> None:
    """sample, complete and upscale: the commands that draw a PNG grid."""
    s = cmds.command("sample", "draw samples into a PNG grid", cmd_sample, cmds.checkpoint, cmds.drawing(1.0, 2),
                     cmds.label, cmds.seed, cmds.threads, cmds.device)
    s.add_argument("-n", "--num", type=POSITIVE, default=64,
                   help="number of samples (class-conditional: per class n/K)")
    s.add_argument("--no-cache", action="store_true", help="slow reference sampler that recomputes every step")
    s.add_argument("-o", "--output", default="samples.png", help="PNG file")

    c = cmds.command("complete", "keep the top rows of images and sample the rest", cmd_complete, cmds.checkpoint,
                     cmds.drawing(1.0, 2), cmds.label, cmds.seed, cmds.split, cmds.picking("size"), cmds.threads)
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--rows", type=NON_NEGATIVE, help="number of top rows kept")
    what.add_argument("--box", type=NON_NEGATIVE, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                      help="fill this rectangle of pixels, weighing each completion by the known pixels after it")
    what.add_argument("--mask", help="fill the pixels that are not black in this image (the model's size)")
    c.add_argument("--particles", type=POSITIVE, default=16, help="with --box or --mask: particles per completion")
    c.add_argument("-n", "--num", type=POSITIVE, default=8, help="completions per input")
    c.add_argument("-o", "--output", default="completions.png", help="PNG file")

    u = cmds.command("upscale", "sample high-resolution images from low-resolution ones (superres models)",
                     cmd_upscale, cmds.checkpoint, cmds.drawing(0.9, 3), cmds.seed, cmds.split,
                     cmds.picking("input size (low resolution)"), cmds.threads)
    u.add_argument("-n", "--num", type=POSITIVE, default=4, help="samples per input")
    u.add_argument("-o", "--output", default="upscaled.png", help="PNG file")


def _add_files_and_models(cmds: Commands) -> None:
    """models, compress, decompress, average, presets and demo."""
    m = cmds.command("models", "list the trained models shipped with the package, or print one's card", cmd_models)
    m.add_argument("name", nargs="?", help="a shipped model: print its card (README.md)")

    cp = cmds.command("compress", "store images losslessly, entropy-coded with a model's probabilities",
                      cmd_compress, cmds.checkpoint, cmds.split, cmds.threads)
    cp.add_argument("images", nargs="*", help="image files of the model's size (PNG, JPEG, any Pillow image)")
    cp.add_argument("--data", help="compress a data split instead: KIND:PATH as in train")
    cp.add_argument("--limit", type=POSITIVE, help="with --data: only the first N images")
    cp.add_argument("--label", type=int, nargs="+", help="class-conditional models and image files: the class(es)")
    cp.add_argument("--batch-size", type=POSITIVE, default=64, help="images coded at once (stored in the file)")
    cp.add_argument("-o", "--output", required=True, help="compressed file to write (.itc)")

    dc = cmds.command("decompress", "restore the images of a compressed file as PNGs", cmd_decompress, cmds.threads)
    dc.add_argument("file", help="compressed file (.itc)")
    dc.add_argument("--model", required=True, help=f"the model that compressed it: {CHECKPOINT_HELP}")
    dc.add_argument("-o", "--output", required=True, help="folder for the PNGs (original names)")
    dc.add_argument("--overwrite", action="store_true", help="replace PNGs of the same names in that folder")

    av = cmds.command("average", "average the weights of several checkpoints of one architecture", cmd_average)
    av.add_argument("checkpoints", nargs="+", help="checkpoint files or run/pretrained directories")
    av.add_argument("-o", "--output", required=True, help="pretrained directory to write (config.json + weights)")

    cmds.command("presets", "list the presets: architecture and training recipe", cmd_presets)

    sc = cmds.command("score", "per-image out-of-distribution scores: bits/dim, generic codecs' bits, the "
                      "complexity-corrected scores; AUROC against other sets; the typicality test for batches",
                      cmd_score, cmds.checkpoint, cmds.split, cmds.seed, cmds.threads, cmds.device)
    sc.add_argument("--data", required=True, help="the model's own distribution: KIND:PATH as in train, mnist-slice "
                                                  "or slice:NAME")
    sc.add_argument("--ood", nargs="+", action="extend", default=[],
                    help="other sets to tell apart from it: KIND:PATH, 'noise', 'constant', or TRANSFORM:KIND:PATH "
                         "with TRANSFORM inverted, rotated or flipped (several, or the flag again)")
    sc.add_argument("--limit", type=NON_NEGATIVE, default=0,
                    help="images per set, spread evenly over the split (0 = all; noise and constant: 1,000)")
    sc.add_argument("--codecs", nargs="+", type=str.upper, choices=list(LOSSLESS_FORMATS),
                    help="generic lossless codecs for the complexity correction (default: every one Pillow writes "
                         "here; JXL needs pillow-jxl-plugin)")
    sc.add_argument("--background", help=f"a background model for the likelihood ratio: {CHECKPOINT_HELP}")
    sc.add_argument("--batch-test", type=NON_NEGATIVE,
                    help=f"the typicality test for batches of this many images (0 = none; default "
                         f"{DEFAULT_BATCH_TEST} where --data holds at least {4 * DEFAULT_BATCH_TEST} images)")
    sc.add_argument("--alpha", type=float, default=0.01,
                    help="the typicality test's share of in-distribution batches called atypical")
    sc.add_argument("--use-labels", action="store_true",
                    help="class-conditional models: score the --data images given their labels (others by p(x))")
    sc.add_argument("--batch-size", type=POSITIVE, default=64, help="images per forward pass")
    sc.add_argument("--precision", choices=list(ood.PRECISIONS), default="fp32",
                    help=f"bf16: the network under bf16 autocast, about twice as fast on a CPU with bf16 instructions; "
                         f"scores within {ood.BF16_WITHIN:g} bits/dim of fp32's on natural images and noise, "
                         f"{ood.BF16_WITHIN_FLAT:g} on flat images, which a model is very sure of (the distributions "
                         f"stay in fp32)")
    sc.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                    help="with --ood: ROC curves and score histograms as PNGs beside the CSV")
    sc.add_argument("--heat-maps", nargs="+", default=[], metavar="SET@INDEX",
                    help="draw the bits of each pixel of these images (e.g. noise@0) as heat maps beside the CSV")
    sc.add_argument("--write-reference", action="store_true",
                    help=f"keep the --data images' score percentiles beside the model ({folders.REFERENCE_NAME}), "
                         f"where the demo's Likelihood tab places a new image among them")
    sc.add_argument("-o", "--output", default="scores.csv",
                    help="CSV of per-image scores; the summary (JSON) and plots go beside it")

    w = cmds.command("demo", "a local web page: sample, complete, upscale, compress and score images in the browser "
                            "(needs the demo extra: pip install -e \".[demo]\")", cmd_demo, cmds.threads)
    w.add_argument("--model", nargs="+", action="extend", default=[],
                   help=f"the models to serve (several, or the flag again): each {CHECKPOINT_HELP}; "
                        f"default: every shipped model")
    w.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 opens the page to the network: "
                                                        "it needs --auth)")
    w.add_argument("--port", type=POSITIVE, help="port (default: the first free one from 7860)")
    w.add_argument("--auth", help="USER:PASS that the page asks for; needed to serve off 127.0.0.1")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="image-transformer", formatter_class=HelpFormatter,
                                description="Train, evaluate and sample Image Transformers; compress images "
                                            "losslessly with them.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = Commands(p.add_subparsers(dest="command", required=True))
    for add in (_add_train, _add_eval, _add_drawing, _add_files_and_models):
        add(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. The library's errors (data, checkpoint, codec, config: all ValueErrors) and file errors are
    one line and exit status 2; anything else is one line and status 1, with the traceback under --debug."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, CheckpointError, FloatingPointError) as e:  # DataError, CodecError: ValueErrors
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if args.debug:
            raise
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug, or a case nobody foresaw: say so, briefly
        if args.debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: unexpected {type(e).__name__}: {first} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
