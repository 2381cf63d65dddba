"""Issue 14: the presets, the recipes and the evaluation as the paper (and tensor2tensor where it is silent) has them.

One test (or a few) per point of the issue; each fails on the code before the change it holds.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run
from image_transformer import ImageTransformer, ImageTransformerConfig, SuperResolutionConfig, cli, codec
from image_transformer.files.data import ImageData, load_image_folder
from image_transformer.metrics import consistency
from image_transformer.nn.config import ADDED_FIELDS
from image_transformer.nn.embeddings import PixelInput, PositionEncoding
from image_transformer.nn.order import make_layout
from image_transformer.training.config import TrainConfig
from image_transformer.zoo import PRESETS, RECIPES, is_superres_preset, preset

PAPER_PRESETS = [name for name in PRESETS if not name.endswith("-tiny") and not name.startswith(("mnist", "tiny"))
                 and not name.endswith(("-cpu", "-gpu"))]


# ----- 1: 2D memory extends up ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in PAPER_PRESETS if PRESETS[n].get("attention") == "local_2d"])
def test_2d_query_blocks_below_the_first_band_see_the_rows_above(name):
    """Section 3.3: memory extends up (and left and right); with 0 rows up a band saw the rows above only through
    the one sub-pixel shifted into it."""
    cfg = preset(name)
    layout = make_layout(cfg.attention, cfg.grid_shape, query_shape=cfg.query_shape, memory_flange=cfg.memory_flange)
    rows, cols = layout.grid
    n = layout.n
    checked = 0
    for b in range(layout.query_index.shape[0]):
        q = layout.query_index[b][layout.query_index[b] < n]
        if len(q) == 0 or int(q.min()) // cols == 0:
            continue
        top = int((q // cols).min())
        visible = layout.memory_index[b][layout.mask[b].any(0)]
        visible = visible[visible < n]
        assert bool((visible // cols < top).any()), f"block {b} (rows from {top}) sees no row above it"
        checked += 1
    assert checked > 0


# ----- 2, 3, 4, 7: sizes as the paper / tensor2tensor have them ----------------------------------------------------
def test_paper_sizes_of_the_presets():
    assert preset("imagenet32-1d-cat").num_heads == 8  # the paper's ImageNet models: 8 heads
    assert preset("cifar10-1d-dmol").num_layers == 14  # the paper's mixture model
    assert preset("cifar10-cond-1d-cat").num_layers == 8  # the paper's class-conditional models (2.99 bits/dim)
    # t2t's causal 1D local attention ignores block_width: memory = block_length = 512
    one = preset("imagenet64-1d-cat")
    assert (one.query_length, one.memory_length) == (512, 512)
    two = preset("imagenet64-2d-cat")  # t2t imagetransformer2d_base_8l_8_64_64by64
    assert (two.query_shape, two.memory_flange, two.num_layers) == ((8, 64), (4, 32), 8)


# ----- 5: the paper's consistency -------------------------------------------------------------------------------
def test_consistency_reports_the_papers_bicubic_l2_beside_our_area_rmse():
    g = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 256, (3, 16, 16, 3), generator=g, dtype=torch.uint8)
    inputs = torch.randint(0, 256, (3, 4, 4, 3), generator=g, dtype=torch.uint8)
    result = consistency(samples, inputs)
    # the paper's: L2 distance to a bicubic downsampling of the sample (PIL's bicubic, unrounded)
    pil = np.stack([np.stack([np.asarray(Image.fromarray(samples[i, :, :, c].float().numpy(), "F")
                                         .resize((4, 4), Image.BICUBIC)) for c in range(3)], -1) for i in range(3)])
    expected = np.sqrt(((pil - inputs.numpy().astype(np.float64)) ** 2).reshape(3, -1).sum(1))
    assert np.allclose(result["l2_bicubic"].numpy(), expected, rtol=1e-5)
    # ours differs: a nearest-neighbour enlargement of its input is area-consistent exactly, not bicubic-consistent
    from image_transformer.images import enlarge
    blocky = enlarge(inputs, (4, 4))
    assert torch.equal(consistency(blocky, inputs)["rmse"], torch.zeros(3, dtype=torch.float64))
    assert (consistency(blocky, inputs)["l2_bicubic"] > 10).all()


# ----- 6: recipes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_every_paper_preset_carries_the_papers_recipe(name):
    recipe = RECIPES[name]
    TrainConfig(**recipe)  # every key a training setting, every value valid
    assert recipe["clip_grad"] == 0.0 and recipe["schedule"] == "rsqrt"
    assert recipe["warmup"] == (12000 if is_superres_preset(name) else 4000)
    cfg = preset(name)
    family = (5e-4 if cfg.attention == "local_2d" else 1e-3 if cfg.distribution == "dmol"
              else 7e-4 if cfg.num_classes else 3.5e-3)
    assert recipe["lr"] == family


def test_train_with_a_preset_starts_from_its_recipe_and_flags_override_it(tiny_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(RECIPES, "tiny", {"lr": 1e-3, "warmup": 7, "clip_grad": 0.0, "schedule": "rsqrt"})
    out = tmp_path / "run"
    assert run("train", "--data", f"mnist:{tiny_mnist}", "--preset", "tiny", "--out", out, "--steps", 1,
               "--batch-size", 4, "--lr", 5e-4, "--num-samples", 0, "--final-eval-images", 2, "--quiet") == 0
    record = json.loads((out / "run.json").read_text())
    assert record["train"]["lr"] == 5e-4 and record["train"]["warmup"] == 7 and record["train"]["clip_grad"] == 0.0
    assert record["recipe"] == {"preset": "tiny", "values": RECIPES["tiny"], "overridden": ["lr"]}
    assert run("presets") == 0
    text = capsys.readouterr().out
    assert "recipe: warmup 4000, clip_grad 0, schedule rsqrt, lr 0.0035" in text


# ----- 8: the mixture's input ReLU, the learned positions ---------------------------------------------------------
def _dmol(**kw):
    cfg = ImageTransformerConfig(image_size=(3, 4), channels=3, hidden_size=16, num_layers=1, num_heads=2, ffn_size=16,
                                 dropout=0.0, distribution="dmol", num_mixtures=2, **kw)
    torch.manual_seed(0)
    return ImageTransformer(cfg).eval()


def test_new_mixture_models_have_tensor2tensors_relu_and_old_ones_load_without_it(tmp_path):
    model = _dmol()
    assert model.config.pixel_input_relu and isinstance(model.values_in, PixelInput)
    values = torch.randint(0, 256, (2, 5, 3))
    out = model.values_in(values, torch.arange(5))
    linear = PixelInput(3, 16)
    linear.load_state_dict(model.values_in.state_dict())
    assert torch.equal(out, torch.relu(linear(values, torch.arange(5)))) and (out >= 0).all()
    # a model saved before the option existed (no key in its config.json) loads as it was: no ReLU
    old = _dmol(pixel_input_relu=False)
    old.save_pretrained(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    del record["config"]["pixel_input_relu"]
    (tmp_path / "config.json").write_text(json.dumps(record))
    loaded = ImageTransformer.from_pretrained(tmp_path)
    assert loaded.config.pixel_input_relu is False and ADDED_FIELDS["pixel_input_relu"] is False
    images = torch.randint(0, 256, (2, 3, 4, 3), dtype=torch.uint8)
    assert torch.equal(loaded.log_prob(images), old.log_prob(images))
    assert codec.fingerprint(loaded) == codec.fingerprint(old)


def test_learned_positions_contain_the_papers_half_and_half_split():
    """The sum of full-width row and column tables (t2t's) can be the paper's d/2 rows + d/2 columns exactly."""
    d, rows, cols = 8, 3, 5
    enc = PositionEncoding((rows, cols), d, "learned")
    row_half, col_half = torch.randn(rows, d // 2), torch.randn(cols, d // 2)
    with torch.no_grad():
        enc.rows.copy_(torch.cat([row_half, torch.zeros(rows, d // 2)], 1))
        enc.cols.copy_(torch.cat([torch.zeros(cols, d // 2), col_half], 1))
    index = torch.arange(rows * cols)
    split = torch.cat([row_half[index // cols], col_half[index % cols]], 1)
    assert torch.equal(enc(index), split)
    sinusoidal = PositionEncoding((rows, cols), d)(index)  # the fixed encoding is the paper's split itself
    first_half = sinusoidal[:, : d // 2].reshape(rows, cols, -1)
    assert torch.equal(first_half[:, 0], first_half[:, -1])


# ----- 9: missing presets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["celeba-superres-1d-cat", "celeba-superres-2d-cat", "cifar10-superres-1d-cat"])
def test_super_resolution_presets_have_an_encoder_two_to_three_times_shallower(name):
    cfg = preset(name)
    assert isinstance(cfg, SuperResolutionConfig) and cfg.input_size == (8, 8) and cfg.image_size == (32, 32)
    assert 2 <= cfg.num_layers / cfg.encoder_layers <= 3


def test_the_table4_presets_keep_8_layers_and_vary_three_block_sizes_each_attention():
    family = [preset(n) for n in PRESETS if "-table4-" in n]
    assert all(c.num_layers == 8 and c.ffn_size == 1024 for c in family)
    one = {(c.query_length, c.memory_length) for c in family if c.attention == "local_1d"}
    two = {(c.query_shape, c.memory_flange) for c in family if c.attention == "local_2d"}
    assert len(one) >= 3 and len(two) >= 3


def test_a_super_resolution_preset_trains_a_super_resolution_model(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    args = cli.build_parser().parse_args(["train", "--preset", "celeba-superres-1d-cat"])
    data = ImageData(np.zeros((2, 32, 32, 3), np.uint8), None, None, None, "test")
    cfg = cli._model_config(args, data)
    assert isinstance(cfg, SuperResolutionConfig) and cfg.encoder_layers == 4 and cfg.num_layers == 8
    args = cli.build_parser().parse_args(["train", "--preset", "celeba-superres-1d-cat", "--task", "generate"])
    with pytest.raises(ValueError, match="super-resolution"):
        cli._model_config(args, data)


# ----- 10: 1 to 4 channels ---------------------------------------------------------------------------------------
def test_channels_one_to_four_are_accepted_and_five_refused():
    for c in (1, 2, 3, 4):
        assert ImageTransformerConfig(channels=c).channels == c
    with pytest.raises(ValueError, match="RGBA"):
        ImageTransformerConfig(channels=5)


def test_folders_of_grey_alpha_and_rgba_pngs(tmp_path):
    rng = np.random.default_rng(0)
    for mode, c in (("LA", 2), ("RGBA", 4)):
        folder = tmp_path / mode
        folder.mkdir()
        arrays = rng.integers(0, 256, (3, 5, 6, c), dtype=np.uint8)
        for i, a in enumerate(arrays):
            Image.fromarray(a, mode).save(folder / f"{i}.png")
        data = load_image_folder(folder)
        assert data.image_shape == (5, 6, c) and np.array_equal(data.images, arrays)
    opaque = tmp_path / "opaque"  # RGBA files with nothing transparent stay RGB, as they were read before
    opaque.mkdir()
    Image.fromarray(np.full((5, 6, 4), 255, np.uint8), "RGBA").save(opaque / "a.png")
    assert load_image_folder(opaque).image_shape == (5, 6, 3)
    mixed = tmp_path / "mixed"  # grey beside grey + alpha: the grey one gets an opaque alpha channel
    mixed.mkdir()
    Image.fromarray(np.full((5, 6), 7, np.uint8), "L").save(mixed / "a.png")
    Image.fromarray(np.full((5, 6, 2), 9, np.uint8), "LA").save(mixed / "b.png")
    images = load_image_folder(mixed).images
    assert images.shape == (2, 5, 6, 2) and images[0, 0, 0].tolist() == [7, 255] and images[1, 0, 0].tolist() == [9, 9]


def test_load_npz_keeps_four_channel_images(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (4, 3, 3, 4), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", data=data)
    from image_transformer.files.data import load_npz
    assert np.array_equal(load_npz(tmp_path / "x.npz", "train").images, data)


@pytest.mark.parametrize("distribution", ["categorical", "dmol"])
@pytest.mark.parametrize("channels", [2, 4])
def test_two_and_four_channel_models_sample_save_and_code(distribution, channels, tmp_path):
    cfg = ImageTransformerConfig(image_size=(3, 4), channels=channels, hidden_size=16, num_layers=1, num_heads=2,
                                 ffn_size=16, dropout=0.0, distribution=distribution, num_mixtures=2,
                                 query_length=5, memory_length=3)
    torch.manual_seed(0)
    model = ImageTransformer(cfg).eval()
    samples = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 4, channels)
    from image_transformer.files.image_files import save_grid
    with Image.open(save_grid(samples, tmp_path / "g.png")) as grid:
        assert grid.mode == {2: "LA", 4: "RGBA"}[channels]
    stream = codec.encode(model, samples)
    assert torch.equal(codec.decode(stream, model)[0], samples)


def test_an_rgba_folder_trains_and_samples_end_to_end(tmp_path):
    folder = tmp_path / "icons"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (4, 4, 4), dtype=np.uint8), "RGBA").save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert run("train", "--data", f"folder:{folder}", "--preset", "tiny", "--out", out, "--steps", 1, "--batch-size",
               2, "--num-samples", 2, "--final-eval-images", 2, "--quiet") == 0
    assert ImageTransformer.from_pretrained(out / "model").config.channels == 4
    with Image.open(out / "samples.png") as grid:
        assert grid.mode == "RGBA"


# ----- 11: conditional presets are conditional --------------------------------------------------------------------
def test_conditional_presets_build_conditional_models_by_themselves():
    assert all(PRESETS[n].get("num_classes") for n in PRESETS if "-cond-" in n)
    labelled = ImageData(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), 10, None, "labelled")
    args = cli.build_parser().parse_args(["train", "--preset", "cifar10-cond-1d-cat-tiny"])
    assert cli._model_config(args, labelled).num_classes == 10  # no --class-conditional needed
    unlabelled = ImageData(np.zeros((2, 32, 32, 3), np.uint8), None, None, None, "unlabelled")
    with pytest.raises(ValueError, match="class-conditional .* no labels"):
        cli._model_config(args, unlabelled)
    hundred = ImageData(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 99]), 100, None, "cifar100")
    with pytest.raises(ValueError, match="10 classes but the data has 100"):
        cli._model_config(args, hundred)
