"""The one registry of names: presets (architectures) and their training recipes, the model classes files name, the
trained models shipped in the package, and a model's config built from them.

- :data:`PRESETS` / :func:`preset`: named architectures; :data:`RECIPES`: the training settings a preset starts from;
  :func:`config_for`: a preset fitted to a data set, with overrides (what ``train`` builds).
- :data:`MODEL_CLASSES`: ``model_type`` (what config files and checkpoints record) -> class: every
  :class:`~image_transformer.files.pretrained.PretrainedModel` subclass, registered as it is defined.
- The data a model trained on: :func:`recorded_data`. The shipped models' folders (names, cards, listing) are read
  by :mod:`image_transformer.files.folders`, below the model classes, so that loading a file needs none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .files import folders
from .files.checkpoint import run_info
from .files.data import ImageData
from .files.pretrained import MODEL_TYPES, PretrainedModel
from .nn.config import ImageTransformerConfig, SuperResolutionConfig
from .nn.model import ImageTransformer  # noqa: F401 - defining the classes registers them in MODEL_CLASSES
from .nn.superres import SuperResolutionTransformer  # noqa: F401

__all__ = ["PRESETS", "RECIPES", "MODEL_CLASSES", "preset", "is_superres_preset", "task_for", "config_for",
           "recorded_data"]

MODEL_CLASSES: dict[str, type[PretrainedModel]] = MODEL_TYPES

# Presets. "paper" marks values from Parmar et al. 2018; "t2t" marks tensor2tensor's published hparams
# (models/image_transformer.py and image_transformer_2d.py) where the paper is silent. Differences we
# cannot express are noted (t2t's separate attention key/value widths are not modelled: queries, keys and
# values here are hidden_size wide). Every paper-sized preset has a "-tiny" twin of the same kind that
# trains in minutes on 2 CPU cores. A preset holding ``input_size`` and ``encoder_layers`` is a
# super-resolution model (SuperResolutionConfig).
_CIFAR = dict(image_size=(32, 32), channels=3)
_TINY = dict(hidden_size=128, num_layers=4, num_heads=4, ffn_size=256, dropout=0.1)
# Table 4 of the paper: models of 8 layers with ffn 1024 (d 512, 4 heads as the CIFAR-10 model, dropout 0.3 as
# t2t's CIFAR-10 sets), categorical, whose query and memory blocks vary. The sizes below span the range the
# ablation varies; they are our grid, not a copy of the table's rows.
_TABLE4 = dict(**_CIFAR, hidden_size=512, num_layers=8, num_heads=4, ffn_size=1024, dropout=0.3)
_TABLE4_1D = ((64, 64), (128, 128), (256, 256), (256, 512))  # (query_length, memory_length) positions
_TABLE4_2D = (((4, 16), (4, 16)), ((8, 16), (8, 16)), ((8, 32), (8, 32)), ((16, 32), (16, 32)))  # query, flange
# Super-resolution 8x8 -> 32x32 (paper section 5.2: CelebA and CIFAR-10), encoder 2x shallower than the decoder:
# t2t img2img_transformer_b3 ("current best hparams for local 1d": 8 decoder / 4 encoder layers, blocks 128) and
# img2img_transformer2d_n103 ("best config for img2img": 12 decoder / 6 encoder layers, query 8x32, flange 8x64);
# t2t's base: d 512, 8 heads, ffn 2048, dropout 0.1.
_SR = dict(**_CIFAR, input_size=(8, 8), hidden_size=512, num_heads=8, ffn_size=2048, dropout=0.1)
_SR_1D = dict(**_SR, num_layers=8, encoder_layers=4, attention="local_1d", query_length=128, memory_length=128)
_SR_2D = dict(**_SR, num_layers=12, encoder_layers=6, attention="local_2d", query_shape=(8, 32),
              memory_flange=(8, 64))
PRESETS: dict[str, dict[str, Any]] = {
    # Architecture only (any image size): smoke tests and quick experiments.
    "tiny": dict(hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, dropout=0.0, query_length=64,
                 memory_length=64),
    # Small real-data models for MNIST 28x28x1, categorical, 1D local (the README's main job trains mnist-cpu, below).
    "mnist-tiny": dict(
        image_size=(28, 28), channels=1, hidden_size=128, num_layers=4, num_heads=4, ffn_size=256,
        dropout=0.1, attention="local_1d", query_length=112, memory_length=112,
    ),
    "mnist-small": dict(
        image_size=(28, 28), channels=1, hidden_size=256, num_layers=6, num_heads=4, ffn_size=512,
        dropout=0.1, attention="local_1d", query_length=196, memory_length=196,
    ),
    # CIFAR-10, categorical, 1D local: paper (12 layers, d 512, 4 heads, ffn 2048, query 256, memory 256);
    # dropout 0.3 from t2t imagetransformer_cifar10_base ("best config for 2.90 bits/dim").
    "cifar10-1d-cat": dict(**_CIFAR, hidden_size=512, num_layers=12, num_heads=4, ffn_size=2048, dropout=0.3,
                           attention="local_1d", query_length=256, memory_length=256),
    "cifar10-1d-cat-tiny": dict(**_CIFAR, **_TINY, attention="local_1d", query_length=256, memory_length=256),
    # CIFAR-10, discretized logistic mixture, 1D local over pixels: paper's mixture model has 14 layers; t2t
    # imagetransformer_cifar10_base_dmol for the rest (d 256, 8 heads, ffn 512, dropout 0.1, learned positions);
    # 10 mixtures (paper). NOT EXPRESSIBLE: the paper's mixture model attends in 512 dimensions (t2t's attention
    # key/value channels wider than hidden_size); attention here is hidden_size (256) wide.
    "cifar10-1d-dmol": dict(**_CIFAR, hidden_size=256, num_layers=14, num_heads=8, ffn_size=512, dropout=0.1,
                            attention="local_1d", query_length=256, memory_length=256, distribution="dmol",
                            num_mixtures=10, position_encoding="learned"),
    "cifar10-1d-dmol-tiny": dict(**_CIFAR, **_TINY, attention="local_1d", query_length=128, memory_length=128,
                                 distribution="dmol", num_mixtures=10),
    # CIFAR-10, categorical, 2D local: t2t imagetransformer2d_base_8l_8_32_big (8 layers, d 1024, 16 heads,
    # ffn 2048, dropout 0.3, query blocks 8x16 of the [32, 96] sub-pixel grid) with its sideways flange of 32, but
    # memory extended 8 rows up as section 3.3 has it (t2t's set has 0 rows up: a band of 8 rows would then see
    # the rows above only through one shifted-in sub-pixel).
    "cifar10-2d-cat": dict(**_CIFAR, hidden_size=1024, num_layers=8, num_heads=16, ffn_size=2048, dropout=0.3,
                           attention="local_2d", query_shape=(8, 16), memory_flange=(8, 32)),
    "cifar10-2d-cat-tiny": dict(**_CIFAR, **_TINY, attention="local_2d", query_shape=(4, 24), memory_flange=(4, 12)),
    # Class-conditional CIFAR-10, categorical 1D local: paper's class-conditional models have 8 layers
    # (2.99 bits/dim); t2t imagetransformer_base_10l_8h_big_cond_dr03_dan for the rest (d 512, 8 heads, ffn 2048,
    # blocks 256, dropout 0.3). num_classes makes it conditional: `train --preset` needs labelled data.
    "cifar10-cond-1d-cat": dict(**_CIFAR, hidden_size=512, num_layers=8, num_heads=8, ffn_size=2048,
                                dropout=0.3, attention="local_1d", query_length=256, memory_length=256,
                                num_classes=10),
    "cifar10-cond-1d-cat-tiny": dict(**_CIFAR, **_TINY, attention="local_1d", query_length=256,
                                     memory_length=256, num_classes=10),
    # ImageNet 32x32, categorical, 1D local: paper's CIFAR model with the 8 heads of the paper's ImageNet
    # models; dropout 0.1 from t2t imagetransformer_imagenet32_base ("3.77 bits/dim").
    "imagenet32-1d-cat": dict(**_CIFAR, hidden_size=512, num_layers=12, num_heads=8, ffn_size=2048, dropout=0.1,
                              attention="local_1d", query_length=256, memory_length=256),
    "imagenet32-1d-cat-tiny": dict(**_CIFAR, **_TINY, attention="local_1d", query_length=256, memory_length=256),
    # ImageNet 64x64, categorical, 1D local: t2t imagetransformer1d_base_8l_64by64 (8 layers, d 512, 8 heads,
    # ffn 2048, query blocks 512, dropout 0.1). Memory 512: t2t's causal 1D local attention ignores block_width
    # (768 in that set) and attends to the block before the query's, i.e. block_length positions.
    "imagenet64-1d-cat": dict(image_size=(64, 64), channels=3, hidden_size=512, num_layers=8, num_heads=8,
                              ffn_size=2048, dropout=0.1, attention="local_1d", query_length=512, memory_length=512),
    "imagenet64-1d-cat-tiny": dict(image_size=(64, 64), channels=3, **_TINY, attention="local_1d",
                                   query_length=256, memory_length=256),
    # ImageNet 64x64, categorical, 2D local: t2t imagetransformer2d_base_8l_8_64_64by64 (8 layers, d 512,
    # 8 heads, ffn 2048, dropout 0.1, query blocks 8x64, flange 4x32 of the [64, 192] grid). (t2t's
    # image_transformer2d_base itself has query 16x16 and flange 16x32.)
    "imagenet64-2d-cat": dict(image_size=(64, 64), channels=3, hidden_size=512, num_layers=8, num_heads=8,
                              ffn_size=2048, dropout=0.1, attention="local_2d", query_shape=(8, 64),
                              memory_flange=(4, 32)),
    "imagenet64-2d-cat-tiny": dict(image_size=(64, 64), channels=3, **_TINY, attention="local_2d",
                                   query_shape=(4, 24), memory_flange=(4, 12)),
    # Super-resolution 8x8 -> 32x32 (see _SR above), for CelebA faces and CIFAR-10.
    "celeba-superres-1d-cat": dict(_SR_1D),
    "celeba-superres-2d-cat": dict(_SR_2D),
    "cifar10-superres-1d-cat": dict(_SR_1D),
    # Table 4's ablation family (see _TABLE4 above).
    **{f"cifar10-table4-1d-q{q}-m{m}": dict(**_TABLE4, attention="local_1d", query_length=q, memory_length=m)
       for q, m in _TABLE4_1D},
    **{f"cifar10-table4-2d-q{q[0]}x{q[1]}-m{f[0]}x{f[1]}": dict(**_TABLE4, attention="local_2d", query_shape=q,
                                                                 memory_flange=f) for q, f in _TABLE4_2D},
    # Budget presets: the best model found for 10 minutes of training on 2 CPU cores by benchmarks/sweep.py
    # (docs/sweep/README.md): the -tiny architecture without dropout (a 10-minute run sees each training
    # image a few times at most) and, in RECIPES, a linear decay that ends when the 10 minutes do.
    # cifar10-cpu has 2 heads of 64 rather than the -tiny 4 of 32: the fused CPU attention kernel runs larger head
    # dimensions faster, so more steps fit the 10 minutes and the run ends lower (docs/results/index.md). Each block
    # starts with a causal 3x3 convolution (PixelSNAIL's idea): within 10 minutes it gained more than 5x5 ones, and a
    # masked-convolution stem alone (neighbourhood 5 or 7) changed little (docs/results/learning.md).
    "cifar10-cpu": dict(**_CIFAR, **{**_TINY, "dropout": 0.0, "num_heads": 2}, attention="local_1d", query_length=128,
                        memory_length=128, distribution="dmol", num_mixtures=10, pixel_input_relu=False,
                        conv_size=3),
    # A colour model for one GPU and minutes, not hours (tools/train_gpu_colour.sh): 8x cifar10-cpu's parameters
    # (4.8M, so that half-precision weights stay under 10 MB), pre-norm blocks for a higher learning rate without a
    # long warm-up, blocks of 8 pixel rows, a little dropout for the tens of passes over the data it makes, and
    # cifar10-cpu's causal 3x3 convolution at the start of each block (68k parameters beside each block's 0.53M).
    "cifar10-gpu": dict(**_CIFAR, hidden_size=256, num_layers=8, num_heads=4, ffn_size=512, dropout=0.1,
                        attention="local_1d", query_length=256, memory_length=256, distribution="dmol",
                        num_mixtures=10, norm="pre", conv_size=3),
    # mnist-cpu's blocks of 56 (two rows) rather than 112: more steps fit the budget and the run ends lower
    # (docs/results/index.md; the lead came from docs/experiments' Table 4). Its blocks start with causal 3x3
    # convolutions as cifar10-cpu's do, and it trains in bf16: together they beat the fp32 plain blocks within 10
    # minutes on a CPU with AVX-512 bf16 (docs/results/learning.md).
    "mnist-cpu": dict(image_size=(28, 28), channels=1, **{**_TINY, "dropout": 0.0}, attention="local_1d",
                      query_length=56, memory_length=56, conv_size=3),
}

# Training recipes: the TrainConfig settings a preset trains with unless the command line overrides them.
# Every paper preset has one: Adam with the paper's schedule (rsqrt), warm-up 4,000 steps and no gradient
# clipping (t2t image_transformer2d_base / imagetransformer_base: learning_rate_warmup_steps 4000,
# clip_grad_norm 0), and the peak learning rate tensor2tensor's schedule reaches for the family, as read from its
# hparams: about 3.5e-3 categorical, 1e-3 mixture, 7e-4 class-conditional, 5e-4 2D local. Super-resolution:
# t2t's img2img sets warm up for 12,000 steps (img2img_transformer_base); its peak lr is taken from the
# decoder's family. The "-tiny" presets, mnist-small and tiny have none: they train with TrainConfig's defaults.
_RECIPE = dict(warmup=4000, clip_grad=0.0, schedule="rsqrt")
_CATEGORICAL_1D = dict(_RECIPE, lr=3.5e-3)
_MIXTURE = dict(_RECIPE, lr=1e-3)
_CONDITIONAL = dict(_RECIPE, lr=7e-4)
_LOCAL_2D = dict(_RECIPE, lr=5e-4)
RECIPES: dict[str, dict[str, Any]] = {
    "cifar10-1d-cat": _CATEGORICAL_1D,
    "cifar10-1d-dmol": _MIXTURE,
    "cifar10-2d-cat": _LOCAL_2D,
    "cifar10-cond-1d-cat": _CONDITIONAL,
    "imagenet32-1d-cat": _CATEGORICAL_1D,
    "imagenet64-1d-cat": _CATEGORICAL_1D,
    "imagenet64-2d-cat": _LOCAL_2D,
    "celeba-superres-1d-cat": dict(_CATEGORICAL_1D, warmup=12000),
    "celeba-superres-2d-cat": dict(_LOCAL_2D, warmup=12000),
    "cifar10-superres-1d-cat": dict(_CATEGORICAL_1D, warmup=12000),
    **{name: dict(_LOCAL_2D if "-2d-" in name else _CATEGORICAL_1D) for name in PRESETS if "-table4-" in name},
    # Budget presets (benchmarks/sweep.py): 10 minutes of training, the learning rate decaying linearly to 0
    # as they run out; steps only bound the run where the clock does not. Batch, peak lr and warm-up are
    # the sweep's starting points, which no screened change beat.
    # Both choose their precision where they run ("auto": a few passes timed in each, inside the budget): on a CPU
    # with AVX-512 bf16, bf16 autocast fits more steps into the 10 minutes and ends lower than fp32; on one without
    # (AVX2 only) bf16 is emulated and many times slower, so fp32 (docs/results/learning.md). The likelihood is fp32.
    "cifar10-cpu": dict(batch_size=8, lr=2e-3, warmup=50, schedule="linear", max_minutes=10.0, steps=10**6,
                        precision="auto"),
    "mnist-cpu": dict(batch_size=16, lr=2e-3, warmup=100, schedule="linear", max_minutes=10.0, steps=10**6,
                      precision="auto"),
    # bf16 on a GPU, a linear decay that ends with its minutes (tools/train_gpu_colour.sh)
    "cifar10-gpu": dict(batch_size=64, lr=1e-3, warmup=200, schedule="linear", max_minutes=4.0, steps=10**6,
                        precision="bf16"),
}

SUPERRES_FIELDS = ("input_size", "encoder_layers")  # a preset holding these is a super-resolution model


def is_superres_preset(name: str) -> bool:
    return any(k in PRESETS.get(name, {}) for k in SUPERRES_FIELDS)


def _known(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def preset(name: str, **overrides: Any) -> ImageTransformerConfig:
    """Build a config from a named preset, with keyword overrides (a SuperResolutionConfig for a
    super-resolution preset)."""
    values = {**_known(name), **overrides}
    if is_superres_preset(name):
        return SuperResolutionConfig(**values)
    return ImageTransformerConfig(**values)


def task_for(name: str | None, task: str | None = None) -> str:
    """generate or superres: ``task``, or what the preset ``name`` is (a super-resolution preset implies superres)."""
    if name is not None and is_superres_preset(name):
        if task == "generate":
            raise ValueError(f"preset {name!r} is a super-resolution model: drop --task generate")
        return "superres"
    return task or "generate"


def config_for(name: str, data: ImageData, overrides: dict[str, Any] | None = None,
               encoder: dict[str, Any] | None = None, task: str | None = None,
               class_conditional: bool = False) -> ImageTransformerConfig:
    """Preset ``name`` + ``overrides`` (model fields) + the data's image shape; refuses a preset that does not fit
    the data. For super-resolution (:func:`task_for`), ``encoder`` overrides the encoder's fields.

    A class-conditional preset (``num_classes`` > 0) builds a class-conditional model by itself: it needs labelled
    data with that many classes; ``class_conditional`` makes any preset conditional on the data's labels.
    """
    chosen = _known(name)
    values = {k: v for k, v in chosen.items() if k not in SUPERRES_FIELDS}
    encoder_preset = {k: v for k, v in chosen.items() if k in SUPERRES_FIELDS}
    h, w, c = data.image_shape
    preset_size = tuple(values.get("image_size", (h, w)))
    if preset_size != (h, w) or values.get("channels", c) != c:
        raise ValueError(
            f"preset {name!r} is for {preset_size[0]}x{preset_size[1]}x{values.get('channels', c)} images but "
            f"the data holds {h}x{w}x{c}; pick another preset or pass --image-size to resize folder data"
        )
    values.update(image_size=(h, w), channels=c, **(overrides or {}))
    if values.get("num_classes"):
        if not data.num_classes:
            raise ValueError(f"preset {name!r} is class-conditional ({values['num_classes']} classes) but this "
                             f"data set has no labels; pick an unconditional preset")
        if data.num_classes != values["num_classes"]:
            raise ValueError(f"preset {name!r} is class-conditional with {values['num_classes']} classes but "
                             f"the data has {data.num_classes}; pick another preset or data set")
    if class_conditional:
        if not data.num_classes:
            raise ValueError("--class-conditional needs labelled data, but this data set has no labels")
        values["num_classes"] = data.num_classes
    if task_for(name, task) == "superres":
        values.pop("num_classes", None)
        encoder = {"encoder_layers": max(1, values.get("num_layers", ImageTransformerConfig.num_layers) // 2),
                   **encoder_preset, **(encoder or {})}
        return SuperResolutionConfig(**values, **encoder)
    return ImageTransformerConfig(**values)


def recorded_data(name_or_path: str | Path) -> tuple[str, list[int] | None]:
    """The data a training run recorded with the model (a run folder or checkpoint): its KIND:PATH spec and image
    size. Refused for a model with none recorded (a model folder, a shipped or Hub model: their data is not on this
    machine), naming the data a shipped model's card says it was trained on."""
    named = folders.is_named(name_or_path)
    info = run_info(Path(name_or_path)) if not named else {}
    if info.get("data") is None:
        raise ValueError(f"{name_or_path}: no data recorded with the model{_trained_on(str(name_or_path))}; pass "
                         f"--data KIND:PATH")
    return info["data"], info.get("image_size")


def _trained_on(name: str) -> str:
    """For a shipped model's name, ' (its card: trained on SPEC)'; else ''."""
    if not folders.is_named(name) or name not in folders.shipped_names():
        return ""
    spec = folders.read_card(folders.shipped_folder(name)).get("data", {}).get("spec")
    return f" (its card: trained on {spec})" if spec else ""
