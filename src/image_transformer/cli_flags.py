"""The command line's flag machinery: argument types, output paths checked before any work, flags made from a config
dataclass's fields, the parent parsers that declare the flags several subcommands share, and the help format."""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

from .files.image_files import image_format
from .images import parse_size
from .nn.config import ImageTransformerConfig, SuperResolutionConfig
from .training.config import TrainConfig

CHECKPOINT_HELP = ("a shipped model's name (see `image-transformer models`), a run directory, checkpoint.pt, a "
                   "save_pretrained directory, or hf-hub:USER/NAME (a Hugging Face Hub repo)")


DATA_FIELDS = ("image_size", "channels", "num_classes")  # model fields the data decides, not a flag
SIZE_FIELDS = ("image_size", "query_shape", "memory_flange", "input_size")  # given as HxW text


def _field_names(config_class: type, leave_out: Sequence[str] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(config_class) if f.name not in leave_out)


MODEL_FLAGS = _field_names(ImageTransformerConfig, DATA_FIELDS)
SUPERRES_FLAGS = _field_names(SuperResolutionConfig, _field_names(ImageTransformerConfig))
TRAIN_FLAGS = _field_names(TrainConfig)


def given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The values given for the flags made from the config fields ``names``, sizes parsed."""
    values = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return {name: parse_size(v, name) if name in SIZE_FIELDS else v for name, v in values.items()}


def int_at_least(minimum: int) -> Callable[[str], int]:
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


POSITIVE, NON_NEGATIVE = int_at_least(1), int_at_least(0)


def check_output(path: str | Path, kind: str = "file") -> Path:
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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds an option's default to its help once: not when the help already states it, nor when it is None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)




def add_config_flags(parser: Any, config_class: type, names: Sequence[str],
                     defaults: dict[str, str] | None = None) -> None:
    """One flag per field ``names`` of ``config_class`` (``--hidden-size`` for ``hidden_size``), typed, limited and
    explained by the field; unset (None) unless given. ``defaults``: the default each help states, by field."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    for name in names:
        meta, hint = fields[name].metadata, hints[name]
        if "help" not in meta:
            raise TypeError(f"{config_class.__name__}.{name} has no help for its flag: declare it with "
                            f"config.option(default, help)")
        text = meta["help"] + (f" (default {defaults[name]})" if defaults and name in defaults else "")
        flag = "--" + name.replace("_", "-")
        if hint is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=text)
            continue
        kind = {int: int, float: float}.get(hint, str)  # sizes stay text until _given parses them
        if "minimum" in meta:
            kind = int_at_least(meta["minimum"])
        parser.add_argument(flag, dest=name, type=kind, choices=meta.get("choices"), help=text)


def shown(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


def parent(*arguments: tuple[tuple[str, ...], dict[str, Any]]) -> argparse.ArgumentParser:
    """A parent parser holding flags that several subcommands share."""
    parent = argparse.ArgumentParser(add_help=False)
    for names, options in arguments:
        parent.add_argument(*names, **options)
    return parent


class Commands:
    """The subparsers being built, and the flags several subcommands share, each declared once."""

    def __init__(self, sub: Any):
        self.sub = sub
        self.checkpoint = parent((("checkpoint",), dict(help=CHECKPOINT_HELP)))
        self.threads = parent((("--threads",), dict(type=POSITIVE,
                                                     help="torch CPU threads (default: torch's choice)")))
        self.resize = parent((("--image-size",), dict(help="HxW: resize folder/celeba images to this size")))
        self.seed = parent((("--seed",), dict(type=int, default=0, help="random seed for sampling")))
        self.split = parent((("--split",), dict(default="test", choices=["train", "test"],
                                                 help="which split of the data")))
        self.label = parent((("--label",), dict(type=int, help="class-conditional models: the class to sample")))
        self.device = parent((("--device",), dict(default="cpu", help="cpu, cuda or cuda:N")))

    def command(self, name: str, help: str, func: Callable[[argparse.Namespace], int],
                *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = self.sub.add_parser(name, help=help, parents=list(parents), formatter_class=HelpFormatter)
        parser.set_defaults(func=func)
        return parser

    @staticmethod
    def drawing(temperature: float, scale: int) -> argparse.ArgumentParser:
        """--temperature and --scale, whose defaults differ between the commands that draw a PNG grid."""
        return parent((("--temperature",), dict(type=float, default=temperature,
                                                 help="softmax temperature; 0 = greedy")),
                       (("--scale",), dict(type=POSITIVE, default=scale, help="enlarge pixels in the PNG")))

    @staticmethod
    def picking(what: str) -> argparse.ArgumentParser:
        """--input image files, or --data/--index/--split/--image-size: images straight from a data set."""
        return parent((("--input",), dict(nargs="+", help=f"image file(s) of the model's {what}")),
                       (("--data",), dict(help="take the images from a data set instead: KIND:PATH as in train, "
                                               "mnist-slice, or slice:NAME (test images shipped with model NAME)")),
                       (("--index",), dict(type=NON_NEGATIVE, nargs="+", default=[0],
                                           help="with --data: which images of the split")),
                       (("--image-size",), dict(help="with --data: HxW to resize folder/celeba images to "
                                                     "(default: the model's size)")))
