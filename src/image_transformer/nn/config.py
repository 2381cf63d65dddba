"""Model configuration: one validated dataclass per model kind. The named presets are in ``zoo.py``."""

from __future__ import annotations

import dataclasses
import numbers
import typing
from dataclasses import dataclass
from typing import Any, Collection

from ..images import CHANNEL_NAMES, parse_size
from .distributions import DISTRIBUTIONS, make_distribution

ATTENTION_TYPES = ("local_1d", "local_2d", "global")
POSITION_ENCODINGS = ("sinusoidal", "learned")
NORMS = ("post", "pre")
# Fields added after configs were first saved, with the defaults that keep an old model what it was: a saved
# config without them loads with these, and the codec's fingerprint leaves them out at these values.
# pixel_input_relu: models saved before it existed had no ReLU after the mixture's pixel convolution.
# encoder_positions: super-resolution models saved before it existed encoded the input on its own grid.
# encoder_input: ... and read the input's intensities from tables.
# input_skip: ... and reached their input through cross-attention alone.
ADDED_FIELDS: dict[str, Any] = {"norm": "post", "pixel_input_relu": False, "encoder_positions": "own",
                                "encoder_input": "table", "input_skip": False, "neighbourhood": 0,
                                "conv_size": 0}
ENCODER_POSITIONS = ("aligned", "own")


def with_added_fields(values: dict[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """A saved config's ``values`` completed with the :data:`ADDED_FIELDS` among ``fields`` it lacks, at the values
    that keep its model what it was."""
    return {**{k: v for k, v in ADDED_FIELDS.items() if k in fields}, **values}


def without_added_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` less the :data:`ADDED_FIELDS` at those values: what a config written before them held."""
    return {k: v for k, v in values.items() if ADDED_FIELDS.get(k, object()) != v}

ENCODER_INPUTS = ("auto", "table", "linear")


class ConfigError(ValueError):
    """A configuration with a field of the wrong type or out of range; the message names every such field."""


def option(default: Any, help: str, **limits: Any) -> Any:
    """A config field with its command-line help (and ``minimum`` / ``choices`` where it has them).

    The command line builds its flags from these, so a field's default and help live only here.
    """
    return dataclasses.field(default=default, metadata={"help": help, **limits})


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a config annotation: int, float (an int will do), str, or a pair of ints
    (one int stands for both)."""
    if hint is bool:
        return isinstance(value, bool)
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
    names = {"int": "an int", "float": "a number", "str": "a string", "bool": "true or false"}
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
    channels: int = option(1, "C: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)")
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
    pixel_input_relu: bool = option(True, "dmol: a ReLU after the 1xC strided convolution of the pixel input, as "
                                          "tensor2tensor has (models saved before this option have none)")

    neighbourhood: int = option(0, "0 = none; an odd size k >= 3: each position's input also reads the values it may "
                                   "already see in the k x k window around it on the position grid (a masked "
                                   "convolution before the first block: attention starts from local context)")

    conv_size: int = option(0, "0 = none; an odd size k >= 3: each block starts with a causal k x k depthwise "
                               "convolution over the position grid (masked to what each position may see), a ReLU "
                               "and a pointwise map, as PixelSNAIL interleaves convolutions with attention")

    def __post_init__(self) -> None:
        problems = field_type_problems(self) or self.problems()
        if problems:
            raise ConfigError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Normalise the size fields to pairs; one message per value out of range (fields have their types)."""
        self.image_size = parse_size(self.image_size, "image_size")
        self.query_shape = parse_size(self.query_shape, "query_shape")
        self.memory_flange = parse_size(self.memory_flange, "memory_flange")
        problems = []
        if min(self.image_size) < 1:
            problems.append(f"image_size must be positive, got {self.image_size}")
        if self.channels not in CHANNEL_NAMES:
            problems.append(f"channels must be 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), got {self.channels}")
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
        for name in ("neighbourhood", "conv_size"):
            size = getattr(self, name)
            if size != 0 and (size < 3 or size % 2 == 0):
                problems.append(f"{name} must be 0 or an odd size >= 3, got {size}")
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
        # a config saved before a field existed gets the value that keeps that model what it was
        return cls(**with_added_fields(d, known))


@dataclass
class SuperResolutionConfig(ImageTransformerConfig):
    """Everything that defines a super-resolution encoder-decoder: the decoder's config, and the encoder's.

    ``image_size`` is the high-resolution target (H, W), ``input_size`` the low-resolution input (h, w);
    both have ``channels`` channels. Every other inherited field configures the decoder exactly as in
    :class:`ImageTransformerConfig` (``decoder`` gives that config); the encoder has ``encoder_layers`` blocks
    and shares ``hidden_size``, ``num_heads``, ``ffn_size``, ``dropout``, ``attention_dropout`` and
    ``position_encoding`` with the decoder. ``num_classes`` must be 0: the low-resolution image is the conditioning.
    """

    image_size: tuple[int, int] = option((32, 32), "(H, W) of the high-resolution target")
    channels: int = option(3, "C: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)")
    input_size: tuple[int, int] = option((8, 8), "low-resolution input size HxW")
    encoder_layers: int = option(4, "encoder layers")
    encoder_positions: str = option(
        "aligned", "aligned: each input sub-pixel's position is the centre of the target pixels it covers, in the "
        "target's own position encoding, so that cross-attention finds the input under a target pixel by matching "
        "positions | own: the input's own grid (8x8 rows and columns), which the target's encoding does not line up "
        "with", choices=ENCODER_POSITIONS)
    encoder_input: str = option(
        "auto", "how the encoder reads an input intensity: table (the paper's channel-specific embeddings) | linear "
        "(the intensity in [-1, 1] times a channel's vector, ordered from the start) | auto: as the decoder reads its "
        "own, table for categorical and linear for the mixture (whose decoder never learned to use tables of its "
        "input in the time it had)", choices=ENCODER_INPUTS)
    input_skip: bool = option(
        True, "add to each target position's input the encoder's output for the input sub-pixels under it, beside "
        "the cross-attention: without it the decoder has to learn where to look before the input can help, and "
        "learns to copy its neighbours first and barely uses its input (docs/experiments/superres_input.md)")

    def problems(self) -> list[str]:
        decoder = super().problems()  # normalises image_size as well
        self.input_size = parse_size(self.input_size, "input_size")
        problems = []
        if min(self.input_size) < 1:
            problems.append(f"input_size must be positive, got {self.input_size}")
        elif min(self.image_size) >= 1 and (self.input_size[0] > self.image_size[0]
                                            or self.input_size[1] > self.image_size[1]):
            problems.append(f"input_size {self.input_size} must be smaller than or equal to image_size "
                            f"{self.image_size} in both dimensions")
        if self.encoder_layers < 1:
            problems.append(f"encoder_layers must be an int >= 1, got {self.encoder_layers!r}")
        if self.encoder_input == "auto":  # decided once, and saved as what it decided
            self.encoder_input = "table" if self.distribution == "categorical" else "linear"
        if self.encoder_input not in ENCODER_INPUTS:
            problems.append(f"encoder_input must be one of {ENCODER_INPUTS}, got {self.encoder_input!r}")
        if self.encoder_positions not in ENCODER_POSITIONS:
            problems.append(f"encoder_positions must be one of {ENCODER_POSITIONS}, got {self.encoder_positions!r}")
        if self.num_classes != 0:
            problems.append(f"num_classes is not supported by the super-resolution model (the low-resolution "
                            f"image is the conditioning): must be 0, got {self.num_classes}")
        return problems + decoder

    @property
    def decoder(self) -> ImageTransformerConfig:
        """The decoder's :class:`ImageTransformerConfig`: this config less the encoder's fields."""
        return ImageTransformerConfig(**{f.name: getattr(self, f.name)
                                         for f in dataclasses.fields(ImageTransformerConfig)})

    @property
    def encoder_grid(self) -> tuple[int, int]:
        """The encoder's position grid: [h, w*C], one position per input sub-pixel."""
        h, w = self.input_size
        return (h, w * self.channels)

    @property
    def scale(self) -> tuple[float, float]:
        """Upsampling factor (H / h, W / w)."""
        return (self.image_size[0] / self.input_size[0], self.image_size[1] / self.input_size[1])
