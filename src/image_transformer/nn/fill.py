"""Fill any region of an image: sequential Monte Carlo over the model's generation order.

An autoregressive model cannot condition a position on what comes after it, but its exact likelihood can weigh a
partial completion by the known values that follow. ``K`` particles per image run through the cached sampler as one
batch: at a missing position each particle draws from the model; at a known one it takes the known value, and its
log-weight grows by that value's log-probability. When the weights of an image's particles grow uneven (effective
sample size below ``K / 2``) its particles are resampled in proportion to them (the caches follow their ancestors).
At the end one particle per image is drawn by weight. As ``K`` grows this draws from the model's conditional given
every known value; ``K = 1`` is naive completion, blind to what follows the hole.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .model import ImageTransformer
from .sampling import Sampling


def missing_steps(model: ImageTransformer, missing: Tensor) -> Tensor:
    """(n,) bool in generation order: whether step t's position is missing. ``missing`` (H, W) bool, per pixel."""
    h, w = model.config.image_size
    if missing.shape != (h, w):
        raise ValueError(f"the mask is {tuple(missing.shape)} but the model's images are {h}x{w}")
    k = model.dist.values_per_position
    per_position = missing.reshape(h * w, 1).expand(h * w, model.config.channels).reshape(-1, k)[:, 0]  # (n,)
    return per_position.to(model.layout.order.device)[model.layout.order]


@torch.no_grad()
def fill(model: ImageTransformer, images: Tensor, missing: Tensor, particles: int = 16,
         labels: Tensor | None = None, options: Sampling | None = None) -> tuple[Tensor, Tensor]:
    """Complete the ``missing`` pixels ((H, W) bool, True = missing) of ``images`` (B, H, W, C) uint8 with ``particles``
    particles each. Returns the completions (B, H, W, C) uint8, whose known pixels are the input's bit for bit,
    and each completion's log-probability (nats) of the known values after the first missing one (B,)."""
    options = (options or Sampling()).settle({}, model.default_temperature)
    b, kp = images.shape[0], particles
    labels = model.check_labels(labels, b)
    steps = missing_steps(model, missing)
    order = model.layout.order
    known = model.to_positions(images.to(model.head.weight.device))  # (B, n, k)
    if not bool(steps.any()):
        return images.clone(), torch.zeros(b, dtype=torch.float64)
    first = int(steps.nonzero()[0])
    values = known.repeat_interleave(kp, 0).clone()  # (B*K, n, k): particle j of image i is row i*K + j
    truth = values.clone()
    log_w = torch.zeros(b * kp, dtype=torch.float64, device=values.device)  # resampling resets it
    known_lp = torch.zeros_like(log_w)  # what the caller is told: it follows the particles' ancestors
    gen = options.generator

    def choose(t: int, params: Tensor) -> Tensor:
        if bool(steps[t]):
            return model.dist.sample(params, options.temperature, gen)
        value = truth[:, int(order[t])]  # (B*K, k)
        lp = model.dist.log_prob(params[:, None], value[:, None]).sum((1, 2)).double()  # (B*K,)
        log_w.add_(lp)
        known_lp.add_(lp)
        return value

    def reorder(t: int) -> Tensor | None:
        if t < first or kp == 1:
            return None
        grouped = log_w.view(b, kp)
        weights = torch.softmax(grouped, 1)
        ess = 1.0 / (weights**2).sum(1)  # (B,)
        if not bool((ess < kp / 2).any()):
            return None
        ancestors = torch.multinomial(weights.float().cpu(), kp, replacement=True, generator=gen).to(values.device)
        keep = (ess >= kp / 2)[:, None]  # images whose particles are even enough keep them
        ancestors = torch.where(keep, torch.arange(kp, device=values.device), ancestors)
        rows = (ancestors + torch.arange(b, device=values.device)[:, None] * kp).reshape(-1)
        evidence = torch.logsumexp(grouped, 1, keepdim=True) - math.log(kp)  # what the weights estimated so far
        log_w.copy_(torch.where(keep, grouped, evidence.expand(b, kp)).reshape(-1))
        known_lp.copy_(known_lp[rows])  # (the known values are the same in every particle of an image)
        return rows

    lab = labels.repeat_interleave(kp, 0) if labels is not None else None
    with model.evaluating():
        model.cached_steps(values, first, lab, None, choose, reorder)
    pick = torch.multinomial(torch.softmax(log_w.view(b, kp), 1).float().cpu(), 1, generator=gen).to(values.device)
    rows = (pick[:, 0] + torch.arange(b, device=values.device) * kp)
    return model.to_images(values[rows]).to(torch.uint8), known_lp[rows].cpu()
