"""PixelCNN++ (the public PyTorch port, pclucas14/pixel-cnn-pp) trained here under a wall-clock budget, on our data.

    git clone https://github.com/pclucas14/pixel-cnn-pp /tmp/pixel-cnn-pp      # or any copy of its model files
    python tools/make_cifar_holdout.py ../shared/data/cifar10-lossless-subset/cifar-10-batches-py /tmp/cifar-holdout
    python benchmarks/peer_pixelcnn.py --peer /tmp/pixel-cnn-pp --data npz:/tmp/cifar-holdout --minutes 10
    python benchmarks/peer_pixelcnn.py --peer /tmp/pixel-cnn-pp --data mnist:../shared/data/mnist --minutes 10

The peer's code is imported from ``--peer`` and driven from here, never copied: its ``PixelCNN`` (model.py) and its
discretized logistic mixture loss (utils.py; the 1-channel one for grey images). What this script adds is what its
``main.py`` does with torchvision downloads and fixed settings: our data loaders (``--data``, the same splits our
benchmarks use), a clock, and the recipe: ``--recipe short`` (lr 1e-3 as in the original TensorFlow PixelCNN++, no
dropout, the learning rate decaying linearly to zero as the budget ends) or ``--recipe defaults`` (the repository's:
lr 2e-4 with its per-step decay 0.999995, Dropout2d 0.5 in every gated block). Batch 8 and ``--nr-resnet 5
--nr-filters 33`` (2.30M parameters for colour images, the size the comparisons quote) by default.

Prints one JSON line: parameters, steps, images/s, minutes and held-out bits/dim over the test split (``--eval-images``
spread over it, 0 = all), so that it can be run beside our own ``benchmarks/budget.py`` in the same sitting.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import types
from pathlib import Path

import torch

from image_transformer.files.data import load_split
from image_transformer.metrics import spread


def peer_modules(path: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The peer's model and loss functions, loaded from its checkout (utils, layers, model: each file imports the
    one before with ``from X import *``). Its utils.py keeps one Python 2 statement (``print e``, in a function this
    script never calls), which is read as ``print(e)`` so that the file compiles under Python 3."""
    modules = {}
    for name in ("utils", "layers", "model"):
        file = path / f"{name}.py"
        if not file.is_file():
            sys.exit(f"{path}: not a checkout of pclucas14/pixel-cnn-pp (no {name}.py)")
        source = re.sub(r"^(\s*)print (\w+)\s*$", r"\1print(\2)", file.read_text(), flags=re.M)
        module = types.ModuleType(name)
        module.__file__ = str(file)
        sys.modules[name] = module  # before running it: the next file's "from utils import *" finds it
        exec(compile(source, str(file), "exec"), module.__dict__)
        modules[name] = module
    return modules["model"], modules["utils"]


def to_peer(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1], as the peer's data transform makes them."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", type=Path, required=True, help="a checkout of pclucas14/pixel-cnn-pp")
    p.add_argument("--data", required=True, help="KIND:PATH as image-transformer train takes it")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--recipe", choices=["short", "defaults"], default="short")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--nr-resnet", type=int, default=5)
    p.add_argument("--nr-filters", type=int, default=33, help="33 with 5 blocks a stage: 2.30M parameters for RGB")
    p.add_argument("--nr-logistic-mix", type=int, default=10)
    p.add_argument("--eval-images", type=int, default=0, help="held-out images, spread over the test split; 0 = all")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: the network under CPU autocast, its output and the loss in fp32 (evaluation in fp32)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    peer_model, peer_utils = peer_modules(args.peer)
    if not torch.cuda.is_available():
        # the peer's losses put a zeros tensor on the GPU unconditionally (``.cuda()``); without one, in this process
        # only, that call leaves the tensor where it is
        torch.Tensor.cuda = lambda self, *args, **kwargs: self

    train, _ = load_split(args.data, "train").tensors()
    test, _ = load_split(args.data, "test").tensors()
    test = test[spread(len(test), args.eval_images)]
    channels = train.shape[-1]
    model = peer_model.PixelCNN(nr_resnet=args.nr_resnet, nr_filters=args.nr_filters,
                                nr_logistic_mix=args.nr_logistic_mix, input_channels=channels)
    if args.recipe == "short":  # no dropout: the peer's blocks hold Dropout2d(0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout2d):
                m.p = 0.0
    loss_fn = peer_utils.discretized_mix_logistic_loss_1d if channels == 1 else peer_utils.discretized_mix_logistic_loss
    lr = 1e-3 if args.recipe == "short" else 2e-4
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    dims = train[0].numel()
    budget = args.minutes * 60.0
    g = torch.Generator().manual_seed(args.seed)
    steps, start = 0, time.perf_counter()
    model.train()
    while (elapsed := time.perf_counter() - start) < budget:
        for group in opt.param_groups:  # linear to zero as the clock runs out, or the repository's per-step decay
            group["lr"] = lr * (1.0 - elapsed / budget) if args.recipe == "short" else lr * 0.999995**steps
        x = to_peer(train[torch.randint(0, len(train), (args.batch_size,), generator=g)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out = model(x)
        loss = loss_fn(x, out.float()) / (args.batch_size * dims)  # the peer's loss is summed nats
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    minutes = (time.perf_counter() - start) / 60.0
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(test), 64):
            x = to_peer(test[i : i + 64])
            model.init_padding = None  # the peer keeps a padding tensor sized by the first batch it saw
            total += float(loss_fn(x, model(x)))
    print(json.dumps({"model": "PixelCNN++ (pclucas14/pixel-cnn-pp)", "recipe": args.recipe, "data": args.data,
                      "precision": args.precision,
                      "parameters": sum(q.numel() for q in model.parameters()), "batch_size": args.batch_size,
                      "steps": steps, "minutes": round(minutes, 2),
                      "images_per_s": round(steps * args.batch_size / (minutes * 60.0), 2),
                      "test_images": len(test), "test_bits_per_dim": total / (len(test) * dims * math.log(2.0))}))


if __name__ == "__main__":
    main()
