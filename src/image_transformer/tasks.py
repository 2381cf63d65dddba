"""What a user asks of a model: each task takes a model and tensors and returns tensors and plain records.

Sample, complete, upscale, compress and decompress (with what the coding cost), likelihood (bits/dim of a split,
the bits of each pixel), out-of-distribution scores of whole sets (:func:`score`) and the paper's
super-resolution report. The command line, the demo, ``tools/`` and
``benchmarks/`` call these rather than writing a task again; labels are resolved and checked here (the helpers
under "labels") and by the model (``check_labels``).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import codec, ood
from .files.data import load_split
from .files.image_files import read_image, save_grid
from .files.plots import heat_map, plot_roc, plot_score_histograms
from .files.pretrained import PretrainedModel
from .images import enlarge, repeat_image
from .metrics import bits_per_dim, consistency, detection, nearest_neighbour_ms_ssim, psnr, spread, ssim
from .nn.fill import fill
from .nn.model import ImageTransformer
from .nn.sampling import Sampling
from .nn.superres import SuperResolutionTransformer

TEMPERATURES = (0.8, 0.9, 1.0)  # the paper's super-resolution temperatures (table 6)
GREY = 128  # what the not-yet-known part of an image is shown as


# ----- bits/dim of a split ------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: PretrainedModel, images: Tensor, condition: Tensor | None = None, batch_size: int = 64,
             progress: bool = False, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """Mean bits/dim over ``images`` (uint8 (N, H, W, C)) given ``condition`` (one per image), in eval mode.
    ``shard`` (rank, world size) shares the work out over the processes of a torch.distributed group: each takes
    every size-th image and the sums are reduced (the trainer passes ``training.distributed.world()``)."""
    rank, size = shard
    device = next(model.parameters()).device
    mine = torch.arange(rank, len(images), size)  # this process's share
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of bits/dim, count)
    with model.evaluating():
        starts = range(0, len(mine), batch_size)
        for start in tqdm(starts, disable=not progress or rank != 0, desc="eval", leave=False):
            idx = mine[start : start + batch_size]
            x = images[idx].to(device)
            y = condition[idx].to(device) if condition is not None else None
            bpd = bits_per_dim(model.log_prob(x, y))
            total += torch.stack([bpd.double().sum(), torch.tensor(float(len(x)), device=device)])
    if size > 1:
        torch.distributed.all_reduce(total)
    return {"bits_per_dim": float(total[0] / total[1].clamp(min=1)), "num_images": int(total[1])}


# ----- labels and sampling ------------------------------------------------------------------------------------
def labels_for(model: PretrainedModel, count: int, given: int | Sequence[int] | None) -> Tensor | None:
    """The class labels of ``count`` images, (count,) long, from one label for all of them or one per image; None
    for a model without classes.

    One rule for every task: a class-conditional model needs labels, and a model without classes refuses any (a
    label it would ignore is a mistake to report, not to pass over). The model checks their range (``check_labels``).
    """
    num_classes = getattr(model.config, "num_classes", 0)
    given = [] if given is None else [int(g) for g in given] if isinstance(given, (list, tuple)) else [int(given)]
    if not num_classes:
        if given:
            raise ValueError("a class label was given but the model is unconditional")
        return None
    if not given:
        raise ValueError(f"the model is class-conditional ({num_classes} classes): pick a class (one label for all "
                         f"images, or one per image)")
    if len(given) not in (1, count):
        raise ValueError(f"give one class label or one per image ({count}), got {len(given)}")
    return torch.tensor(given * (count if len(given) == 1 else 1), dtype=torch.long)


def sample_labels(model: PretrainedModel, n: int, label: int | None) -> tuple[Tensor | None, int | None]:
    """The labels of a sample grid of ``n`` images and its images per row (None: any): all ``label``
    (:func:`labels_for`), or for a class-conditional model given none, one row per class (``n`` // classes each, at
    least one)."""
    num_classes = getattr(model.config, "num_classes", 0)
    if num_classes and label is None:
        per_class = max(1, n // num_classes)
        return torch.arange(num_classes).repeat_interleave(per_class), per_class
    return labels_for(model, n, label), None


@torch.no_grad()
def sample(model: ImageTransformer, num: int, label: int | None = None,
           options: Sampling | None = None) -> tuple[Tensor, int | None]:
    """The sample grid (of the command, a training run and a shipped model's card): ``num`` images (a
    class-conditional model: ``label``, or one row per class; see :func:`sample_labels`) drawn as ``options`` say,
    uint8 (N, H, W, C) on the CPU, and the grid's images per row (None: any)."""
    labels, nrow = sample_labels(model, num, label)
    n = len(labels) if labels is not None else num
    return model.sample(n, labels, options=options).cpu(), nrow


# ----- completion and super-resolution ------------------------------------------------------------------------
def blank_below(image: Tensor, rows: int) -> Tensor:
    """(H, W, C) with the rows from ``rows`` down in grey: what a completion is given."""
    blanked = image.clone()
    blanked[rows:] = GREY
    return blanked


@torch.no_grad()
def complete(model: ImageTransformer, image: Tensor, rows: int, num: int = 4, label: int | None = None,
             options: Sampling | None = None) -> Tensor:
    """Keep the top ``rows`` rows of ``image`` (uint8 (H, W, C)) and sample the rest ``num`` times (all of class
    ``label``, for a class-conditional model), drawn as ``options`` say: (num + 2, H, W, C), the input with its
    unknown part grey, the completions, the original."""
    model.known_prefix(rows)  # the allowed row counts, before any work
    labels = labels_for(model, num, label)
    completions = model.complete(repeat_image(image, num), rows, labels, options=options)
    return torch.cat([blank_below(image, rows)[None], completions.cpu(), image[None].cpu()])


def region(size: tuple[int, int], box: Sequence[int] | None = None, mask: str | Path | None = None) -> Tensor:
    """The pixels to fill, (H, W) bool: a rectangle ``box`` (top, left, height, width), or a mask image whose
    non-zero pixels are missing, of the model's image size."""
    h, w = size
    if mask is not None:
        return read_image(mask, (h, w, 1))[..., 0] > 0
    top, left, height, width = box
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(f"--box {top} {left} {height} {width} is not inside the {h}x{w} image")
    missing = torch.zeros(h, w, dtype=torch.bool)
    missing[top : top + height, left : left + width] = True
    return missing


@torch.no_grad()
def fill_region(model: ImageTransformer, image: Tensor, missing: Tensor, num: int = 4, label: int | None = None,
                particles: int = 16, options: Sampling | None = None) -> tuple[Tensor, Tensor]:
    """Fill the ``missing`` pixels ((H, W) bool) of ``image`` (uint8 (H, W, C)) ``num`` times with ``particles``
    particles each (:func:`~image_transformer.nn.fill.fill`): the row (num + 2, H, W, C) of the input with the
    region grey, the completions and the original, and each completion's log-probability of the known values
    after the region's first pixel in generation order (num,)."""
    completions, known = fill(model, repeat_image(image, num), missing, particles, labels_for(model, num, label),
                              options)
    shown = image.clone().cpu()
    shown[missing] = GREY
    return torch.cat([shown[None], completions.cpu(), image[None].cpu()]), known


@torch.no_grad()
def upscale(model: SuperResolutionTransformer, low: Tensor, num: int = 1, options: Sampling | None = None) -> Tensor:
    """``num`` high-resolution samples (num, H, W, C) for the low-resolution image ``low`` (h, w, C), drawn as
    ``options`` say (by default at the model's temperature, 0.9)."""
    return model.sample(repeat_image(low, num), options=options).cpu()


def upscale_row(model: SuperResolutionTransformer, low: Tensor, samples: Tensor,
                original: Tensor | None = None) -> Tensor:
    """A row to show: the input enlarged to the output size, the samples, and the original when there is one."""
    factor = tuple(int(f) for f in model.config.scale)
    row = [enlarge(low, factor)[None], samples]
    return torch.cat(row + ([original[None]] if original is not None else []))


# ----- compression --------------------------------------------------------------------------------------------
@dataclass
class Coded:
    """A compressed stream (or one decoded), its images and labels, the seconds it took, and the coder's own cost:
    -log2 p of every value under the coding tables, per image, which is the model's bits for these images."""

    stream: bytes
    images: Tensor
    labels: Tensor | None
    seconds: float
    bits: Tensor  # (N,) float64

    @property
    def dims(self) -> int:
        return self.images.numel()

    @property
    def model_bits_per_dim(self) -> float:
        return float(self.bits.sum()) / self.dims

    def file_bits_per_dim(self) -> float:
        return 8 * len(self.stream) / self.dims

    def report(self) -> str:
        """The file's size and bits/dim beside the model's own bits/dim for the same images."""
        shape = "x".join(map(str, self.images.shape[1:]))
        return (f"{len(self.stream):,} bytes for {len(self.images)} images of {shape}: "
                f"{self.file_bits_per_dim():.4f} bits/dim (the model's own: {self.model_bits_per_dim:.4f} bits/dim)")


def compress(model: ImageTransformer, images: Tensor, labels: Tensor | None = None, names: list[str] | None = None,
             batch_size: int = 64, progress: bool = False) -> Coded:
    """Code uint8 images (B, H, W, C) (and their labels) with the model's codec."""
    cost = codec.Cost.empty()
    start = time.monotonic()
    stream = codec.encode(model, images, labels, names=names, batch_size=batch_size, progress=progress, cost=cost)
    return Coded(stream, images.cpu(), labels, time.monotonic() - start, cost.per_image())


def decompress(stream: bytes, model: ImageTransformer, progress: bool = False) -> Coded:
    """Decode a stream of :func:`compress` with the model that wrote it."""
    cost = codec.Cost.empty()
    start = time.monotonic()
    images, labels = codec.decode(stream, model, progress=progress, cost=cost)
    return Coded(stream, images, labels, time.monotonic() - start, cost.per_image())


# ----- scores -------------------------------------------------------------------------------------------------
@torch.no_grad()
def likelihood(model: PretrainedModel, image: Tensor, labels: Tensor | None = None) -> tuple[float, Tensor]:
    """How well the model predicts ``image`` (uint8 (H, W, C)): its bits/dim, and the bits of each pixel (the sum
    over its channels of -log2 p of each sub-pixel given every earlier one), float (H, W). A super-resolution
    model is scored given the image's own area-downsampled version; a class-conditional one given ``labels`` (1,)."""
    bits, maps = ood.model_bits(model, image[None], labels, per_pixel=True)
    return float(bits[0]), maps[0]


# ----- out-of-distribution scores of whole sets -----------------------------------------------------------------
@dataclass
class ScoredSet:
    """One set's images and their :func:`ood.score_images` table."""

    name: str  # as the user named it: a data spec, "noise", "inverted:SPEC", ...
    source: str  # what the images are
    images: Tensor  # uint8 (N, H, W, C)
    table: dict[str, Tensor]  # column -> float64 (N,)


@dataclass
class ScoreReport:
    """The in-distribution set and the others, scored; how well each score tells each other set apart; and the
    typicality test's verdicts for batches."""

    inside: ScoredSet
    outside: list[ScoredSet]
    typicality: ood.TypicalityTest | None = None
    flagged: dict[str, float] = field(default_factory=dict)  # set name -> share of batches called atypical

    @property
    def scores(self) -> list[str]:
        return ood.score_columns(self.inside.table)

    def separation(self) -> dict[str, dict[str, dict[str, float]]]:
        """set name -> score -> AUROC, AUPR and FPR at 95% TPR (the other set as the one to find)."""
        return {s.name: {c: detection(self.inside.table[c], s.table[c]) for c in self.scores} for s in self.outside}

    def rows(self) -> list[dict[str, Any]]:
        """One record per image: set, role (in/out), index in its set, then every column."""
        out = []
        for role, sets in (("in", [self.inside]), ("out", self.outside)):
            for s in sets:
                names = list(s.table)
                values = torch.stack([s.table[n] for n in names], 1).tolist() if names else []
                for i, row in enumerate(values):
                    out.append({"set": s.name, "role": role, "index": i, **dict(zip(names, row))})
        return out

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        rows = self.rows()
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["set", "role", "index", *self.inside.table])
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
        return path

    def summary(self) -> dict[str, Any]:
        """Everything but the per-image rows, as plain records (for JSON)."""
        means = {s.name: {c: float(v.mean()) for c, v in s.table.items()} for s in [self.inside, *self.outside]}
        result: dict[str, Any] = {"in": self.inside.name, "sources": {s.name: s.source for s in
                                                                       [self.inside, *self.outside]},
                                  "images": {s.name: len(s.images) for s in [self.inside, *self.outside]},
                                  "means": means, "separation": self.separation()}
        if self.typicality is not None:
            t = self.typicality
            result["typicality"] = {"batch_size": t.batch_size, "alpha": t.alpha, "entropy": t.entropy,
                                    "epsilon": t.epsilon, "flagged": self.flagged}
        return result

    def format(self) -> str:
        """The tables the command prints."""
        lines = [f"in-distribution: {self.inside.name} ({len(self.inside.images)} images)"]
        width = max(len(c) for c in self.scores)
        separation = self.separation()
        for s in self.outside:
            lines.append(f"\nvs {s.name} ({len(s.images)} images): "
                         f"mean bits/dim {float(s.table['bits_per_dim'].mean()):.3f}"
                         f" against {float(self.inside.table['bits_per_dim'].mean()):.3f}")
            lines.append(f"  {'score':{width}s}  AUROC   AUPR  FPR@95%TPR")
            for c, d in separation[s.name].items():
                lines.append(f"  {c:{width}s}  {d['auroc']:.3f}  {d['aupr']:.3f}  {d['fpr95']:.3f}")
        if self.typicality is not None:
            t = self.typicality
            lines.append(f"\ntypicality test, batches of {t.batch_size} (alpha {t.alpha:g}; entropy {t.entropy:.3f} "
                         f"bits/dim, epsilon {t.epsilon:.4f}): batches called atypical")
            for name, share in self.flagged.items():
                lines.append(f"  {name}: {share:.3f}")
        return "\n".join(lines)

    def plot(self, prefix: str | Path) -> list[Path]:
        """``PREFIX-roc.png`` (one panel per other set, a curve per score) and ``PREFIX-hist.png`` (one panel per
        score, a histogram per set)."""
        prefix = Path(prefix)
        curves = {s.name: {c: (self.inside.table[c], s.table[c]) for c in self.scores} for s in self.outside}
        sets = {s.name: s.table for s in [self.inside, *self.outside]}
        return [plot_roc(curves, prefix.with_name(prefix.name + "-roc.png")),
                plot_score_histograms(sets, self.scores, prefix.with_name(prefix.name + "-hist.png"))]


def load_score_set(spec: str, shape: Sequence[int], split: str = "test", limit: int = 0,
                   seed: int = 0) -> tuple[Tensor, Tensor | None, str]:
    """The images (uint8 (N, H, W, C) of ``shape``), labels and description of a set to score: a data spec (its
    ``split``, resized to ``shape`` where the kind allows), ``noise`` or ``constant`` (``limit`` images, 1,000 if
    0), or ``TRANSFORM:SPEC`` (``inverted``, ``rotated``, ``flipped``) of a data spec. ``limit`` > 0: that many
    images spread evenly over the split."""
    shape = tuple(int(s) for s in shape)
    kind, _, rest = spec.partition(":")
    if spec in ood.SYNTHETIC:
        return ood.synthetic(spec, limit or 1000, shape, seed), None, ood.SYNTHETIC[spec]
    if kind in ood.TRANSFORMS and rest:
        images, labels, source = load_score_set(rest, shape, split, limit, seed)
        return ood.transform(images, kind), labels, f"{source}, {ood.TRANSFORMS[kind]}"
    data = load_split(spec, split, tuple(shape[:2]))
    images, labels = data.tensors()
    if tuple(images.shape[1:]) != shape:
        raise ValueError(f"{data.source}: images are {'x'.join(map(str, images.shape[1:]))}, the model's are "
                         f"{'x'.join(map(str, shape))}")
    idx = spread(len(images), limit)
    return images[idx], labels[idx] if labels is not None else None, data.source


def score(model: PretrainedModel, inside: str, outside: Sequence[str], split: str = "test", limit: int = 0,
          codecs: Sequence[str] | None = None, background: PretrainedModel | None = None,
          batch_test: int = 0, alpha: float = 0.01, batch_size: int = 64, use_labels: bool = False,
          seed: int = 0, progress: bool = False, strict: bool = True, precision: str = "fp32") -> ScoreReport:
    """Score the ``split`` of the data spec ``inside`` (the model's own distribution) and each set of
    ``outside`` (see :func:`load_score_set`), every image by every score of :func:`ood.score_images`.

    ``batch_test`` > 0 fits the typicality test for batches of that many images on one half of the inside
    scores (every other image) and reports the share of batches it calls atypical in the other half and in each
    outside set. ``use_labels``: a class-conditional model scores inside images given their labels (outside
    images, which have none, are scored by p(x) over the classes); by default every set is scored alike, by p(x).
    ``precision`` "bf16": the network under bf16 autocast (:func:`ood.model_bits`).
    ``strict`` False leaves the typicality test out, rather than refusing, when too few inside images fit it.
    """
    shape = tuple(model.image_shape)
    loaded = {spec: load_score_set(spec, shape, split, limit, seed) for spec in [inside, *outside]}  # all, first

    def scored(spec: str) -> ScoredSet:
        images, labels, source = loaded[spec]
        table = ood.score_images(model, images, labels if use_labels and spec == inside else None, codecs,
                                 background, batch_size, progress, precision)
        return ScoredSet(spec, source, images, table)

    report = ScoreReport(scored(inside), [scored(spec) for spec in outside])
    if batch_test:
        bits = report.inside.table["bits_per_dim"]
        if len(bits) < 4 * batch_test and not strict:
            return report
        if len(bits) < 4 * batch_test:
            raise ValueError(f"the typicality test for batches of {batch_test} needs at least {4 * batch_test} "
                             f"in-distribution images (half to fit it, half to check it), got {len(bits)}")
        report.typicality = ood.TypicalityTest.fit(bits[0::2], batch_test, alpha, seed=seed)
        report.flagged = {f"{inside} (held-out half)": report.typicality.flagged(bits[1::2]),
                          **{s.name: report.typicality.flagged(s.table["bits_per_dim"]) for s in report.outside
                             if len(s.images) >= batch_test}}
    return report


def heat_maps(model: PretrainedModel, images: Tensor, names: Sequence[str]) -> list[Tensor]:
    """The bits of each pixel of each image drawn as a heat map (uint8 RGB), titled with its name and bits/dim:
    the picture the demo's Likelihood tab shows."""
    bits, maps = ood.model_bits(model, images, per_pixel=True)
    return [torch.from_numpy(heat_map(m, "bits (-log2 p, summed over the pixel's channels)",
                                      title=f"{name}: {float(b):.3f} bits/dim"))
            for name, b, m in zip(names, bits, maps)]


def heat_map_targets(specs: Sequence[str], sets: Sequence[str]) -> list[tuple[str, int]]:
    """``SET@INDEX`` texts (e.g. ``noise@0``) as (set, index) pairs, each set one of the scored ``sets``."""
    found = []
    for spec in specs:
        name, _, index = spec.rpartition("@")
        if name not in sets or not index.isdigit():
            raise ValueError(f"--heat-maps {spec!r}: expected SET@INDEX with SET one of the scored sets "
                             f"({', '.join(sets)}) and INDEX an image's number in it")
        found.append((name, int(index)))
    return found


# ----- the paper's super-resolution evaluation ----------------------------------------------------------
def input_gain(model: SuperResolutionTransformer, images: Tensor, inputs: Tensor, bits: float | None = None,
               batch_size: int = 64) -> dict[str, float]:
    """What the input is worth: bits/dim of ``images`` given another image's input (``inputs`` shifted by one),
    and how much more that is than given their own (``bits``, computed when not given). A model that ignores its
    input gains nothing."""
    if len(images) < 2:
        raise ValueError("the input's worth needs at least 2 images, to give each another one's input")
    own = bits if bits is not None else evaluate(model, images, inputs, batch_size)["bits_per_dim"]
    other = evaluate(model, images, inputs.roll(1, 0), batch_size)["bits_per_dim"]
    return {"shuffled_input_bits_per_dim": other, "input_gain": other - own}


def superres_report(model: SuperResolutionTransformer, images: Tensor, inputs: Tensor,
                    train_images: Tensor | None, out: Path, num: int, seed: int,
                    temperatures: Sequence[float] = TEMPERATURES, progress: bool = False) -> dict[str, Any]:
    """Samples for ``num`` held-out inputs (spread over the split) at each temperature; the paper's metrics.

    Writes ``superres.png`` (rows: input enlarged, a sample per temperature, original; as the paper's
    table 6) and ``superres.json``. Consistency, in 0..255 intensity units: ``consistency_l2_bicubic`` is the
    paper's, the L2 distance between the low-resolution input and the bicubic-downsampled sample;
    ``consistency_area_rmse`` is ours, the RMS difference to the area-downsampled sample (the downsampling that
    made the inputs); PSNR (dB) and SSIM compare each sample with
    its original; the nearest-neighbour check finds, for each sample, the training image whose
    downsampled version is closest to the sample's downsampled version and reports their MS-SSIM.
    """
    idx = spread(len(images), num)
    originals, lows = images[idx], inputs[idx]
    report: dict[str, Any] = {"num_samples": len(idx), "temperatures": {}}
    columns = [enlarge(lows, tuple(int(f) for f in model.config.scale))]  # inputs enlarged for display
    for t in temperatures:
        options = Sampling(temperature=t, generator=torch.Generator().manual_seed(seed), progress=progress)
        samples = model.sample(lows, options=options).cpu()
        agreement = consistency(samples, lows)
        entry = {
            # the paper's consistency, and ours beside it (see metrics.consistency)
            "consistency_l2_bicubic": float(agreement["l2_bicubic"].mean()),
            "consistency_area_rmse": float(agreement["rmse"].mean()),
            "psnr_db": float(psnr(samples, originals).mean()),
            "ssim": float(ssim(samples, originals).mean()),
        }
        if train_images is not None:
            _, nn_ms_ssim = nearest_neighbour_ms_ssim(samples, train_images, model.config.input_size)
            entry["nearest_train_ms_ssim"] = float(nn_ms_ssim.mean())
        report["temperatures"][str(t)] = entry
        columns.append(samples)
    columns.append(originals)
    grid = torch.stack(columns, 1).flatten(0, 1)  # row per input: input, samples..., original
    report["grid"] = str(save_grid(grid, out / "superres.png", nrow=len(columns), scale=3))
    (out / "superres.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_superres_report(report: dict[str, Any]) -> str:
    lines = [f"super-resolution on {report['num_samples']} held-out images (grid: {report['grid']}):"]
    for t, e in report["temperatures"].items():
        nn_text = f", nearest-train MS-SSIM {e['nearest_train_ms_ssim']:.3f}" if "nearest_train_ms_ssim" in e else ""
        lines.append(f"  T={t}: consistency (paper's: L2 to the bicubic downsampling) "
                     f"{e['consistency_l2_bicubic']:.1f}, "
                     f"(ours: area RMSE) {e['consistency_area_rmse']:.2f}/255, PSNR {e['psnr_db']:.2f} dB, "
                     f"SSIM {e['ssim']:.3f}{nn_text}")
    return "\n".join(lines)
