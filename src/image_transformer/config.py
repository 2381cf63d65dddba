"""Model configuration: one validated dataclass, the named presets, and the one parser of sizes."""

from __future__ import annotations

import dataclasses
import numbers
import typing
from dataclasses import dataclass
from typing import Any

from .distributions import DISTRIBUTIONS, make_distribution

ATTENTION_TYPES = ("local_1d", "local_2d", "global")
POSITION_ENCODINGS = ("sinusoidal", "learned")
NORMS = ("post", "pre")
# Fields added after configs were first saved, with the defaults that keep an old model what it was: a saved
# config without them loads with these, and the codec's fingerprint leaves them out at these values.
ADDED_FIELDS: dict[str, Any] = {"norm": "post"}


def option(default: Any, help: str, **limits: Any) -> Any:
    """A config field with its command-line help (and ``minimum`` / ``choices`` where it has them).

    The command line builds its flags from these, so a field's default and help live only here.
    """
    return dataclasses.field(default=default, metadata={"help": help, **limits})


def parse_size(value: Any, name: str = "size", positive: bool = False) -> tuple[int, int]:
    """(H, W) from an int (a square), a pair of ints, or text "HxW" ("8" is 8x8).

    Raises a ValueError naming ``name``; with ``positive``, sizes below 1 are refused too.
    """
    if isinstance(value, str):
        try:
            parts = [int(p) for p in value.lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise ValueError(f"expected ROWSxCOLS such as 8x16 (or one number for a square), got {value!r}")
        value = (parts[0], parts[-1])
    if isinstance(value, numbers.Integral):
        value = (value, value)
    try:
        h, w = value
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if positive and (h < 1 or w < 1):
        raise ValueError(f"{name} must be positive, got {h}x{w}")
    return (h, w)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a config annotation: int, float (an int will do), str, or a pair of ints
    (one int stands for both)."""
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is tuple:
        parts = typing.get_args(hint)
        return _has_type(value, parts[0]) or (
            isinstance(value, (tuple, list)) and len(value) == len(parts)
            and all(_has_type(v, h) for v, h in zip(value, parts)))
    return True


def field_type_problems(config: Any) -> list[str]:
    """One message per dataclass field whose value does not have its annotated type, naming the field.

    Run first in ``__post_init__``, so a config read from JSON with ``"hidden_size": "big"`` is refused by
    name instead of failing later in a comparison.
    """
    names = {"int": "an int", "float": "a number", "str": "a string"}
    problems = []
    for name, hint in typing.get_type_hints(type(config)).items():
        value = getattr(config, name)
        if not _has_type(value, hint):
            wanted = names.get(getattr(hint, "__name__", ""), "an int or a pair of ints")
            problems.append(f"{name} must be {wanted}, got {value!r} ({type(value).__name__})")
    return problems


@dataclass
class ImageTransformerConfig:
    """Everything that defines an Image Transformer's architecture.

    The position grid is the output distribution's: [H, W*C] for the categorical distribution (one
    position per sub-pixel) and [H, W] for the discretized logistic mixture (one position per pixel).
    """

    image_size: tuple[int, int] = option((28, 28), "(H, W)")
    channels: int = option(1, "C: 1 (grey) or 3 (RGB)")
    hidden_size: int = option(256, "model width d")
    num_layers: int = option(4, "number of decoder layers")
    num_heads: int = option(4, "attention heads")
    ffn_size: int = option(512, "feed-forward hidden width")
    dropout: float = option(0.1, "dropout on embeddings and residual branches")
    attention_dropout: float = option(0.0, "dropout on attention weights (costly on CPU: it forces the unfused path)")
    attention: str = option("local_1d", " | ".join(ATTENTION_TYPES))
    query_length: int = option(256, "local_1d: positions per query block")
    memory_length: int = option(256, "local_1d: earlier positions each query block attends to")
    query_shape: tuple[int, int] = option((8, 16), "local_2d: query block ROWSxCOLS on the position grid, e.g. 8x16")
    memory_flange: tuple[int, int] = option((8, 16), "local_2d: memory extension ROWSxCOLS (up, and left/right)")
    position_encoding: str = option("sinusoidal", " | ".join(POSITION_ENCODINGS))
    distribution: str = option("categorical", "categorical (256-way softmax) | dmol (discretized logistic mixture)")
    num_mixtures: int = option(10, "dmol: mixture components")
    num_classes: int = option(0, "> 0: class-conditional")
    norm: str = option("post", "post: the paper's post-layer-norm blocks | pre: pre-layer-norm (stable at higher lr)",
                       choices=NORMS)

    def __post_init__(self) -> None:
        problems = field_type_problems(self) or self.problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Normalise the size fields to pairs; one message per value out of range (fields have their types)."""
        self.image_size = parse_size(self.image_size, "image_size")
        self.query_shape = parse_size(self.query_shape, "query_shape")
        self.memory_flange = parse_size(self.memory_flange, "memory_flange")
        problems = []
        if min(self.image_size) < 1:
            problems.append(f"image_size must be positive, got {self.image_size}")
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels}")
        if self.attention not in ATTENTION_TYPES:
            problems.append(f"attention must be one of {ATTENTION_TYPES}, got {self.attention!r}")
        if self.distribution not in DISTRIBUTIONS:
            problems.append(f"distribution must be one of {tuple(DISTRIBUTIONS)}, got {self.distribution!r}")
        if self.position_encoding not in POSITION_ENCODINGS:
            problems.append(
                f"position_encoding must be one of {POSITION_ENCODINGS}, got {self.position_encoding!r}"
            )
        if self.norm not in NORMS:
            problems.append(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.hidden_size < 1 or self.num_heads < 1 or self.hidden_size % self.num_heads:
            problems.append(
                f"hidden_size ({self.hidden_size}) must be a positive multiple of num_heads ({self.num_heads})"
            )
        if self.position_encoding == "sinusoidal" and self.hidden_size % 4:
            problems.append(f"sinusoidal positions need hidden_size divisible by 4, got {self.hidden_size}")
        if self.num_layers < 1 or self.ffn_size < 1:
            problems.append("num_layers and ffn_size must be positive")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.query_length < 1 or self.memory_length < 0:
            problems.append("query_length must be >= 1 and memory_length >= 0")
        if min(self.query_shape) < 1 or min(self.memory_flange) < 0:
            problems.append("query_shape must be >= 1 and memory_flange >= 0 in both dimensions")
        if self.num_mixtures < 1:
            problems.append(f"num_mixtures must be >= 1, got {self.num_mixtures}")
        if self.num_classes < 0:
            problems.append(f"num_classes must be >= 0, got {self.num_classes}")
        return problems

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Shape of the position grid, as the output distribution defines a position."""
        return make_distribution(self.distribution, self.channels, self.num_mixtures).grid_shape(self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageTransformerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        return cls(**d)


# Presets. "paper" marks values from Parmar et al. 2018; "t2t" marks tensor2tensor's published hparams
# (models/image_transformer.py and image_transformer_2d.py) where the paper is silent. Differences we
# cannot express are noted (t2t's separate attention key/value widths are not modelled: keys and
# values here are hidden_size wide). Every paper-sized preset has a "-tiny" twin of the same kind that
# trains in minutes on 2 CPU cores.
_CIFAR = dict(image_size=(32, 32), channels=3)
_TINY = dict(hidden_size=128, num_layers=4, num_heads=4, ffn_size=256, dropout=0.1)
PRESETS: dict[str, dict[str, Any]] = {
    # Architecture only (any image size): smoke tests and quick experiments.
    "tiny": dict(hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, dropout=0.0, query_length=64, memory_length=64),
    # Small real-data default for the README's main job: MNIST 28x28x1, categorical, 1D local.
    "mnist-tiny": dict(
        image_size=(28, 28), channels=1, hidden_size=128, num_layers=4, num_heads=4, ffn_size=256,
        dropout=0.1, attention="local_1d", query_length=112, memory_length=112,
    ),
    "mnist-small": dict(
        image_size=(28, 28), channels=1, hidden_size=256, num_layers=6, num_heads=4, ffn_size=512,
        dropout=0.1, attention="local_1d", query_length=196, memory_length=196,
    ),
    # CIFAR-10, categorical, 1D local: paper (12 layers, d 512, 4 heads, ffn 2048, query 256, memory 256);
    # dropout 0.3 from t2t imagetransformer_cifar10_base ("best config for 2.90 bits/dim").
    "cifar10-1d-cat": dict(**_CIFAR, hidden_size=512, num_layers=12, num_heads=4, ffn_size=2048, dropout=0.3,
                           attention="local_1d", query_length=256, memory_length=256),
    "cifar10-1d-cat-tiny": dict(**_CIFAR, **_TINY, attention="local_1d", query_length=256, memory_length=256),
    # CIFAR-10, discretized logistic mixture, 1D local over pixels: t2t imagetransformer_cifar10_base_dmol
    # (12 layers, d 256, 8 heads, ffn 512, dropout 0.1, learned positions); 10 mixtures (paper).
    "cifar10-1d-dmol": dict(**_CIFAR, hidden_size=256, num_layers=12, num_heads=8, ffn_size=512, dropout=0.1,
                            attention="local_1d", query_length=256, memory_length=256, distribution="dmol",
                            num_mixtures=10, position_encoding="learned"),
    "cifar10-1d-dmol-tiny": dict(**_CIFAR, **_TINY, attention="local_1d", query_length=128, memory_length=128,
                                 distribution="dmol", num_mixtures=10),
    # CIFAR-10, categorical, 2D local: t2t imagetransformer2d_base_8l_8_32_big (8 layers, d 1024, 16 heads,
    # ffn 2048, dropout 0.3, query blocks 8x16 of the [32, 96] sub-pixel grid, memory flange 0 up / 32 sideways).
    "cifar10-2d-cat": dict(**_CIFAR, hidden_size=1024, num_layers=8, num_heads=16, ffn_size=2048, dropout=0.3,
                           attention="local_2d", query_shape=(8, 16), memory_flange=(0, 32)),
    "cifar10-2d-cat-tiny": dict(**_CIFAR, **_TINY, attention="local_2d", query_shape=(4, 24), memory_flange=(4, 12)),
    # Class-conditional CIFAR-10, categorical 1D local: t2t imagetransformer_base_10l_8h_big_cond_dr03_dan
    # ("best conditional CIFAR-10": 10 layers, d 512, 8 heads, ffn 2048, blocks 256, dropout 0.3).
    "cifar10-cond-1d-cat": dict(**_CIFAR, hidden_size=512, num_layers=10, num_heads=8, ffn_size=2048,
                                dropout=0.3, attention="local_1d", query_length=256, memory_length=256,
                                num_classes=10),
    "cifar10-cond-1d-cat-tiny": dict(**_CIFAR, **_TINY, attention="local_1d", query_length=256,
                                     memory_length=256, num_classes=10),
    # ImageNet 32x32, categorical, 1D local: paper's CIFAR model; dropout 0.1 from t2t
    # imagetransformer_imagenet32_base ("3.77 bits/dim").
    "imagenet32-1d-cat": dict(**_CIFAR, hidden_size=512, num_layers=12, num_heads=4, ffn_size=2048, dropout=0.1,
                              attention="local_1d", query_length=256, memory_length=256),
    "imagenet32-1d-cat-tiny": dict(**_CIFAR, **_TINY, attention="local_1d", query_length=256, memory_length=256),
    # ImageNet 64x64, categorical, 1D local: t2t imagetransformer1d_base_8l_64by64 (8 layers, d 512, 8 heads,
    # ffn 2048, query blocks 512, memory 768, dropout 0.1).
    "imagenet64-1d-cat": dict(image_size=(64, 64), channels=3, hidden_size=512, num_layers=8, num_heads=8,
                              ffn_size=2048, dropout=0.1, attention="local_1d", query_length=512, memory_length=768),
    "imagenet64-1d-cat-tiny": dict(image_size=(64, 64), channels=3, **_TINY, attention="local_1d",
                                   query_length=256, memory_length=256),
    # ImageNet 64x64, categorical, 2D local: t2t image_transformer2d_base blocks (query 8x16, flange 8x16)
    # with the width of the 64x64 1D model.
    "imagenet64-2d-cat": dict(image_size=(64, 64), channels=3, hidden_size=512, num_layers=8, num_heads=8,
                              ffn_size=2048, dropout=0.1, attention="local_2d", query_shape=(8, 16),
                              memory_flange=(8, 16)),
    "imagenet64-2d-cat-tiny": dict(image_size=(64, 64), channels=3, **_TINY, attention="local_2d",
                                   query_shape=(4, 24), memory_flange=(4, 12)),
}

# Training recipes: the TrainConfig settings a preset trains with unless the command line overrides them,
# each with where its numbers come from.
RECIPES: dict[str, dict[str, Any]] = {}


def preset(name: str, **overrides: Any) -> ImageTransformerConfig:
    """Build a config from a named preset, with keyword overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return ImageTransformerConfig(**{**PRESETS[name], **overrides})
