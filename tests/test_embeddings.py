import math

import pytest
import torch

from image_transformer.nn.embeddings import ChannelEmbedding, PixelConv, PositionEncoding, sinusoidal_2d


def test_channel_embedding_is_channel_specific_and_scaled():
    emb = ChannelEmbedding(channels=3, dim=8)
    values = torch.tensor([[7, 7, 7]])
    channel = torch.tensor([0, 1, 2])
    out = emb(values, channel)  # (1, 3, 8)
    assert out.shape == (1, 3, 8)
    # the same intensity in three channels: three different rows of the C x 256 table, times sqrt(d)
    assert not torch.allclose(out[0, 0], out[0, 1]) and not torch.allclose(out[0, 1], out[0, 2])
    expected = emb.table.weight[torch.tensor([7, 256 + 7, 512 + 7])] * math.sqrt(8)
    assert torch.allclose(out[0], expected)


def test_pixel_conv_is_one_linear_map_per_pixel():
    torch.manual_seed(0)
    conv = PixelConv(channels=3, dim=5)
    pixels = torch.rand(2, 4, 3) * 2 - 1  # (B, k, C)
    out = conv(pixels)
    weight = conv.conv.weight.reshape(5, 3)  # (d, C)
    assert out.shape == (2, 4, 5)
    assert torch.allclose(out, pixels @ weight.T + conv.conv.bias, atol=1e-6)
    # pixels do not mix: changing pixel 2 changes only output 2
    other = pixels.clone()
    other[:, 2] = 0.5
    changed = (conv(other) - out).abs().sum(-1) > 0
    assert changed[:, 2].all() and not changed[:, [0, 1, 3]].any()


def test_sinusoidal_halves_encode_row_and_column():
    rows, cols, dim = 5, 7, 16
    table = sinusoidal_2d(rows, cols, dim).reshape(rows, cols, dim)
    row_half, col_half = table[..., : dim // 2], table[..., dim // 2 :]
    assert torch.equal(row_half, row_half[:, :1].expand_as(row_half))  # constant along columns
    assert torch.equal(col_half, col_half[:1].expand_as(col_half))  # constant along rows
    assert table.abs().max() <= 1
    flat = table.reshape(rows * cols, dim)
    assert torch.cdist(flat, flat).add(torch.eye(rows * cols)).min() > 1e-3  # every position distinct


def test_position_encoding_is_fixed_sinusoids_or_learned_rows_plus_columns():
    sin = PositionEncoding((3, 4), 8)
    index = torch.tensor([0, 5, 11])
    assert torch.equal(sin(index), sinusoidal_2d(3, 4, 8)[index])
    assert not list(sin.parameters())  # fixed
    learned = PositionEncoding((3, 4), 8, kind="learned")
    assert torch.equal(learned(torch.tensor([6]))[0], learned.rows[1] + learned.cols[2])
    with pytest.raises(ValueError, match="unknown position encoding"):
        PositionEncoding((3, 4), 8, kind="rotary")
