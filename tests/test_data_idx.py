"""MNIST / Fashion-MNIST idx files, gzipped or raw (image_transformer.files.data.idx): every format written by hand
in tmp_path, corrupt files, the real MNIST."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from helpers import SHARED_DATA, assert_names, mnist_dir, write_idx
from image_transformer.files import data as D
from image_transformer.files.data import DataError


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("code", [0x08, 0x0C, 0x0D])
def test_read_idx_roundtrip(tmp_path, gz, code):
    array = (np.arange(2 * 3 * 5).reshape(2, 3, 5) * 7 % 256).astype(np.float32 if code == 0x0D else np.int64)
    path = write_idx(tmp_path / "x.idx", array, gz, code)
    out = D.read_idx(path)
    assert out.shape == (2, 3, 5) and np.array_equal(out, array)
    assert out.dtype.isnative


@pytest.mark.parametrize("gz", [True, False])
def test_a_truncated_idx_file_is_refused_naming_it_and_both_sizes(tmp_path, gz):
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28) + bytes(1000)
    path = tmp_path / ("short-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError) as exc:
        D.read_idx(path)
    assert_names(exc, path.name, "7840", "1000")


def test_read_idx_cut_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "cut.gz", np.random.default_rng(1).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(DataError) as exc:
        D.read_idx(path)
    assert_names(exc, "cut.gz")


def test_read_idx_bad_magic_and_trailing_data(tmp_path):
    bad = tmp_path / "bad-magic.idx"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError) as exc:
        D.read_idx(bad)
    assert_names(exc, "bad-magic.idx", "magic")
    long = tmp_path / "long.idx"
    long.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes(5))
    with pytest.raises(DataError) as exc:
        D.read_idx(long)
    assert_names(exc, "long.idx")
    with pytest.raises(DataError) as exc:
        D.read_idx(tmp_path / "nothing.idx")
    assert_names(exc, "nothing.idx")


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist(tmp_path, gz):
    written = mnist_dir(tmp_path / "m", gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        d = D.load_mnist(tmp_path / "m", split)
        images, labels = written[prefix]
        assert d.images.shape == (len(images), 6, 4, 1) and d.images.dtype == np.uint8
        assert np.array_equal(d.images[..., 0], images)
        assert d.labels.dtype == np.int64 and np.array_equal(d.labels, labels)
        assert d.num_classes == 10 and d.class_names == [str(i) for i in range(10)]
        assert split in d.source


def test_load_mnist_count_mismatch_and_missing(tmp_path):
    mnist_dir(tmp_path / "m")
    write_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataError) as exc:
        D.load_mnist(tmp_path / "m", "test")
    assert_names(exc, "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
    (tmp_path / "m" / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as exc:
        D.load_mnist(tmp_path / "m", "train")
    assert_names(exc, "train-images-idx3-ubyte")
    with pytest.raises(DataError) as exc:  # labels file given where images are expected
        write_idx(tmp_path / "m" / "train-images-idx3-ubyte.gz", np.zeros(5, np.uint8))
        D.load_mnist(tmp_path / "m", "train")
    assert_names(exc, "train-images-idx3-ubyte.gz", "3-dimensional")


def test_real_mnist_test_split():
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("shared data not available")
    d = D.load_mnist(SHARED_DATA / "mnist", "test")
    assert len(d) == 10000 and d.image_shape == (28, 28, 1)
    assert d.labels.min() == 0 and d.labels.max() == 9 and d.images.max() == 255
