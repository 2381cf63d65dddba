"""One ``image-transformer train``: the run directory's state decides fresh, resume or refuse; then the training,
and the run's last files: ``model/``, ``eval.json`` and the samples."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..files.checkpoint import CHECKPOINT_NAME, CheckpointError, describe_os_error, read_checkpoint, save_or_rescue
from ..files.data import ImageData, load_split, read_name_list
from ..files.folders import LEFT_OUT_NAME
from ..files.image_files import save_grid
from ..files.pretrained import PretrainedModel, build_model, load_model, load_weights, model_from_config
from ..metrics import spread
from ..nn.config import ImageTransformerConfig
from ..nn.sampling import Sampling
from ..tasks import evaluate, format_superres_report, sample, superres_report
from .config import TrainConfig
from .distributed import bf16_runs_natively, init_distributed, make_deterministic, resolve_device, world
from .guard import run_lock
from .trainer import Trainer


@dataclass
class Prepared:
    """What a run trains with, settled before any process group or model exists: for a resumed run, what its
    checkpoint recorded (its data, image size, settings and architecture), else what was asked for."""

    data: str  # KIND:PATH
    image_size: tuple[int, int] | None
    train_config: TrainConfig
    recipe_record: dict[str, Any] | None  # run.json's "recipe"
    config: ImageTransformerConfig
    left_out: list[str] | None  # training files left out
    train_data: ImageData
    test_data: ImageData
    init_model: PretrainedModel | None = None  # a fresh run's starting weights (``init``)


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
    # a fresh run's defaults in place of TrainConfig's (a preset's zoo.RECIPES entry); ``train`` overrides them
    recipe: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None  # the preset's name, recorded with the recipe in run.json
    # a fresh run that starts from a trained model's weights (fine-tuning): its architecture replaces model_config's
    init: str | None = None
    resume: bool = False
    overwrite: bool = False  # start afresh over a checkpoint
    # a fresh run's list of training files to leave out (folder data); the run keeps it as LEFT_OUT_NAME
    leave_out: str | os.PathLike | None = None
    device: str = "cpu"
    compile: bool = False
    deterministic: bool = False  # make_deterministic(): bit-exact repeats and resumes on a GPU too
    tensorboard: bool = False
    progress: bool = True
    final_eval: bool = True  # bits/dim on the test split -> eval.json
    final_eval_images: int = 0  # test images for it (spread over the split), 0 = all
    num_samples: int = 16  # samples.png (superres: superres.png and superres.json), 0 = none
    prepared: Prepared | None = field(default=None, init=False, repr=False)  # set by __call__, before training

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return world()[0] == 0

    @property
    def train_config(self) -> TrainConfig:
        assert self.prepared is not None, "the run is not prepared yet"
        return self.prepared.train_config

    def __call__(self) -> None:
        """Train and finish; raises :class:`TrainingStopped` when a signal stopped the training."""
        self.out = Path(self.out)
        with run_lock(self.out) if self.writer else contextlib.nullcontext():
            self.prepared = self._prepare()
            if self.deterministic:
                make_deterministic()
            device = init_distributed(self.device)
            try:
                self._train_and_finish(self.prepared, device)
                # The trainer is in a reference cycle (its schedule reads its clock), so without a collection it,
                # and the DDP wrapper holding the process group, would be freed at some later collection or at
                # interpreter exit, after the group is destroyed: free them here, while the group is whole.
                gc.collect()
                if torch.distributed.is_initialized():  # no process tears gloo down while a peer still uses it
                    torch.distributed.barrier()
            finally:
                if torch.distributed.is_initialized():
                    torch.distributed.destroy_process_group()

    def _prepare(self) -> Prepared:
        """Resolve fresh vs resume vs refuse; load the data and the configs, and check they fit."""
        checkpoint = self.out / CHECKPOINT_NAME
        kept_list = self.out / LEFT_OUT_NAME
        if self.resume and self.leave_out is not None:
            raise ValueError(f"--leave-out is for a new run: a resumed run leaves out what its own {kept_list} lists "
                             f"(if it has one)")
        init_model = None
        if self.resume:
            state = read_checkpoint(checkpoint)
            if not isinstance(state.get("train_config"), dict):
                raise CheckpointError(f"{checkpoint}: holds no training configuration, so there is no run to resume; "
                                      f"start a new one from its weights with --init {checkpoint}")
            info = state.get("run_info") if isinstance(state.get("run_info"), dict) else {}
            data, image_size = info.get("data", self.data), info.get("image_size") or self.image_size
            try:
                train_config = TrainConfig(**{**state["train_config"], **self.train})
            except TypeError as e:  # a field this version does not know
                raise CheckpointError(f"{checkpoint}: its training configuration does not fit this version ({e})") \
                    from None
            recipe_record = info.get("recipe")
            config = build_model(state, str(checkpoint)).config
            if kept_list.is_file():
                left_out = read_name_list(kept_list)
            elif "left_out" in info:
                raise CheckpointError(f"{checkpoint}: the run left out the training files its {LEFT_OUT_NAME} "
                                      f"listed, and that file is gone; put it back to resume")
            else:
                left_out = None
        else:
            if checkpoint.exists() and not self.overwrite:
                raise ValueError(f"{checkpoint} exists: pass --resume to continue that run, --overwrite to "
                                 f"start again, or another --out")
            data, image_size = self.data, self.image_size
            train_config = TrainConfig(**{**self.recipe, **self.train})
            recipe_record = {"preset": self.preset, "values": dict(self.recipe),
                             "overridden": sorted(k for k in self.recipe if k in self.train)}
            init_model = load_model(self.init) if self.init else None
            left_out = read_name_list(self.leave_out) if self.leave_out is not None else None
        train_data = load_split(data, "train", image_size, leave_out=left_out)
        test_data = load_split(data, "test", image_size)
        if not self.resume:
            config = init_model.config if init_model is not None else self.model_config(train_data)
        model_shape = (*config.image_size, config.channels)
        for part in (train_data, test_data):
            if tuple(part.image_shape) != model_shape:
                raise ValueError(f"{part.source}: images are {part.image_shape} but the model expects {model_shape}")
        resolve_device(self.device)
        return Prepared(data, image_size, train_config, recipe_record, config, left_out, train_data, test_data,
                        init_model)

    def _say(self, *args: Any) -> None:
        if self.writer:
            print(*args)

    def _train_and_finish(self, run: Prepared, device: torch.device) -> None:
        cfg, out = run.train_config, self.out
        rank, size = world()
        torch.manual_seed(cfg.seed)
        model = model_from_config(run.config)
        if run.init_model is not None:
            load_weights(model, run.init_model.state_dict(), str(self.init))
        model = model.to(device)
        train_x, train_labels = run.train_data.tensors()
        test_x, test_labels = run.test_data.tensors()
        train_c, test_c = model.condition_for(train_x, train_labels), model.condition_for(test_x, test_labels)
        info = {"data": run.data, "image_size": list(run.image_size) if run.image_size else None,
                "train_source": run.train_data.source, "test_source": run.test_data.source,
                "recipe": run.recipe_record, **({"init": str(self.init)} if self.init else {}),
                **({"left_out": {"file": LEFT_OUT_NAME, "files": len(run.left_out)}} if run.left_out else {})}
        if rank == 0 and not self.resume:
            if run.left_out:
                text = "".join(f"{name}\n" for name in run.left_out)
                save_or_rescue(out / LEFT_OUT_NAME, lambda p: p.write_text(text))
            else:  # an overwritten run's list is not this run's
                (out / LEFT_OUT_NAME).unlink(missing_ok=True)
        self._say(f"data: {run.train_data.source}: {len(run.train_data)} train, {len(run.test_data)} test images "
                  f"of {run.train_data.image_shape}")
        group = f" ({torch.distributed.get_backend()})" if torch.distributed.is_initialized() else ""
        self._say(f"model: {model.num_parameters():,} parameters, {run.config.attention}, {run.config.distribution}, "
                  f"d={run.config.hidden_size}, {run.config.num_layers} layers; {size} process(es){group} on {device}")
        if cfg.precision == "bf16" and not bf16_runs_natively(device) and rank == 0:
            print(f"warning: bf16 autocast has no fast kernels on this {device.type} (no AVX-512 or newer): each step "
                  f"will be many times slower than with --precision fp32", file=sys.stderr)
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
            try:
                saved = trainer.saved_step()
            except CheckpointError as damaged:  # "none was written" would hide it, "kept" would promise a resume
                kept = f"and the checkpoint there cannot be read, so the run cannot resume: {damaged}"
            else:
                kept = (f"the checkpoint of step {saved} is kept: continue with `image-transformer train --out {out} "
                        f"--resume`" if saved is not None else "no checkpoint was written")
            raise ValueError(f"{describe_os_error(e)}; {kept}") from None
        # evaluation and samples use the weight average when there is one
        with trainer.ema.applied(model) if trainer.ema is not None else contextlib.nullcontext():
            if rank == 0:
                model.save_pretrained(out / "model")
            if self.final_eval:
                self._evaluate(trainer, test_x, test_c, run.test_data.source)
            if self.num_samples and rank == 0:
                self._write_samples(model, test_x, test_c, train_x)

    def _evaluate(self, trainer: Trainer, test_x: Tensor, test_c: Tensor | None, source: str) -> None:
        """Bits/dim on the test split (all processes share the work) -> eval.json."""
        minutes = trainer.train_minutes  # over all sessions of the run
        idx = spread(len(test_x), self.final_eval_images)
        result = evaluate(trainer.model, test_x[idx], test_c[idx] if test_c is not None else None,
                          progress=self.progress, shard=world())
        result.update(step=trainer.step, train_minutes=round(minutes, 2), data=source,
                      weights="ema" if trainer.ema is not None else "last")
        if self.writer:
            text = json.dumps(result, indent=2) + "\n"
            save_or_rescue(self.out / "eval.json", lambda p: p.write_text(text))
        self._say(f"test bits/dim: {result['bits_per_dim']:.4f} over {result['num_images']} images "
                  f"(step {trainer.step}, {minutes:.1f} min of training) -> {self.out / 'eval.json'}")

    def _write_samples(self, model: PretrainedModel, test_x: Tensor, test_c: Tensor | None, train_x: Tensor) -> None:
        """samples.png; for super-resolution, the paper's report on held-out inputs (superres.png, .json)."""
        seed = self.train_config.seed
        if model.low_resolution_input:
            report = superres_report(model, test_x, test_c, train_x, self.out, self.num_samples, seed,
                                     progress=self.progress)
            self._say(format_superres_report(report))
            return
        options = Sampling(generator=torch.Generator().manual_seed(seed), progress=self.progress)
        samples, nrow = sample(model, self.num_samples, options=options)
        path = save_or_rescue(self.out / "samples.png", lambda p: save_grid(samples, p, nrow=nrow, scale=2))
        self._say(f"samples: {path}")
