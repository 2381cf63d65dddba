"""Where a step runs: the device, the processes torchrun starts (gloo on CPU, NCCL on GPU), precision and
determinism."""

from __future__ import annotations

import contextlib
import os
import sys
from time import perf_counter
from typing import Any, Callable

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


def choose_precision(one_pass: Callable[[str], None], device: torch.device, world_size: int = 1,
                     trials: int = 2) -> tuple[str, dict[str, Any]]:
    """``precision="auto"``: the faster of fp32 and bf16 here, and the record of why.

    ``one_pass(precision)`` runs one forward and backward pass; each precision is timed over ``trials`` of them after
    one to warm up, and the random state is put back after, so that the run is the one the chosen precision would
    have made. Where bf16 has no kernels of its own (a CPU without AVX-512) it is fp32 without timing; across
    processes, rank 0's choice.
    """
    seconds: dict[str, float] = {}
    if not bf16_runs_natively(device):
        chosen, why = "fp32", f"bf16 has no kernels of its own on this {device.type}"
    else:
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        for precision in ("fp32", "bf16"):
            times = []
            for _ in range(trials + 1):
                started = perf_counter()
                one_pass(precision)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(perf_counter() - started)
            seconds[precision] = sorted(times[1:])[len(times[1:]) // 2]
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        chosen, why = min(seconds, key=seconds.get), f"the faster over {trials} timed passes"
        if world_size > 1:  # every process trains alike
            decision = [chosen]
            torch.distributed.broadcast_object_list(decision, src=0)
            chosen = decision[0]
    if world()[0] == 0:
        times = ", ".join(f"{k} {v:.3g} s" for k, v in seconds.items())
        print(f"precision: {chosen} ({why}{': ' + times if times else ''})", file=sys.stderr)
    return chosen, {"asked": "auto", "chosen": chosen, "why": why,
                    "seconds_per_pass": {k: round(v, 4) for k, v in seconds.items()}}
