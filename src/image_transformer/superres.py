"""Super-resolution with the Image Transformer: an encoder over the low-resolution image, a decoder over the target.

Section 4 of Parmar et al. (2018): the encoder reads the low-resolution input (e.g. 8x8) with channel-specific
embeddings of its sub-pixels, 2D position encodings and unmasked self-attention; the decoder is the
autoregressive :class:`~image_transformer.model.ImageTransformer` over the high-resolution target (e.g. 32x32),
with cross-attention from every decoder block to the encoder output. Both are stacks of the same
:class:`~image_transformer.model.Block`; only their layouts differ (unmasked vs generation order).

Data flow: inputs (B, h, w, C) uint8 -> sub-pixel values on the grid [h, w*C] -> (B, h*w*C, d) -> encoder
blocks -> context (B, m, d); images (B, H, W, C) uint8 -> decoder (self-attention in generation order,
cross-attention to the context) -> distribution parameters -> log p or samples.

The inputs are the area-downsampled targets (:func:`~image_transformer.images.area_downsample`);
:func:`superres_report` samples held-out inputs and scores the samples as the paper does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .checkpoint import PretrainedModel
from .config import SuperResolutionConfig
from .embeddings import PositionEncoding, SubPixelInput
from .images import area_downsample, check_images, enlarge, save_grid
from .metrics import consistency, nearest_neighbour_ms_ssim, psnr, spread, ssim
from .model import Block, ImageTransformer, StepHook
from .order import unmasked

__all__ = ["SuperResolutionConfig", "SuperResolutionTransformer", "SuperResolutionEncoder", "superres_report",
           "format_superres_report"]


# ----- the network -----------------------------------------------------------------------------------------
class SuperResolutionEncoder(nn.Module):
    """Low-resolution image (B, h, w, C) uint8 -> context (B, h*w*C, d).

    Channel-specific embeddings of the 256 intensities of each sub-pixel (grid [h, w*C]) plus 2D position
    encodings of that grid, dropout, then ``encoder_layers`` blocks in which every position sees every position.
    """

    def __init__(self, config: SuperResolutionConfig):
        super().__init__()
        cfg = config
        self.layout = unmasked(cfg.encoder_grid)
        self.values_in = SubPixelInput(cfg.channels, cfg.hidden_size, self.layout.n)
        self.positions = PositionEncoding(cfg.encoder_grid, cfg.hidden_size, cfg.position_encoding)
        self.register_buffer("index", torch.arange(self.layout.n), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.encoder_layers))
        self.norm_out = nn.LayerNorm(cfg.hidden_size) if cfg.norm == "pre" else nn.Identity()

    def forward(self, inputs: Tensor) -> Tensor:
        values = inputs.long().reshape(inputs.shape[0], -1, 1)  # (B, m, 1): row-major (h, w, C) = grid [h, w*C]
        x = self.drop(self.values_in(values, self.index) + self.positions(self.index))  # (B, m, d)
        for block in self.blocks:
            x = block(x, self.layout)
        return self.norm_out(x)


class SuperResolutionTransformer(PretrainedModel):
    """p(high-resolution image | low-resolution image): an unmasked encoder and a cross-attending decoder.

    ``log_prob(images, inputs)`` and ``sample(inputs)`` follow the decoder's ``generation_order()``;
    ``images`` are the (B, H, W, C) targets and ``inputs`` the (B, h, w, C) low-resolution images, both uint8.
    """

    config_class = SuperResolutionConfig

    def __init__(self, config: SuperResolutionConfig):
        super().__init__()
        self.config = config
        self.encoder = SuperResolutionEncoder(config)
        self.decoder = ImageTransformer(config.decoder, cross_attention=True)

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
    def sample(
        self,
        inputs: Tensor,
        temperature: float = 0.9,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        progress: bool = False,
        on_step: StepHook | None = None,
        graphs: bool | None = None,
    ) -> Tensor:
        """One high-resolution sample per low-resolution input: uint8 (B, h, w, C) -> uint8 (B, H, W, C).

        The encoder runs once per call; with ``use_cache`` each decoder layer also computes its
        cross-attention keys and values once. ``temperature`` and ``use_cache`` mean what they mean in
        :meth:`ImageTransformer.sample` (cached and uncached sampling give identical images for the same
        generator), and ``on_step`` and ``graphs`` are the decoder's (:meth:`ImageTransformer.generate`). The model is in eval
        mode while sampling and its mode is restored afterwards.
        """
        self._check_inputs(inputs)
        if inputs.shape[0] < 1:
            raise ValueError("inputs must hold at least one low-resolution image")
        was_training = self.training
        self.eval()
        try:
            context = self.encoder(inputs.to(self._device))
            return self.decoder.sample(inputs.shape[0], temperature=temperature, generator=generator,
                                       use_cache=use_cache, progress=progress, context=context, on_step=on_step,
                                       graphs=graphs)
        finally:
            self.train(was_training)


# ----- the paper's super-resolution evaluation ----------------------------------------------------------
def superres_report(model: SuperResolutionTransformer, images: Tensor, inputs: Tensor,
                    train_images: Tensor | None, out: Path, num: int, seed: int,
                    temperatures: Sequence[float] = (0.8, 0.9, 1.0), progress: bool = False) -> dict[str, Any]:
    """Samples for ``num`` held-out inputs (spread over the split) at each temperature; the paper's metrics.

    Writes ``superres.png`` (rows: input enlarged, a sample per temperature, original; as the paper's
    table 6) and ``superres.json``. Consistency, in 0..255 intensity units: ``consistency_l2_bicubic`` is the
    paper's, the L2 distance between the low-resolution input and the bicubic-downsampled sample;
    ``consistency_area_rmse`` is ours, the RMS difference to the area-downsampled sample (the downsampling that
    made the inputs); PSNR (dB) and SSIM compare each sample with
    its original; the nearest-neighbour check finds, for each sample, the training image whose
    downsampled version is closest to the sample's downsampled version and reports their MS-SSIM.
    """
    idx = spread(len(images), num)
    originals, lows = images[idx], inputs[idx]
    report: dict[str, Any] = {"num_samples": len(idx), "temperatures": {}}
    columns = [enlarge(lows, tuple(int(f) for f in model.config.scale))]  # inputs enlarged for display
    for t in temperatures:
        samples = model.sample(lows, temperature=t, generator=torch.Generator().manual_seed(seed),
                               progress=progress).cpu()
        agreement = consistency(samples, lows)
        entry = {
            # the paper's consistency, and ours beside it (see metrics.consistency)
            "consistency_l2_bicubic": float(agreement["l2_bicubic"].mean()),
            "consistency_area_rmse": float(agreement["rmse"].mean()),
            "psnr_db": float(psnr(samples, originals).mean()),
            "ssim": float(ssim(samples, originals).mean()),
        }
        if train_images is not None:
            _, nn_ms_ssim = nearest_neighbour_ms_ssim(samples, train_images, model.config.input_size)
            entry["nearest_train_ms_ssim"] = float(nn_ms_ssim.mean())
        report["temperatures"][str(t)] = entry
        columns.append(samples)
    columns.append(originals)
    grid = torch.stack(columns, 1).flatten(0, 1)  # row per input: input, samples..., original
    report["grid"] = str(save_grid(grid, out / "superres.png", nrow=len(columns), scale=3))
    (out / "superres.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_superres_report(report: dict[str, Any]) -> str:
    lines = [f"super-resolution on {report['num_samples']} held-out images (grid: {report['grid']}):"]
    for t, e in report["temperatures"].items():
        nn_text = f", nearest-train MS-SSIM {e['nearest_train_ms_ssim']:.3f}" if "nearest_train_ms_ssim" in e else ""
        lines.append(f"  T={t}: consistency (paper's: L2 to the bicubic downsampling) {e['consistency_l2_bicubic']:.1f}, "
                     f"(ours: area RMSE) {e['consistency_area_rmse']:.2f}/255, PSNR {e['psnr_db']:.2f} dB, "
                     f"SSIM {e['ssim']:.3f}{nn_text}")
    return "\n".join(lines)
