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
from typing import Any, Sequence

import safetensors.torch
import torch
import yaml

from image_transformer.files.checkpoint import atomic_write
from image_transformer.files.pretrained import PretrainedModel, load_model, save_pretrained
from image_transformer.files.data import load_split, read_name_list
from image_transformer.files.image_files import save_grid
from image_transformer.metrics import spread
from image_transformer.nn.superres import SuperResolutionTransformer
from image_transformer.tasks import superres_report
from image_transformer.tasks import evaluate, sample_labels
from image_transformer.files.folders import (CARD_NAME, GRID_NAME, LEFT_OUT_NAME, NAME_PATTERN, SHIPPED, SLICE_NAME,
                                             is_pretrained_dir)


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


def _card_body(name: str, meta: dict[str, Any], summary: str) -> str:
    test, data = meta["test"], meta["data"]
    stages = "".join(f"; stage {i}: {s['steps']:,} steps, {s['train_minutes']:.1f} minutes on {s['data']}"
                     for i, s in enumerate(meta.get("stages", []), 1))
    left = [f"| left out of training | {e['files']:,} files of {e['data']}, listed in `{e['file']}` |"
            for e in meta.get("left_out", [])]
    others = [f"| bits/dim elsewhere | {e['bits_per_dim']:.4f} over {e['images']:,} images of {e['data']} "
              f"(float32 weights, `{e['file']}`) |" for e in meta.get("other_evaluations", [])]
    kind = meta["model_type"]
    use = (f"image-transformer upscale {name} --data {data['spec']} --index 0 1 2 -o upscaled.png"
           if kind == "SuperResolutionTransformer" else f"image-transformer sample {name} -n 16 -o samples.png")
    lines = [
        f"# {name}", "", summary, "",
        "| | |", "|---|---|",
        f"| model | `{kind}`, {meta['parameters']:,} parameters, {meta['config']['attention']} attention, "
        f"{meta['config']['distribution']} output |",
        f"| data | {data.get('description', data['spec'])} |",
        f"| licence | {data.get('licence', 'see the data set')} |",
        f"| test bits/dim | **{test['bits_per_dim']:.4f}** over {test['images']:,} test images"
        f"{'' if test.get('full_split') else ' (spread over the split)'}, weights as shipped "
        f"({meta['weights_dtype']}; {test['bits_per_dim_float32']:.4f} before rounding) |",
        f"| training | {meta['steps']:,} steps, {meta['train_minutes']:.1f} minutes on {meta['hardware']}{stages} |",
        *left,
        *others,
        "",
    ]
    if "superres" in test:
        lines += ["Super-resolution report on held-out images (`image-transformer eval --samples`):", "",
                  "```json", json.dumps(test["superres"], indent=2), "```", ""]
    lines += [f"![samples]({GRID_NAME})", "", "## Use", "", "```bash", use, "```", "", "```python",
              f"from image_transformer import {kind}", f"model = {kind}.from_pretrained({name!r})", "```", "",
              "## How it was made", "", "```bash", *meta["command"], "```", "",
              f"The test slice in `{SLICE_NAME}` (test images {meta['slice']['indices']}) gives "
              f"{meta['slice']['bits_per_dim']:.4f} bits/dim with these weights; the test suite checks it.", ""]
    return "\n".join(lines)


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
    run = Path(run)
    run_info, trained = _read_json(run / "run.json"), _read_json(run / "eval.json")
    if run_info is None or trained is None:
        raise ValueError(f"{run}: needs run.json and eval.json: a finished training run")
    record = _read_json(run / "eval-test.json") or trained  # `image-transformer eval RUN` on the test split
    stages, others = _stages(run, run_info, trained), _other_evaluations(run)
    model = load_model(run / "model" if is_pretrained_dir(run / "model") else run)  # the EMA when there is one
    spec = data or run_info.get("data")
    image_size = run_info.get("image_size")
    test = load_split(spec, "test", tuple(image_size) if image_size else None)
    x, labels = test.tensors()
    idx = spread(len(x), test_images)
    condition = model.condition_for(x, labels)
    cond = condition[idx] if condition is not None else None
    full = len(idx) == len(x)

    if full and record.get("num_images") == len(x):
        fp32 = float(record["bits_per_dim"])
    else:
        fp32 = evaluate(model, x[idx], cond, progress=progress)["bits_per_dim"]
    shipped_bpd, dtype = fp32, torch.float32
    if half:
        rounded = copy.deepcopy(model)
        with torch.no_grad():
            for v in rounded.state_dict().values():
                if v.is_floating_point():
                    v.copy_(v.half().float())
        finite = all(torch.isfinite(v).all() for v in rounded.state_dict().values() if v.is_floating_point())
        half_bpd = evaluate(rounded, x[idx], cond, progress=progress)["bits_per_dim"] if finite else math.inf
        if abs(half_bpd - fp32) < tolerance:
            model, shipped_bpd, dtype = rounded, half_bpd, torch.float16
    if not math.isfinite(shipped_bpd):
        raise ValueError(f"{run}: test bits/dim is not finite; nothing shipped")

    zoo = Path(zoo) if zoo is not None else SHIPPED
    tmp = zoo / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_pretrained(model, tmp, dtype=None if dtype == torch.float32 else dtype)
    left_out = _copy_left_out(stages, tmp)

    chosen = spread(len(x), slice_images)
    test_slice = {"images": x[chosen].contiguous(), "indices": chosen.contiguous()}
    if labels is not None and model.config.num_classes:
        test_slice["labels"] = labels[chosen].contiguous()
    data = safetensors.torch.save(test_slice, metadata={"format": "pt", "split": "test"})
    atomic_write(tmp / SLICE_NAME, lambda f: f.write(data))
    slice_bpd = slice_bits_per_dim(model, test_slice)

    if isinstance(model, SuperResolutionTransformer):
        inputs = model.condition_for(x[chosen], None)
        superres_report(model, x[chosen], inputs, None, tmp, len(chosen), seed)
        (tmp / "superres.png").rename(tmp / GRID_NAME)
        (tmp / "superres.json").unlink(missing_ok=True)
        sample_command = f"image-transformer upscale {name} --data {spec} --index ..."
    else:
        sample_labels_, nrow = sample_labels(model, grid_images, None)
        n = len(sample_labels_) if sample_labels_ is not None else grid_images
        samples = model.sample(n, labels=sample_labels_, generator=torch.Generator().manual_seed(seed),
                               progress=progress)
        save_grid(samples, tmp / GRID_NAME, nrow=nrow, scale=2)
        sample_command = f"image-transformer sample {name} -n {n} --seed {seed} -o {GRID_NAME}"

    kind = type(model).__name__
    test_meta: dict[str, Any] = {
        "split": "test", "source": test.source, "images": int(len(idx)), "full_split": full,
        "bits_per_dim": round(shipped_bpd, 6), "bits_per_dim_float32": round(fp32, 6),
    }
    if "superres" in record:
        test_meta["superres"] = {k: v for k, v in record["superres"].items() if k != "grid"}
    meta: dict[str, Any] = {
        "library_name": "image-transformer",
        "license": "other",
        "pipeline_tag": "image-to-image" if kind == "SuperResolutionTransformer" else "unconditional-image-generation",
        "tags": ["image-transformer", "autoregressive", "pytorch"],
        "model_type": kind,
        "parameters": model.num_parameters(),
        "weights_dtype": "float16" if dtype == torch.float16 else "float32",
        "data": {"name": data_name or spec, "spec": spec, "description": description, "licence": licence,
                 "train_source": run_info.get("train_source"), "test_source": run_info.get("test_source")},
        "command": list(commands),
        "steps": sum(s["steps"] for s in stages),
        "train_minutes": round(sum(s["train_minutes"] for s in stages), 2),
        "hardware": hardware or _hardware(),
        "test": test_meta,
        "slice": {"file": SLICE_NAME, "split": "test", "indices": [int(i) for i in chosen],
                  "bits_per_dim": round(slice_bpd, 6)},
        "sample_grid": GRID_NAME,
        "sample_command": sample_command,
        "train": run_info.get("train"),
        "config": model.config.to_dict(),
    }
    if left_out:
        meta["left_out"] = left_out
    if len(stages) > 1:
        meta["stages"] = stages
    if others:
        meta["other_evaluations"] = others
    meta = _plain(meta)
    summary = (f"An Image Transformer trained with the `image-transformer` library on {data_name or spec}: "
               f"{description}.")
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    (tmp / CARD_NAME).write_text(f"---\n{header}---\n\n{_card_body(name, meta, summary)}", encoding="utf-8")
    final = zoo / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
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
