"""Super-resolution 8x8 -> 32x32 on CelebA at small scale: consistency and sample quality at temperature 0.8, 0.9, 1.0.

    python experiments/superres_temperature.py --minutes 30
    python experiments/superres_temperature.py --model celeba-sr      # score a trained model instead (no training)
    python experiments/superres_temperature.py --quick                # smoke run on the shipped MNIST slice
                                                                      # (7x7 -> 28x28)

Trains one encoder-decoder (decoder ``cifar10-1d-cat-tiny``, 2 encoder layers) on 9,000 aligned CelebA faces for the
budget, evaluates held-out bits/dim on the last 1,000, then samples ``--samples`` held-out inputs at each temperature
and scores them as ``image-transformer eval --samples`` does: consistency as the paper defines it (L2 distance between
the input and the bicubic-downsampled sample) and ours beside it (RMSE to the area-downsampled sample, the
downsampling that made the inputs), PSNR and SSIM to the original, MS-SSIM to the nearest training image. Writes
``superres_temperature.md``, ``superres_temperature.png`` (the metrics against temperature) and
``superres_temperature_samples.png`` (rows: input, samples at 0.8 / 0.9 / 1.0, original). With ``--model`` (a shipped
name such as ``celeba-sr``, a run folder or a model folder) it trains nothing and scores that model on the same
held-out faces; its steps and minutes come from its card or run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import common
import torch

from image_transformer.codec import fingerprint
from image_transformer.files import folders as zoo
from image_transformer.files.data import load_split
from image_transformer.files.pretrained import load_model
from image_transformer.images import area_downsample
from image_transformer.metrics import spread
from image_transformer.nn.config import SuperResolutionConfig
from image_transformer.nn.superres import SuperResolutionTransformer
from image_transformer.tasks import evaluate, superres_report
from image_transformer.training.config import TrainConfig
from image_transformer.training.trainer import Trainer
from image_transformer.zoo import PRESETS

EXPERIMENT = "superres_temperature"
TEMPERATURES = (0.8, 0.9, 1.0)
CELEBA = ("celeba:" + str(common.SHARED / "celeba-10k.tar.gz"), (32, 32), (8, 8))
QUICK = ("mnist-slice", None, (7, 7))


def trained_model(name_or_path: str) -> tuple[SuperResolutionTransformer, int | None, float | None]:
    """A trained super-resolution model, with its training steps and minutes where its card or run records them."""
    model = load_model(name_or_path)
    if "upscale" not in model.tasks:
        raise SystemExit(f"{name_or_path}: not a super-resolution model")
    folder = zoo.resolve(name_or_path)
    if (folder / zoo.CARD_NAME).is_file() and zoo.is_pretrained_dir(folder):
        try:
            meta = zoo.read_card(folder)
            return model, meta.get("steps"), meta.get("train_minutes")
        except zoo.ModelFolderError:
            pass
    run = folder if folder.is_dir() else folder.parent
    info = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else {}
    return model, info.get("step"), info.get("train_minutes")


def train_and_report(args, out) -> dict:
    spec, size, input_size = QUICK if args.quick and not args.model else CELEBA
    train, test = load_split(spec, "train", size), load_split(spec, "test", size)
    train_x, test_x = train.tensors()[0], test.tensors()[0]
    h, w, c = train.image_shape
    if args.model:
        model, steps, minutes = trained_model(args.model)
        model.eval()
        if tuple(model.config.input_size) != tuple(input_size) or tuple(model.config.image_size) != (h, w):
            raise SystemExit(f"{args.model}: a {model.config.input_size} -> {model.config.image_size} model; this "
                             f"experiment is {tuple(input_size)} -> {(h, w)}")
        return score(args, out, model, spec, train_x, test_x, input_size, steps, minutes, source=args.model)
    decoder = {**PRESETS["cifar10-1d-cat-tiny"], "image_size": (h, w), "channels": c, "dropout": 0.0}
    config = SuperResolutionConfig(**decoder, input_size=input_size, encoder_layers=2)
    cfg = TrainConfig(steps=10**9, max_minutes=args.minutes, checkpoint_every=10**9, eval_every=10**9,
                      eval_images=16 if args.quick else 256, batch_size=8, lr=2e-3, warmup=50, seed=0)
    torch.manual_seed(cfg.seed)
    model = SuperResolutionTransformer(config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, cfg, tmp, train_x, area_downsample(train_x, input_size), test_x,
                          area_downsample(test_x, input_size), progress=False, clock=common.budget.CLOCKS[args.clock])
        trainer.train()
        steps, minutes = trainer.step, trainer.train_minutes
    model.eval()
    return score(args, out, model, spec, train_x, test_x, input_size, steps, minutes, source=None)


def score(args, out, model, spec, train_x, test_x, input_size, steps, minutes, source) -> dict:
    """Held-out bits/dim and the temperature report of a trained model."""
    h, w = test_x.shape[1:3]
    idx = spread(len(test_x), 64 if args.quick else 0)
    bpd = evaluate(model, test_x[idx], area_downsample(test_x[idx], input_size), batch_size=32)
    folder = out / "RESULTS" / result_name(args)
    folder.mkdir(parents=True, exist_ok=True)
    report = superres_report(model, test_x, area_downsample(test_x, input_size), train_x, folder,
                             4 if args.quick else args.samples, seed=0, temperatures=TEMPERATURES)
    return {"data": spec.replace(str(common.ROOT / ".."), ".."), "image_size": [h, w], "input_size": list(input_size),
            "parameters": model.num_parameters(), "steps": steps, "minutes": minutes,
            "bits_per_dim": bpd["bits_per_dim"], "eval_images": bpd["num_images"], "report": report,
            "grid": str(folder / "superres.png"), "model": source, "weights": fingerprint(model)}


def command(args, r) -> str:
    if r.get("model"):
        return (f"python experiments/superres_temperature.py --model {r['model']} --samples {args.samples} "
                f"--threads {args.threads}")
    return f"{common.command('superres_temperature.py', args)} --samples {args.samples}"


def trained(args, r) -> str:
    """How the scored model was trained, in words."""
    steps = f"{r['steps']} steps" if r.get("steps") is not None else "steps unrecorded"
    minutes = f"{r['minutes']:.0f} minutes" if r.get("minutes") is not None else "minutes unrecorded"
    if r.get("model"):
        return f"the trained model `{r['model']}` ({steps}, {minutes} of training: see its card)"
    return f"{steps} in {r['minutes']:.1f} minutes of training ({args.clock} clock, {args.threads} threads)"


def write_report(args, out, r) -> None:
    shutil.copyfile(r["grid"], out / f"{EXPERIMENT}_samples.png")
    rows = []
    for t, e in r["report"]["temperatures"].items():
        rows.append([t, f"{e['consistency_l2_bicubic']:.1f}", f"{e['consistency_area_rmse']:.2f}",
                     f"{e['psnr_db']:.2f}", f"{e['ssim']:.3f}", f"{e.get('nearest_train_ms_ssim', float('nan')):.3f}"])
    preface = [
        "**The paper's claim** (Parmar et al. 2018, section 5.2, paraphrased): for 8x8 -> 32x32 CelebA "
        "super-resolution, "
        "sampling at a temperature below 1 (0.8, 0.9) gives samples that look more realistic to people than "
        "temperature 1.0; samples stay consistent with their input.",
        "",
        f"**Ours**: {r['data']}, {r['image_size'][0]}x{r['image_size'][1]} "
        f"from {r['input_size'][0]}x{r['input_size'][1]}, "
        f"{r['parameters'] / 1e6:.2f}M parameters, {trained(args, r)}; held-out {r['bits_per_dim']:.4f} bits/dim over "
        f"{r['eval_images']} images; {r['report']['num_samples']} held-out inputs sampled at each temperature. "
        "Consistency (paper's): L2 distance between the input and the bicubic-downsampled sample, 0..255 units; "
        "(ours): RMSE to the area-downsampled sample. No human study: PSNR, SSIM and the nearest-training-image "
        "MS-SSIM stand in for sample quality.",
        "", f"Command: `{command(args, r)}`",
    ]
    common.write_markdown(out / f"{EXPERIMENT}.md", "Super-resolution: the temperature's effect", preface,
                          ["temperature", "consistency L2, bicubic (paper's)", "consistency RMSE, area (ours)",
                           "PSNR (dB)", "SSIM", "MS-SSIM to nearest training image"], rows,
                          f"{EXPERIMENT}_samples.png")
    plt = common.pyplot()
    temps = [float(t) for t in r["report"]["temperatures"]]
    entries = list(r["report"]["temperatures"].values())
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, label in zip(axes, ("consistency_l2_bicubic", "psnr_db", "ssim"),
                              ("consistency: L2 to bicubic (paper's)", "PSNR (dB)", "SSIM")):
        ax.plot(temps, [e[key] for e in entries], "o-")
        ax.set_xlabel("temperature")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"super-resolution, {trained(args, r)}")
    fig.tight_layout()
    fig.savefig(out / f"{EXPERIMENT}.png", dpi=110)
    plt.close(fig)


def result_name(args) -> str:
    """What a result is stored as: the training budget, or the trained model scored."""
    if args.model:
        return f"{EXPERIMENT}-model-{Path(args.model).name}"
    return f"{EXPERIMENT}-{args.minutes:g}min"


def stored_result(path: Path, model: str | None = None) -> dict | None:
    """The result stored at ``path``, or None: none stored, or it scored other weights than ``model``'s now (a shipped
    name or a run folder can be trained again under the same name)."""
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    if model is not None and r.get("weights") != fingerprint(load_model(model)):
        print(f"{path.name}: scored other weights than {model}'s; scoring again")
        return None
    return r


def main() -> None:
    p = common.parser(__doc__, default_minutes=30)
    p.add_argument("--samples", type=int, default=32, help="held-out inputs sampled at each temperature")
    p.add_argument("--model", help="score this trained model (shipped name, run or model folder) instead of training")
    args = p.parse_args()
    out = common.setup(args)
    path = out / "RESULTS" / f"{result_name(args)}.json"
    r = stored_result(path, None if args.report else args.model)
    if r is None and args.report:
        raise SystemExit(f"{path}: nothing stored to report")
    if r is None:
        r = train_and_report(args, out)
        path.write_text(json.dumps(r, indent=1) + "\n")
    write_report(args, out, r)


if __name__ == "__main__":
    main()
