"""Metrics: bits/dim for likelihoods; PSNR, SSIM, MS-SSIM, input consistency and nearest neighbours for
super-resolution samples; AUROC, AUPR and FPR at a TPR for detectors. Pure functions of tensors: nothing here
samples a model or writes a file.

The image metrics take batches (B, H, W, C) with intensities in 0..255 (uint8, any integer dtype, or
floats on the same scale; torch tensors or numpy arrays), compute in float64 and return one value per
image, shape (B,).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .images import area_downsample_float, as_tensor, bicubic_downsample_float, parse_size

__all__ = ["bits_per_dim", "psnr", "ssim", "ms_ssim", "consistency", "nearest_neighbour_ms_ssim", "MS_SSIM_WEIGHTS",
           "spread", "roc_curve", "auroc", "aupr", "fpr_at_tpr", "detection"]


def bits_per_dim(log_prob: Tensor) -> Tensor:
    """Per-image bits/dim from per-sub-pixel log-probabilities in nats: (B, H, W, C) -> (B,).

    bits/dim = -sum(log p) / (H * W * C * ln 2).
    """
    dims = log_prob[0].numel()
    return -log_prob.flatten(1).sum(1) / (dims * math.log(2.0))


def spread(num_items: int, count: int) -> Tensor:
    """``count`` indices spread evenly over ``num_items`` (all of them if count >= num_items or count <= 0).

    Evaluation subsets use this, so that data sorted by class is still covered class by class.
    """
    if count <= 0 or count >= num_items:
        return torch.arange(num_items)
    return torch.linspace(0, num_items - 1, count).round().long()


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli and Bovik (2003), finest first


def _images(x: Any, name: str) -> Tensor:
    x = as_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, H, W, C), got {tuple(x.shape)}")
    return x.double()


def _two(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    a, b = _images(a, "a"), _images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"the two image batches must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def psnr(a: Tensor, b: Tensor, max_value: float = 255.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image: 10 log10(max_value^2 / MSE), MSE over all H*W*C values.

    (B,) float64; +inf where the two images are identical.
    """
    a, b = _two(a, b)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(max_value**2 / mse)  # mse = 0 -> inf


def _window_size(height: int, width: int, size: int = 11) -> int:
    """``size``, or for smaller images the largest odd size that fits in both dimensions."""
    win = min(size, height, width)
    return win if win % 2 else win - 1


def _gaussian(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_maps(x: Tensor, y: Tensor, max_value: float, window: int = 11, sigma: float = 1.5,
               k1: float = 0.01, k2: float = 0.03) -> tuple[Tensor, Tensor]:
    """Luminance and contrast-structure maps (B, C, H', W') with a valid (no-padding) Gaussian window.

    x, y: float64 (B, H, W, C).
    """
    b, h, w, c = x.shape
    win = _window_size(h, w, window)
    g = _gaussian(win, sigma).to(x.device)
    gv, gh = g.reshape(1, 1, win, 1), g.reshape(1, 1, 1, win)

    def blur(t: Tensor) -> Tensor:  # (B*C, 1, H, W) -> (B*C, 1, H - win + 1, W - win + 1)
        return F.conv2d(F.conv2d(t, gv), gh)

    x = x.permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
    y = y.permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    shape = (b, c, *luminance.shape[-2:])
    return luminance.reshape(shape), contrast_structure.reshape(shape)


def ssim(a: Tensor, b: Tensor, max_value: float = 255.0) -> Tensor:
    """Structural similarity (Wang, Bovik, Sheikh and Simoncelli, 2004) per image: (B,) float64.

    The standard definition: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = ``max_value``,
    valid convolution (no padding), SSIM map averaged over positions, computed per channel and averaged over
    channels. Images smaller than 11 pixels in a dimension use a smaller window automatically: the largest
    odd size that fits, min(11, H, W) rounded down to odd, with the same sigma (the 1.5-sigma Gaussian
    truncated to that size and renormalised). 1 for identical images; symmetric in ``a`` and ``b``.
    """
    a, b = _two(a, b)
    lum, cs = _ssim_maps(a, b, max_value)
    return (lum * cs).mean(dim=(2, 3)).mean(1)


def _num_scales(height: int, width: int, max_scales: int, min_size: int) -> int:
    scales, h, w = 1, height, width
    while scales < max_scales and min(h // 2, w // 2) >= min_size:
        scales, h, w = scales + 1, h // 2, w // 2
    return scales


def ms_ssim(a: Tensor, b: Tensor, weights: Sequence[float] = MS_SSIM_WEIGHTS, max_value: float = 255.0,
            min_size: int = 11) -> Tensor:
    """Multi-scale SSIM (Wang, Simoncelli and Bovik, 2003) per image: (B,) float64.

    Scale 1 is the image itself; each further scale halves it by 2x2 average pooling (an odd last row or
    column is dropped). At every scale but the coarsest the contrast-structure term (mean of the cs map) is
    taken; at the coarsest, the full SSIM (mean of luminance x cs); they are combined as a weighted
    geometric mean, prod_j cs_j^w_j * ssim_M^w_M, per channel, then averaged over channels. As in
    TensorFlow's implementation, negative terms are clipped to 0 before the powers.

    Number of scales: as many as the size allows, at most ``len(weights)``: a scale is used only when its
    smaller side is at least ``min_size`` (default 11, the full SSIM window). The weights of the scales used
    (the finest ones) are renormalised to sum to 1. So 32x32 images use 2 scales (32 and 16 pixels, weights
    0.0448 and 0.2856 renormalised to 0.136 and 0.864); pass ``min_size=8`` for 3 scales (32, 16, 8; the
    8x8 scale then uses a 7x7 window, see :func:`ssim`). The paper-sized original needs 176 pixels for all
    5 scales. Images smaller than ``min_size`` get one scale, where MS-SSIM equals SSIM.
    """
    a, b = _two(a, b)
    if len(weights) < 1 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be a non-empty sequence of non-negative numbers, got {weights!r}")
    scales = _num_scales(a.shape[1], a.shape[2], len(weights), min_size)
    w = torch.tensor(list(weights[:scales]), dtype=torch.float64, device=a.device)
    if float(w.sum()) <= 0:
        raise ValueError(f"the weights of the {scales} scale(s) used sum to 0: {list(weights[:scales])}")
    w = w / w.sum()
    result = torch.ones(a.shape[0], a.shape[3], dtype=torch.float64, device=a.device)  # (B, C)
    for j in range(scales):
        lum, cs = _ssim_maps(a, b, max_value)
        if j == scales - 1:
            term = (lum * cs).mean(dim=(2, 3))
        else:
            term = cs.mean(dim=(2, 3))
            a, b = (F.avg_pool2d(t.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1) for t in (a, b))
        result = result * term.clamp(min=0) ** w[j]
    return result.mean(1)


def consistency(samples: Tensor, inputs: Tensor) -> dict[str, Tensor]:
    """How well each sample agrees with its low-resolution input, after downsampling the sample to the inputs' size.

    ``samples`` (B, H, W, C), ``inputs`` (B, h, w, C), intensities in 0..255 units. Returns float64 tensors (B,):

    - ``"l2_bicubic"``: **the paper's definition** (Parmar et al. 2018, after Dahl et al. 2017): the L2 distance
      between the input and a bicubic downsampling of the sample
      (:func:`~image_transformer.images.bicubic_downsample_float`,
      unrounded), sqrt(sum((bicubic(sample) - inputs)^2)) over the h*w*C values;
    - ``"rmse"`` and ``"l2"``: **ours**, with the area (box mean, unrounded) downsampling by which this library makes
      its inputs: the root-mean-square and the Euclidean norm of the difference (rmse = l2 / sqrt(h*w*C)); 0 for
      any upsampling that keeps block means, e.g. nearest-neighbour repetition. H and W must be multiples of h and w.
    """
    samples, inputs = _images(samples, "samples"), _images(inputs, "inputs")
    if samples.shape[0] != inputs.shape[0] or samples.shape[3] != inputs.shape[3]:
        raise ValueError(f"samples {tuple(samples.shape)} and inputs {tuple(inputs.shape)} must have the same "
                         f"batch size and channels")
    size = tuple(inputs.shape[1:3])
    squared = (area_downsample_float(samples, size) - inputs).pow(2).flatten(1)
    bicubic = (bicubic_downsample_float(samples, size) - inputs).pow(2).flatten(1)
    return {"rmse": squared.mean(1).sqrt(), "l2": squared.sum(1).sqrt(), "l2_bicubic": bicubic.sum(1).sqrt()}


@torch.no_grad()
def nearest_neighbour_ms_ssim(samples: Tensor, train_images: Tensor | np.ndarray, input_size: tuple[int, int] | int,
                              batch_size: int = 1024, **ms_ssim_kwargs: Any) -> tuple[Tensor, Tensor]:
    """For each sample, the training image closest to it at low resolution, and MS-SSIM to that image.

    Closeness is the L2 distance between the area-downsampled (``input_size``, unrounded box means) sample
    and training image: the training image whose low-resolution version best explains the sample.
    ``train_images`` (N, H, W, C) (tensor or numpy array, same H, W, C as the samples) is scanned
    ``batch_size`` images at a time, so memory stays at O(batch_size * H * W * C + B * batch_size).
    Ties go to the lowest index (up to float64 rounding of the distances).

    Returns ``(indices, scores)``: int64 (B,) indices into ``train_images`` and float64 (B,)
    ``ms_ssim(samples, train_images[indices], **ms_ssim_kwargs)``.
    """
    samples = _images(samples, "samples")
    size = parse_size(input_size, "input_size", positive=True)
    n = len(train_images)
    if n == 0:
        raise ValueError("train_images is empty")
    if tuple(train_images.shape[1:]) != tuple(samples.shape[1:]):
        raise ValueError(f"train_images {tuple(train_images.shape)} and samples {tuple(samples.shape)} must have "
                         f"the same image shape (H, W, C)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    query = area_downsample_float(samples, size).flatten(1)  # (B, D)
    query_sq = query.pow(2).sum(1, keepdim=True)  # (B, 1)
    best = torch.full((len(query),), math.inf, dtype=torch.float64, device=query.device)
    index = torch.zeros(len(query), dtype=torch.long, device=query.device)
    for start in range(0, n, batch_size):
        chunk = as_tensor(train_images[start : start + batch_size], "train_images").to(query.device)
        keys = area_downsample_float(chunk, size).flatten(1)  # (b, D)
        dist = (query_sq + keys.pow(2).sum(1)[None] - 2.0 * query @ keys.T).clamp(min=0)  # (B, b) squared L2
        value, arg = dist.min(1)
        better = value < best
        best = torch.where(better, value, best)
        index = torch.where(better, arg + start, index)
    picked = index.cpu()
    neighbours = train_images[picked.numpy()] if isinstance(train_images, np.ndarray) else train_images[picked]
    return index, ms_ssim(samples, _images(neighbours, "train_images").to(samples.device), **ms_ssim_kwargs)



# ----- detection: how well a score tells two sets apart ---------------------------------------------------
# Convention: a higher score means "more likely the positive set" (the out-of-distribution images); the scores
# of the negatives (in-distribution) and positives are given separately, as 1-D arrays or tensors.
def _scores(negatives: Any, positives: Any) -> tuple[np.ndarray, np.ndarray]:
    neg = np.asarray(negatives.cpu() if isinstance(negatives, Tensor) else negatives, dtype=np.float64).ravel()
    pos = np.asarray(positives.cpu() if isinstance(positives, Tensor) else positives, dtype=np.float64).ravel()
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError(f"need scores of both sets, got {len(neg)} negatives and {len(pos)} positives")
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise ValueError("scores must be finite numbers")
    return neg, pos


def roc_curve(negatives: Any, positives: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, TPR, thresholds) for flagging every score >= threshold, one point per distinct score, highest
    threshold first; the curve starts at (0, 0) (threshold +inf) and ends at (1, 1)."""
    neg, pos = _scores(negatives, positives)
    thresholds = np.unique(np.concatenate([neg, pos]))[::-1]
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    # how many of each set lie at or above each threshold
    fp = len(neg) - np.searchsorted(neg_sorted, thresholds, side="left")
    tp = len(pos) - np.searchsorted(pos_sorted, thresholds, side="left")
    fpr = np.concatenate([[0.0], fp / len(neg)])
    tpr = np.concatenate([[0.0], tp / len(pos)])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def auroc(negatives: Any, positives: Any) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative, ties counting
    a half (the Mann-Whitney U statistic over the product of the set sizes)."""
    neg, pos = _scores(negatives, positives)
    both = np.concatenate([neg, pos])
    order = np.argsort(both, kind="mergesort")
    # ranks from 1 in sorted order, tied scores sharing the mean of theirs
    _, first, counts = np.unique(both[order], return_index=True, return_counts=True)
    ranks = np.empty(len(both), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    u = ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(neg) * len(pos)))


def aupr(negatives: Any, positives: Any) -> float:
    """Area under the precision-recall curve with the positives as the class to find: average precision, the
    precision at each distinct threshold weighted by the recall it adds."""
    neg, pos = _scores(negatives, positives)
    fpr, tpr, _ = roc_curve(neg, pos)
    tp, fp = tpr[1:] * len(pos), fpr[1:] * len(neg)
    precision = tp / np.maximum(tp + fp, 1)
    return float(np.sum(np.diff(tpr) * precision))


def fpr_at_tpr(negatives: Any, positives: Any, tpr: float = 0.95) -> float:
    """The share of negatives flagged by the highest threshold that flags at least ``tpr`` of the positives."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    fprs, tprs, _ = roc_curve(negatives, positives)
    return float(fprs[np.argmax(tprs >= tpr - 1e-12)])


def detection(negatives: Any, positives: Any) -> dict[str, float]:
    """AUROC, AUPR (positives as the class to find) and FPR at 95% TPR of one score on two sets."""
    return {"auroc": auroc(negatives, positives), "aupr": aupr(negatives, positives),
            "fpr95": fpr_at_tpr(negatives, positives, 0.95)}
