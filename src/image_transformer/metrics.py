"""Likelihood metrics."""

from __future__ import annotations

import math

from torch import Tensor


def bits_per_dim(log_prob: Tensor) -> Tensor:
    """Per-image bits/dim from per-sub-pixel log-probabilities in nats: (B, H, W, C) -> (B,).

    bits/dim = -sum(log p) / (H * W * C * ln 2).
    """
    dims = log_prob[0].numel()
    return -log_prob.flatten(1).sum(1) / (dims * math.log(2.0))
