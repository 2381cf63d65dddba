"""Out-of-distribution scores from a model's exact likelihood: functions of uint8 image tensors.

A high likelihood alone does not say that an image belongs: simple images (flat backgrounds, few strokes) are
likely under any model, so a Fashion-MNIST model gives MNIST digits fewer bits than its own test set (Nalisnick
et al., 2019). Two corrections that work for any likelihood model, and one test for batches:

- complexity (Serra et al., 2020): the model's bits minus the bits a generic lossless codec (PNG, WebP, JPEG XL)
  needs for the same image; what is left is how much better the model knows the image than a codec that knows
  nothing of the training data;
- likelihood ratio (Ren et al., 2019): the model's bits minus a background model's;
- typicality (Nalisnick et al., 2019): a batch's mean bits/dim against the training distribution's entropy.

Every score here is in bits per dimension and is higher for images that look less like the training data.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .files.image_files import LOSSLESS_FORMATS, lossless_bytes, lossless_formats
from .files.pretrained import PretrainedModel
from .images import check_images

__all__ = ["model_bits", "codec_bits", "score_images", "complexity_scores", "score_columns", "reference", "percentile",
           "TypicalityTest", "synthetic", "transform", "SYNTHETIC", "TRANSFORMS"]

LN2 = math.log(2.0)
PRECISIONS = ("fp32", "bf16")
# How far bf16 scoring may move an image's bits/dim from fp32's, with room above what every shipped model showed
# (benchmarks/ood.py, docs/results/ood.md): natural images and noise move little; constant images, which the colour
# models predict with great confidence, move more (there a small change to a sharp distribution moves many bits)
BF16_WITHIN = 0.05
BF16_WITHIN_FLAT = 0.5


def _check(images: Tensor) -> None:
    """uint8 (N, H, W, C) of any size."""
    shape = tuple(images.shape[1:]) if isinstance(images, Tensor) and images.dim() == 4 else (0, 0, 0)
    check_images(images, shape)


@torch.no_grad()
def model_bits(model: PretrainedModel, images: Tensor, labels: Tensor | None = None, batch_size: int = 64,
               per_pixel: bool = False, progress: bool = False,
               precision: str = "fp32") -> tuple[Tensor, Tensor | None]:
    """Bits/dim of each image under ``model`` (uint8 (N, H, W, C) -> float64 (N,)), one parallel pass per batch;
    with ``per_pixel``, also the bits of each pixel, summed over its channels (N, H, W). ``precision`` "bf16" runs
    the network under bf16 autocast (the distributions stay in fp32): about twice as fast on a CPU with bf16
    instructions, within :data:`BF16_WITHIN` bits/dim of fp32 on natural images and noise, :data:`BF16_WITHIN_FLAT`
    on flat images (which a model is very sure of).

    A class-conditional model given no labels scores p(x) = mean over classes of p(x | class): one pass per class.
    A super-resolution model scores each image given its own downsampled version.
    """
    check_images(images, tuple(model.image_shape))
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    classes = getattr(model.config, "num_classes", 0)
    device = next(model.parameters()).device
    per_image, maps = [], []
    with model.evaluating(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for start in tqdm(range(0, len(images), batch_size), disable=not progress, desc="model", leave=False):
            x = images[start : start + batch_size].to(device)
            if classes and labels is None:  # log p(x) = logsumexp_y log p(x | y) - log K, per sub-pixel sums
                per_class = torch.stack([model.log_prob(x, torch.full((len(x),), y, dtype=torch.long, device=device))
                                         .double() for y in range(classes)])  # (K, B, H, W, C)
                total = torch.logsumexp(per_class.flatten(2).sum(-1), 0) - math.log(classes)  # (B,)
                # the per-pixel map of the class that explains the image best: p(x) has no per-pixel factorisation
                best = per_class.flatten(2).sum(-1).argmax(0)
                log_prob = per_class[best, torch.arange(len(x))]
            else:
                y = labels[start : start + batch_size].to(device) if labels is not None else None
                log_prob = model.log_prob(x, model.condition_for(x, y)).double()  # (B, H, W, C) nats
                total = log_prob.flatten(1).sum(1)
            per_image.append((-total / (x[0].numel() * LN2)).cpu())
            if per_pixel:
                maps.append((-log_prob.sum(-1) / LN2).cpu())
    bits = torch.cat(per_image) if per_image else torch.zeros(0, dtype=torch.float64)
    return bits, (torch.cat(maps) if maps else None) if per_pixel else None


def codec_bits(images: Tensor, fmt: str, workers: int | None = None, progress: bool = False) -> Tensor:
    """Bits/dim of each image as a file of the lossless format ``fmt`` (PNG, WEBP or JXL, at the settings that make
    it smallest: :func:`files.image_files.lossless_bytes`): float64 (N,). The whole file counts, header included,
    as Serra et al. count it; for images of one size the header only shifts every score alike."""
    _check(images)
    if fmt not in LOSSLESS_FORMATS:
        raise ValueError(f"unknown codec {fmt!r}; known: {', '.join(LOSSLESS_FORMATS)}")
    arrays = images.cpu().numpy()
    dims = arrays[0].size if len(arrays) else 1
    workers = workers or max(1, torch.get_num_threads())
    # the encoders run in C and let go of the GIL, so threads share them out over the cores
    with ThreadPoolExecutor(workers) as pool:
        sizes = list(tqdm(pool.map(lambda a: len(lossless_bytes(a, fmt)), arrays), total=len(arrays),
                          disable=not progress, desc=fmt.lower(), leave=False))
    return torch.tensor(sizes, dtype=torch.float64) * 8.0 / dims


def score_images(model: PretrainedModel, images: Tensor, labels: Tensor | None = None,
                 codecs: Sequence[str] | None = None, background: PretrainedModel | None = None,
                 batch_size: int = 64, progress: bool = False, precision: str = "fp32") -> dict[str, Tensor]:
    """Every per-image figure for ``images`` (uint8 (N, H, W, C)), each float64 (N,), in bits/dim:

    - ``bits_per_dim``: the model's (the raw score);
    - ``<codec>_bits_per_dim`` for each of ``codecs`` (default: every lossless format Pillow writes here);
    - ``minus_<codec>``: the model's bits minus the codec's (Serra et al.'s S(x));
    - ``minus_best`` with several codecs: minus the smallest of them, the tightest complexity estimate;
    - with a ``background`` model of the same image shape: ``background_bits_per_dim`` and ``ratio``, the model's
      bits minus the background's (Ren et al.'s likelihood ratio, negated and per dimension).

    ``precision``: as :func:`model_bits`.
    """
    if background is not None and tuple(background.image_shape) != tuple(model.image_shape):
        raise ValueError(f"the background model is for {tuple(background.image_shape)} images, the model for "
                         f"{tuple(model.image_shape)}: both must score the same images")
    bits = model_bits(model, images, labels, batch_size, progress=progress, precision=precision)[0]
    table = complexity_scores(bits, images, codecs, progress)
    if background is not None:
        table["background_bits_per_dim"] = model_bits(background, images, None, batch_size, progress=progress,
                                                      precision=precision)[0]
        table["ratio"] = table["bits_per_dim"] - table["background_bits_per_dim"]
    return table


def complexity_scores(bits: Tensor, images: Tensor, codecs: Sequence[str] | None = None,
                      progress: bool = False) -> dict[str, Tensor]:
    """The columns of :func:`score_images` that need no second model, from the model's bits/dim ``bits`` (N,) of
    ``images``: ``bits_per_dim``, each codec's bits/dim, ``minus_<codec>`` and, with several codecs, ``minus_best``."""
    codecs = [c.upper() for c in (lossless_formats() if codecs is None else codecs)]
    table: dict[str, Tensor] = {"bits_per_dim": bits}
    for fmt in codecs:
        table[f"{fmt.lower()}_bits_per_dim"] = codec_bits(images, fmt, progress=progress)
    for fmt in codecs:
        table[f"minus_{fmt.lower()}"] = bits - table[f"{fmt.lower()}_bits_per_dim"]
    if len(codecs) > 1:
        best = torch.stack([table[f"{fmt.lower()}_bits_per_dim"] for fmt in codecs]).min(0).values
        table["minus_best"] = bits - best
    return table


def score_columns(table: dict[str, Tensor]) -> list[str]:
    """The columns of a :func:`score_images` table that are out-of-distribution scores (higher: less like the
    training data), the raw likelihood first."""
    return [name for name in table if name == "bits_per_dim" or name.startswith("minus_") or name == "ratio"]


# ----- where one image falls among held-out ones --------------------------------------------------------------
def reference(table: dict[str, Tensor], source: str) -> dict[str, object]:
    """Held-out in-distribution images' scores, kept as the percentiles 0, 1, ..., 100 of each score column: enough
    to place a new image among them (:func:`percentile`) without the images."""
    columns = score_columns(table)
    return {"source": source, "images": int(len(table["bits_per_dim"])),
            "percentiles": {c: [round(float(v), 5) for v in np.percentile(table[c].numpy(), np.arange(101))]
                            for c in columns}}


def percentile(record: dict[str, object], column: str, value: float) -> float:
    """The share (0..100) of the reference's held-out images whose ``column`` score is below ``value``."""
    points = np.asarray(record["percentiles"][column], dtype=np.float64)  # type: ignore[index]
    return float(np.interp(value, points, np.arange(len(points)), left=0.0, right=100.0))


# ----- typicality, for batches -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TypicalityTest:
    """Is a batch of ``batch_size`` images typical of the training distribution? Nalisnick et al. (2019): the
    batch's mean bits/dim should lie within ``epsilon`` of the distribution's entropy (estimated by the mean over
    held-out images), ``epsilon`` the (1 - alpha) quantile of that distance over batches drawn from held-out
    images, so that about ``alpha`` of in-distribution batches are flagged."""

    entropy: float  # bits/dim
    epsilon: float  # bits/dim
    batch_size: int
    alpha: float

    @classmethod
    def fit(cls, reference: Tensor | np.ndarray, batch_size: int, alpha: float = 0.01, bootstraps: int = 5000,
            seed: int = 0) -> "TypicalityTest":
        """The test from held-out in-distribution bits/dim (1-D), batches drawn with replacement."""
        ref = np.asarray(reference, dtype=np.float64).ravel()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if len(ref) < 2:
            raise ValueError(f"need at least 2 held-out images to fit the typicality test, got {len(ref)}")
        entropy = float(ref.mean())
        rng = np.random.default_rng(seed)
        means = ref[rng.integers(0, len(ref), size=(bootstraps, batch_size))].mean(1)
        return cls(entropy, float(np.quantile(np.abs(means - entropy), 1.0 - alpha)), batch_size, alpha)

    def statistic(self, batch: Tensor | np.ndarray) -> float:
        """|mean bits/dim of the batch - entropy|."""
        return float(abs(np.asarray(batch, dtype=np.float64).mean() - self.entropy))

    def is_typical(self, batch: Tensor | np.ndarray) -> bool:
        values = np.asarray(batch, dtype=np.float64).ravel()
        if len(values) != self.batch_size:
            raise ValueError(f"the test was fitted for batches of {self.batch_size} images, got {len(values)}")
        return self.statistic(values) <= self.epsilon

    def flagged(self, bits: Tensor | np.ndarray) -> float:
        """The share of the consecutive batches of ``bits`` (1-D bits/dim, at least one whole batch; a last
        partial batch is left out) that the test calls atypical."""
        values = np.asarray(bits, dtype=np.float64).ravel()
        count = len(values) // self.batch_size
        if count == 0:
            raise ValueError(f"need at least one batch of {self.batch_size} images, got {len(values)}")
        batches = values[: count * self.batch_size].reshape(count, self.batch_size)
        return float(np.mean(np.abs(batches.mean(1) - self.entropy) > self.epsilon))


# ----- reference sets that need no data -------------------------------------------------------------------------
SYNTHETIC = {"noise": "uniform noise: every sub-pixel drawn uniformly from 0..255",
             "constant": "constant images: one random value per image and channel, the same at every pixel"}
TRANSFORMS = {"inverted": "255 - x", "rotated": "turned a quarter turn (a half turn for images that are not square)",
              "flipped": "upside down"}


def synthetic(kind: str, num: int, shape: Sequence[int], seed: int = 0) -> Tensor:
    """``num`` images uint8 (num, H, W, C) of ``kind`` (a key of :data:`SYNTHETIC`)."""
    if kind not in SYNTHETIC:
        raise ValueError(f"unknown synthetic set {kind!r}; known: {', '.join(SYNTHETIC)}")
    h, w, c = (int(s) for s in shape)
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return torch.randint(0, 256, (num, h, w, c), generator=g, dtype=torch.uint8)
    return torch.randint(0, 256, (num, 1, 1, c), generator=g, dtype=torch.uint8).expand(num, h, w, c).contiguous()


def transform(images: Tensor, kind: str) -> Tensor:
    """``images`` (uint8 (N, H, W, C)) changed by ``kind`` (a key of :data:`TRANSFORMS`), same shape."""
    _check(images)
    if kind == "inverted":
        return 255 - images
    if kind == "rotated":
        return images.rot90(1, (1, 2)).contiguous() if images.shape[1] == images.shape[2] else images.flip(1, 2)
    if kind == "flipped":
        return images.flip(1)
    raise ValueError(f"unknown transform {kind!r}; known: {', '.join(TRANSFORMS)}")
