"""Build the small MNIST slice shipped in the package (src/image_transformer/datasets/mnist-slice/).

Takes the first 6000 training and the first 1000 test images and labels, in the original order, from the
standard gzipped idx files and writes them back in the same format and under the same four names, plus a
README saying where they came from. Deterministic: the gzip header carries no time stamp or file name, so
running it twice gives identical bytes.

    python tools/make_mnist_slice.py [--src ../shared/data/mnist] [--out src/image_transformer/datasets/mnist-slice]

Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "mnist"
DEFAULT_OUT = REPO / "src" / "image_transformer" / "datasets" / "mnist-slice"

PARTS = {  # file stem -> number of records to keep
    "train-images-idx3-ubyte": 6000,
    "train-labels-idx1-ubyte": 6000,
    "t10k-images-idx3-ubyte": 1000,
    "t10k-labels-idx1-ubyte": 1000,
}

README = """\
# mnist-slice

A small slice of MNIST shipped with the package for demos, tests and the built-in data spec `mnist-slice`:

- `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`: the first 6000 training images and labels;
- `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`: the first 1000 test images and labels;

in the original MNIST order, in the standard gzipped idx format (28x28 uint8 images, uint8 labels 0..9).

Source: the MNIST database of handwritten digits by Yann LeCun, Corinna Cortes and Christopher J. C. Burges.
These files were cut from a rebuilt copy of the full data set taken from the public repository
rasbt/mnist-pngs (MIT license), checked bit-identical against a second copy.

Rebuild with `python tools/make_mnist_slice.py` (see that script for the options).
"""


def slice_idx(src: Path, dst: Path, keep: int) -> None:
    """Copy the header and the first ``keep`` records of the gzipped idx file ``src`` to ``dst`` (gzipped)."""
    raw = gzip.decompress(src.read_bytes())
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SystemExit(f"{src}: not a uint8 idx file (magic 0x{raw[:4].hex()})")
    ndim = raw[3]
    dims = list(struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim]))
    record = 1
    for d in dims[1:]:
        record *= d
    header_len = 4 + 4 * ndim
    if len(raw) != header_len + dims[0] * record:
        raise SystemExit(f"{src}: data length {len(raw) - header_len} does not match header {dims}")
    if dims[0] < keep:
        raise SystemExit(f"{src}: holds {dims[0]} records, fewer than the {keep} wanted")
    header = raw[:4] + struct.pack(f">{ndim}I", keep, *dims[1:])
    body = raw[header_len:header_len + keep * record]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as gz:
        gz.write(header + body)
    # read back and compare
    check = gzip.decompress(dst.read_bytes())
    assert check == header + body, dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder with the full MNIST .gz idx files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    for stem, keep in PARTS.items():
        src, dst = args.src / f"{stem}.gz", args.out / f"{stem}.gz"
        if not src.is_file():
            raise SystemExit(f"{src}: not found")
        slice_idx(src, dst, keep)
        print(f"{dst}: first {keep} records of {src} ({dst.stat().st_size} bytes)")
    (args.out / "README.md").write_text(README)
    return 0


if __name__ == "__main__":
    sys.exit(main())
