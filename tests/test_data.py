"""Tests for image_transformer.files.data: every format written by hand in tmp_path, corrupt inputs, the real data."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_transformer.files import data as D
from image_transformer.files.data import specs
from image_transformer.files.data import DataError, ImageData

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


# ----- helpers that write the formats independently of the code under test -----------------------------------
def write_idx(path: Path, array: np.ndarray, gz: bool = True, code: int = 0x08) -> Path:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + np.asarray(array, dtype=dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def mnist_dir(root: Path, n_train: int = 5, n_test: int = 3, gz: bool = True, size=(6, 4)) -> tuple:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
        out[prefix] = (images, labels)
    return out


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def assert_names(exc: pytest.ExceptionInfo, *names: str) -> None:
    for name in names:
        assert name in str(exc.value), (name, str(exc.value))


# ----- ImageData -------------------------------------------------------------------------------------------
def test_image_data_basics():
    images = np.arange(4 * 2 * 3 * 3, dtype=np.uint8).reshape(4, 2, 3, 3)
    d = ImageData(images, np.array([0, 1, 2, 1]), 3, ["a", "b", "c"], "test")
    assert len(d) == 4 and d.image_shape == (2, 3, 3)
    s = d.subset(slice(1, 3))
    assert len(s) == 2 and np.array_equal(s.images, images[1:3]) and s.labels.tolist() == [1, 2]
    assert s.labels.dtype == np.int64 and s.num_classes == 3 and s.class_names == ["a", "b", "c"]
    one = d.subset(-1)
    assert one.images.shape == (1, 2, 3, 3) and one.labels.tolist() == [1]
    assert d.subset(np.array([True, False, False, True])).labels.tolist() == [0, 1]
    assert ImageData(images[..., :2], None, None, None, "grey + alpha").image_shape == (2, 3, 2)
    with pytest.raises(DataError, match="1 to 4"):
        ImageData(np.zeros((1, 2, 2, 5), np.uint8), None, None, None, "five channels")


# ----- idx / MNIST -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("code", [0x08, 0x0C, 0x0D])
def test_read_idx_roundtrip(tmp_path, gz, code):
    array = (np.arange(2 * 3 * 5).reshape(2, 3, 5) * 7 % 256).astype(np.float32 if code == 0x0D else np.int64)
    path = write_idx(tmp_path / "x.idx", array, gz, code)
    out = D.read_idx(path)
    assert out.shape == (2, 3, 5) and np.array_equal(out, array)
    assert out.dtype.isnative


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_truncated(tmp_path, gz):
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


# ----- CIFAR -----------------------------------------------------------------------------------------------
def cifar_rows(n: int, offset: int) -> np.ndarray:
    """Rows in CHW planar order: channel c of image k at (y, x) holds (offset + k + 80*c + 3*y + x) % 256."""
    k, c, y, x = np.meshgrid(np.arange(n), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((offset + k + 80 * c + 3 * y + x) % 256).astype(np.uint8).reshape(n, 3072)


def expected_hwc(n: int, offset: int) -> np.ndarray:
    k, y, x, c = np.meshgrid(np.arange(n), np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    return ((offset + k + 80 * c + 3 * y + x) % 256).astype(np.uint8)


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


def test_cifar_corrupt(tmp_path):
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


# ----- npz -------------------------------------------------------------------------------------------------
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


def test_load_npz_errors(tmp_path):
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


# ----- image folders -----------------------------------------------------------------------------------------
def make_class_folder(root: Path) -> dict[str, np.ndarray]:
    arrays = {"cat/b.png": rgb(3, 4, 1), "cat/a.png": rgb(3, 4, 2), "ant/z.png": rgb(3, 4, 3),
              "dog/x.bmp": rgb(3, 4, 4), "dog/sub/y.webp": rgb(3, 4, 5)}
    for rel, array in arrays.items():
        if rel.endswith(".webp"):
            root.joinpath(rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / rel, lossless=True)
        else:
            save_png(root / rel, array)
    (root / "dog" / "readme.txt").write_text("ignored")
    (root / "cat" / "._b.png").write_bytes(b"macOS resource fork, ignored")
    return arrays


def test_image_folder_classes(tmp_path):
    arrays = make_class_folder(tmp_path / "f")
    d = D.load_image_folder(tmp_path / "f")
    order = ["ant/z.png", "cat/a.png", "cat/b.png", "dog/sub/y.webp", "dog/x.bmp"]
    assert d.class_names == ["ant", "cat", "dog"] and d.num_classes == 3
    assert d.labels.tolist() == [0, 1, 1, 2, 2]
    assert np.array_equal(d.images, np.stack([arrays[k] for k in order]))


def test_image_folder_flat_grayscale_and_mixed(tmp_path):
    g1 = np.arange(12, dtype=np.uint8).reshape(3, 4)
    g2 = 255 - g1
    save_png(tmp_path / "flat" / "2.png", g2)
    save_png(tmp_path / "flat" / "1.png", g1)
    d = D.load_image_folder(tmp_path / "flat", split="train")
    assert d.labels is None and d.num_classes is None and d.class_names is None
    assert d.images.shape == (2, 3, 4, 1) and np.array_equal(d.images[..., 0], np.stack([g1, g2]))
    color = rgb(3, 4, 9)
    save_png(tmp_path / "flat" / "3.jpeg", color)  # one colour image: everything becomes RGB
    Image.fromarray(color).save(tmp_path / "flat" / "3.jpeg", quality=100)
    d = D.load_image_folder(tmp_path / "flat")
    assert d.images.shape == (3, 3, 4, 3)
    assert np.array_equal(d.images[0], np.repeat(g1[..., None], 3, axis=-1))


def test_image_folder_train_test(tmp_path):
    for split, seed in (("train", 0), ("test", 10)):
        for cls in ("a", "b"):
            save_png(tmp_path / "tt" / split / cls / "0.png", rgb(2, 2, seed + ord(cls)))
    train = D.load_image_folder(tmp_path / "tt", "train")
    test = D.load_image_folder(tmp_path / "tt", "test")
    assert np.array_equal(train.images[1], rgb(2, 2, ord("b")))
    assert np.array_equal(test.images[0], rgb(2, 2, 10 + ord("a")))
    assert train.class_names == test.class_names == ["a", "b"] and test.labels.tolist() == [0, 1]
    with pytest.raises(DataError) as exc:
        D.load_image_folder(tmp_path / "tt")
    assert_names(exc, "tt", "split")


def test_image_folder_tar_archive(tmp_path):
    for split, seed in (("train", 0), ("test", 10)):
        for cls in ("b", "a"):
            for i in range(2):
                save_png(tmp_path / "top" / split / cls / f"{i}.png", rgb(3, 3, seed + i + ord(cls)))
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "top", arcname="top")
    for split in ("train", "test"):
        from_dir = D.load_image_folder(tmp_path / "top", split)
        from_tar = D.load_image_folder(archive, split)
        assert np.array_equal(from_dir.images, from_tar.images) and from_tar.labels.tolist() == [0, 0, 1, 1]
        assert from_tar.class_names == ["a", "b"] and "data.tar.gz" in from_tar.source
    flat_tar = tmp_path / "flat.tar"  # uncompressed, images at the top level
    with tarfile.open(flat_tar, "w") as tf:
        for name, array in (("q.png", rgb(2, 2, 1)), ("p.png", rgb(2, 2, 2))):
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, format="png")
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
    d = D.load_image_folder(flat_tar)
    assert d.labels is None and np.array_equal(d.images, np.stack([rgb(2, 2, 2), rgb(2, 2, 1)]))
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(DataError) as exc:
        D.load_image_folder(broken, "train")
    assert_names(exc, "broken.tar.gz")


def test_image_folder_leave_out_drops_the_listed_files_and_refuses_a_list_for_other_data(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            for i in range(3):
                save_png(tmp_path / "d" / split / cls / f"{i:04d}.png", rgb(2, 2, 100 * (split == "test") + 10 * ord(cls) + i))
    archive = tmp_path / "d.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "d", arcname="d")
    for root in (tmp_path / "d", archive):
        whole = D.load_image_folder(root, "train")
        assert whole.names == [f"{c}/{i:04d}.png" for c in "ab" for i in range(3)]
        # every file of class b left out: the class keeps its number, and the names say which images remain
        part = D.load_image_folder(root, "train", leave_out=["a/0001", "b/0000.png", "b/0001", "b/0002"])
        assert part.names == ["a/0000.png", "a/0002.png"] and part.labels.tolist() == [0, 0]
        assert part.class_names == ["a", "b"] and part.num_classes == 2 and "4 files left out" in part.source
        assert np.array_equal(part.images, whole.images[[0, 2]])
        with pytest.raises(DataError, match=r"1 of the 2 files to leave out are not in it \(a/0009\)"):
            D.load_image_folder(root, "train", leave_out=["a/0000", "a/0009"])
        with pytest.raises(DataError, match="names every image"):
            D.load_image_folder(root, "train", leave_out=whole.names)
    # through a spec, cached apart from the whole split; the test split is untouched by a list of training files
    spec = f"folder:{tmp_path / 'd'}"
    assert len(D.load_dataset(spec, "train", leave_out=["a/0000"])) == 5 and len(D.load_dataset(spec, "train")) == 6
    assert D.load_dataset(spec, "train", leave_out=["a/0000"]).subset([0]).names == ["a/0001.png"]
    with pytest.raises(DataError, match="leave-out list names files of an image folder"):
        D.load_dataset("mnist-slice", "train", leave_out=["a/0000"])


def test_a_list_of_files_is_read_and_checked(tmp_path):
    (tmp_path / "ok.txt").write_text("# made by hand\n\na/0001\n b/0002 \n")
    assert D.read_name_list(tmp_path / "ok.txt") == ["a/0001", "b/0002"]
    (tmp_path / "twice.txt").write_text("a/0001\na/0001\n")
    with pytest.raises(DataError, match="twice.txt: a/0001 is listed more than once"):
        D.read_name_list(tmp_path / "twice.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="empty.txt: the list of files is empty"):
        D.read_name_list(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="missing.txt: cannot read"):
        D.read_name_list(tmp_path / "missing.txt")


def test_image_folder_sizes_resize_and_crop(tmp_path):
    save_png(tmp_path / "s" / "a.png", np.zeros((4, 6, 3), np.uint8))
    blocks = np.kron(np.array([[10, 20], [30, 40]], np.uint8), np.ones((2, 3), np.uint8))  # 4x6, 2x3 blocks
    save_png(tmp_path / "s" / "b.png", np.stack([blocks, blocks + 1, blocks + 2], -1))
    save_png(tmp_path / "s" / "c.png", np.full((8, 8, 3), 200, np.uint8))
    with pytest.raises(DataError) as exc:
        D.load_image_folder(tmp_path / "s")
    assert_names(exc, "a.png", "4x6", "c.png", "8x8", "image_size")
    d = D.load_image_folder(tmp_path / "s", image_size=(2, 2))
    assert d.images.shape == (3, 2, 2, 3)
    assert d.images[1, :, :, 0].tolist() == [[10, 20], [30, 40]]
    assert d.images[1, :, :, 2].tolist() == [[12, 22], [32, 42]]
    assert (d.images[2] == 200).all()
    avg = np.array([[0, 0, 100, 100], [0, 0, 100, 100]], np.uint8)  # box average of 2x2 cells -> 50 in the middle
    save_png(tmp_path / "avg" / "x.png", avg)
    assert D.load_image_folder(tmp_path / "avg", image_size=(1, 2)).images[0, :, :, 0].tolist() == [[0, 100]]
    assert D.load_image_folder(tmp_path / "avg", image_size=(1, 1)).images[0, 0, 0, 0] == 50
    pattern = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7)
    save_png(tmp_path / "crop" / "p.png", pattern)
    cropped = D.load_image_folder(tmp_path / "crop", crop=(1, 2, 3, 4))
    assert np.array_equal(cropped.images[0, :, :, 0], pattern[1:4, 2:6])
    with pytest.raises(DataError) as exc:
        D.load_image_folder(tmp_path / "crop", crop=(3, 0, 3, 4))
    assert_names(exc, "p.png", "crop")


def test_image_folder_corrupt_files(tmp_path):
    make_class_folder(tmp_path / "f")
    buf = io.BytesIO()
    Image.fromarray(rgb(64, 64, 0)).save(buf, format="jpeg")
    (tmp_path / "f" / "cat" / "broken.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError) as exc:
        D.load_image_folder(tmp_path / "f")
    assert_names(exc, "broken.jpg")
    (tmp_path / "f" / "cat" / "broken.jpg").unlink()
    (tmp_path / "f" / "ant" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError) as exc:
        D.load_image_folder(tmp_path / "f")
    assert_names(exc, "garbage.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as exc:
        D.load_image_folder(tmp_path / "empty")
    assert_names(exc, "empty", "no image")


# ----- CelebA ----------------------------------------------------------------------------------------------
def celeba_face(scale: int, value: int) -> tuple[np.ndarray, np.ndarray]:
    """An 89x109 (times ``scale``) image: 255 outside the 69x69 crop, 3x3-block pattern inside; and the pattern."""
    blocks = ((np.arange(23)[:, None] * 7 + np.arange(23)[None, :] * 3 + value) % 200).astype(np.uint8)
    inside = np.kron(blocks, np.ones((3 * scale, 3 * scale), np.uint8))
    image = np.full((109 * scale, 89 * scale, 3), 255, np.uint8)
    image[20 * scale:89 * scale, 10 * scale:79 * scale] = np.stack([inside, inside + 1, inside + 2], -1)
    return image, np.stack([blocks, blocks + 1, blocks + 2], -1)


def test_load_celeba_crop_resize_split(tmp_path):
    expected = {}
    for i in (3, 1, 5, 2, 4):  # written out of order; the loader sorts by name
        image, blocks = celeba_face(1, 10 * i)
        save_png(tmp_path / "faces" / f"{i:06d}.png", image)
        expected[i] = blocks
    train = D.load_celeba(tmp_path / "faces", "train", image_size=23, num_test=2)
    test = D.load_celeba(tmp_path / "faces", "test", image_size=23, num_test=2)
    assert train.images.shape == (3, 23, 23, 3) and test.images.shape == (2, 23, 23, 3)
    assert train.labels is None and test.num_classes is None
    assert np.array_equal(train.images, np.stack([expected[i] for i in (1, 2, 3)]))
    assert np.array_equal(test.images, np.stack([expected[i] for i in (4, 5)]))
    assert len(D.load_celeba(tmp_path / "faces", "train", image_size=23, num_test=0)) == 5
    full = D.load_celeba(tmp_path / "faces", "test", image_size=69, num_test=1)  # no resize: the exact crop
    assert np.array_equal(full.images[0], np.kron(expected[5][..., 0], np.ones((3, 3), np.uint8))[..., None]
                          + np.arange(3, dtype=np.uint8))


def test_load_celeba_full_resolution_crop(tmp_path):
    image, blocks = celeba_face(2, 0)  # 178x218: crop 138x138 at row 40, column 20
    save_png(tmp_path / "big" / "000001.png", image)
    save_png(tmp_path / "big" / "000002.png", image)
    d = D.load_celeba(tmp_path / "big", "train", image_size=(23, 23), num_test=1)
    assert np.array_equal(d.images[0], blocks)
    with pytest.raises(DataError) as exc:
        D.load_celeba(tmp_path / "big", "test", num_test=5)
    assert_names(exc, "big")


# ----- load_dataset ----------------------------------------------------------------------------------------
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


def test_to_tensor_dataset():
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2, 1)
    ds = D.to_tensor_dataset(ImageData(images, np.array([2, 0, 1]), 3, None, "t"))
    assert len(ds) == 3
    x, y = ds[1]
    assert x.dtype == torch.uint8 and x.shape == (2, 2, 1) and x.flatten().tolist() == [4, 5, 6, 7]
    assert y.dtype == torch.int64 and int(y) == 0
    _, y = D.to_tensor_dataset(ImageData(images, None, None, None, "t"))[2]
    assert int(y) == -1
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert xb.shape == (3, 2, 2, 1) and yb.tolist() == [2, 0, 1]


# ----- the shipped slice and the real shared data ---------------------------------------------------------
def test_mnist_slice():
    train = D.load_dataset("mnist-slice", "train")
    test = D.load_dataset("mnist-slice", "test")
    assert len(train) == 6000 and len(test) == 1000 and train.image_shape == (28, 28, 1)
    assert train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the well-known first MNIST labels
    assert test.labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert set(np.unique(train.labels).tolist()) == set(range(10))
    if not (SHARED / "mnist").is_dir():
        pytest.skip("shared MNIST not available")
    for split, n, slice_data in (("train", 6000, train), ("test", 1000, test)):
        real = D.load_mnist(SHARED / "mnist", split)
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
    if not (SHARED / "mnist").is_dir():
        pytest.skip("shared MNIST not available")
    indices = [int(i) for i in test.source.split("test indices [")[1].split("]")[0].split(",")]
    real = D.load_mnist(SHARED / "mnist", "test")
    assert np.array_equal(real.images[indices], test.images)


def test_real_mnist_test_split():
    if not (SHARED / "mnist").is_dir():
        pytest.skip("shared data not available")
    d = D.load_mnist(SHARED / "mnist", "test")
    assert len(d) == 10000 and d.image_shape == (28, 28, 1)
    assert d.labels.min() == 0 and d.labels.max() == 9 and d.images.max() == 255


def test_real_cifar10_subset():
    root = SHARED / "cifar10-lossless-subset"
    if not root.is_dir():
        pytest.skip("shared data not available")
    d = D.load_cifar(root, "train")
    assert len(d) == 4000 and d.image_shape == (32, 32, 3) and d.class_names[0] == "airplane"
    assert d.labels.min() == 0 and d.labels.max() == 9
    test = D.load_dataset(f"cifar10:{root / 'cifar-10-batches-py'}", "test")
    assert len(test) == 20 and test.labels[:4].tolist() == [3, 8, 8, 0]  # cat, ship, ship, airplane


def test_an_npz_whose_header_claims_a_huge_array_is_refused_before_allocating(tmp_path):
    np.savez(tmp_path / "x.npz", data=np.zeros((2, 4, 4, 3), np.uint8))
    raw = zipfile.ZipFile(tmp_path / "x.npz").read("data.npy")
    forged = raw.replace(b"(2, 4, 4, 3)", b"(10000000000000, 4, 4, 3)")
    assert forged != raw
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as zf:
        zf.writestr("data.npy", forged)
    with pytest.raises(DataError, match="big.npz: its 'data' header claims an array of shape"):
        D.load_npz(tmp_path / "big.npz", "train")


# ----- the list of the JPEG copy's files that are the lossless held-out images' twins ------------------------------
TWINS = Path(__file__).resolve().parents[1] / "tools" / "data" / "cifar10-jpeg-heldout-twins.txt"
LOSSLESS = SHARED / "cifar10-lossless-subset" / "cifar-10-batches-py"
JPEG_TAR = SHARED / "cifar10-jpeg.tar.gz"


def _find_twins_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("find_jpeg_twins", TWINS.parents[1] / "find_jpeg_twins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_held_out_image_has_its_jpeg_twin_on_the_leave_out_list():
    """Every file on the list is in the copy's train/ folder, of its held-out image's class, and that image in
    JPEG (within the copy's compression error): a model trained without them never saw the held-out images."""
    if not (LOSSLESS.is_dir() and JPEG_TAR.is_file()):
        pytest.skip("shared data not available")
    names = D.read_name_list(TWINS)
    held_out = D.load_dataset(f"cifar10:{LOSSLESS}", "train").subset(slice(_find_twins_tool().HELD_OUT_FROM, None))
    assert len(names) == len(held_out) == 1000 and len(set(names)) == 1000
    wanted = {f"cifar10-jpeg/train/{n}.jpg": n for n in names}
    found = {}
    with tarfile.open(JPEG_TAR, "r|gz") as tf:  # one pass: a gzip stream has no index to seek by name
        for member in tf:
            if member.name in wanted:
                found[wanted[member.name]] = np.asarray(Image.open(io.BytesIO(tf.extractfile(member).read())).convert("RGB"))
    assert sorted(found) == sorted(names), "files on the list are missing from the JPEG copy"
    twins = np.stack([found[n] for n in names])
    assert [n.split("/")[0] for n in names] == [held_out.class_names[c] for c in held_out.labels]
    rms = np.sqrt(((twins.astype(float) - held_out.images) ** 2).mean(axis=(1, 2, 3)))
    assert rms.max() < 16.0 and 6.0 < np.median(rms) < 9.0, (rms.max(), np.median(rms))


@pytest.mark.slow
def test_the_leave_out_list_is_what_the_twin_search_finds(tmp_path, capsys):
    """The whole search again (every held-out image against every training file of its class): the same list,
    every twin nearer than any image's second-nearest file."""
    if not (LOSSLESS.is_dir() and JPEG_TAR.is_file()):
        pytest.skip("shared data not available")
    out = tmp_path / "twins.txt"
    assert _find_twins_tool().main([str(LOSSLESS), f"folder:{JPEG_TAR}", "-o", str(out)]) == 0
    assert D.read_name_list(out) == D.read_name_list(TWINS)
