"""Where a step runs: the device, the processes torchrun starts (gloo on CPU, NCCL on GPU), precision and
determinism."""

from __future__ import annotations

import contextlib
import os

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of this process: its torch.distributed group's, or before the group is joined, what torchrun
    told it (``RANK``, ``WORLD_SIZE``: the run's lock is taken by rank 0 before any group exists); (0, 1) alone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, refusing CUDA when this machine has none."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}, "
                         f"CUDA build: {torch.version.cuda or 'none'}); run on the CPU (device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return dev


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


def make_deterministic() -> None:
    """The same inputs give the same weights bit for bit: deterministic kernels where torch has them (several CUDA
    backward passes sum with atomics by default); an op that has none warns. For this process, before CUDA starts."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable sums
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def bf16_runs_natively(device: torch.device) -> bool:
    """Whether bf16 matmuls have kernels of their own here: a GPU with bf16, or a CPU that oneDNN runs bf16 on
    (AVX-512 or newer). Elsewhere (AVX2 only) autocast falls back to reference kernels, many times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN's probe: assume it does
        return True


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
