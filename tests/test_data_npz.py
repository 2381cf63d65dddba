"""Downsampled-ImageNet style .npz files (image_transformer.files.data.npz): one file or a folder, both layouts,
corrupt and forged files."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from helpers import assert_names, cifar_rows, expected_hwc, rgb
from image_transformer.files import data as D
from image_transformer.files.data import DataError


def test_load_npz_flat_rows_and_one_based_labels(tmp_path):
    path = tmp_path / "imagenet32.npz"
    np.savez(path, data=cifar_rows(3, 5), labels=np.array([1, 1000, 7]), mean=np.zeros(3072))
    for split in ("train", "test"):
        d = D.load_npz(path, split)
        assert np.array_equal(d.images, expected_hwc(3, 5))
        assert d.labels.tolist() == [0, 999, 6] and d.num_classes == 1000


def test_load_npz_hwc_layout_zero_based_and_unlabelled(tmp_path):
    images = rgb(4, 5, 1)[None].repeat(3, 0)
    images[1] += 1
    np.savez_compressed(tmp_path / "a.npz", data=images, labels=np.array([0, 2, 1]))
    d = D.load_npz(tmp_path / "a.npz", "train")
    assert np.array_equal(d.images, images) and d.labels.tolist() == [0, 2, 1] and d.num_classes == 3
    gray = np.arange(2 * 16, dtype=np.uint8).reshape(2, 16)
    np.savez(tmp_path / "g.npz", data=gray)
    g = D.load_npz(tmp_path / "g.npz", "test")
    assert g.images.shape == (2, 4, 4, 1) and g.labels is None and g.num_classes is None
    assert np.array_equal(g.images[..., 0], gray.reshape(2, 4, 4))


def test_load_npz_directory(tmp_path):
    folder = tmp_path / "Imagenet8"
    folder.mkdir()
    offsets = {}
    for i in (1, 2, 10):  # natural order: 1, 2, 10 (not 1, 10, 2)
        rows = np.full((2, 3 * 8 * 8), i, np.uint8)
        rows[:, :64] = np.arange(64)  # red plane varies, green and blue planes hold i
        np.savez(folder / f"train_data_batch_{i}.npz", data=rows, labels=np.array([i, i + 1]))
        offsets[i] = rows
    np.savez(folder / "val_data.npz", data=np.full((1, 192), 77, np.uint8), labels=np.array([3]))
    (folder / "notes.txt").write_text("not data")
    train = D.load_npz(folder, "train")
    assert train.images.shape == (6, 8, 8, 3)
    assert train.images[:, 0, 0, 1].tolist() == [1, 1, 2, 2, 10, 10]
    assert train.images[0, 1, 2, 0] == 10 and train.images[0, 1, 2, 2] == 1
    assert train.labels.tolist() == [0, 1, 1, 2, 9, 10] and train.num_classes == 11  # 1-based over the folder
    val = D.load_dataset(f"npz:{folder}", "test")
    assert val.labels.tolist() == [2] and val.num_classes == 11 and int(val.images.max()) == 77
    with pytest.raises(DataError) as exc:
        D.load_dataset(f"npz:{folder}", "train", image_size=(16, 16))
    assert_names(exc, "8x8", "16x16")


def test_bad_npz_files_and_folders_are_refused_naming_the_file_and_the_problem(tmp_path):
    np.savez(tmp_path / "nodata.npz", images=np.zeros((2, 3072), np.uint8))
    with pytest.raises(DataError) as exc:
        D.load_npz(tmp_path / "nodata.npz", "train")
    assert_names(exc, "nodata.npz", "data", "images")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError) as exc:
        D.load_npz(tmp_path / "junk.npz", "train")
    assert_names(exc, "junk.npz")
    np.savez(tmp_path / "odd.npz", data=np.zeros((2, 3000), np.uint8))
    with pytest.raises(DataError) as exc:
        D.load_npz(tmp_path / "odd.npz", "train")
    assert_names(exc, "odd.npz", "3000")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError) as exc:
        D.load_npz(tmp_path / "d", "test")
    assert_names(exc, str(tmp_path / "d"), "val")


def test_an_npz_whose_header_claims_a_huge_array_is_refused_before_allocating(tmp_path):
    np.savez(tmp_path / "x.npz", data=np.zeros((2, 4, 4, 3), np.uint8))
    raw = zipfile.ZipFile(tmp_path / "x.npz").read("data.npy")
    forged = raw.replace(b"(2, 4, 4, 3)", b"(10000000000000, 4, 4, 3)")
    assert forged != raw
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as zf:
        zf.writestr("data.npy", forged)
    with pytest.raises(DataError, match="big.npz: its 'data' header claims an array of shape"):
        D.load_npz(tmp_path / "big.npz", "train")
