"""Split the lossless CIFAR-10 subset for held-out evaluation: an npz folder with train.npz and test.npz.

    python tools/make_cifar_holdout.py ../shared/data/cifar10-lossless-subset/cifar-10-batches-py /tmp/cifar-holdout

train: the first 3,000 images of ``data_batch_1``; test: its last 1,000 plus the 20 images of ``test_batch``
(the split used by the budget and codec benchmarks). Use it as ``--data npz:/tmp/cifar-holdout``.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    images = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return np.ascontiguousarray(images), np.asarray(d[b"labels"], np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="cifar-10-batches-py folder of the lossless subset")
    p.add_argument("out", type=Path, help="folder to write train.npz and test.npz into")
    p.add_argument("--train", type=int, default=3000, help="images of data_batch_1 used for training")
    args = p.parse_args()
    x, y = read_batch(args.source / "data_batch_1")
    tx, ty = read_batch(args.source / "test_batch")
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "train.npz", data=x[: args.train], labels=y[: args.train])
    np.savez(args.out / "test.npz", data=np.concatenate([x[args.train :], tx]), labels=np.concatenate([y[args.train :], ty]))
    print(f"{args.out}: train {args.train} images, test {len(x) - args.train + len(tx)} images")


if __name__ == "__main__":
    main()
