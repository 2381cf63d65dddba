"""CIFAR-10 / CIFAR-100 pickle batches (image_transformer.files.data.cifar): batches written by hand in tmp_path,
corrupt and unsafe pickles, the real CIFAR-10 subset."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from helpers import SHARED_DATA, assert_names, cifar_rows, expected_hwc
from image_transformer.files import data as D
from image_transformer.files.data import DataError


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    dump(folder / "data_batch_1", {b"batch_label": b"1", b"data": cifar_rows(3, 0), b"labels": [0, 9, 4]})
    dump(folder / "data_batch_2", {b"batch_label": b"2", b"data": cifar_rows(2, 100), b"labels": [1, 2]})
    dump(folder / "test_batch", {b"batch_label": b"t", b"data": cifar_rows(2, 50), b"labels": [7, 3]})
    dump(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return folder


def test_load_cifar10(tmp_path):
    folder = make_cifar10(tmp_path)
    for root in (tmp_path, folder):
        train = D.load_cifar(root, "train")
        assert train.images.shape == (5, 32, 32, 3)
        assert np.array_equal(train.images, np.concatenate([expected_hwc(3, 0), expected_hwc(2, 100)]))
        assert train.images[0, 0, 0].tolist() == [0, 80, 160] and train.images[1, 2, 1].tolist() == [8, 88, 168]
        assert train.labels.tolist() == [0, 9, 4, 1, 2] and train.num_classes == 10
        assert train.class_names == [f"c{i}" for i in range(10)]
    test = D.load_cifar(tmp_path, "test")
    assert np.array_equal(test.images, expected_hwc(2, 50)) and test.labels.tolist() == [7, 3]
    assert D.load_dataset(f"cifar10:{tmp_path}", "test").labels.tolist() == [7, 3]
    with pytest.raises(DataError) as exc:
        D.load_dataset(f"cifar100:{tmp_path}", "test")
    assert_names(exc, str(tmp_path), "cifar100")


def test_load_cifar100(tmp_path):
    folder = tmp_path / "cifar-100-python"
    dump(folder / "train", {b"data": cifar_rows(4, 7), b"fine_labels": [0, 99, 5, 42], b"coarse_labels": [0, 1, 2, 3]})
    dump(folder / "test", {b"data": cifar_rows(1, 9), b"fine_labels": [13], b"coarse_labels": [1]})
    dump(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                           b"coarse_label_names": [b"x"] * 20})
    d = D.load_dataset(f"cifar100:{tmp_path}", "train")
    assert np.array_equal(d.images, expected_hwc(4, 7))
    assert d.labels.tolist() == [0, 99, 5, 42] and d.num_classes == 100 and d.class_names[99] == "f99"
    assert D.load_cifar(folder, "test").labels.tolist() == [13]


def test_corrupt_wrongly_sized_and_code_running_cifar_batches_are_refused_by_name(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(garbage")
    with pytest.raises(DataError) as exc:
        D.load_cifar(folder, "test")
    assert_names(exc, "test_batch")
    dump(folder / "data_batch_2", {b"data": np.zeros((2, 3000), np.uint8), b"labels": [1, 2]})
    with pytest.raises(DataError) as exc:
        D.load_cifar(folder, "train")
    assert_names(exc, "data_batch_2", "3072")
    (folder / "data_batch_2").write_bytes(b"cos\nsystem\n(S'echo unsafe'\ntR.")  # a pickle that runs a command
    with pytest.raises(DataError) as exc:
        D.load_cifar(folder, "train")
    assert_names(exc, "data_batch_2", "os.system")
    with pytest.raises(DataError) as exc:
        D.load_cifar(tmp_path / "empty", "train")
    assert_names(exc, "empty")


def test_real_cifar10_subset():
    root = SHARED_DATA / "cifar10-lossless-subset"
    if not root.is_dir():
        pytest.skip("shared data not available")
    d = D.load_cifar(root, "train")
    assert len(d) == 4000 and d.image_shape == (32, 32, 3) and d.class_names[0] == "airplane"
    assert d.labels.min() == 0 and d.labels.max() == 9
    test = D.load_dataset(f"cifar10:{root / 'cifar-10-batches-py'}", "test")
    assert len(test) == 20 and test.labels[:4].tolist() == [3, 8, 8, 0]  # cat, ship, ship, airplane
