"""The training loop: Adam with the Transformer schedule, evaluation in bits/dim, atomic checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import CHECKPOINT_NAME, CheckpointError, build_model, load_weights, model_record, read_checkpoint, save_checkpoint
from .config import ImageTransformerConfig
from .metrics import bits_per_dim
from .model import ImageTransformer


@dataclass
class TrainConfig:
    steps: int = 300  # the README's few-minute default; real runs pass --steps
    batch_size: int = 16
    lr: float = 2e-3  # peak learning rate, reached at the end of warm-up
    warmup: int = 100  # linear warm-up steps, then decay with 1 / sqrt(step)
    clip_grad: float = 1.0  # max gradient norm (0 = off)
    eval_every: int = 100
    eval_images: int = 200  # held-out images used by the periodic evaluation
    checkpoint_every: int = 100
    max_minutes: float = 0.0  # stop (and checkpoint) after this much training time; 0 = no limit
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "warmup", "eval_every", "checkpoint_every"):
            if getattr(self, name) < (0 if name == "warmup" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def transformer_schedule(step: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up to 1 at ``warmup``, then sqrt(warmup / step) (Vaswani et al.)."""
    step = max(step, 1)
    if warmup == 0:
        return 1.0 / math.sqrt(step)
    return min(step / warmup, math.sqrt(warmup / step))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam (beta1 0.9, beta2 0.98, eps 1e-9) with the Transformer schedule, as in the paper."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: transformer_schedule(s + 1, cfg.warmup))
    return opt, sched


def batch_indices(step: int, num_items: int, batch_size: int, seed: int) -> Tensor:
    """Indices of the batch for ``step``: epochs of seeded permutations, a pure function of the step.

    Resuming at any step therefore continues with exactly the data an uninterrupted run would see.
    """
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = positions // num_items, positions % num_items
    idx = torch.empty_like(positions)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        chosen = epochs == epoch
        idx[chosen] = perm[offsets[chosen]]
    return idx


def spread(num_items: int, count: int) -> Tensor:
    """``count`` indices spread evenly over ``num_items`` (all of them if count >= num_items or count <= 0).

    Evaluation subsets use this, so that data sorted by class is still covered class by class.
    """
    if count <= 0 or count >= num_items:
        return torch.arange(num_items)
    return torch.linspace(0, num_items - 1, count).round().long()


@torch.no_grad()
def evaluate(model: ImageTransformer, images: Tensor, labels: Tensor | None = None, batch_size: int = 64,
             progress: bool = False) -> dict[str, float]:
    """Mean bits/dim over ``images`` (uint8 (N, H, W, C)), in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in tqdm(range(0, len(images), batch_size), disable=not progress, desc="eval", leave=False):
            x = images[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device) if labels is not None else None
            bpd = bits_per_dim(model.log_prob(x, y))
            total += float(bpd.double().sum())
            count += len(x)
    finally:
        model.train(was_training)
    return {"bits_per_dim": total / max(count, 1), "num_images": count}


class Trainer:
    """Owns a run directory: ``checkpoint.pt``, ``metrics.jsonl``, ``run.json``."""

    def __init__(self, model: ImageTransformer, cfg: TrainConfig, out: str | Path,
                 train_images: Tensor, train_labels: Tensor | None,
                 eval_images: Tensor | None = None, eval_labels: Tensor | None = None,
                 run_info: dict[str, Any] | None = None, progress: bool = True):
        self.model, self.cfg, self.out = model, cfg, Path(out)
        self.train_images, self.train_labels = train_images, train_labels
        self.eval_images, self.eval_labels = eval_images, eval_labels
        self.run_info = run_info or {}
        self.progress = progress
        self.opt, self.sched = make_optimizer(model, cfg)
        self.step = 0
        self.out.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    # ----- state -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            **model_record(self.model),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": self.step,
            "train_config": dataclasses.asdict(self.cfg),
            "rng": torch.get_rng_state(),
            "run_info": self.run_info,
        }

    def save(self) -> None:
        save_checkpoint(self.checkpoint_path, self.state())

    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` in the run directory: weights, optimizer, schedule, step, RNG."""
        state = read_checkpoint(self.checkpoint_path)
        if state["config"] != self.model.config.to_dict():
            theirs = ImageTransformerConfig.from_dict(state["config"]).to_dict()
            diff = {k: (theirs[k], v) for k, v in self.model.config.to_dict().items() if theirs.get(k) != v}
            raise CheckpointError(f"{self.checkpoint_path}: architecture differs from the requested one "
                                  f"(checkpoint vs requested): {diff}")
        load_weights(self.model, state["model"], str(self.checkpoint_path))
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"])

    def log(self, record: dict[str, Any]) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # ----- the loop ----------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        assert self.eval_images is not None
        idx = spread(len(self.eval_images), self.cfg.eval_images)
        labels = self.eval_labels[idx] if self.eval_labels is not None else None
        return evaluate(self.model, self.eval_images[idx], labels, batch_size=max(self.cfg.batch_size, 32))

    def train(self) -> dict[str, Any]:
        """Run until ``steps`` (or ``max_minutes``); returns the last metrics."""
        cfg, model = self.cfg, self.model
        device = next(model.parameters()).device
        (self.out / "run.json").write_text(json.dumps(
            {"model": model_record(model), "train": dataclasses.asdict(cfg), **self.run_info}, indent=2) + "\n")
        model.train()
        start_time = time.monotonic()
        smoothed = None
        last: dict[str, Any] = {}
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, desc="train", unit="step",
                   dynamic_ncols=True)
        while self.step < cfg.steps:
            idx = batch_indices(self.step, len(self.train_images), cfg.batch_size, cfg.seed)
            x = self.train_images[idx].to(device)
            y = self.train_labels[idx].to(device) if self.train_labels is not None else None
            t0 = time.monotonic()
            loss = -model.log_prob(x, y).mean()  # nats per sub-pixel
            if not torch.isfinite(loss):
                bar.close()
                raise FloatingPointError(
                    f"non-finite loss ({float(loss.detach())}) at step {self.step + 1}; stopped, the last good checkpoint "
                    f"{self.checkpoint_path} (step {self._saved_step()}) is kept"
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            lr = self.sched.get_last_lr()[0]
            self.opt.step()
            self.sched.step()
            self.step += 1
            bpd = float(loss.detach()) / math.log(2.0)
            smoothed = bpd if smoothed is None else 0.95 * smoothed + 0.05 * bpd
            last = {"step": self.step, "train_bits_per_dim": bpd, "lr": lr,
                    "images_per_sec": len(x) / max(time.monotonic() - t0, 1e-9)}
            bar.update(1)
            bar.set_postfix(bpd=f"{smoothed:.3f}", lr=f"{lr:.2e}")
            out_of_time = cfg.max_minutes > 0 and time.monotonic() - start_time > 60 * cfg.max_minutes
            done = self.step >= cfg.steps or out_of_time
            if self.eval_images is not None and (self.step % cfg.eval_every == 0 or done):
                last["eval_bits_per_dim"] = self.evaluate()["bits_per_dim"]
                bar.write(f"step {self.step}: train {smoothed:.4f} bits/dim, eval {last['eval_bits_per_dim']:.4f} bits/dim")
            if self.step % 10 == 0 or "eval_bits_per_dim" in last or done:
                self.log(last)
            if self.step % cfg.checkpoint_every == 0 or done:
                self.save()
            if out_of_time:
                bar.write(f"stopping at step {self.step}: --max-minutes {cfg.max_minutes} reached")
                break
        bar.close()
        return last

    def _saved_step(self) -> int | str:
        try:
            return int(read_checkpoint(self.checkpoint_path)["step"])
        except CheckpointError:
            return "none yet"


def load_run(path: str | Path) -> tuple[dict[str, Any], ImageTransformer]:
    """The checkpoint state and the model of a run directory or checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    state = read_checkpoint(path)
    model = build_model(state, str(path))
    load_weights(model, state["model"], str(path))
    return state, model
