"""Super-resolution with the Image Transformer: an encoder over the low-resolution image, a decoder over the target.

Section 4 of Parmar et al. (2018): the encoder reads the low-resolution input (e.g. 8x8) with channel-specific
embeddings of its sub-pixels, 2D position encodings and unmasked self-attention; the decoder is the
autoregressive :class:`~image_transformer.model.ImageTransformer` over the high-resolution target (e.g. 32x32),
with cross-attention from every decoder block to the encoder output.

Data flow: inputs (B, h, w, C) uint8 -> sub-pixel values on the grid [h, w*C] -> (B, h*w*C, d) -> encoder
blocks -> context (B, m, d); images (B, H, W, C) uint8 -> decoder (self-attention in generation order,
cross-attention to the context) -> distribution parameters -> log p or samples.

Pairs for training come from any uint8 image tensor by area (box) downsampling: :func:`make_pairs`,
:class:`SuperResolutionPairs`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import merge_heads, split_heads
from .config import ImageTransformerConfig, _pair
from .embeddings import ChannelEmbedding, PositionEncoding
from .model import FeedForward, ImageTransformer, check_images

__all__ = [
    "SuperResolutionConfig",
    "SuperResolutionTransformer",
    "SuperResolutionEncoder",
    "EncoderBlock",
    "area_downsample",
    "area_downsample_float",
    "make_pairs",
    "SuperResolutionPairs",
]

# The ImageTransformerConfig fields that SuperResolutionConfig passes through to the decoder unchanged.
DECODER_FIELDS = (
    "hidden_size", "num_layers", "num_heads", "ffn_size", "dropout", "attention_dropout", "attention",
    "query_length", "memory_length", "query_shape", "memory_flange", "position_encoding", "distribution",
    "num_mixtures", "num_classes",
)


@dataclass
class SuperResolutionConfig:
    """Everything that defines a super-resolution encoder-decoder.

    ``image_size`` is the high-resolution target (H, W), ``input_size`` the low-resolution input (h, w);
    both have ``channels`` channels. The encoder has ``encoder_layers`` blocks and shares ``hidden_size``,
    ``num_heads``, ``ffn_size``, ``dropout``, ``attention_dropout`` and ``position_encoding`` with the
    decoder. All other fields configure the decoder exactly as in :class:`ImageTransformerConfig`
    (``decoder`` gives that config). ``num_classes`` exists for symmetry and must be 0: the
    low-resolution image is the conditioning.
    """

    image_size: tuple[int, int] = (32, 32)  # (H, W) of the target
    input_size: tuple[int, int] = (8, 8)  # (h, w) of the low-resolution input
    channels: int = 3
    encoder_layers: int = 4
    # decoder (and shared) fields, same meaning and defaults as ImageTransformerConfig
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_size: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0
    attention: str = "local_1d"
    query_length: int = 256
    memory_length: int = 256
    query_shape: tuple[int, int] = (8, 16)
    memory_flange: tuple[int, int] = (8, 16)
    position_encoding: str = "sinusoidal"
    distribution: str = "categorical"
    num_mixtures: int = 10
    num_classes: int = 0

    def __post_init__(self) -> None:
        self.image_size = _pair(self.image_size, "image_size")
        self.input_size = _pair(self.input_size, "input_size")
        self.query_shape = _pair(self.query_shape, "query_shape")
        self.memory_flange = _pair(self.memory_flange, "memory_flange")
        problems = []
        if min(self.input_size) < 1:
            problems.append(f"input_size must be positive, got {self.input_size}")
        elif min(self.image_size) >= 1 and (self.input_size[0] > self.image_size[0]
                                            or self.input_size[1] > self.image_size[1]):
            problems.append(f"input_size {self.input_size} must be smaller than or equal to image_size "
                            f"{self.image_size} in both dimensions")
        if not isinstance(self.encoder_layers, int) or self.encoder_layers < 1:
            problems.append(f"encoder_layers must be an int >= 1, got {self.encoder_layers!r}")
        if self.num_classes != 0:
            problems.append(f"num_classes is not supported by the super-resolution model (the low-resolution "
                            f"image is the conditioning): must be 0, got {self.num_classes}")
        try:
            self.decoder  # noqa: B018 - validates every decoder field
        except ValueError as e:
            problems.append(str(e).removeprefix("invalid ImageTransformerConfig: "))
        if problems:
            raise ValueError("invalid SuperResolutionConfig: " + "; ".join(problems))

    @property
    def decoder(self) -> ImageTransformerConfig:
        """The decoder's :class:`ImageTransformerConfig` (target size, channels and the decoder fields)."""
        fields = {name: getattr(self, name) for name in DECODER_FIELDS}
        fields["num_classes"] = 0
        return ImageTransformerConfig(image_size=self.image_size, channels=self.channels, **fields)

    @property
    def encoder_grid(self) -> tuple[int, int]:
        """The encoder's position grid: [h, w*C], one position per input sub-pixel."""
        h, w = self.input_size
        return (h, w * self.channels)

    @property
    def scale(self) -> tuple[float, float]:
        """Upsampling factor (H / h, W / w)."""
        return (self.image_size[0] / self.input_size[0], self.image_size[1] / self.input_size[1])

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SuperResolutionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        return cls(**d)


# ----- the network -----------------------------------------------------------------------------------------
class EncoderBlock(nn.Module):
    """Post-layer-norm block of unmasked (global) multi-head self-attention and a feed-forward layer:
    xa = LayerNorm(x + Dropout(Attention(x))),  x' = LayerNorm(xa + Dropout(FFN(xa))).
    """

    def __init__(self, dim: int, heads: int, ffn_size: int, dropout: float = 0.0, attention_dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_size)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def attend(self, x: Tensor) -> Tensor:
        """Every position attends to every position: (B, m, d) -> (B, m, d)."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, h, m, dh)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attention_dropout if self.training else 0.0)
        return self.out(merge_heads(y))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.drop(self.attend(x)))
        return self.norm2(x + self.drop(self.ffn(x)))


class SuperResolutionEncoder(nn.Module):
    """Low-resolution image (B, h, w, C) uint8 -> context (B, h*w*C, d).

    Channel-specific embeddings of the 256 intensities of each sub-pixel (grid [h, w*C]) plus 2D position
    encodings of that grid, dropout, then ``encoder_layers`` :class:`EncoderBlock` s.
    """

    def __init__(self, config: SuperResolutionConfig):
        super().__init__()
        cfg = config
        d = cfg.hidden_size
        m = cfg.encoder_grid[0] * cfg.encoder_grid[1]
        self.values_in = ChannelEmbedding(cfg.channels, d)
        self.positions = PositionEncoding(cfg.encoder_grid, d, cfg.position_encoding)
        self.register_buffer("channel", torch.arange(m) % cfg.channels, persistent=False)
        self.register_buffer("index", torch.arange(m), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(d, cfg.num_heads, cfg.ffn_size, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.encoder_layers)
        )

    def forward(self, inputs: Tensor) -> Tensor:
        values = inputs.long().reshape(inputs.shape[0], -1)  # (B, m): row-major (h, w, C) = grid [h, w*C]
        x = self.drop(self.values_in(values, self.channel) + self.positions(self.index))
        for block in self.blocks:
            x = block(x)
        return x


class SuperResolutionTransformer(nn.Module):
    """p(high-resolution image | low-resolution image): an unmasked encoder and a cross-attending decoder.

    ``log_prob(images, inputs)`` and ``sample(inputs)`` follow the decoder's ``generation_order()``;
    ``images`` are the (B, H, W, C) targets and ``inputs`` the (B, h, w, C) low-resolution images, both uint8.
    """

    def __init__(self, config: SuperResolutionConfig):
        super().__init__()
        self.config = config
        self.encoder = SuperResolutionEncoder(config)
        self.decoder = ImageTransformer(config.decoder, cross_attention=True)

    # ----- shapes -------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the high-resolution targets."""
        return self.decoder.image_shape

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(h, w, C) of the low-resolution inputs."""
        h, w = self.config.input_size
        return (h, w, self.config.channels)

    def generation_order(self) -> Tensor:
        """Permutation of the flattened (H, W, C) target sub-pixels in the order they are generated."""
        return self.decoder.generation_order()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def _device(self) -> torch.device:
        return self.decoder.head.weight.device

    # ----- checks -------------------------------------------------------------------------------
    def _check_inputs(self, inputs: Tensor) -> None:
        h, w, _ = self.input_shape
        check_images(inputs, self.input_shape, f"inputs (the low-resolution images, input_size {h}x{w})")

    def _check_pair(self, images: Tensor, inputs: Tensor) -> None:
        if (isinstance(images, Tensor) and isinstance(inputs, Tensor) and images.dim() == 4 and inputs.dim() == 4
                and self.image_shape != self.input_shape
                and tuple(images.shape[1:]) == self.input_shape and tuple(inputs.shape[1:]) == self.image_shape):
            raise ValueError(f"images {tuple(images.shape)} and inputs {tuple(inputs.shape)} look swapped: the "
                             f"arguments are (images = targets {self.image_shape}, inputs = low-resolution "
                             f"{self.input_shape})")
        H, W, _ = self.image_shape
        check_images(images, self.image_shape, f"images (the high-resolution targets, image_size {H}x{W})")
        self._check_inputs(inputs)
        if images.shape[0] != inputs.shape[0]:
            raise ValueError(f"images and inputs must have the same batch size, got {images.shape[0]} images "
                             f"and {inputs.shape[0]} inputs")

    # ----- the network --------------------------------------------------------------------------
    def encode(self, inputs: Tensor) -> Tensor:
        """Low-resolution images uint8 (B, h, w, C) -> encoder output (B, h*w*C, d)."""
        self._check_inputs(inputs)
        return self.encoder(inputs.to(self._device))

    def _params(self, images: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Checked targets and inputs -> (values (B, n, k), parameters (B, n, P))."""
        self._check_pair(images, inputs)
        context = self.encoder(inputs.to(self._device))
        values = self.decoder._to_positions(images.to(self._device))
        return values, self.decoder._params(values, None, context)

    def forward(self, images: Tensor, inputs: Tensor) -> Tensor:
        """Distribution parameters: logits (B, H, W, C, 256) or mixture parameters (B, H, W, P)."""
        _, params = self._params(images, inputs)
        h, w, c = self.image_shape
        if self.config.distribution == "categorical":
            return params.reshape(-1, h, w, c, params.shape[-1])
        return params.reshape(-1, h, w, params.shape[-1])

    def log_prob(self, images: Tensor, inputs: Tensor) -> Tensor:
        """log p(x_t | x_<t, inputs) in nats for every target sub-pixel: float (B, H, W, C)."""
        values, params = self._params(images, inputs)
        return self.decoder._to_images(self.decoder.dist.log_prob(params, values))

    # ----- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        inputs: Tensor,
        temperature: float = 0.9,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        progress: bool = False,
    ) -> Tensor:
        """One high-resolution sample per low-resolution input: uint8 (B, h, w, C) -> uint8 (B, H, W, C).

        The encoder runs once per call; with ``use_cache`` each decoder layer also computes its
        cross-attention keys and values once. ``temperature`` and ``use_cache`` mean what they mean in
        :meth:`ImageTransformer.sample` (cached and uncached sampling give identical images for the same
        generator). The model is in eval mode while sampling and its mode is restored afterwards.
        """
        self._check_inputs(inputs)
        if inputs.shape[0] < 1:
            raise ValueError("inputs must hold at least one low-resolution image")
        was_training = self.training
        self.eval()
        try:
            context = self.encoder(inputs.to(self._device))
            dec = self.decoder
            values = torch.zeros(inputs.shape[0], dec.layout.n, dec.dist.values_per_position,
                                 dtype=torch.long, device=self._device)
            values = dec._generate(values, 0, None, temperature, generator, use_cache, progress, context=context)
        finally:
            self.train(was_training)
        return dec._to_images(values).to(torch.uint8)

    # ----- files ----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``weights.safetensors`` to ``directory``."""
        from .checkpoint import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path,
                        map_location: str | torch.device = "cpu") -> "SuperResolutionTransformer":
        """Load a model written by ``save_pretrained``."""
        from .checkpoint import load_pretrained

        return load_pretrained(cls, directory, map_location)


# ----- pairs ---------------------------------------------------------------------------------------------
def _size(size: Any, name: str = "size") -> tuple[int, int]:
    h, w = _pair(size, name)
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive, got {(h, w)}")
    return h, w


def _factors(shape: tuple[int, ...], size: tuple[int, int], name: str) -> tuple[int, int]:
    if len(shape) != 4:
        raise ValueError(f"{name} must have shape (B, H, W, C), got {tuple(shape)}")
    H, W = shape[1], shape[2]
    h, w = size
    if H % h or W % w:
        raise ValueError(f"{name} of size {H}x{W} cannot be area-downsampled to {h}x{w}: "
                         f"the image size must be a multiple of the target size")
    return H // h, W // w


def _as_tensor(images: Any, name: str) -> Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (or numpy array), got {type(images).__name__}")
    if images.dtype.is_complex or images.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {images.dtype}")
    return images


def area_downsample_float(images: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Box (area) averaging without rounding: (B, H, W, C) -> float64 (B, h, w, C).

    Each output pixel is the mean of the (H/h) x (W/w) block it covers; H and W must be multiples of h and w.
    Any real dtype is accepted (values are not range-checked).
    """
    images = _as_tensor(images, "images")
    size = _size(size)
    fh, fw = _factors(tuple(images.shape), size, "images")
    b, _, _, c = images.shape
    return images.double().reshape(b, size[0], fh, size[1], fw, c).mean(dim=(2, 4))


def area_downsample(images: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Box (area) averaging of 8-bit images: uint8 (B, H, W, C) -> uint8 (B, h, w, C).

    Each output pixel is the mean of the (H/h) x (W/w) block it covers, rounded to the nearest integer
    (exact integer arithmetic; halves round up). H and W must be multiples of h and w (ValueError otherwise).
    Any integer dtype with values in [0, 255] is accepted.
    """
    images = _as_tensor(images, "images")
    size = _size(size)
    fh, fw = _factors(tuple(images.shape), size, "images")
    check_images(images, tuple(images.shape[1:]))
    b, _, _, c = images.shape
    total = images.long().reshape(b, size[0], fh, size[1], fw, c).sum(dim=(2, 4))
    k = fh * fw
    return ((2 * total + k) // (2 * k)).to(torch.uint8)


def make_pairs(images: Tensor, input_size: tuple[int, int] | int) -> tuple[Tensor, Tensor]:
    """(inputs, targets) from uint8 images (B, H, W, C): inputs = ``area_downsample(images, input_size)``.

    ``targets`` is ``images`` itself (as uint8); H and W must be multiples of ``input_size``.
    """
    images = _as_tensor(images, "images")
    inputs = area_downsample(images, input_size)
    return inputs, images.to(torch.uint8)


class SuperResolutionPairs(torch.utils.data.Dataset):
    """(low-resolution input uint8 (h, w, C), target uint8 (H, W, C)) pairs, downsampled on the fly.

    ``images`` is a uint8 tensor or array (N, H, W, C), or a Dataset whose items are images (H, W, C) or
    tuples whose first element is the image (e.g. ``data.to_tensor_dataset``). Inputs are made by
    :func:`area_downsample` to ``input_size``.
    """

    def __init__(self, images: Tensor | np.ndarray | torch.utils.data.Dataset, input_size: tuple[int, int] | int):
        self.input_size = _size(input_size, "input_size")
        if isinstance(images, (Tensor, np.ndarray)):
            images = _as_tensor(images, "images")
            _factors(tuple(images.shape), self.input_size, "images")
            check_images(images, tuple(images.shape[1:]))
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        item = self.images[index]
        if isinstance(item, (tuple, list)):
            item = item[0]
        image = _as_tensor(item, f"item {index}")
        if image.dim() != 3:
            raise ValueError(f"item {index}: expected an image (H, W, C), got shape {tuple(image.shape)}")
        inputs, target = make_pairs(image[None], self.input_size)
        return inputs[0], target[0]
