"""The training loop: Adam with the Transformer schedule, evaluation in bits/dim, atomic checkpoints,
data-parallel training (torchrun / DDP), mixed precision, gradient accumulation and weight averages;
and :class:`TrainingRun`, a whole ``image-transformer train`` from the run directory's state to its last file.

What a model is conditioned on travels as ``condition``: class labels (B,) for a class-conditional model,
the low-resolution images (B, h, w, C) for super-resolution, None otherwise (``model.condition_for``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import (
    CHECKPOINT_NAME, CheckpointError, PretrainedModel, atomic_write, build_model, describe_os_error, load_model,
    load_weights, model_from_config, model_record, naming, read_checkpoint, save_checkpoint, save_or_rescue, stale_temporaries,
)
from .config import ADDED_FIELDS, ImageTransformerConfig, option
from .data import ImageData, load_split
from .images import plot_curve, save_grid
from .metrics import bits_per_dim, spread
from .superres import SuperResolutionTransformer, format_superres_report, superres_report

PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("rsqrt", "linear", "cosine")
LOCK_NAME = "train.lock"


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
    precision: str = option("fp32", "fp32, or bf16 autocast (the likelihood itself stays in fp32)",
                            choices=PRECISIONS)
    ema: float = option(0.0, "keep an exponential moving average of the weights with this decay, used for "
                             "evaluation, samples and model/ (e.g. 0.9995; 0 = off)")
    schedule: str = option("rsqrt", "after warm-up: rsqrt (the paper's 1/sqrt(step) decay), or linear / cosine decay to 0 "
                                    "at the end of the run: at --steps or at --max-minutes, whichever comes first",
                           choices=SCHEDULES)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            minimum = f.metadata.get("minimum")
            if minimum is not None and getattr(self, f.name) < minimum:
                raise ValueError(f"{f.name} must be >= {minimum}, got {getattr(self, f.name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


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


# ----- processes -------------------------------------------------------------------------------------------
def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: str) -> torch.device:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); returns this process's device."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device)
    # under torchrun even one process joins a group, so that one GPU runs the same (NCCL, DDP) path as many
    launched = int(os.environ.get("WORLD_SIZE", 1)) > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if launched and not torch.distributed.is_initialized():
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dev


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, refusing CUDA when this machine has none."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                         f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return dev


def make_deterministic() -> None:
    """The same inputs give the same weights bit for bit: deterministic kernels where torch has them (several CUDA
    backward passes sum with atomics by default); an op that has none warns. For this process, before CUDA starts."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable sums
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class NegLogLikelihood(nn.Module):
    """Mean negative log-likelihood in nats per sub-pixel: the module DDP and torch.compile wrap."""

    def __init__(self, model: PretrainedModel):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, condition: Tensor | None = None) -> Tensor:
        return -self.model.log_prob(images, condition).mean()


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


@torch.no_grad()
def evaluate(model: PretrainedModel, images: Tensor, condition: Tensor | None = None, batch_size: int = 64,
             progress: bool = False) -> dict[str, float]:
    """Mean bits/dim over ``images`` (uint8 (N, H, W, C)) given ``condition`` (one per image), in eval mode;
    shared out over DDP processes."""
    rank, size = world()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mine = torch.arange(rank, len(images), size)  # this process's share
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of bits/dim, count)
    try:
        starts = range(0, len(mine), batch_size)
        for start in tqdm(starts, disable=not progress or rank != 0, desc="eval", leave=False):
            idx = mine[start : start + batch_size]
            x = images[idx].to(device)
            y = condition[idx].to(device) if condition is not None else None
            bpd = bits_per_dim(model.log_prob(x, y))
            total += torch.stack([bpd.double().sum(), torch.tensor(float(len(x)), device=device)])
    finally:
        model.train(was_training)
    if size > 1:
        torch.distributed.all_reduce(total)
    return {"bits_per_dim": float(total[0] / total[1].clamp(min=1)), "num_images": int(total[1])}


# ----- one writer per run, and a clean stop on SIGTERM / SIGINT -----------------------------------------------
class RunLocked(ValueError):
    """Another process is training in this run directory."""


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on a run directory for the life of the block: one writer per run.

    ``flock`` on ``FOLDER/train.lock``, whose text names the holder. The kernel drops the lock when its
    process ends in any way, so a lock file that can be locked was left by a process that has ended (killed,
    or its machine lost): it is taken over with a message. A second writer fails at once, naming the holder.
    The file is removed on release (and the folder, if this made it and it is still empty).
    """
    path = Path(folder) / LOCK_NAME
    created = not path.parent.exists()
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise RunLocked(f"{path.parent}: another training is writing to this run ({holder}; lock "
                                f"{path}): wait for it to end or stop it, or use another --out") from None
            try:  # the last holder may have removed the file between our open and our lock: lock the new one
                if os.path.samestat(os.fstat(f.fileno()), os.stat(path)):
                    break
            except FileNotFoundError:
                pass
            f.close()
    try:
        f.seek(0)
        previous = f.read().strip()
        if previous:
            print(f"warning: {path}: taking over the stale lock of {previous}, which has ended", file=sys.stderr)
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield path
    finally:
        path.unlink(missing_ok=True)
        f.close()
        if created:  # a command refused before it wrote anything leaves no empty run folder behind
            with contextlib.suppress(OSError):
                path.parent.rmdir()


class TrainingStopped(Exception):
    """Training stopped early on SIGTERM or SIGINT, after writing a checkpoint."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StopOnSignal:
    """While active, SIGTERM and SIGINT set ``signum`` so the training loop can stop after its current step;
    a second signal exits at once (SIGINT as KeyboardInterrupt, SIGTERM by its default action).

    Handlers are installed only from the main thread and the previous ones come back on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, verbose: bool = True):
        self.verbose = verbose
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            if self.verbose:
                print(f"\n{name}: finishing this step and writing a checkpoint, then stopping "
                      f"(send it again to exit at once)", file=sys.stderr, flush=True)
            return
        if self.verbose:
            print(f"\n{name} again: exiting at once, without a checkpoint", file=sys.stderr, flush=True)
        self.__exit__()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


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
        self.loss = NegLogLikelihood(model)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss = nn.parallel.DistributedDataParallel(self.loss, device_ids=ids)
        if compile:
            self.loss = torch.compile(self.loss)
        self._session_start: float | None = None
        self._eval_seconds = 0.0  # time this session spent in periodic evaluations
        self.opt, self.sched = make_optimizer(model, cfg, self.session_minutes)
        self.ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
        self.step = 0
        self.minutes_before = 0.0  # training time of earlier sessions of this run (from the checkpoint)
        self.writer = None
        if tensorboard and self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(f"--tensorboard needs the tensorboard package (pip install tensorboard): {e}") from None
            self.writer = SummaryWriter(str(self.out / "tensorboard"))
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
            kept = sorted(self.out.glob("checkpoint-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
            for old in kept[: -self.cfg.keep_checkpoints]:
                old.unlink()

    def resume(self) -> None:
        """Continue from ``checkpoint.pt``: weights, EMA, optimizer, schedule, step, RNG, data position."""
        state = read_checkpoint(self.checkpoint_path)
        ours, theirs = model_record(self.model), {k: state.get(k) for k in ("model_type", "config")}
        # a checkpoint from before a config field existed has that field at the value that kept its model
        theirs["config"] = {**{k: v for k, v in ADDED_FIELDS.items() if k in ours["config"]}, **(theirs["config"] or {})}
        if theirs["model_type"] != ours["model_type"] or theirs["config"] != ours["config"]:
            mine = ours["config"]
            diff = {k: (theirs["config"].get(k), v) for k, v in mine.items() if theirs["config"].get(k) != v}
            raise CheckpointError(f"{self.checkpoint_path}: architecture differs from the requested one "
                                  f"(checkpoint {theirs['model_type']} vs requested {ours['model_type']}): {diff}")
        load_weights(self.model, state["model"], str(self.checkpoint_path))
        if self.ema is not None and state.get("ema") is not None:
            self.ema.shadow = {k: v.to(self.device) for k, v in self.model.upgrade_state_dict(state["ema"]).items()}
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.minutes_before = float(state.get("train_minutes", 0.0))
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.rank == 0:
            self._truncate_log(self.step)
            stale = stale_temporaries(self.out, "checkpoint*.pt") + stale_temporaries(self.out / "model", "*")
            for tmp in stale:
                tmp.unlink(missing_ok=True)
                print(f"removed {tmp}: a temporary file left by a write that was killed", file=sys.stderr)

    # ----- records -----------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        with naming(self.log_path), open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k != "step":
                    self.writer.add_scalar(k, v, record["step"])

    def _truncate_log(self, step: int) -> None:
        """Drop records written after the checkpoint we resume from (a killed run may have some), and a torn
        last line (a kill or a full disk in the middle of an append), with a warning."""
        path = self.log_path
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

    # ----- the loop ----------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Bits/dim on ``eval_images`` spread over the held-out split; its time is not training time."""
        assert self.eval_images is not None
        started = self.clock()
        idx = spread(len(self.eval_images), self.cfg.eval_images)
        condition = self.eval_condition[idx] if self.eval_condition is not None else None
        averaged = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with averaged:
            result = evaluate(self.model, self.eval_images[idx], condition, batch_size=max(self.cfg.batch_size, 32))
        self._eval_seconds += self.clock() - started
        return result

    def _train_step(self) -> float:
        """One optimizer step over the global batch; returns its mean loss in nats per sub-pixel."""
        cfg = self.cfg
        idx = batch_indices(self.step, len(self.train_images), cfg.batch_size, cfg.seed)
        idx = idx[self.rank :: self.world]  # this process's share of the global batch
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for j, micro in enumerate(idx.chunk(cfg.grad_accum)):
            x = self.train_images[micro].to(self.device)
            y = self.train_condition[micro].to(self.device) if self.train_condition is not None else None
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
            raise FloatingPointError(
                f"non-finite loss ({loss_value}) at step {self.step + 1}; stopped, the last good checkpoint "
                f"{self.checkpoint_path} (step {self._saved_step()}) is kept"
            )
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
        if self.rank == 0:
            run_json = self.out / "run.json"
            with naming(run_json):
                run_json.write_text(json.dumps(
                    {"model": model_record(model), "train": dataclasses.asdict(cfg), "processes": self.world,
                     **self.run_info}, indent=2) + "\n")
        model.train()
        self._session_start, self._eval_seconds = self.clock(), 0.0
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
            bpd = self._train_step() / math.log(2.0)
            smoothed = bpd if smoothed is None else 0.95 * smoothed + 0.05 * bpd
            last = {"step": self.step, "train_bits_per_dim": bpd, "lr": lr,
                    "images_per_sec": cfg.batch_size / max(self.clock() - t0, 1e-9),
                    "minutes": self.train_minutes}
            if cfg.max_minutes > 0:  # the bar counts minutes; the postfix the steps
                bar.update(min(self.session_minutes(), cfg.max_minutes) - bar.n)
                bar.set_postfix(step=f"{self.step}/{cfg.steps}", bpd=f"{smoothed:.3f}", lr=f"{lr:.2e}")
            else:
                bar.update(1)
                bar.set_postfix(bpd=f"{smoothed:.3f}", lr=f"{lr:.2e}")
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

    def _saved_step(self) -> int | str:
        try:
            return int(read_checkpoint(self.checkpoint_path)["step"])
        except CheckpointError:
            return "none yet"


def progress_bar(cfg: TrainConfig, step: int, minutes: float, disable: bool = False) -> Any:
    """The training bar: steps out of ``steps``; or, with ``max_minutes``, this session's minutes out of it, so that
    the time left it shows is the time the run will take rather than that of ``steps`` it will never reach."""
    if cfg.max_minutes > 0:
        return tqdm(total=cfg.max_minutes, initial=min(minutes, cfg.max_minutes), disable=disable, desc="train",
                    unit="min", dynamic_ncols=True,
                    bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=cfg.steps, initial=step, disable=disable, desc="train", unit="step", dynamic_ncols=True)


# ----- a whole run ---------------------------------------------------------------------------------------------
def sample_labels(model: PretrainedModel, n: int, label: int | None) -> tuple[Tensor | None, int | None]:
    """Labels for a sample grid: one row per class by default, or all ``label``; and the grid width."""
    num_classes = model.config.num_classes
    if not num_classes:
        if label is not None:
            raise ValueError("--label given but the model is unconditional")
        return None, None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long), None
    per_class = max(1, n // num_classes)
    return torch.arange(num_classes).repeat_interleave(per_class), per_class


@dataclass
class TrainingRun:
    """One ``image-transformer train``: the run directory's state decides fresh, resume or refuse; then the
    training, and the run's last files: ``model/``, ``eval.json`` and the samples.

    Under torchrun every process makes and calls one; rank 0 writes the files, holding the run's lock. Everything
    that can be refused (the checkpoint, the data, the configs, the device) is checked before a process group or
    a model exists.
    """

    out: Path
    model_config: Callable[[ImageData], ImageTransformerConfig]  # a fresh run's architecture, from its data
    data: str = "mnist-slice"  # KIND:PATH (see data.load_dataset); a resumed run reads its own
    image_size: tuple[int, int] | None = None  # resize folder/celeba images
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig values given (on resume, over the run's own)
    # a fresh run's defaults in place of TrainConfig's (a preset's config.RECIPES entry); ``train`` overrides them
    recipe: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None  # the preset's name, recorded with the recipe in run.json
    # a fresh run that starts from a trained model's weights (fine-tuning): its architecture replaces model_config's
    init: str | None = None
    resume: bool = False
    overwrite: bool = False  # start afresh over a checkpoint
    device: str = "cpu"
    compile: bool = False
    deterministic: bool = False  # make_deterministic(): bit-exact repeats and resumes on a GPU too
    tensorboard: bool = False
    progress: bool = True
    final_eval: bool = True  # bits/dim on the test split -> eval.json
    final_eval_images: int = 0  # test images for it (spread over the split), 0 = all
    num_samples: int = 16  # samples.png (superres: superres.png and superres.json), 0 = none

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return int(os.environ.get("RANK", "0")) == 0

    def __call__(self) -> None:
        """Train and finish; raises :class:`TrainingStopped` when a signal stopped the training."""
        self.out = Path(self.out)
        with run_lock(self.out) if self.writer else contextlib.nullcontext():
            self._prepare()
            if self.deterministic:
                make_deterministic()
            device = init_distributed(self.device)
            try:
                self._train_and_finish(device)
                if torch.distributed.is_initialized():  # no process tears gloo down while a peer still uses it:
                    torch.distributed.barrier()  # a rare abort at exit of the process that finished first
            finally:
                if torch.distributed.is_initialized():
                    torch.distributed.destroy_process_group()

    def _prepare(self) -> None:
        """Resolve fresh vs resume vs refuse; load the data and the configs, and check they fit."""
        checkpoint = self.out / CHECKPOINT_NAME
        if self.resume:
            state = read_checkpoint(checkpoint)
            info = state.get("run_info", {})
            self.data, self.image_size = info.get("data", self.data), info.get("image_size") or self.image_size
            self.train_config = TrainConfig(**{**state["train_config"], **self.train})
            self.recipe_record = info.get("recipe")
            self.config = build_model(state, str(checkpoint)).config
        else:
            if checkpoint.exists() and not self.overwrite:
                raise ValueError(f"{checkpoint} exists: pass --resume to continue that run, --overwrite to "
                                 f"start again, or another --out")
            self.train_config = TrainConfig(**{**self.recipe, **self.train})
            self.recipe_record = {"preset": self.preset, "values": dict(self.recipe),
                                  "overridden": sorted(k for k in self.recipe if k in self.train)}
            self.init_model = load_model(self.init) if self.init else None
        self.train_data = load_split(self.data, "train", self.image_size)
        self.test_data = load_split(self.data, "test", self.image_size)
        if not self.resume:
            self.config = self.init_model.config if self.init_model is not None else self.model_config(self.train_data)
        model_shape = (*self.config.image_size, self.config.channels)
        for part in (self.train_data, self.test_data):
            if tuple(part.image_shape) != model_shape:
                raise ValueError(f"{part.source}: images are {part.image_shape} but the model expects {model_shape}")
        resolve_device(self.device)

    def _say(self, *args: Any) -> None:
        if world()[0] == 0:
            print(*args)

    def _train_and_finish(self, device: torch.device) -> None:
        cfg, out = self.train_config, self.out
        rank, size = world()
        torch.manual_seed(cfg.seed)
        model = model_from_config(self.config)
        if not self.resume and self.init_model is not None:
            load_weights(model, self.init_model.state_dict(), str(self.init))
        model = model.to(device)
        train_x, train_labels = self.train_data.tensors()
        test_x, test_labels = self.test_data.tensors()
        train_c, test_c = model.condition_for(train_x, train_labels), model.condition_for(test_x, test_labels)
        info = {"data": self.data, "image_size": list(self.image_size) if self.image_size else None,
                "train_source": self.train_data.source, "test_source": self.test_data.source,
                "recipe": self.recipe_record, **({"init": str(self.init)} if self.init else {})}
        self._say(f"data: {self.train_data.source}: {len(self.train_data)} train, {len(self.test_data)} test images "
                  f"of {self.train_data.image_shape}")
        group = f" ({torch.distributed.get_backend()})" if torch.distributed.is_initialized() else ""
        self._say(f"model: {model.num_parameters():,} parameters, {self.config.attention}, {self.config.distribution}, "
                  f"d={self.config.hidden_size}, {self.config.num_layers} layers; {size} process(es){group} on {device}")
        trainer = Trainer(model, cfg, out, train_x, train_c, test_x, test_c, run_info=info, progress=self.progress,
                          compile=self.compile, tensorboard=self.tensorboard)
        if self.resume:
            trainer.resume()
            self._say(f"resumed {out / CHECKPOINT_NAME} at step {trainer.step}")
        elif self.init:
            self._say(f"starting from the weights of {self.init}")
        try:
            trainer.train()
        except OSError as e:
            saved = trainer._saved_step()
            kept = (f"the checkpoint of step {saved} is kept: continue with `image-transformer train --out {out} "
                    f"--resume`" if isinstance(saved, int) else "no checkpoint was written")
            raise ValueError(f"{describe_os_error(e)}; {kept}") from None
        # evaluation and samples use the weight average when there is one
        with trainer.ema.applied(model) if trainer.ema is not None else contextlib.nullcontext():
            if rank == 0:
                model.save_pretrained(out / "model")
            if self.final_eval:
                self._evaluate(trainer, test_x, test_c)
            if self.num_samples and rank == 0:
                self._write_samples(model, test_x, test_c, train_x)

    def _evaluate(self, trainer: Trainer, test_x: Tensor, test_c: Tensor | None) -> None:
        """Bits/dim on the test split (all processes share the work) -> eval.json."""
        minutes = trainer.train_minutes  # over all sessions of the run
        idx = spread(len(test_x), self.final_eval_images)
        result = evaluate(trainer.model, test_x[idx], test_c[idx] if test_c is not None else None,
                          progress=self.progress)
        result.update(step=trainer.step, train_minutes=round(minutes, 2), data=self.test_data.source,
                      weights="ema" if trainer.ema is not None else "last")
        if world()[0] == 0:
            text = json.dumps(result, indent=2) + "\n"
            save_or_rescue(self.out / "eval.json", lambda p: p.write_text(text))
        self._say(f"test bits/dim: {result['bits_per_dim']:.4f} over {result['num_images']} images "
                  f"(step {trainer.step}, {minutes:.1f} min of training) -> {self.out / 'eval.json'}")

    def _write_samples(self, model: PretrainedModel, test_x: Tensor, test_c: Tensor | None, train_x: Tensor) -> None:
        """samples.png; for super-resolution, the paper's report on held-out inputs (superres.png, .json)."""
        seed = self.train_config.seed
        if isinstance(model, SuperResolutionTransformer):
            report = superres_report(model, test_x, test_c, train_x, self.out, self.num_samples, seed,
                                     progress=self.progress)
            self._say(format_superres_report(report))
            return
        labels, nrow = sample_labels(model, self.num_samples, None)
        n = len(labels) if labels is not None else self.num_samples
        samples = model.sample(n, labels=labels, generator=torch.Generator().manual_seed(seed),
                               progress=self.progress)
        path = save_or_rescue(self.out / "samples.png", lambda p: save_grid(samples, p, nrow=nrow, scale=2))
        self._say(f"samples: {path}")
