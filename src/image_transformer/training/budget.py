"""Bits/dim for a budget: train a preset for M minutes, then evaluate held-out images (what benchmarks/budget.py,
the sweep and the experiments run).

Training is the :class:`Trainer` with ``max_minutes = M``: the clock counts training only (the periodic evaluations
that draw the curve are not counted), and the preset's recipe (``zoo.RECIPES``) sets batch size, learning rate,
schedule and precision unless overridden. Afterwards the held-out split is evaluated.
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any

import torch

from ..files.data import cifar_holdout, load_dataset
from ..metrics import spread
from ..nn.model import ImageTransformer
from ..tasks import evaluate
from ..zoo import RECIPES, preset
from .config import TrainConfig
from .trainer import Trainer

# "wall": seconds of wall clock (the budget's definition); "cpu": this process's CPU seconds per thread, which
# a neighbour on a shared CPU disturbs much less (for screening sweeps while other work runs)
CLOCKS = {"wall": time.monotonic, "cpu": lambda: time.process_time() / torch.get_num_threads()}
SUBSET = "cifar10-subset:"  # a spec prefix: the lossless CIFAR-10 subset, split by files.data.cifar_holdout


def budget_data(spec: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """(train images, train labels, held-out images, held-out labels), uint8 (N, H, W, C): the train and test
    splits of a data spec, or for ``cifar10-subset:PATH`` the lossless subset's split (:func:`cifar_holdout`)."""
    if spec.startswith(SUBSET):
        train, test = cifar_holdout(spec[len(SUBSET):])
    else:
        train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    return (*train.tensors(), *test.tensors())


def probe_step_seconds(config: Any, cfg: TrainConfig, images: torch.Tensor, labels: torch.Tensor | None) -> float:
    """Seconds per training step of a throwaway copy: spaces the curve's evaluations (not counted)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(ImageTransformer(config), cfg, tmp, images, labels, progress=False)
        trainer.train_step()
        t0 = time.perf_counter()
        for _ in range(2):
            trainer.train_step()
        return (time.perf_counter() - t0) / 2


def run(spec: str, minutes: float, preset_name: str, model_settings: dict[str, Any], train_settings: dict[str, Any],
        eval_limit: int = 0, curve_points: int = 8, out: str | None = None, progress: bool = True,
        clock: str = "wall", compile: bool = False) -> dict[str, Any]:
    """Train ``preset_name`` (with ``model_settings`` over it, and ``train_settings`` over its recipe) on ``spec``'s
    training images for ``minutes`` of ``clock``, then evaluate the held-out images (``eval_limit`` of them spread
    over the split, 0 = all); ``out`` keeps the run folder. Returns the record: bits/dim, steps, images/s, the
    curve of held-out bits/dim against minutes, and the settings."""
    train_x, train_y, held_x, held_y = budget_data(spec)
    config = preset(preset_name, **model_settings)
    if config.num_classes == 0:
        train_y = held_y = None
    recipe = {**RECIPES.get(preset_name, {}), **train_settings}
    # the budget's minutes bind (a recipe's own max_minutes and steps give way to them)
    cfg = TrainConfig(**{"checkpoint_every": 10**9, "eval_images": 256, **recipe, "steps": 10**9,
                         "max_minutes": minutes, "eval_every": 10**9})
    # the curve: about ``curve_points`` evaluations on 256 held-out images, their time not counted
    cfg.eval_every = max(1, int(minutes * 60 / probe_step_seconds(config, cfg, train_x, train_y) / curve_points))
    torch.manual_seed(cfg.seed)
    model = ImageTransformer(config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, cfg, out or tmp, train_x, train_y, held_x, held_y, progress=progress,
                          compile=compile, clock=CLOCKS[clock])
        trainer.train()
        records = [json.loads(line) for line in trainer.log_path.read_text().splitlines()]
    curve = [(r["minutes"], r["eval_bits_per_dim"]) for r in records if "eval_bits_per_dim" in r]
    idx = spread(len(held_x), eval_limit) if eval_limit else torch.arange(len(held_x))
    t0 = time.perf_counter()
    result = evaluate(model, held_x[idx], held_y[idx] if held_y is not None else None, batch_size=64, progress=progress)
    last = records[-1]
    return {
        "data": spec, "preset": preset_name, "model": config.to_dict(), "train": {**vars(cfg)},
        "minutes": last["minutes"], "steps": last["step"],
        "images_per_sec": last["step"] * cfg.batch_size / (60 * last["minutes"]),
        "parameters": model.num_parameters(), "bits_per_dim": result["bits_per_dim"],
        "eval_images": result["num_images"],
        "eval_minutes": (time.perf_counter() - t0) / 60, "curve": curve, "threads": torch.get_num_threads(),
        "clock": clock, "compile": compile,
    }
