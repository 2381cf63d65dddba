import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import png_claiming
from image_transformer.files.image_files import make_grid, save_grid
from image_transformer.files.plots import plot_curve


def test_make_grid_places_images_row_by_row():
    images = torch.stack([torch.full((2, 3, 1), v, dtype=torch.uint8) for v in (10, 20, 30)])
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert (grid[1:3, 1:4] == 10).all() and (grid[1:3, 5:8] == 20).all() and (grid[4:6, 1:4] == 30).all()
    assert (grid[4:6, 5:8] == 255).all() and (grid[0] == 255).all()  # empty cell and padding


def test_make_grid_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        make_grid(torch.zeros(1, 2, 2, 1))


@pytest.mark.parametrize("channels", [1, 3])
def test_save_grid_round_trips_through_png(tmp_path, channels):
    images = torch.randint(0, 256, (4, 5, 6, channels), dtype=torch.uint8)
    path = save_grid(images, tmp_path / "sub" / "grid.png", nrow=4, scale=2, padding=0)
    read = np.asarray(Image.open(path))
    read = read[..., None] if channels == 1 else read
    assert read.shape == (10, 48, channels)
    assert np.array_equal(read[::2, ::2], make_grid(images, nrow=4, padding=0))


def test_plot_curve_writes_a_png(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "train_bits_per_dim": 3 - s / 100, "lr": 1e-3} for s in range(10, 60, 10)]
    rows.append({"step": 50, "eval_bits_per_dim": 2.6})
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = plot_curve(log, tmp_path / "curve.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 400)


def test_read_image_converts_and_checks_the_size(tmp_path):
    from image_transformer.files.image_files import read_image

    Image.fromarray(np.full((3, 4, 3), 90, np.uint8)).save(tmp_path / "rgb.png")
    grey = read_image(tmp_path / "rgb.png", (3, 4, 1))
    assert grey.dtype == torch.uint8 and grey.shape == (3, 4, 1) and int(grey[0, 0, 0]) == 90
    assert read_image(tmp_path / "rgb.png", (3, 4, 3)).shape == (3, 4, 3)
    with pytest.raises(ValueError, match="image is 3x4 but the model generates 4x4"):
        read_image(tmp_path / "rgb.png", (4, 4, 3))
    with pytest.raises(ValueError, match="cannot read this file as an image"):
        read_image(tmp_path / "missing.png", (3, 4, 3))


def test_enlarge_repeats_pixels_for_one_image_or_a_batch():
    from image_transformer.images import enlarge

    image = torch.arange(6, dtype=torch.uint8).reshape(2, 3, 1)
    big = enlarge(image, (2, 3))
    assert big.shape == (4, 9, 1) and torch.equal(big[::2, ::3], image)
    assert torch.equal(enlarge(image[None].repeat(2, 1, 1, 1), (2, 3))[1], big)


def test_fit_image_makes_lossless_changes_itself_and_lossy_ones_only_when_asked():
    from image_transformer.files.image_files import fit_image

    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = 70
    rgba[..., 3] = 255
    x, notes = fit_image(Image.fromarray(rgba, "RGBA"), (4, 6, 1))
    assert (x == 70).all() and notes == ["its RGB channels are equal: read as grey",
                                         "its fully opaque alpha channel dropped"]
    x, notes = fit_image(Image.fromarray(np.full((4, 6), 9, np.uint8)), (4, 6, 4))
    assert x.shape == (4, 6, 4) and (x[..., :3] == 9).all() and (x[..., 3] == 255).all()
    rgba[0, 0, 3] = 0
    with pytest.raises(ValueError,
                       match="it is RGBA but the model takes RGB images .*transparency flattened onto black"):
        fit_image(Image.fromarray(rgba, "RGBA"), (4, 6, 3))
    x, notes = fit_image(Image.fromarray(rgba, "RGBA"), (4, 6, 3), fit=True)
    assert (x[0, 0] == 0).all() and (x[1, 1] == 70).all() and notes == ["transparency flattened onto black"]
    with pytest.raises(ValueError, match=r"it is 4x6 but the model takes 2x2\. Tick \"fit to the model\""):
        fit_image(Image.fromarray(np.zeros((4, 6), np.uint8)), (2, 2, 1))
    wide = np.zeros((4, 6), np.uint8)
    wide[:, 1:5] = 200  # the centre 4x4 of a 4x6 image
    x, notes = fit_image(Image.fromarray(wide), (2, 2, 1), fit=True)
    assert (x == 200).all() and notes == ["resized from 4x6 to 2x2, centre 4x4 kept (area)"]
    x, notes = fit_image(Image.fromarray(np.full((2, 2), 50, np.uint8)), (5, 5, 1), fit=True)
    assert x.shape == (5, 5, 1) and (x == 50).all() and notes == ["resized from 2x2 to 5x5 (bicubic)"]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_lossless_files_decode_to_the_same_pixels(channels):
    import io

    from image_transformer.files.image_files import lossless_bytes, lossless_formats

    image = torch.randint(0, 256, (5, 7, channels), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if channels in (2, 4):
        image[0, 0, -1] = 0  # a transparent pixel keeps its colour too (WebP drops it unless told not to)
    for fmt in lossless_formats():
        back = np.asarray(Image.open(io.BytesIO(lossless_bytes(image, fmt))))
        if channels == 1 and back.ndim == 3:  # WebP holds grey as RGB
            back = back[..., 0]
        assert np.array_equal(back.reshape(image.shape), image.numpy()), fmt
    with pytest.raises(ValueError, match="unknown lossless format 'GIF'"):
        lossless_bytes(image, "GIF")


def test_heat_map_draws_values_with_a_colour_bar():
    from image_transformer.files.plots import heat_map

    picture = heat_map(np.arange(12.0).reshape(3, 4), "bits", title="3.2 bits/dim", size=2.0)
    assert picture.dtype == np.uint8 and picture.shape == (200, 250, 3) and picture.std() > 0
    with pytest.raises(ValueError, match=r"needs a \(H, W\) array"):
        heat_map(np.zeros(3), "bits")


@pytest.mark.parametrize("size", [(20000, 10000), (8000, 6000)])  # over Pillow's own limit; over ours only
def test_a_decompression_bomb_is_refused_before_decoding_naming_the_file(tmp_path, size):
    from image_transformer.files.image_files import read_image

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(*size))
    assert len(bomb.read_bytes()) == 45
    with pytest.raises(ValueError, match="bomb.png: .*pixels"):
        read_image(bomb, (28, 28, 1))


def test_the_pixel_budget_is_configurable_and_holds_for_files_folders_and_the_demo(tmp_path, monkeypatch):
    from image_transformer import demo
    from image_transformer.files.data import DataError, load_image_folder
    from image_transformer.files.image_files import read_image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "f").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "f" / "a.png")
    monkeypatch.setenv("IMAGE_TRANSFORMER_MAX_PIXELS", "700")  # 28 x 28 = 784
    with pytest.raises(ValueError, match="a.png: 28x28 = 784 pixels, over the limit of 700"):
        read_image(tmp_path / "a.png", (28, 28, 1))
    with pytest.raises(DataError, match="784 pixels, over the limit"):
        load_image_folder(tmp_path / "f", "train")
    with pytest.raises(ValueError, match="784 pixels, over the limit"):
        demo.prepare(tmp_path / "a.png", (28, 28, 1))
    monkeypatch.setenv("IMAGE_TRANSFORMER_MAX_PIXELS", "many")
    with pytest.raises(ValueError, match="IMAGE_TRANSFORMER_MAX_PIXELS='many'"):
        read_image(tmp_path / "a.png", (28, 28, 1))
    monkeypatch.delenv("IMAGE_TRANSFORMER_MAX_PIXELS")
    assert read_image(tmp_path / "a.png", (28, 28, 1)).shape == (28, 28, 1)


def test_sixteen_bit_grey_reads_the_same_everywhere(tmp_path):
    from image_transformer import demo
    from image_transformer.files.data import load_image_folder
    from image_transformer.files.image_files import read_image

    wide = np.full((4, 4), 1000, np.uint16)
    wide[0, 0] = 65535
    (tmp_path / "f").mkdir()
    for path in (tmp_path / "w.png", tmp_path / "f" / "w.png"):
        Image.fromarray(wide).save(path)
    from_file = read_image(tmp_path / "w.png", (4, 4, 1))[..., 0]
    from_folder = torch.from_numpy(load_image_folder(tmp_path / "f", "train").images[0, ..., 0])
    from_demo = demo.prepare(tmp_path / "w.png", (4, 4, 1))[0][..., 0]
    assert from_file[1, 1] == 4 and from_file[0, 0] == 255  # 0..65535 scaled to 0..255, not clipped
    assert torch.equal(from_file, from_folder) and torch.equal(from_file, from_demo)
