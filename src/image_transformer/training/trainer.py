"""The training loop: Adam with its schedule over a fixed data order, evaluation in bits/dim, atomic checkpoints
and exact resumption, data-parallel training (torchrun / DDP), mixed precision, gradient accumulation and weight
averages.

What a model is conditioned on travels as ``condition``: class labels (B,) for a class-conditional model,
the low-resolution images (B, h, w, C) for super-resolution, None otherwise (``model.condition_for``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..files.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    atomic_write,
    naming,
    read_checkpoint,
    save_checkpoint,
    stale_temporaries,
)
from ..files.plots import plot_curve
from ..files.pretrained import PretrainedModel, load_weights, model_record
from ..metrics import spread
from ..nn.config import with_added_fields
from ..tasks import evaluate
from .config import TrainConfig
from .distributed import autocast, choose_precision, world
from .guard import StopOnSignal, TrainingStopped
from .schedule import make_optimizer


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


class NegLogLikelihood(nn.Module):
    """Mean negative log-likelihood in nats per sub-pixel: the module DDP and torch.compile wrap."""

    def __init__(self, model: PretrainedModel):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, condition: Tensor | None = None) -> Tensor:
        return -self.model.log_prob(images, condition).mean()


def training_loss(model: PretrainedModel, device: torch.device, compile: bool = False) -> nn.Module:
    """The :class:`NegLogLikelihood` a step backpropagates: DDP-wrapped in a process group, compiled if asked."""
    loss: nn.Module = NegLogLikelihood(model)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        ids = [device.index] if device.type == "cuda" else None
        loss = nn.parallel.DistributedDataParallel(loss, device_ids=ids)
    return torch.compile(loss) if compile else loss


class EMA:
    """Exponential moving average of a model's floating-point weights (PixelCNN++ evaluates with it)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``model``."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(saved)


class Trainer:
    """Owns a run directory: ``checkpoint.pt``, ``metrics.jsonl``, ``run.json``, ``curve.png``.

    Only rank 0 writes files. ``device``, ``compile``, ``tensorboard`` and ``clock`` change how the run
    executes, not what it computes, so they are arguments rather than part of :class:`TrainConfig`.
    """

    def __init__(self, model: PretrainedModel, cfg: TrainConfig, out: str | Path,
                 train_images: Tensor, train_condition: Tensor | None,
                 eval_images: Tensor | None = None, eval_condition: Tensor | None = None,
                 run_info: dict[str, Any] | None = None, progress: bool = True,
                 compile: bool = False, tensorboard: bool = False, clock: Callable[[], float] = time.monotonic):
        self.model, self.cfg, self.out = model, cfg, Path(out)
        self.clock = clock  # seconds; the training clock (a benchmark on a shared CPU may pass CPU time)
        self.train_images, self.train_condition = train_images, train_condition
        self.eval_images, self.eval_condition = eval_images, eval_condition
        self.run_info = run_info or {}
        self.rank, self.world = world()
        self.progress = progress and self.rank == 0
        per_step = self.world * cfg.grad_accum
        if cfg.batch_size % per_step:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by processes x grad_accum "
                             f"= {self.world} x {cfg.grad_accum}")
        self.device = next(model.parameters()).device
        self.loss = training_loss(model, self.device, compile)
        self._session_start: float | None = None
        self._eval_seconds = 0.0  # time this session spent in periodic evaluations
        self.opt, self.sched = make_optimizer(model, cfg, self.session_minutes)
        self.ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
        self.step = 0
        self.minutes_before = 0.0  # training time of earlier sessions of this run (from the checkpoint)
        self.writer = tensorboard_writer(self.out / "tensorboard") if tensorboard and self.rank == 0 else None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    # ----- state -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            **model_record(self.model),
            "model": self.model.state_dict(),
            "ema": self.ema.shadow if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": self.step,
            "data_position": self.step * self.cfg.batch_size,  # images drawn so far (see batch_indices)
            "train_config": dataclasses.asdict(self.cfg),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "run_info": self.run_info,
            "train_minutes": self.train_minutes,
        }

    def session_minutes(self) -> float:
        """Minutes of training since this session's ``train`` began, periodic evaluations not counted: the
        clock of ``max_minutes`` and of a time-limited schedule (a resumed run with ``max_minutes`` trains,
        and decays, over that many more minutes)."""
        if self._session_start is None:
            return 0.0
        return (self.clock() - self._session_start - self._eval_seconds) / 60

    @property
    def train_minutes(self) -> float:
        """Minutes of training over all sessions of this run (a resumed run counts the earlier ones)."""
        return self.minutes_before + self.session_minutes()

    def save(self) -> None:
        """Write ``checkpoint.pt`` (and the kept copy ``checkpoint-STEP.pt`` first, so that a kill between the
        two leaves the older ``checkpoint.pt``, and the resumed run writes the kept copy again)."""
        if self.rank != 0:
            return
        state = self.state()
        if self.cfg.keep_checkpoints:
            save_checkpoint(self.out / f"checkpoint-{self.step}.pt", state)
        save_checkpoint(self.checkpoint_path, state)
        if self.cfg.keep_checkpoints:
            keep_last_checkpoints(self.out, self.cfg.keep_checkpoints)

    def resume(self) -> None:
        """Continue from ``checkpoint.pt``: weights, EMA, optimizer, schedule, step, RNG, data position."""
        state = read_checkpoint(self.checkpoint_path)
        check_architecture(self.model, state, self.checkpoint_path)
        load_weights(self.model, state["model"], str(self.checkpoint_path))
        if self.ema is not None and state.get("ema") is not None:
            self.ema.shadow = {k: v.to(self.device) for k, v in self.model.upgrade_state_dict(state["ema"]).items()}
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.minutes_before = float(state.get("train_minutes", 0.0))
        chosen = (state.get("run_info") or {}).get("precision")
        if self.cfg.precision == "auto" and chosen:  # the precision the run chose when it began, not a new choice
            self.cfg.precision, self.run_info["precision"] = chosen["chosen"], chosen
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.rank == 0:
            truncate_log(self.log_path, self.step)
            remove_stale_temporaries(self.out)

    # ----- records -----------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def log(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            append_record(self.log_path, self.writer, record)

    # ----- the loop ----------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Bits/dim on ``eval_images`` spread over the held-out split; its time is not training time."""
        assert self.eval_images is not None
        started = self.clock()
        idx = spread(len(self.eval_images), self.cfg.eval_images)
        condition = self.eval_condition[idx] if self.eval_condition is not None else None
        averaged = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with averaged:
            result = evaluate(self.model, self.eval_images[idx], condition, batch_size=max(self.cfg.batch_size, 32),
                              shard=(self.rank, self.world))
        self._eval_seconds += self.clock() - started
        return result

    def micro_batches(self) -> list[tuple[Tensor, Tensor | None]]:
        """This process's share of the current step's batch, as ``grad_accum`` micro-batches (images, condition)."""
        cfg, cond = self.cfg, self.train_condition
        idx = batch_indices(self.step, len(self.train_images), cfg.batch_size, cfg.seed)[self.rank :: self.world]
        return [(self.train_images[m].to(self.device), cond[m].to(self.device) if cond is not None else None)
                for m in idx.chunk(cfg.grad_accum)]

    def train_step(self) -> float:
        """One optimizer step over the global batch; returns its mean loss in nats per sub-pixel. :meth:`train` runs
        these with its records and checkpoints; a benchmark may time them alone."""
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for j, (x, y) in enumerate(self.micro_batches()):
            last = j == cfg.grad_accum - 1
            sync = self.loss.no_sync() if self.world > 1 and not last and hasattr(self.loss, "no_sync") \
                else contextlib.nullcontext()
            with sync:
                with autocast(self.device, cfg.precision):
                    loss = self.loss(x, y) / cfg.grad_accum
                loss.backward()
            total += loss.detach()
        if self.world > 1:
            torch.distributed.all_reduce(total)
            total /= self.world
        loss_value = float(total)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"non-finite loss ({loss_value}) at step {self.step + 1}; stopped: "
                                     f"{self.kept_checkpoint()}")
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return loss_value

    def train(self) -> dict[str, Any]:
        """Run until ``steps`` (or ``max_minutes``); returns the last metrics.

        SIGTERM or SIGINT stops the run after the current step with a checkpoint and raises
        :class:`TrainingStopped`; resuming from it continues exactly as if the run had not stopped.
        """
        cfg, model = self.cfg, self.model
        model.train()
        self._session_start, self._eval_seconds = self.clock(), 0.0
        if cfg.precision == "auto":  # timed inside the budget: the choice is part of the run's minutes
            one_pass = training_pass(self.loss, self.device, *self.micro_batches()[0])
            # the gradients the timed passes leave are cleared by each step before it runs
            cfg.precision, self.run_info["precision"] = choose_precision(one_pass, self.device, self.world)
        if self.rank == 0:
            write_run_json(self.out / "run.json", model, cfg, self.world, self.run_info)
        bar = progress_bar(cfg, self.step, self.session_minutes(), disable=not self.progress)
        with StopOnSignal(verbose=self.rank == 0) as stop:
            last = self._loop(bar, stop)
        bar.close()
        self.minutes_before, self._session_start = self.train_minutes, None
        if self.rank == 0 and stop.signum is None and self.log_path.is_file():
            plot_curve(self.log_path, self.out / "curve.png")
        if self.writer is not None:
            self.writer.close()
        if stop.signum is not None:
            raise TrainingStopped(stop.signum, (
                f"stopped by {signal.Signals(stop.signum).name} at step {self.step}; checkpoint written to "
                f"{self.checkpoint_path}. Continue with: image-transformer train --out {self.out} --resume"))
        return last

    def _loop(self, bar: Any, stop: StopOnSignal) -> dict[str, Any]:
        """The steps of :meth:`train`, until done, out of time, or asked to stop by a signal."""
        cfg = self.cfg
        smoothed = None
        last: dict[str, Any] = {}
        while self.step < cfg.steps:
            t0 = self.clock()
            lr = self.sched.get_last_lr()[0]
            bpd = self.train_step() / math.log(2.0)
            smoothed = bpd if smoothed is None else 0.95 * smoothed + 0.05 * bpd
            last = {"step": self.step, "train_bits_per_dim": bpd, "lr": lr,
                    "images_per_sec": cfg.batch_size / max(self.clock() - t0, 1e-9),
                    "minutes": self.train_minutes}
            show_step(bar, cfg, self.step, self.session_minutes(), smoothed, lr)
            out_of_time = cfg.max_minutes > 0 and self.session_minutes() > cfg.max_minutes
            stopping = stop.signum is not None
            if self.world > 1:  # every process stops at the same step
                flags = torch.tensor([float(out_of_time), float(stopping)], device=self.device)
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
                out_of_time, stopping = bool(flags[0]), bool(flags[1])
                if stopping and stop.signum is None:  # another process got the signal
                    stop.signum = signal.SIGTERM
            done = self.step >= cfg.steps or out_of_time
            if self.eval_images is not None and (self.step % cfg.eval_every == 0 or done):
                last["eval_bits_per_dim"] = self.evaluate()["bits_per_dim"]
                if self.progress:
                    bar.write(f"step {self.step}: train {smoothed:.4f} bits/dim, "
                              f"eval {last['eval_bits_per_dim']:.4f} bits/dim")
            if self.step % 10 == 0 or "eval_bits_per_dim" in last or done:
                self.log(last)
            if self.step % cfg.checkpoint_every == 0 or done or stopping:
                self.save()
            if out_of_time:
                if self.progress:
                    bar.write(f"stopping at step {self.step}: --max-minutes {cfg.max_minutes} reached")
                break
            if stopping:
                break
        return last

    def saved_step(self) -> int | None:
        """The step of the checkpoint on disk, None when none was written yet; a CheckpointError naming the file and
        what is wrong when the one there cannot be read."""
        if not self.checkpoint_path.exists():
            return None
        return int(read_checkpoint(self.checkpoint_path)["step"])

    def kept_checkpoint(self) -> str:
        """For the message of a run that stops on an error: what is on disk to continue from. A damaged checkpoint is
        said to be damaged (a run that cannot resume must not read as one that can)."""
        try:
            step = self.saved_step()
        except CheckpointError as e:
            return f"the checkpoint there cannot be read, so the run cannot resume: {e}"
        if step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint {self.checkpoint_path} (step {step}) is kept"


def progress_bar(cfg: TrainConfig, step: int, minutes: float, disable: bool = False) -> Any:
    """The training bar: steps out of ``steps``; or, with ``max_minutes``, this session's minutes out of it, so that
    the time left it shows is the time the run will take rather than that of ``steps`` it will never reach."""
    if cfg.max_minutes > 0:
        return tqdm(total=cfg.max_minutes, initial=min(minutes, cfg.max_minutes), disable=disable, desc="train",
                    unit="min", dynamic_ncols=True,
                    bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=cfg.steps, initial=step, disable=disable, desc="train", unit="step", dynamic_ncols=True)


def show_step(bar: Any, cfg: TrainConfig, step: int, minutes: float, smoothed: float, lr: float) -> None:
    """Move the training bar (see :func:`progress_bar`) on by one step."""
    if cfg.max_minutes > 0:  # the bar counts minutes; the postfix the steps
        bar.update(min(minutes, cfg.max_minutes) - bar.n)
        bar.set_postfix(step=f"{step}/{cfg.steps}", bpd=f"{smoothed:.3f}", lr=f"{lr:.2e}")
    else:
        bar.update(1)
        bar.set_postfix(bpd=f"{smoothed:.3f}", lr=f"{lr:.2e}")


def check_architecture(model: PretrainedModel, state: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint (``state``, read from ``path``) of another architecture than ``model``'s."""
    ours, theirs = model_record(model), {k: state.get(k) for k in ("model_type", "config")}
    # a checkpoint from before a config field existed has that field at the value that kept its model
    theirs["config"] = with_added_fields(theirs["config"] or {}, ours["config"])
    if theirs["model_type"] != ours["model_type"] or theirs["config"] != ours["config"]:
        diff = {k: (theirs["config"].get(k), v) for k, v in ours["config"].items() if theirs["config"].get(k) != v}
        raise CheckpointError(f"{path}: architecture differs from the requested one "
                              f"(checkpoint {theirs['model_type']} vs requested {ours['model_type']}): {diff}")


def truncate_log(path: Path, step: int) -> None:
    """Drop the records of ``path`` (metrics.jsonl) written after the checkpoint of ``step`` a run resumes from
    (a killed run may have some), and a torn
    last line (a kill or a full disk in the middle of an append), with a warning."""
    if not path.is_file():
        return
    with naming(path):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    keep = []
    for i, line in enumerate(lines):
        try:
            record_step = json.loads(line)["step"]
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            if i == len(lines) - 1:
                print(f"warning: {path}: dropped its last line, cut short by an interrupted write: "
                      f"{line[:60]!r}", file=sys.stderr)
                break
            raise ValueError(f"{path}: line {i + 1} is not a metrics record ({type(e).__name__}: {e}); "
                             f"delete that line and resume again") from None
        if record_step <= step:
            keep.append(line)
    text = "".join(line + "\n" for line in keep)
    atomic_write(path, lambda f: f.write(text.encode()))


def tensorboard_writer(folder: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` logging into ``folder`` (the package is optional: a clear error without it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError("logging to TensorBoard needs the tensorboard package "
                         f"(pip install tensorboard): {e}") from None
    return SummaryWriter(str(folder))


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files that writes killed midway left in the run folder ``out`` (and its model/),
    saying so."""
    for tmp in stale_temporaries(out, "checkpoint*.pt") + stale_temporaries(out / "model", "*"):
        tmp.unlink(missing_ok=True)
        print(f"removed {tmp}: a temporary file left by a write that was killed", file=sys.stderr)


def training_pass(loss: nn.Module, device: torch.device, x: Tensor, y: Tensor | None) -> Callable[[str], None]:
    """One forward and backward pass of the training loss on (x, y) in a given precision (what ``auto`` times)."""
    def one_pass(precision: str) -> None:
        with autocast(device, precision):
            value = loss(x, y)
        value.backward()
    return one_pass


def append_record(path: Path, writer: Any, record: dict[str, Any]) -> None:
    """One line of ``metrics.jsonl``, and its scalars in TensorBoard when there is a writer."""
    with naming(path), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        for k, v in record.items():
            if k != "step":
                writer.add_scalar(k, v, record["step"])


def keep_last_checkpoints(out: Path, keep: int) -> None:
    """Delete the kept copies ``checkpoint-STEP.pt`` but the last ``keep``."""
    kept = sorted(out.glob("checkpoint-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    for old in kept[:-keep]:
        old.unlink()


def write_run_json(path: Path, model: PretrainedModel, cfg: TrainConfig, processes: int,
                   run_info: dict[str, Any]) -> None:
    """``run.json``: the model, the training configuration, the processes and what the run recorded of its data."""
    with naming(path):
        path.write_text(json.dumps({"model": model_record(model), "train": dataclasses.asdict(cfg),
                                    "processes": processes, **run_info}, indent=2) + "\n")
