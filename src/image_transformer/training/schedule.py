"""Adam and the learning-rate schedules: the paper's warm-up then 1/sqrt(step), or a linear or cosine decay that
ends with the run (at its last step or its last minute)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .config import TrainConfig


def transformer_schedule(step: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up to 1 at ``warmup``, then sqrt(warmup / step) (Vaswani et al.)."""
    step = max(step, 1)
    if warmup == 0:
        return 1.0 / math.sqrt(step)
    return min(step / warmup, math.sqrt(warmup / step))


def lr_factor(step: int, cfg: TrainConfig, minutes: float = 0.0) -> float:
    """Learning-rate factor of step ``step`` (1-based) after ``minutes`` of training, for ``cfg.schedule``.

    "linear" and "cosine" warm up linearly, then decay to 0 at the end of the run: progress is the larger
    of the fraction of steps after warm-up and the fraction of ``max_minutes`` used, so a run limited by
    time ends its decay when its time is up (a budget run), and one limited by steps at its last step.
    """
    if cfg.schedule == "rsqrt":
        return transformer_schedule(step, cfg.warmup)
    warm = min(1.0, step / cfg.warmup) if cfg.warmup else 1.0
    progress = max(0, step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.max_minutes > 0:
        progress = max(progress, minutes / cfg.max_minutes)
    progress = min(progress, 1.0)
    decay = 1.0 - progress if cfg.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * decay


def make_optimizer(model: nn.Module, cfg: TrainConfig, minutes: Callable[[], float] = lambda: 0.0
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam (beta1 0.9, beta2 0.98, eps 1e-9) with ``cfg.schedule`` (the paper's is "rsqrt").

    ``minutes()`` tells a time-limited linear or cosine schedule how long the run has trained.
    """
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s + 1, cfg, minutes()))
    return opt, sched
