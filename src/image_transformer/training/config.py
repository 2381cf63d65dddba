"""How a model is trained: :class:`TrainConfig`, whose fields the command line's training flags are made from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..nn.config import ConfigError, option

PRECISIONS = ("fp32", "bf16", "auto")
SCHEDULES = ("rsqrt", "linear", "cosine")


@dataclass
class TrainConfig:
    """How a model is trained. The command line's training flags are made from these fields."""

    steps: int = option(300, "total optimizer steps", minimum=1)  # the README's few-minute default
    batch_size: int = option(16, "images per step", minimum=1)  # over all processes and accumulation steps
    lr: float = option(2e-3, "peak learning rate after warm-up")
    warmup: int = option(100, "linear warm-up steps, then the schedule's decay", minimum=0)
    clip_grad: float = option(1.0, "max gradient norm, 0 = off")
    eval_every: int = option(100, "steps between evaluations", minimum=1)
    eval_images: int = option(200, "test images (spread evenly over the split) for the periodic evaluation",
                              minimum=0)
    checkpoint_every: int = option(100, "steps between checkpoints", minimum=1)
    keep_checkpoints: int = option(0, "also keep the last N checkpoints as checkpoint-STEP.pt, for `average`",
                                   minimum=0)
    max_minutes: float = option(0.0, "stop after this many minutes of training, 0 = no limit")
    seed: int = option(0, "seed for initialisation, data order, dropout and samples")
    grad_accum: int = option(1, "split each step's batch into K sequential micro-batches (same result, less memory)",
                             minimum=1)
    precision: str = option("fp32", "fp32, or bf16 autocast (the likelihood itself stays in fp32), or auto: time a few "
                                    "steps in each at the start and train in the faster (fp32 where bf16 has no "
                                    "kernels of its own)", choices=PRECISIONS)
    ema: float = option(0.0, "keep an exponential moving average of the weights with this decay, used for "
                             "evaluation, samples and model/ (e.g. 0.9995; 0 = off)")
    schedule: str = option("rsqrt", "after warm-up: rsqrt (the paper's 1/sqrt(step) decay), "
                                    "or linear / cosine decay to 0 "
                                    "at the end of the run: at --steps or at --max-minutes, whichever comes first",
                           choices=SCHEDULES)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            minimum = f.metadata.get("minimum")
            if minimum is not None and getattr(self, f.name) < minimum:
                raise ConfigError(f"{f.name} must be >= {minimum}, got {getattr(self, f.name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")
