"""KIND:PATH specs, the shipped MNIST slice, a shipped model's test images and the cache of decoded splits
(image_transformer.files.data.specs)."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest

from helpers import SHARED_DATA, assert_names, mnist_dir, save_png
from image_transformer.files import data as D
from image_transformer.files.data import DataError, specs


def test_load_dataset_specs_and_errors(tmp_path):
    written = mnist_dir(tmp_path / "m")
    d = D.load_dataset(f"mnist:{tmp_path / 'm'}", "train")
    assert np.array_equal(d.images[..., 0], written["train"][0])
    f = D.load_dataset(f"fashion-mnist:{tmp_path / 'm'}", "test")
    assert f.class_names[0] == "T-shirt/top" and "Fashion-MNIST" in f.source
    with pytest.raises(DataError) as exc:
        D.load_dataset(f"mnist:{tmp_path / 'm'}", "train", image_size=(28, 28))
    assert_names(exc, "6x4", "28x28")
    with pytest.raises(DataError) as exc:
        D.load_dataset(f"imagenet:{tmp_path}", "train")
    assert_names(exc, "imagenet", "mnist", "fashion-mnist", "cifar10", "cifar100", "npz", "folder", "celeba")
    with pytest.raises(DataError) as exc:
        D.load_dataset("no-colon-here", "train")
    assert_names(exc, "no-colon-here")
    with pytest.raises(DataError) as exc:
        D.load_dataset(f"folder:{tmp_path / 'missing-dir'}", "train")
    assert_names(exc, "missing-dir")
    with pytest.raises(DataError) as exc:
        D.load_dataset(f"mnist:{tmp_path / 'm'}", "validation")
    assert_names(exc, "validation")


def test_load_dataset_folder_resize_and_cache(tmp_path, monkeypatch):
    save_png(tmp_path / "f" / "a" / "1.png", np.full((4, 4, 3), 9, np.uint8))
    save_png(tmp_path / "f" / "b" / "1.png", np.full((8, 8, 3), 7, np.uint8))
    specs._CACHE.clear()
    calls = []
    real = D.load_image_folder
    monkeypatch.setattr(specs, "load_image_folder", lambda *a, **k: calls.append(a) or real(*a, **k))
    spec = f"folder:{tmp_path / 'f'}"
    first = D.load_dataset(spec, "train", image_size=(2, 2))
    assert first.images.shape == (2, 2, 2, 3) and first.labels.tolist() == [0, 1]
    first.images[:] = 0  # callers get copies: the cache is not changed
    second = D.load_dataset(spec, "train", image_size=[2, 2])
    assert len(calls) == 1 and second.images[1, 0, 0, 0] == 7
    D.load_dataset(spec, "train", image_size=(4, 4))
    assert len(calls) == 2
    specs._CACHE.clear()


def test_the_folder_cache_is_bounded_and_sees_a_changed_archive(tmp_path, monkeypatch):
    specs._CACHE.clear()
    monkeypatch.setattr(specs, "CACHED_SPLITS", 2)
    save_png(tmp_path / "f" / "a" / "1.png", np.full((4, 4, 3), 9, np.uint8))
    archive = tmp_path / "f.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "f", arcname="f")
    spec = f"folder:{archive}"
    for size in ((1, 1), (2, 2), (4, 4)):
        D.load_dataset(spec, "train", image_size=size)
    assert len(specs._CACHE) == 2  # the least recently used split was dropped
    save_png(tmp_path / "f" / "a" / "1.png", np.full((4, 4, 3), 200, np.uint8))
    with tarfile.open(archive, "w") as tar:  # the same name, new contents
        tar.add(tmp_path / "f", arcname="f")
    os.utime(archive, ns=(1, 1))  # a different modification time, even on a coarse clock
    assert D.load_dataset(spec, "train", image_size=(4, 4)).images[0, 0, 0, 0] == 200
    specs._CACHE.clear()


def test_the_mnist_slice_is_the_first_6000_train_and_1000_test_mnist_images():
    train = D.load_dataset("mnist-slice", "train")
    test = D.load_dataset("mnist-slice", "test")
    assert len(train) == 6000 and len(test) == 1000 and train.image_shape == (28, 28, 1)
    assert train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the well-known first MNIST labels
    assert test.labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert set(np.unique(train.labels).tolist()) == set(range(10))
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("shared MNIST not available")
    for split, n, slice_data in (("train", 6000, train), ("test", 1000, test)):
        real = D.load_mnist(SHARED_DATA / "mnist", split)
        assert np.array_equal(real.images[:n], slice_data.images)
        assert np.array_equal(real.labels[:n], slice_data.labels)


def test_a_shipped_models_slice_is_a_data_spec():
    """slice:NAME: the test images shipped beside a trained model, as the test split; the real MNIST test images
    at the indices its card names."""
    test = D.load_dataset("slice:mnist", "test")
    assert len(test) == 8 and test.image_shape == (28, 28, 1) and "slice:mnist" in test.source
    assert len(D.load_dataset("slice:mnist", "train")) == 0
    with pytest.raises(DataError, match="the train split holds no images"):
        D.load_split("slice:mnist", "train")
    with pytest.raises(DataError, match=r"slice:nonesuch: 'nonesuch': not a shipped model.*mnist"):
        D.load_dataset("slice:nonesuch", "test")
    with pytest.raises(DataError, match="image size 32x32 was requested"):
        D.load_dataset("slice:mnist", "test", image_size=(32, 32))
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("shared MNIST not available")
    indices = [int(i) for i in test.source.split("test indices [")[1].split("]")[0].split(",")]
    real = D.load_mnist(SHARED_DATA / "mnist", "test")
    assert np.array_equal(real.images[indices], test.images)
