"""Write a finished training run into the package as a shipped model: src/image_transformer/pretrained/NAME/.

    python tools/ship_model.py RUN NAME --description TEXT --licence TEXT --command "CMD" [--command "CMD" ...]

RUN is a run folder of `image-transformer train` (run.json, eval.json, model/), optionally evaluated again with
`image-transformer eval RUN` (eval-test.json, which for a super-resolution model also holds the paper's
consistency report). The folder written holds config.json, model.safetensors (half precision when that moves test
bits/dim by less than 0.01; loading restores float32), README.md (the model card: a YAML header as on the Hugging
Face Hub, then the same in words), test_slice.safetensors (a few test images whose bits/dim the card records and
the test suite checks) and samples.png. Every figure in the card comes from the run's records or from evaluating
the weights as shipped on the run's test split; nothing is typed in by hand except the data's description and
licence, and the commands that made the run. tools/train_zoo.sh calls this after training each model.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import safetensors.torch
import torch

from image_transformer.files.checkpoint import atomic_write
from image_transformer.files.data import load_split, read_name_list
from image_transformer.files.folders import (
    CARD_NAME,
    GRID_NAME,
    LEFT_OUT_NAME,
    NAME_PATTERN,
    SHIPPED,
    SLICE_NAME,
    is_pretrained_dir,
    write_card,
)
from image_transformer.files.image_files import save_grid
from image_transformer.files.pretrained import PretrainedModel, load_model, save_pretrained
from image_transformer.metrics import spread
from image_transformer.nn.sampling import Sampling
from image_transformer.tasks import evaluate, sample, superres_report


def slice_bits_per_dim(model: PretrainedModel, test_slice: dict[str, torch.Tensor]) -> float:
    """Mean bits/dim of ``model`` over a test slice (what a card's ``slice.bits_per_dim`` records)."""
    images = test_slice["images"]
    return evaluate(model, images, model.condition_for(images, test_slice.get("labels")))["bits_per_dim"]


def _hardware() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu or 'CPU'}, {os.cpu_count()} cores visible to the process, {gpu}"


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _plain(value: Any) -> Any:
    """JSON-plain values (lists, not tuples) so that the YAML header reads back equal to config.json."""
    return json.loads(json.dumps(value))


def _stages(run: Path, run_info: dict[str, Any], trained: dict[str, Any]) -> list[dict[str, Any]]:
    """The training runs that made the model, oldest first: ``run`` and those it started from by ``train --init``
    (a run folder or its ``model/``). A model trained in stages (many lossy images, then a few lossless ones) has
    more than one; a start from a shipped model or a bare weights folder ends the chain (its own card tells). Runs
    moved together (trained on another machine, brought back in one archive) are found beside ``run`` by name."""
    stages, seen = [], set()
    while True:
        seen.add(run.resolve())
        stages.insert(0, {"run": str(run), "data": run_info.get("train_source") or run_info.get("data"),
                          "steps": int(trained["step"]), "train_minutes": float(trained["train_minutes"]),
                          "test": {"source": trained.get("data"), "images": trained.get("num_images"),
                                   "bits_per_dim": trained.get("bits_per_dim")}})
        if (run / LEFT_OUT_NAME).is_file():
            stages[0]["left_out"] = len(read_name_list(run / LEFT_OUT_NAME))
        init = run_info.get("init")
        if not init:
            return stages
        start = Path(init)
        candidates = [start, start.parent]
        if len(start.parts) > 1:  # a path, not a shipped model's name (a folder of that name is another run)
            candidates += [run.parent / start.name, run.parent / start.parent.name]
        parent = next((p for p in candidates if p != run.parent and (p / "run.json").is_file()), None)
        if parent is None or parent.resolve() in seen:
            return stages
        run_info, trained = _read_json(parent / "run.json"), _read_json(parent / "eval.json")
        if run_info is None or trained is None:
            return stages
        run = parent


def _copy_left_out(stages: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """Each stage's list of training files it left out, copied into the model's ``folder`` (``left-out.txt``, or
    one per stage where several left files out), and what the card says of each."""
    listed = [(i, s) for i, s in enumerate(stages, 1) if "left_out" in s]
    records = []
    for i, stage in listed:
        name = LEFT_OUT_NAME if len(listed) == 1 else LEFT_OUT_NAME.replace(".txt", f"-stage{i}.txt")
        shutil.copyfile(Path(stage["run"]) / LEFT_OUT_NAME, folder / name)
        records.append({"file": name, "files": stage["left_out"], "data": stage["data"]})
    return records


def _other_evaluations(run: Path) -> list[dict[str, Any]]:
    """``image-transformer eval RUN --data ... -o RUN/eval-NAME.json`` records besides the test split's."""
    found = []
    for path in sorted(run.glob("eval-*.json")):
        record = _read_json(path)
        if path.name != "eval-test.json" and record and "bits_per_dim" in record:
            found.append({"file": path.name, "data": record.get("data"), "images": record.get("num_images"),
                          "bits_per_dim": round(float(record["bits_per_dim"]), 6)})
    return found


def ship(run: str | Path, name: str, *, description: str, licence: str, commands: Sequence[str],
         data_name: str | None = None, data: str | None = None, hardware: str | None = None,
         zoo: str | Path | None = None, slice_images: int = 8, grid_images: int = 16, test_images: int = 0,
         half: bool = True, tolerance: float = 0.01, seed: int = 0, progress: bool = False) -> Path:
    """Write the shipped folder ``zoo/name`` (default: the package's) from the finished run ``run``.

    The weights are the run's final ones (its ``model/`` folder: the EMA when it kept one). The test split of the
    run's data (or ``data``) is evaluated with the weights as they will ship: rounded to half precision when
    ``half`` and that moves bits/dim by less than ``tolerance``, else in float32. ``test_images`` (0 = the whole
    split) limits that evaluation, and the card then says so. Steps and minutes come from the run's ``eval.json``
    (summed over the runs it started from with ``train --init``, each listed as a stage), the data from
    ``run.json``; other ``eval-*.json`` records in the run folder (another data set's bits/dim) are listed too.
    The card's header and text are filled from those records, ``commands`` (the exact commands that made the run)
    and the given data ``description`` and ``licence``.
    """
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{name!r}: a model name is lower-case letters, digits, '-' and '.'")
    found = read_run(Path(run), data)
    test = evaluate_test(found, test_images, progress)
    model, shipped_bpd, dtype = as_shipped(found.model, test, half, tolerance, progress)
    if not math.isfinite(shipped_bpd):
        raise ValueError(f"{run}: test bits/dim is not finite; nothing shipped")

    zoo = Path(zoo) if zoo is not None else SHIPPED
    tmp = zoo / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_pretrained(model, tmp, dtype=None if dtype == torch.float32 else dtype)
    left_out = _copy_left_out(found.stages, tmp)
    chosen, slice_bpd = write_test_slice(tmp, model, test, slice_images)
    sample_command = write_sample_grid(tmp, model, test.x, chosen, name, found.spec, grid_images, seed, progress)

    meta = card_meta(found, test, model, dtype, shipped_bpd, chosen, slice_bpd, sample_command, left_out,
                     description=description, licence=licence, commands=commands, data_name=data_name,
                     hardware=hardware)
    summary = (f"An Image Transformer trained with the `image-transformer` library on {data_name or found.spec}: "
               f"{description}.")
    write_card(tmp, name, meta, summary)
    return swap_in(tmp, zoo / name)


class FinishedRun(NamedTuple):
    """What a finished run recorded, and its model: the ``run.json`` and ``eval.json`` (or ``eval-test.json``)
    records, the stages that made it, other evaluations, and the data spec it is shipped with."""

    folder: Path
    info: dict[str, Any]  # run.json
    record: dict[str, Any]  # eval-test.json, else eval.json
    stages: list[dict[str, Any]]
    others: list[dict[str, Any]]
    model: PretrainedModel
    spec: str


def read_run(run: Path, data: str | None = None) -> FinishedRun:
    """The finished run ``run``'s records and final model (the EMA when there is one); ``data`` replaces its spec."""
    run_info, trained = _read_json(run / "run.json"), _read_json(run / "eval.json")
    if run_info is None or trained is None:
        raise ValueError(f"{run}: needs run.json and eval.json: a finished training run")
    record = _read_json(run / "eval-test.json") or trained  # `image-transformer eval RUN` on the test split
    stages, others = _stages(run, run_info, trained), _other_evaluations(run)
    model = load_model(run / "model" if is_pretrained_dir(run / "model") else run)  # the EMA when there is one
    return FinishedRun(run, run_info, record, stages, others, model, data or run_info.get("data"))


class TestSplit(NamedTuple):
    """The run's test split, the images evaluated (``idx``) and the float32 weights' bits/dim over them."""

    source: str
    x: torch.Tensor
    labels: torch.Tensor | None
    idx: torch.Tensor
    cond: torch.Tensor | None  # the condition of the images evaluated
    full: bool  # every image of the split evaluated
    fp32: float


def evaluate_test(found: FinishedRun, test_images: int, progress: bool) -> TestSplit:
    """Bits/dim of the float32 weights on the test split (``test_images`` spread over it, 0 = all): the run's own
    figure when it covers the same images, else evaluated here."""
    image_size = found.info.get("image_size")
    test = load_split(found.spec, "test", tuple(image_size) if image_size else None)
    x, labels = test.tensors()
    idx = spread(len(x), test_images)
    condition = found.model.condition_for(x, labels)
    cond = condition[idx] if condition is not None else None
    full = len(idx) == len(x)
    if full and found.record.get("num_images") == len(x):
        fp32 = float(found.record["bits_per_dim"])
    else:
        fp32 = evaluate(found.model, x[idx], cond, progress=progress)["bits_per_dim"]
    return TestSplit(test.source, x, labels, idx, cond, full, fp32)


def as_shipped(model: PretrainedModel, test: TestSplit, half: bool, tolerance: float,
               progress: bool) -> tuple[PretrainedModel, float, torch.dtype]:
    """The weights to ship, their test bits/dim and dtype: rounded to half precision when ``half`` and that moves
    bits/dim by less than ``tolerance``, else float32."""
    if not half:
        return model, test.fp32, torch.float32
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for v in rounded.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().float())
    finite = all(torch.isfinite(v).all() for v in rounded.state_dict().values() if v.is_floating_point())
    half_bpd = evaluate(rounded, test.x[test.idx], test.cond, progress=progress)["bits_per_dim"] if finite else math.inf
    if abs(half_bpd - test.fp32) < tolerance:
        return rounded, half_bpd, torch.float16
    return model, test.fp32, torch.float32


def write_test_slice(folder: Path, model: PretrainedModel, test: TestSplit,
                     slice_images: int) -> tuple[torch.Tensor, float]:
    """The test slice (``slice_images`` spread over the split, their labels for a class-conditional model) into
    ``folder``; returns the images' indices and the shipped weights' bits/dim on them."""
    chosen = spread(len(test.x), slice_images)
    test_slice = {"images": test.x[chosen].contiguous(), "indices": chosen.contiguous()}
    if test.labels is not None and model.config.num_classes:
        test_slice["labels"] = test.labels[chosen].contiguous()
    data = safetensors.torch.save(test_slice, metadata={"format": "pt", "split": "test"})
    atomic_write(folder / SLICE_NAME, lambda f: f.write(data))
    return chosen, slice_bits_per_dim(model, test_slice)


def write_sample_grid(folder: Path, model: PretrainedModel, x: torch.Tensor, chosen: torch.Tensor, name: str,
                      spec: str, grid_images: int, seed: int, progress: bool) -> str:
    """The card's picture (GRID_NAME): samples, or for super-resolution the test slice's upscaled; returns the
    command that draws the like."""
    if model.low_resolution_input:
        inputs = model.condition_for(x[chosen], None)
        superres_report(model, x[chosen], inputs, None, folder, len(chosen), seed)
        (folder / "superres.png").rename(folder / GRID_NAME)
        (folder / "superres.json").unlink(missing_ok=True)
        sample_command = f"image-transformer upscale {name} --data {spec} --index ..."
    else:
        samples, nrow = sample(model, grid_images, options=Sampling(generator=torch.Generator().manual_seed(seed),
                                                                    progress=progress))
        save_grid(samples, folder / GRID_NAME, nrow=nrow, scale=2)
        sample_command = f"image-transformer sample {name} -n {len(samples)} --seed {seed} -o {GRID_NAME}"
    return sample_command


def card_meta(found: FinishedRun, test: TestSplit, model: PretrainedModel, dtype: torch.dtype, shipped_bpd: float,
              chosen: torch.Tensor, slice_bpd: float, sample_command: str, left_out: list[dict[str, Any]], *,
              description: str, licence: str, commands: Sequence[str], data_name: str | None,
              hardware: str | None) -> dict[str, Any]:
    """The card's YAML header: every figure from the run's records and the evaluation of the shipped weights."""
    kind, spec, record, stages = type(model).__name__, found.spec, found.record, found.stages
    test_meta: dict[str, Any] = {
        "split": "test", "source": test.source, "images": int(len(test.idx)), "full_split": test.full,
        "bits_per_dim": round(shipped_bpd, 6), "bits_per_dim_float32": round(test.fp32, 6),
    }
    if "superres" in record:
        test_meta["superres"] = {k: v for k, v in record["superres"].items() if k != "grid"}
    meta: dict[str, Any] = {
        "library_name": "image-transformer",
        "license": "other",
        "pipeline_tag": model.pipeline_tag,
        "tags": ["image-transformer", "autoregressive", "pytorch"],
        "model_type": kind,
        "parameters": model.num_parameters(),
        "weights_dtype": "float16" if dtype == torch.float16 else "float32",
        "data": {"name": data_name or spec, "spec": spec, "description": description, "licence": licence,
                 "train_source": found.info.get("train_source"), "test_source": found.info.get("test_source")},
        "command": list(commands),
        "steps": sum(s["steps"] for s in stages),
        "train_minutes": round(sum(s["train_minutes"] for s in stages), 2),
        "hardware": hardware or _hardware(),
        "test": test_meta,
        "slice": {"file": SLICE_NAME, "split": "test", "indices": [int(i) for i in chosen],
                  "bits_per_dim": round(slice_bpd, 6)},
        "sample_grid": GRID_NAME,
        "sample_command": sample_command,
        "train": found.info.get("train"),
        "config": model.config.to_dict(),
    }
    if left_out:
        meta["left_out"] = left_out
    if len(stages) > 1:
        meta["stages"] = stages
    if found.others:
        meta["other_evaluations"] = found.others
    return _plain(meta)


def swap_in(tmp: Path, final: Path) -> Path:
    """The finished folder ``tmp`` in place of ``final`` (an older one of that name is replaced)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finished run folder of `image-transformer train`")
    p.add_argument("name", help="the model's name (lower case, digits, '-')")
    p.add_argument("--description", required=True, help="the training data in words (which images, lossy or not)")
    p.add_argument("--data-name", help="a short name of the data for `image-transformer models`")
    p.add_argument("--licence", required=True, help="the data's licence and source")
    p.add_argument("--command", action="append", required=True, help="a command that made the run (repeat, in order)")
    p.add_argument("--data", help="KIND:PATH of the data, when it moved since training (default: the run's)")
    p.add_argument("--hardware", help="what it trained on (default: this machine's CPU and GPU)")
    p.add_argument("--zoo", default=str(SHIPPED), help="folder of shipped models")
    p.add_argument("--slice-images", type=int, default=8, help="test images kept in the folder for the tests")
    p.add_argument("--grid-images", type=int, default=16, help="samples in samples.png")
    p.add_argument("--test-images", type=int, default=0, help="test images to evaluate, spread over the split "
                                                                "(0 = the whole split, as a shipped card should)")
    p.add_argument("--float32", action="store_true", help="keep float32 weights on disk")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        folder = ship(args.run, args.name, description=args.description, licence=args.licence, commands=args.command,
                      data_name=args.data_name, data=args.data, hardware=args.hardware, zoo=args.zoo,
                      slice_images=args.slice_images, grid_images=args.grid_images, test_images=args.test_images,
                      half=not args.float32, progress=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((folder / CARD_NAME).read_text().split("\n---\n", 1)[1])
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"shipped {args.name} -> {folder} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
