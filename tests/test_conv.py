"""The blocks' causal convolution (and the neighbourhood input): autoregressive and normalised for every layout and
distribution, every sampler alike; the convolution's mask as large as causality allows and no larger, its
one-position step equal to the parallel pass."""

import itertools

import pytest
import torch

from helpers import ATTENTION, static_generate, tiny
from image_transformer import SuperResolutionConfig, SuperResolutionTransformer
from image_transformer.nn.conv import CausalConv, causal_taps
from image_transformer.nn.order import make_layout

LAYOUT = dict(query_length=7, memory_length=5, query_shape=(2, 4), memory_flange=(1, 3))
# each local option: (the dependency check's settings, the normalisation check's, the samplers'); the neighbourhood
# input (tests/test_neighbourhood.py) goes through the same checks as the blocks' convolution
OPTIONS = {
    "neighbourhood": (dict(neighbourhood=3), dict(neighbourhood=5), dict(neighbourhood=5)),
    "conv": (dict(conv_size=3), dict(conv_size=5, neighbourhood=3), dict(conv_size=3, neighbourhood=3)),
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("attention,distribution,channels",
                         list(itertools.product(ATTENTION, ["categorical", "dmol"], [1, 3])))
def test_autoregressive_and_normalised_every_position(option, attention, distribution, channels,
                                                      dependency_violations, normalization_errors):
    causal, normalised, _ = OPTIONS[option]
    model = tiny(attention, distribution, channels, **causal)
    violations, later = dependency_violations(model.log_prob, model.generation_order(), model.image_shape)
    assert violations == [] and later > 0
    small = tiny(attention, distribution, channels, size=(3, 4), **normalised)
    assert normalization_errors(small.log_prob, small.image_shape).max() < 1e-6


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("attention,distribution", list(itertools.product(ATTENTION, ["categorical", "dmol"])))
def test_every_sampler_draws_the_same_images(option, attention, distribution):
    model = tiny(attention, distribution, 3, size=(4, 5), **OPTIONS[option][2])
    cached = model.sample(2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(cached, model.sample(2, generator=torch.Generator().manual_seed(5), use_cache=False))
    values = torch.zeros(2, model.layout.n, model.dist.values_per_position, dtype=torch.long)
    static = static_generate(model, values, generator=torch.Generator().manual_seed(5))
    assert torch.equal(model.to_images(static).to(torch.uint8), cached)
    if attention != "local_2d":  # a known prefix fills the inputs' and convolutions' buffers in the parallel pass
        done = model.complete(cached, 2, generator=torch.Generator().manual_seed(9))
        assert torch.equal(done[:, :2], cached[:, :2])
        assert torch.equal(done, model.complete(cached, 2, generator=torch.Generator().manual_seed(9),
                                                use_cache=False))
        values = model.to_positions(cached)
        static = static_generate(model, values, start=2 * model.layout.grid[1],
                                 generator=torch.Generator().manual_seed(9))
        assert torch.equal(model.to_images(static).to(torch.uint8), done)


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_the_mask_keeps_every_causal_tap_and_only_those(attention):
    layout = make_layout(attention, (5, 8), **LAYOUT)
    rows, cols = layout.grid
    taps = causal_taps(layout.grid, layout.rank, 5)
    for i, j in itertools.product(range(5), range(5)):
        dy, dx = i - 2, j - 2
        ok = [layout.rank[(r + dy) * cols + c + dx] <= layout.rank[r * cols + c]
              for r in range(rows) for c in range(cols) if 0 <= r + dy < rows and 0 <= c + dx < cols]
        assert bool(taps[i, j]) == all(ok), (dy, dx)
    if attention != "local_2d":  # raster: PixelCNN's mask B
        expected = torch.zeros(5, 5, dtype=torch.bool)
        expected[:2] = True
        expected[2, :3] = True
        assert torch.equal(taps, expected)


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_the_one_position_step_is_the_parallel_pass(attention):
    layout = make_layout(attention, (4, 6), **LAYOUT)
    torch.manual_seed(0)
    conv = CausalConv(layout.grid, layout.rank, 3, 8).double()
    h = torch.randn(2, layout.n, 8, dtype=torch.float64)
    full = conv(h)
    for p in range(layout.n):
        assert torch.allclose(conv.step(h, torch.tensor([p])), full[:, p], atol=1e-12)


def test_it_reads_the_row_above_which_attention_here_cannot():
    """Blocks of one position and no memory: without the convolution a position sees only the value just before it,
    so the pixel above and to the left (the input of the position above) cannot matter; with it, it must."""
    x = torch.randint(0, 256, (1, 4, 5, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    moved = x.clone()
    moved[0, 1, 1] = 255 - moved[0, 1, 1]
    for size, reacts in [(0, False), (3, True)]:
        model = tiny("local_1d", "dmol", 3, size=(4, 5), query_length=1, memory_length=0, conv_size=size)
        changed = not torch.allclose(model.log_prob(x)[0, 2, 2], model.log_prob(moved)[0, 2, 2])
        assert changed == reacts, size


def test_only_the_super_resolution_decoder_has_convolutions_and_it_stays_autoregressive(dependency_violations):
    cfg = SuperResolutionConfig(image_size=(4, 6), input_size=(2, 3), channels=3, encoder_layers=1, hidden_size=16,
                                num_layers=2, num_heads=2, ffn_size=32, dropout=0.0, query_length=7, memory_length=5,
                                conv_size=3)
    torch.manual_seed(0)
    model = SuperResolutionTransformer(cfg).double().eval()
    assert all(b.conv is None for b in model.encoder.blocks)
    assert all(b.conv is not None for b in model.decoder.blocks)
    inputs = torch.randint(0, 256, (1, 2, 3, 3), dtype=torch.uint8)
    violations, later = dependency_violations(lambda x: model.log_prob(x, inputs.expand(len(x), -1, -1, -1)),
                                              model.generation_order(), model.image_shape)
    assert violations == [] and later > 0
    a = model.sample(inputs.expand(2, -1, -1, -1), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, model.sample(inputs.expand(2, -1, -1, -1), generator=torch.Generator().manual_seed(1),
                                       use_cache=False))
