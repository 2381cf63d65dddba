"""The neighbourhood input (a masked convolution before the first block) reads exactly the window it claims to; its
autoregressive, normalisation and sampler checks are tests/test_conv.py's, run for both options."""

import itertools

import pytest
import torch

from helpers import ATTENTION, tiny
from image_transformer import ImageTransformerConfig
from image_transformer.nn.config import ConfigError
from image_transformer.nn.embeddings import NeighbourhoodInput
from image_transformer.nn.order import make_layout


def test_it_reads_the_pixel_above_which_attention_here_cannot():
    """Blocks of one position and no memory: without the window a position sees only the value just before it, so
    the pixel above cannot matter; with it, it must."""
    x = torch.randint(0, 256, (1, 4, 5, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    above = x.clone()
    above[0, 1, 2] = 255 - above[0, 1, 2]  # the pixel above (2, 2)
    for size, reacts in [(0, False), (3, True)]:
        model = tiny("local_1d", "dmol", 3, size=(4, 5), query_length=1, memory_length=0, neighbourhood=size)
        changed = not torch.allclose(model.log_prob(x)[0, 2, 2], model.log_prob(above)[0, 2, 2])
        assert changed == reacts, size


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_the_window_holds_exactly_the_earlier_positions_around_each_one(attention):
    layout = make_layout(attention, (5, 6), 7, 5, (2, 4), (1, 3))
    stem = NeighbourhoodInput(layout.grid, layout.rank, 3, 1, 8)
    cols = layout.grid[1]
    for p in range(layout.n):
        seen = {int(q) for q, v in zip(stem.neighbour[p], stem.visible[p]) if v}
        r, c = divmod(p, cols)
        window = {(r + dy) * cols + c + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                  if 0 <= r + dy < 5 and 0 <= c + dx < cols}
        assert seen == {q for q in window if layout.rank[q] < layout.rank[p]}
    if attention != "local_2d":  # raster order: the row above and the one to the left
        assert stem.neighbour.shape[1] == 4


def test_config_refuses_even_or_tiny_windows_and_old_configs_load_without_them():
    for name, bad in itertools.product(("neighbourhood", "conv_size"), (1, 2, 4, -3)):
        with pytest.raises(ConfigError, match=f"{name} must be 0 or an odd size"):
            ImageTransformerConfig(**{name: bad})
    old = ImageTransformerConfig().to_dict()
    del old["neighbourhood"], old["conv_size"]
    loaded = ImageTransformerConfig.from_dict(old)
    assert loaded.neighbourhood == 0 and loaded.conv_size == 0
    model = tiny()
    assert model.neighbourhood is None and all(block.conv is None for block in model.blocks)
