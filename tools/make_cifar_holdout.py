"""Split the lossless CIFAR-10 subset for held-out evaluation: an npz folder with train.npz and test.npz.

    python tools/make_cifar_holdout.py ../shared/data/cifar10-lossless-subset/cifar-10-batches-py /tmp/cifar-holdout

train: the first 3,000 images of ``data_batch_1``; test: its last 1,000 plus the 20 images of ``test_batch``
(the split used by the budget and codec benchmarks: ``image_transformer.files.data.cifar_holdout``). Use it as
``--data npz:/tmp/cifar-holdout``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from image_transformer.files.data import HOLDOUT_TRAIN, cifar_holdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="cifar-10-batches-py folder of the lossless subset")
    p.add_argument("out", type=Path, help="folder to write train.npz and test.npz into")
    p.add_argument("--train", type=int, default=HOLDOUT_TRAIN, help="images of data_batch_1 used for training")
    args = p.parse_args()
    train, held = cifar_holdout(args.source, args.train)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "train.npz", data=train.images, labels=train.labels)
    np.savez(args.out / "test.npz", data=held.images, labels=held.labels)
    print(f"{args.out}: train {len(train)} images, test {len(held)} images")


if __name__ == "__main__":
    main()
