"""Folders and archives of image files, lists of files to leave out, and CelebA faces
(image_transformer.files.data.image_folders); the list of the JPEG copy's twins of the held-out CIFAR-10 images."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, SHARED_DATA, assert_names, load_tool, rgb, save_png
from image_transformer.files import data as D
from image_transformer.files.data import DataError


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
                seed = 100 * (split == "test") + 10 * ord(cls) + i
                save_png(tmp_path / "d" / split / cls / f"{i:04d}.png", rgb(2, 2, seed))
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


# ----- the list of the JPEG copy's files that are the lossless held-out images' twins ------------------------------
TWINS = REPO / "tools" / "data" / "cifar10-jpeg-heldout-twins.txt"
LOSSLESS = SHARED_DATA / "cifar10-lossless-subset" / "cifar-10-batches-py"
JPEG_TAR = SHARED_DATA / "cifar10-jpeg.tar.gz"


def test_each_held_out_image_has_its_jpeg_twin_on_the_leave_out_list():
    """Every file on the list is in the copy's train/ folder, of its held-out image's class, and that image in
    JPEG (within the copy's compression error): a model trained without them never saw the held-out images."""
    if not (LOSSLESS.is_dir() and JPEG_TAR.is_file()):
        pytest.skip("shared data not available")
    names = D.read_name_list(TWINS)
    held_out_from = load_tool("find_jpeg_twins").HELD_OUT_FROM
    held_out = D.load_dataset(f"cifar10:{LOSSLESS}", "train").subset(slice(held_out_from, None))
    assert len(names) == len(held_out) == 1000 and len(set(names)) == 1000
    wanted = {f"cifar10-jpeg/train/{n}.jpg": n for n in names}
    found = {}
    with tarfile.open(JPEG_TAR, "r|gz") as tf:  # one pass: a gzip stream has no index to seek by name
        for member in tf:
            if member.name in wanted:
                image = Image.open(io.BytesIO(tf.extractfile(member).read()))
                found[wanted[member.name]] = np.asarray(image.convert("RGB"))
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
    assert load_tool("find_jpeg_twins").main([str(LOSSLESS), f"folder:{JPEG_TAR}", "-o", str(out)]) == 0
    assert D.read_name_list(out) == D.read_name_list(TWINS)
