import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import tiny_superres
from image_transformer.files.checkpoint import CheckpointError
from image_transformer.files.data import SuperResolutionPairs, make_pairs
from image_transformer.files.pretrained import build_model, load_model, model_record
from image_transformer.images import area_downsample
from image_transformer.nn.config import ADDED_FIELDS, ImageTransformerConfig
from image_transformer.nn.superres import SuperResolutionConfig, SuperResolutionTransformer
from image_transformer.tasks import format_superres_report, input_gain, superres_report


def fixed_inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, *model.input_shape), generator=g, dtype=torch.uint8)


CASES = list(itertools.product(["local_1d", "local_2d"], ["categorical", "dmol"]))


@pytest.mark.parametrize("attention,distribution", CASES)
def test_decoder_is_autoregressive_given_the_input(attention, distribution, dependency_violations):
    model = tiny_superres(attention, distribution)
    inputs = fixed_inputs(model)
    violations, later = dependency_violations(
        lambda x: model.log_prob(x, inputs.expand(len(x), -1, -1, -1)), model.generation_order(), model.image_shape
    )
    assert violations == []
    assert later > 0


@pytest.mark.parametrize("attention,distribution", CASES)
def test_normalized_every_position(attention, distribution, normalization_errors):
    model = tiny_superres(attention, distribution, size=(2, 4), input_size=(1, 2))
    inputs = fixed_inputs(model)
    errors = normalization_errors(lambda x: model.log_prob(x, inputs.expand(len(x), -1, -1, -1)), model.image_shape)
    assert errors.max() < 1e-6


@pytest.mark.parametrize("distribution", ["categorical", "dmol"])
def test_input_image_changes_every_log_prob(distribution):
    model = tiny_superres("local_1d", distribution)
    x = torch.randint(0, 256, (1, *model.image_shape), dtype=torch.uint8).repeat(2, 1, 1, 1)
    inputs = torch.cat([fixed_inputs(model, 1), fixed_inputs(model, 2)])
    lp = model.log_prob(x, inputs)
    assert ((lp[0] - lp[1]).abs() > 1e-9).all()  # even the first sub-pixel, which sees only the input
    one = inputs[:1].clone()
    one[0, 1, 2, 0] ^= 0x40  # a single input sub-pixel
    assert not torch.allclose(model.log_prob(x[:1], one), lp[:1])


def test_shapes_and_generation_order():
    model = tiny_superres()
    x = torch.randint(0, 256, (2, 4, 6, 3), dtype=torch.uint8)
    inputs = area_downsample(x, (2, 3))
    assert model(x, inputs).shape == (2, 4, 6, 3, 256)
    assert model.log_prob(x, inputs).shape == (2, 4, 6, 3)
    assert tiny_superres(distribution="dmol")(x, inputs).shape == (2, 4, 6, 30)
    assert model.image_shape == (4, 6, 3) and model.input_shape == (2, 3, 3)
    assert torch.equal(model.generation_order(), model.decoder.generation_order())
    assert all(block.cross is not None for block in model.decoder.blocks)


def test_gradients_reach_the_encoder():
    model = tiny_superres().float().train()
    x = torch.randint(0, 256, (2, 4, 6, 3), dtype=torch.uint8)
    (-model.log_prob(x, area_downsample(x, (2, 3))).mean()).backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("attention,distribution", CASES)
def test_cached_sampling_equals_reference_and_encodes_once(attention, distribution):
    model = tiny_superres(attention, distribution)
    calls = []
    model.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    inputs = torch.cat([fixed_inputs(model, 1), fixed_inputs(model, 2), fixed_inputs(model, 3)])
    a = model.sample(inputs, generator=torch.Generator().manual_seed(7))
    assert calls == [3]
    b = model.sample(inputs, generator=torch.Generator().manual_seed(7), use_cache=False)
    assert calls == [3, 3]
    assert a.dtype == torch.uint8 and a.shape == (3, 4, 6, 3)
    assert torch.equal(a, b)


def test_cached_step_distribution_matches_log_prob():
    model = tiny_superres("local_2d", "categorical").float()
    seen = []
    draw = model.decoder.dist.sample
    model.decoder.dist.sample = lambda params, *a, **k: (seen.append(params.clone()), draw(params, *a, **k))[1]
    inputs = torch.cat([fixed_inputs(model, 1), fixed_inputs(model, 2)])
    images = model.sample(inputs, generator=torch.Generator().manual_seed(3))
    model.decoder.dist.sample = draw
    full = model(images, inputs).reshape(2, model.decoder.layout.n, -1)
    for t, pos in enumerate(model.decoder.layout.order.tolist()):
        assert torch.allclose(seen[t], full[:, pos], atol=1e-4), f"step {t}"


def test_sampling_restores_training_mode_and_checks_inputs():
    model = tiny_superres().train()
    model.sample(fixed_inputs(model), temperature=0.0)
    assert model.training and model.encoder.training
    with pytest.raises(ValueError, match="at least one"):
        model.sample(torch.zeros(0, 2, 3, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"inputs .*input_size 2x3.*\(B, 2, 3, 3\)"):
        model.sample(torch.zeros(1, 4, 6, 3, dtype=torch.uint8))


@pytest.mark.parametrize("images,inputs,message", [
    ((2, 4, 6, 3), (2, 2, 2, 3), r"inputs .*input_size 2x3.*must have shape \(B, 2, 3, 3\), got \(2, 2, 2, 3\)"),
    ((2, 4, 6, 3), (2, 2, 3, 1), r"inputs .*shape \(B, 2, 3, 3\)"),
    ((2, 4, 4, 3), (2, 2, 3, 3), r"images .*image_size 4x6.*must have shape \(B, 4, 6, 3\), got \(2, 4, 4, 3\)"),
    ((3, 4, 6, 3), (2, 2, 3, 3), "same batch size, got 3 images and 2 inputs"),
    ((2, 2, 3, 3), (2, 4, 6, 3), "look swapped"),
])
def test_mismatched_shapes_raise_value_error(images, inputs, message):
    model = tiny_superres()
    with pytest.raises(ValueError, match=message):
        model.log_prob(torch.zeros(images, dtype=torch.uint8), torch.zeros(inputs, dtype=torch.uint8))
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(images, dtype=torch.uint8), torch.zeros(inputs, dtype=torch.uint8))


def test_bad_input_values_raise_value_error():
    model = tiny_superres()
    x = torch.zeros(1, 4, 6, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="inputs .*uint8"):
        model.log_prob(x, torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"inputs .*\[0, 255\]"):
        model.log_prob(x, torch.full((1, 2, 3, 3), 256))


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match=r"input_size \(8, 9\) must be smaller than or equal to image_size"):
        SuperResolutionConfig(image_size=(8, 8), input_size=(8, 9))
    with pytest.raises(ValueError, match="encoder_layers must be"):
        SuperResolutionConfig(encoder_layers=0)
    with pytest.raises(ValueError, match="num_classes is not supported.*must be 0"):
        SuperResolutionConfig(num_classes=10)
    with pytest.raises(ValueError, match="invalid SuperResolutionConfig: attention must be one of"):
        SuperResolutionConfig(attention="local_3d")
    with pytest.raises(ValueError, match="unknown SuperResolutionConfig fields"):
        SuperResolutionConfig.from_dict({"bogus": 1})
    cfg = SuperResolutionConfig()
    assert (cfg.image_size, cfg.input_size, cfg.channels, cfg.encoder_layers) == ((32, 32), (8, 8), 3, 4)
    assert SuperResolutionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    dec = cfg.decoder
    assert isinstance(dec, ImageTransformerConfig) and dec.image_size == (32, 32) and dec.num_classes == 0
    every = {f for f in ImageTransformerConfig.__dataclass_fields__}
    assert every <= set(cfg.to_dict())  # every decoder field is configurable


@pytest.mark.parametrize("encoding", ["sinusoidal", "learned"])
def test_save_and_load_pretrained(tmp_path, encoding):
    model = tiny_superres("local_2d", "dmol", position_encoding=encoding).float()
    model.save_pretrained(tmp_path / "m")
    again = SuperResolutionTransformer.from_pretrained(tmp_path / "m")
    x = torch.randint(0, 256, (2, 4, 6, 3), dtype=torch.uint8)
    inputs = area_downsample(x, (2, 3))
    assert again.config == model.config
    assert torch.equal(model.log_prob(x, inputs), again.log_prob(x, inputs))
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, SuperResolutionTransformer) and not loaded.training
    assert torch.equal(model.log_prob(x, inputs), loaded.log_prob(x, inputs))
    assert isinstance(build_model(model_record(model), "test"), SuperResolutionTransformer)


def test_from_pretrained_refuses_the_wrong_model_type(tmp_path):
    from image_transformer import ImageTransformer

    tiny_superres().save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not ImageTransformer"):
        ImageTransformer.from_pretrained(tmp_path / "m")


def test_make_pairs_and_dataset():
    images = torch.randint(0, 256, (5, 4, 6, 3), dtype=torch.uint8)
    inputs, targets = make_pairs(images, (2, 3))
    assert inputs.shape == (5, 2, 3, 3) and inputs.dtype == torch.uint8 and torch.equal(targets, images)
    assert torch.equal(inputs, area_downsample(images, (2, 3)))
    pairs = SuperResolutionPairs(images.numpy(), (2, 3))
    assert len(pairs) == 5
    x, y = pairs[3]
    assert torch.equal(x, inputs[3]) and torch.equal(y, images[3])
    labelled = torch.utils.data.TensorDataset(images, torch.arange(5))
    x, y = SuperResolutionPairs(labelled, 2)[1]
    assert torch.equal(x, area_downsample(images[1:2], 2)[0]) and torch.equal(y, images[1])
    batch_x, batch_y = next(iter(torch.utils.data.DataLoader(pairs, batch_size=5)))
    assert torch.equal(batch_x, inputs) and torch.equal(batch_y, images)
    with pytest.raises(ValueError, match="multiple"):
        SuperResolutionPairs(images, (3, 3))
    with pytest.raises(ValueError, match="uint8"):
        make_pairs(images.float(), (2, 3))


def test_superres_report_writes_the_grid_and_the_metrics(tmp_path):
    from image_transformer.nn.superres import SuperResolutionConfig, SuperResolutionTransformer

    torch.manual_seed(0)
    model = SuperResolutionTransformer(SuperResolutionConfig(image_size=(4, 6), input_size=(2, 3), channels=3,
                                                             encoder_layers=1, hidden_size=16, num_layers=1,
                                                             num_heads=2, ffn_size=32, dropout=0.0))
    images = torch.randint(0, 256, (5, 4, 6, 3), dtype=torch.uint8)
    inputs = area_downsample(images, (2, 3))
    report = superres_report(model, images, inputs, images, tmp_path, num=3, seed=0)
    assert report["num_samples"] == 3 and set(report["temperatures"]) == {"0.8", "0.9", "1.0"}
    for entry in report["temperatures"].values():
        assert 0 <= entry["consistency_area_rmse"] <= 255 and entry["consistency_l2_bicubic"] >= 0
        assert -1 <= entry["ssim"] <= 1
        assert 0 < entry["nearest_train_ms_ssim"] <= 1 and math.isfinite(entry["psnr_db"])
    with Image.open(tmp_path / "superres.png") as grid:  # 3 rows of: input, 3 temperatures, original
        assert grid.size == (3 * (2 + 5 * (6 + 2)), 3 * (2 + 3 * (4 + 2)))
    assert json.loads((tmp_path / "superres.json").read_text())["num_samples"] == 3
    assert "T=0.9" in format_superres_report(report)


OLD = Path(__file__).parent / "data" / "superres-b62f233"  # written by the code of commit b62f233


def test_files_of_the_old_super_resolution_model_still_load():
    """config.json of the old SuperResolutionConfig (its own field list) and the old encoder parameter names."""
    record = json.loads((OLD / "pretrained" / "config.json").read_text())
    config = SuperResolutionConfig.from_dict(record["config"])
    # the same keys and values (the order is the dataclass's), and the fields added since at their defaults
    assert config.to_dict() == {**record["config"], **ADDED_FIELDS}
    assert isinstance(config, ImageTransformerConfig) and config.decoder.to_dict() == {
        k: v for k, v in {**record["config"], **ADDED_FIELDS}.items()
        if k not in ("input_size", "encoder_layers", "encoder_positions", "encoder_input", "input_skip")}
    expected = torch.load(OLD / "expected.pt")
    model = load_model(OLD / "pretrained")
    images = expected["images"]
    # recorded on a CPU with AVX-512: another kind of CPU sums in another order (3.8e-5 apart on one with AVX2 only),
    # while scaling a single encoder weight by 1.01 already moves them by 1.2e-3
    torch.testing.assert_close(model.log_prob(images, area_downsample(images, config.input_size)),
                               expected["log_prob"], rtol=0, atol=1e-4)


def test_resume_reads_a_training_checkpoint_with_the_old_encoder_names(tmp_path):
    from image_transformer.training.config import TrainConfig
    from image_transformer.training.trainer import Trainer

    def old_names(state):
        return {k.replace(".attn.qkv.", ".qkv.").replace(".attn.out.", ".out.") if k.startswith("encoder.") else k: v
                for k, v in state.items()}

    x = torch.randint(0, 256, (4, 4, 6, 3), dtype=torch.uint8)
    cfg = TrainConfig(steps=2, batch_size=2, ema=0.5, eval_every=100, checkpoint_every=1)
    Trainer(tiny_superres().float(), cfg, tmp_path, x, area_downsample(x, (2, 3)), progress=False).train()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert "encoder.blocks.0.attn.qkv.weight" in state["model"]
    state["model"], state["ema"] = old_names(state["model"]), old_names(state["ema"])
    torch.save(state, tmp_path / "checkpoint.pt")
    trainer = Trainer(tiny_superres().float(), TrainConfig(steps=3, batch_size=2, ema=0.5, eval_every=100), tmp_path,
                      x, area_downsample(x, (2, 3)), progress=False)
    trainer.resume()
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, state["model"][name.replace(".attn.qkv.", ".qkv.").replace(".attn.out.", ".out.")
                                                 if name.startswith("encoder.") else name]), name
    assert set(trainer.ema.shadow) == set(trainer.model.state_dict())


def test_encoder_and_decoder_are_stacks_of_the_same_block():
    from image_transformer.nn.model import Block

    model = tiny_superres()
    assert all(type(b) is Block and b.cross is None for b in model.encoder.blocks)
    assert all(type(b) is Block and b.cross is not None for b in model.decoder.blocks)
    assert model.encoder.layout.full and not model.decoder.layout.full  # unmasked vs generation order


def test_aligned_input_positions_are_the_targets_own_at_the_centre_of_each_block():
    from image_transformer.nn.embeddings import sinusoidal_2d
    from image_transformer.nn.superres import aligned_points

    same = tiny_superres(size=(4, 6), input_size=(4, 6))  # no downsampling: the input's positions are the target's
    table = sinusoidal_2d(*same.config.grid_shape, same.config.hidden_size)  # grid [4, 18], sub-pixels
    assert torch.allclose(same.encoder.aligned.double(), table.double(), atol=1e-6)
    rows, cols = aligned_points(tiny_superres(size=(8, 12), input_size=(2, 3)).config)  # blocks of 4x4 target pixels
    # input pixel (1, 2), channel 1: the centre of target rows 4..7 and columns 8..11, its channel-1 sub-pixel
    k = (1 * 3 + 2) * 3 + 1
    assert (float(rows[k]), float(cols[k])) == (5.5, 9.5 * 3 + 1)
    rows, cols = aligned_points(tiny_superres("local_1d", "dmol", size=(8, 12), input_size=(2, 3)).config)
    assert (float(rows[k]), float(cols[k])) == (5.5, 9.5)  # a position is a pixel: every channel at its centre
    learned = tiny_superres(size=(8, 12), input_size=(2, 3), position_encoding="learned")
    assert learned.encoder.where[k] == 6 * 36 + 30  # the nearest point of the target's grid [8, 36]
    own = tiny_superres(encoder_positions="own")  # the input's own grid [2, 9]
    assert own.encoder.positions is not None and not hasattr(own.encoder, "aligned")
    assert torch.equal(own.encoder.where, torch.arange(18))


def test_a_briefly_trained_model_uses_its_input():
    """Targets whose 4x4 blocks take the grey of the input pixel under them (plus noise): a model that reads its
    input learns them in seconds, and shuffled inputs must then cost it far more bits."""
    g = torch.Generator().manual_seed(0)

    def pairs(n):
        low = torch.randint(0, 256, (n, 2, 2, 1), generator=g, dtype=torch.uint8)
        high = low.repeat_interleave(4, 1).repeat_interleave(4, 2).long()
        high = (high + torch.randint(-6, 7, high.shape, generator=g)).clamp(0, 255).to(torch.uint8)
        return high, area_downsample(high, (2, 2))

    def gain(**design):
        cfg = SuperResolutionConfig(image_size=(8, 8), input_size=(2, 2), channels=1, encoder_layers=1,
                                    hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, dropout=0.0,
                                    attention="local_1d", query_length=16, memory_length=16, distribution="dmol",
                                    num_mixtures=2, **design)
        torch.manual_seed(0)
        model = SuperResolutionTransformer(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(250):
            high, low = pairs(32)
            loss = -model.log_prob(high, low).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        high, low = pairs(128)
        with torch.no_grad():
            return input_gain(model, high, low)["input_gain"]

    assert gain() > 1.0
    # the check has teeth: the design before these options (cross-attention alone, tables of input intensities)
    # learns the same pairs without its input
    assert gain(input_skip=False, encoder_input="table", encoder_positions="own") < 0.1


def test_each_target_position_is_given_the_input_under_it():
    from image_transformer.nn.superres import under_index

    # 4x4 target pixels per input pixel, sub-pixel positions [8, 36]
    cat = tiny_superres(size=(8, 12), input_size=(2, 3))
    under = cat.decoder.context_under
    assert under.shape == (8 * 36, 1) and torch.equal(under, under_index(cat.config))
    # target pixel (5, 9), channel 2 -> input pixel (1, 2), channel 2
    assert int(under[5 * 36 + 9 * 3 + 2, 0]) == (1 * 3 + 2) * 3 + 2
    mix = tiny_superres("local_1d", "dmol", size=(8, 12), input_size=(2, 3))  # pixel positions [8, 12]: all 3 channels
    assert mix.decoder.context_under[5 * 12 + 9].tolist() == [(1 * 3 + 2) * 3 + c for c in range(3)]
    context = torch.randn(1, 18, mix.config.hidden_size, dtype=torch.float64)
    assert torch.allclose(mix.decoder.under(context)[0, 5 * 12 + 9], context[0, 15:18].mean(0))
    assert tiny_superres(input_skip=False).decoder.under(context) is None
