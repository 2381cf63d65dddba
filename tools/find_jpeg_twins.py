"""Find the JPEG copy's versions of the lossless held-out CIFAR-10 images: the files to leave out of training.

    python tools/find_jpeg_twins.py ../shared/data/cifar10-lossless-subset/cifar-10-batches-py \\
        folder:../shared/data/cifar10-jpeg.tar.gz -o tools/data/cifar10-jpeg-heldout-twins.txt

The held-out images (tools/make_cifar_holdout.py's test split) are the last 1,000 of the lossless ``data_batch_1``
and the first 20 of ``test_batch``. ``data_batch_1`` is CIFAR-10's first 10,000 training images, so the JPEG
copy's ``train/`` folder holds a JPEG version of each of those 1,000: a model trained on the copy has seen them.
Each one's twin is the training file of the same class nearest to it in RMS pixel distance; the script refuses
to write the list unless the twins stand apart (every image's nearest file nearer than any image's second
nearest) and no file is the twin of two images. The list (``class/NNNN``, one per line, in the held-out
images' order) is what ``image-transformer train --leave-out`` reads. The 20 ``test_batch`` images are in the
copy's ``test/`` folder only; their nearest training files are printed as a check.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from image_transformer.files.data import ImageData, load_dataset

HELD_OUT_FROM = 3000  # data_batch_1's images from this one on are held out (tools/make_cifar_holdout.py --train)


def nearest_two(queries: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query image, the index of the nearest pool image and the RMS distances (0-255) to the nearest
    and the second nearest."""
    q = torch.from_numpy(queries.reshape(len(queries), -1)).double()  # (M, D)
    p = torch.from_numpy(pool.reshape(len(pool), -1)).double()  # (N, D)
    d2 = (q * q).sum(1, keepdim=True) + (p * p).sum(1) - 2 * q @ p.T  # (M, N) squared distances
    rms = (d2.clamp_min(0) / q.shape[1]).sqrt()
    two = rms.topk(min(2, rms.shape[1]), dim=1, largest=False)
    second = two.values[:, 1] if two.values.shape[1] > 1 else torch.full((len(q),), float("inf"))
    return two.indices[:, 0].numpy(), two.values[:, 0].numpy(), second.numpy()


def find_twins(held_out: ImageData, copy: ImageData, classes: list[int] | None = None
               ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each held-out image's nearest file of the same class in ``copy`` (names without extension), with the
    RMS distances to it and to the second nearest. ``classes``: only held-out images of these classes."""
    assert held_out.labels is not None and copy.labels is not None and copy.names is not None
    chosen = np.arange(len(held_out)) if classes is None else np.flatnonzero(np.isin(held_out.labels, classes))
    names = [""] * len(chosen)
    first, second = np.zeros(len(chosen)), np.zeros(len(chosen))
    for c in np.unique(held_out.labels[chosen]):
        rows = np.flatnonzero(held_out.labels[chosen] == c)
        pool = np.flatnonzero(copy.labels == c)
        idx, d1, d2 = nearest_two(held_out.images[chosen[rows]], copy.images[pool])
        for r, i, a, b in zip(rows, idx, d1, d2):
            names[r] = copy.names[pool[i]].rsplit(".", 1)[0]
            first[r], second[r] = a, b
    return names, first, second


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lossless", help="the lossless subset's cifar-10-batches-py folder")
    p.add_argument("copy", help="the JPEG copy as a data spec (folder:PATH, a folder or its tarball)")
    p.add_argument("-o", "--out", type=Path, required=True, help="where to write the list")
    args = p.parse_args(argv)

    train = load_dataset(f"cifar10:{args.lossless}", "train")
    held_out = train.subset(slice(HELD_OUT_FROM, None))
    copy = load_dataset(args.copy, "train")
    names, d1, d2 = find_twins(held_out, copy)
    print(f"{len(names)} held-out images; nearest file of the same class in {copy.source}: RMS median "
          f"{statistics.median(d1):.2f}, max {d1.max():.2f}; second nearest: min {d2.min():.2f}; "
          f"margin (second - nearest): min {(d2 - d1).min():.2f}")
    problems = []
    if d1.max() >= d2.min():
        problems.append(f"{int((d1 >= d2.min()).sum())} images are as far from their nearest file as some image "
                        f"is from its second nearest ({d2.min():.2f})")
    if len(set(names)) != len(names):
        problems.append(f"{len(names) - len(set(names))} files are the nearest of two held-out images")

    test = load_dataset(f"cifar10:{args.lossless}", "test")
    _, t1, _ = nearest_two(test.images, copy.images)  # of any class
    print(f"the {len(test)} test_batch images: nearest training file at RMS min {t1.min():.2f} (not in train/)")
    if problems:
        print("not written: " + "; ".join(problems), file=sys.stderr)
        return 1
    header = (f"# Files of the CIFAR-10 JPEG copy's train/ folder that are JPEG versions of the lossless held-out "
              f"images\n# (the last 1,000 of data_batch_1, in that order), found by tools/find_jpeg_twins.py: "
              f"nearest of the same class,\n# RMS median {statistics.median(d1):.1f}/255, at most "
              f"{d1.max():.1f}; every other file at least {d2.min():.1f} away.\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "".join(f"{n}\n" for n in names))
    print(f"{args.out}: {len(names)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
