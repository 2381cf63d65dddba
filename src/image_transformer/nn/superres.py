"""Super-resolution with the Image Transformer: an encoder over the low-resolution image, a decoder over the target.

Section 4 of Parmar et al. (2018): the encoder reads the low-resolution input (e.g. 8x8) with channel-specific
embeddings of its sub-pixels, 2D position encodings and unmasked self-attention; the decoder is the
autoregressive :class:`~image_transformer.nn.model.ImageTransformer` over the high-resolution target (e.g. 32x32),
with cross-attention from every decoder block to the encoder output. Both are stacks of the same
:class:`~image_transformer.nn.model.Block`; only their layouts differ (unmasked vs generation order).

Data flow: inputs (B, h, w, C) uint8 -> sub-pixel values on the grid [h, w*C] -> (B, h*w*C, d) -> encoder
blocks -> context (B, m, d); images (B, H, W, C) uint8 -> decoder (self-attention in generation order,
cross-attention to the context) -> distribution parameters -> log p or samples.

The inputs are the area-downsampled targets (:func:`~image_transformer.images.area_downsample`);
:func:`image_transformer.tasks.superres_report` samples held-out inputs and scores the samples as the paper does.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..files.pretrained import PretrainedModel
from ..images import area_downsample, check_images
from .config import SuperResolutionConfig
from .embeddings import PositionEncoding, SubPixelInput, SubPixelLinear, sinusoidal_at
from .model import Block, ImageTransformer
from .order import unmasked
from .sampling import Sampling

__all__ = ["SuperResolutionConfig", "SuperResolutionTransformer", "SuperResolutionEncoder"]


# ----- the network -----------------------------------------------------------------------------------------
def aligned_points(cfg: SuperResolutionConfig) -> tuple[Tensor, Tensor]:
    """(rows, cols), each (h*w*C,): the centre of the target pixels each input sub-pixel covers, in the target's own
    position grid ([H, W*C] where a position is a sub-pixel, [H, W] where it is a pixel); fractional."""
    (h, w), (H, W), C = cfg.input_size, cfg.image_size, cfg.channels
    i, j, c = torch.meshgrid(torch.arange(h), torch.arange(w), torch.arange(C), indexing="ij")  # input order (h, w, C)
    row = (i + 0.5) * (H / h) - 0.5
    x = (j + 0.5) * (W / w) - 0.5
    per_pixel = cfg.grid_shape[1] // W  # C where a position is a sub-pixel, 1 where it is a pixel
    col = x * per_pixel + (c if per_pixel > 1 else 0)
    return row.reshape(-1), col.reshape(-1)


def under_index(cfg: SuperResolutionConfig) -> Tensor:
    """(n, k): for each of the target's grid positions, the input sub-pixels (rows of the encoder's output, in the
    input's (h, w, C) order) under it: the one of its own channel where a position is a sub-pixel (k = 1), all C of
    its pixel where a position is a pixel (k = C)."""
    (h, w), (H, W), C = cfg.input_size, cfg.image_size, cfg.channels
    rows, cols = cfg.grid_shape
    per_pixel = cols // W
    r, col = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    i, j = r * h // H, (col // per_pixel) * w // W  # the input pixel under each position
    base = ((i * w + j) * C).reshape(-1, 1)
    if per_pixel > 1:  # a sub-pixel: its own channel
        return base + (col % per_pixel).reshape(-1, 1)
    return base + torch.arange(C)  # a pixel: every channel


class SuperResolutionEncoder(nn.Module):
    """Low-resolution image (B, h, w, C) uint8 -> context (B, h*w*C, d).

    Each sub-pixel's intensity read by its channel (``encoder_input``: a table of 256 embeddings, or a linear map of
    the intensity) plus position encodings, dropout, then
    ``encoder_layers`` blocks in which every position sees every position. The positions (``encoder_positions``):
    "aligned", each input sub-pixel at the centre of the target pixels it covers (:func:`aligned_points`) in the
    target's frame, so that a target position's query and the keys of the input under it start out alike and
    cross-attention can find them by matching positions (sinusoids at those points; learned tables over the
    target's grid at the nearest points); "own", the input's grid [h, w*C], which no linear map lines up with the
    target's (the sinusoids' frequencies are not spaced by the scale factor).
    """

    def __init__(self, config: SuperResolutionConfig):
        super().__init__()
        cfg = config
        self.layout = unmasked(cfg.encoder_grid)
        reader = SubPixelLinear if cfg.encoder_input == "linear" else SubPixelInput
        self.values_in = reader(cfg.channels, cfg.hidden_size, self.layout.n)
        self.register_buffer("index", torch.arange(self.layout.n), persistent=False)
        if cfg.encoder_positions == "own":
            self.positions = PositionEncoding(cfg.encoder_grid, cfg.hidden_size, cfg.position_encoding)
            self.register_buffer("where", self.index, persistent=False)
        elif cfg.position_encoding == "sinusoidal":
            self.positions = None
            self.register_buffer("aligned", sinusoidal_at(*aligned_points(cfg), cfg.hidden_size), persistent=False)
        else:
            rows, cols = aligned_points(cfg)
            self.positions = PositionEncoding(cfg.grid_shape, cfg.hidden_size, cfg.position_encoding)
            self.register_buffer("where", rows.round().long() * cfg.grid_shape[1] + cols.round().long(),
                                 persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.encoder_layers))
        self.norm_out = nn.LayerNorm(cfg.hidden_size) if cfg.norm == "pre" else nn.Identity()

    def forward(self, inputs: Tensor) -> Tensor:
        values = inputs.long().reshape(inputs.shape[0], -1, 1)  # (B, m, 1): row-major (h, w, C) = grid [h, w*C]
        where = self.aligned if self.positions is None else self.positions(self.where)  # (m, d)
        x = self.drop(self.values_in(values, self.index) + where)  # (B, m, d)
        for block in self.blocks:
            x = block(x, self.layout)
        return self.norm_out(x)


class SuperResolutionTransformer(PretrainedModel):
    """p(high-resolution image | low-resolution image): an unmasked encoder and a cross-attending decoder.

    ``log_prob(images, inputs)`` and ``sample(inputs)`` follow the decoder's ``generation_order()``;
    ``images`` are the (B, H, W, C) targets and ``inputs`` the (B, h, w, C) low-resolution images, both uint8.
    """

    config_class = SuperResolutionConfig
    pipeline_tag = "image-to-image"
    tasks = ("upscale", "evaluate", "likelihood", "score")
    low_resolution_input = True
    default_temperature: ClassVar[float] = 0.9  # as `image-transformer upscale` draws by default

    def __init__(self, config: SuperResolutionConfig):
        super().__init__()
        self.config = config
        self.encoder = SuperResolutionEncoder(config)
        self.decoder = ImageTransformer(config.decoder, cross_attention=True)
        if config.input_skip:
            self.decoder.context_under = under_index(config)

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weights saved while the encoder had its own block class (``encoder.blocks.N.qkv``, ``.out``)."""
        old = re.compile(r"^(encoder\.blocks\.\d+\.)(qkv|out)\.")
        return {old.sub(r"\1attn.\2.", name): value for name, value in state.items()}

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

    def condition_for(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """What ``log_prob(images, ...)`` is conditioned on, from a data set's images: their downsampled selves."""
        return area_downsample(images, self.config.input_size)

    # ----- the network --------------------------------------------------------------------------
    def encode(self, inputs: Tensor) -> Tensor:
        """Low-resolution images uint8 (B, h, w, C) -> encoder output (B, h*w*C, d)."""
        self._check_inputs(inputs)
        return self.encoder(inputs.to(self._device))

    def forward(self, images: Tensor, inputs: Tensor) -> Tensor:
        """Distribution parameters: logits (B, H, W, C, 256) or mixture parameters (B, H, W, P)."""
        self._check_pair(images, inputs)
        return self.decoder(images.to(self._device), context=self.encoder(inputs.to(self._device)))

    def log_prob(self, images: Tensor, inputs: Tensor) -> Tensor:
        """log p(x_t | x_<t, inputs) in nats for every target sub-pixel: float (B, H, W, C)."""
        self._check_pair(images, inputs)
        return self.decoder.log_prob(images, context=self.encoder(inputs.to(self._device)))

    # ----- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, inputs: Tensor, *, options: Sampling | None = None, **settings: Any) -> Tensor:
        """One high-resolution sample per low-resolution input: uint8 (B, h, w, C) -> uint8 (B, H, W, C).

        How to draw: as in :meth:`ImageTransformer.sample` (``options`` or its fields as keywords), at temperature
        0.9 unless told otherwise. The encoder runs once per call; with ``use_cache`` each decoder layer also
        computes its cross-attention keys and values once. The model is in eval mode while sampling and its mode is
        restored afterwards.
        """
        self._check_inputs(inputs)
        if inputs.shape[0] < 1:
            raise ValueError("inputs must hold at least one low-resolution image")
        options = (options or Sampling()).settle(settings, self.default_temperature)
        with self.evaluating():
            context = self.encoder(inputs.to(self._device))
            return self.decoder.sample(inputs.shape[0], context=context, options=options)
