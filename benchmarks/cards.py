"""Re-measure each shipped model's headline figure: test bits/dim on the whole test split its card names.

    python benchmarks/cards.py                          # every shipped model, whole test splits (about 5 minutes)
    python benchmarks/cards.py mnist --limit 500        # one model, 500 test images spread over the split

A model's card records its test bits/dim, measured when it was shipped; the test suite checks a small slice of
test images against the card, not the whole split. This evaluates the weights as shipped on the data the card
names and prints the card's figure, the measured one and their difference. Where the card's data spec points at a
scratch copy that is not there (the CIFAR-10 JPEG archive unpacked to /tmp), ``--data NAME=SPEC`` gives another
spec; the defaults read the archives in ``../shared/data`` directly. ``cifar10`` is tested on the lossless subset's
held-out split: write it first (``python tools/make_cifar_holdout.py
../shared/data/cifar10-lossless-subset/cifar-10-batches-py runs/zoo/cifar-holdout``, the path its card names).
"""

from __future__ import annotations

import argparse
import time

import torch

from image_transformer.files.data import load_split
from image_transformer.files.pretrained import load_model
from image_transformer.images import parse_size
from image_transformer.metrics import spread
from image_transformer.tasks import evaluate
from image_transformer.zoo import read_card, shipped_folder, shipped_names

# where the cards' data are on a machine with ../shared beside the checkout
DEFAULT_DATA = {"cifar10-jpeg": "folder:../shared/data/cifar10-jpeg.tar.gz"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="shipped models (default: all)")
    p.add_argument("--data", action="append", default=[], help="NAME=SPEC: read NAME's test split from SPEC")
    p.add_argument("--limit", type=int, default=0, help="test images spread over the split (0 = the whole split)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    specs = {**DEFAULT_DATA, **dict(item.split("=", 1) for item in args.data)}
    rows = []
    for name in args.names or shipped_names():
        card = read_card(shipped_folder(name))
        spec = specs.get(name, card["data"]["spec"])
        model = load_model(name)
        size = tuple(model.image_shape[:2]) if spec.startswith(("folder:", "celeba:")) else None
        data = load_split(spec, card["test"]["split"], parse_size(size) if size else None)
        images, labels = data.tensors()
        idx = spread(len(images), args.limit)
        condition = model.condition_for(images[idx], labels[idx] if labels is not None else None)
        start = time.monotonic()
        measured = evaluate(model, images[idx], condition, progress=True)
        rows.append((name, card["test"]["bits_per_dim"], card["test"]["images"], measured["bits_per_dim"],
                     measured["num_images"], time.monotonic() - start, spec))
        print(f"{name}: card {rows[-1][1]:.4f}, measured {rows[-1][3]:.4f} over {rows[-1][4]} images", flush=True)
    print(f"\n{'model':14} {'card bits/dim':>14} {'images':>7} {'measured':>9} {'images':>7} {'difference':>11} "
          f"{'seconds':>8}  data")
    for name, card_bpd, card_n, bpd, n, seconds, spec in rows:
        print(f"{name:14} {card_bpd:14.4f} {card_n:7d} {bpd:9.4f} {n:7d} {bpd - card_bpd:+11.4f} "
              f"{seconds:8.1f}  {spec}")


if __name__ == "__main__":
    main()
