"""Input representations: intensities, pixels, positions and classes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import to_unit
from .order import window


class ChannelEmbedding(nn.Module):
    """Channel-specific embeddings of the 256 intensities (C x 256 rows), scaled by sqrt(d)."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(channels * 256, dim)
        nn.init.normal_(self.table.weight, std=dim**-0.5)
        self.scale = math.sqrt(dim)

    def forward(self, values: Tensor, channel: Tensor) -> Tensor:
        """values: (B, m) in [0, 256); channel: (m,) -> (B, m, d)."""
        return self.table(values + 256 * channel) * self.scale


class SubPixelInput(ChannelEmbedding):
    """The input of sub-pixel positions (grid [H, W*C]): the embedding of the value in its channel's table."""

    def __init__(self, channels: int, dim: int, num_positions: int):
        super().__init__(channels, dim)
        self.register_buffer("channel", torch.arange(num_positions) % channels, persistent=False)

    def forward(self, values: Tensor, index: Tensor) -> Tensor:
        """values (B, m, 1) long at grid positions ``index`` (m,) -> (B, m, d)."""
        return super().forward(values[..., 0], self.channel[index])


class SubPixelLinear(nn.Module):
    """Sub-pixel positions (grid [H, W*C]) read as numbers: the intensity scaled to [-1, 1] times its channel's
    vector, plus that channel's bias. Nearby intensities start out near each other, as the mixture decoder's own
    pixel input has them; a table of 256 unrelated rows has to learn that order value by value first."""

    def __init__(self, channels: int, dim: int, num_positions: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, dim))  # entries of about 1, as the tables' after scaling
        self.bias = nn.Parameter(torch.zeros(channels, dim))
        self.register_buffer("channel", torch.arange(num_positions) % channels, persistent=False)

    def forward(self, values: Tensor, index: Tensor) -> Tensor:
        """values (B, m, 1) long at grid positions ``index`` (m,) -> (B, m, d)."""
        c = self.channel[index]
        return to_unit(values, self.weight.dtype) * self.weight[c] + self.bias[c]


class PixelConv(nn.Module):
    """The 1xC convolution with stride C over a row of sub-pixels, i.e. one linear map per pixel.

    Takes the C intensities of each pixel scaled to [-1, 1] to a d-dimensional representation.
    """

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(1, dim, kernel_size=(1, channels), stride=(1, channels))

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels: (B, m, C) floats in [-1, 1] -> (B, m, d).

        Under torch.compile and off the CPU it is computed as the linear map it is (the conv's weight (d, 1, 1, C)
        read as (d, C)): compiled bf16 convolutions gave NaNs here (torch 2.13, CPU), and cuDNN convolutions round
        their inputs to TF32 by default, which a float32 matmul does not. Eager CPU code keeps the convolution, whose
        sums the codec's streams and the saved models' figures were made with.
        """
        if torch.compiler.is_compiling() or pixels.device.type != "cpu":
            return F.linear(pixels, self.conv.weight.flatten(1), self.conv.bias)
        b, m, c = pixels.shape
        out = self.conv(pixels.reshape(b, 1, m, c))  # (B, d, m, 1)
        return out.squeeze(-1).transpose(1, 2)


class PixelInput(PixelConv):
    """The input of pixel positions (grid [H, W]): the C intensities scaled to [-1, 1], one linear map, and with
    ``relu`` a ReLU after it.

    Why the ReLU (config ``pixel_input_relu``, on for new models): the paper only says a 1x3 strided convolution
    combines the channels; tensor2tensor, which produced the paper's mixture results, follows it with a ReLU. Without
    it a pixel's input is an affine function of its C intensities (a C-dimensional subspace of the d dimensions,
    shifted by the position), where the categorical model's embedding tables are free per value; with it the d
    features are d different hinges of those intensities. Models saved before the option existed load without it
    (``config.ADDED_FIELDS``), so their likelihoods and codec streams are unchanged.
    """

    def __init__(self, channels: int, dim: int, relu: bool = False):
        super().__init__(channels, dim)
        self.relu = relu

    def forward(self, values: Tensor, index: Tensor) -> Tensor:
        """values (B, m, C) long at grid positions ``index`` (m,) -> (B, m, d)."""
        out = super().forward(to_unit(values, self.conv.weight.dtype))
        return F.relu(out) if self.relu else out


def sinusoidal_at(rows: Tensor, cols: Tensor, dim: int) -> Tensor:
    """(m, dim) encodings of the points (rows[i], cols[i]), which may be fractional: half of the dimensions encode
    the row, half the column (sin and cos)."""

    def encode(pos: Tensor, d: int) -> Tensor:  # (m,) -> (m, d)
        freq = torch.exp(-math.log(10000.0) * torch.arange(d // 2, dtype=torch.float32) / max(d // 2 - 1, 1))
        angles = pos.float()[:, None] * freq
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    half = dim // 2
    return torch.cat([encode(rows, half), encode(cols, half)], dim=-1)


def sinusoidal_2d(rows: int, cols: int, dim: int) -> Tensor:
    """(rows*cols, dim): the encodings of the grid's points, row by row."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return sinusoidal_at(r.reshape(-1), c.reshape(-1), dim)


class PositionEncoding(nn.Module):
    """2D position encodings of the grid, sinusoidal (fixed) or learned (row + column tables).

    Sinusoidal: the paper's split, d/2 dimensions for the row and d/2 for the column (and channel). Learned: the
    sum of a full-width row table and a full-width column table, as tensor2tensor's add_positional_embedding_nd
    (which produced the paper's learned-position results) does, kept rather than the paper's d/2 + d/2 text
    because it contains it: a row table zero in its second half plus a column table zero in its first half *is*
    the split (tested), so the sum can only fit the data as well or better, for (rows + cols) * d/2 more
    parameters, a few thousand. Saved models keep their tables unchanged.
    """

    def __init__(self, grid: tuple[int, int], dim: int, kind: str = "sinusoidal"):
        super().__init__()
        rows, cols = grid
        self.kind = kind
        self.num_cols = cols
        if kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_2d(rows, cols, dim), persistent=False)
        elif kind == "learned":
            self.rows = nn.Parameter(torch.randn(rows, dim) * dim**-0.5)
            self.cols = nn.Parameter(torch.randn(cols, dim) * dim**-0.5)
        else:
            raise ValueError(f"unknown position encoding {kind!r}; expected 'sinusoidal' or 'learned'")

    def forward(self, index: Tensor) -> Tensor:
        """index: (m,) flat grid positions -> (m, d)."""
        if self.kind == "sinusoidal":
            return self.table[index]
        return self.rows[index // self.num_cols] + self.cols[index % self.num_cols]


class NeighbourhoodInput(nn.Module):
    """A masked convolution over the values a position may already see: for each grid position, the intensities
    (scaled to [-1, 1]) of the earlier positions in a ``size`` x ``size`` window around it on the position grid, and
    one flag per window slot saying whether it is visible, through a small two-layer network to d dimensions.

    Why: self-attention learns where its neighbours are from position encodings, slowly; a convolutional model
    (PixelCNN++) has its neighbourhood from the first step. Given before the first block, this hands every position
    its local context at once, and attention builds on it. Visible means earlier in the layout's generation order
    (``rank``), so it holds for any order (raster, or the 2D layouts' block raster); window slots no position can
    ever see are dropped. A position's own value is never visible: it is the one being predicted.
    """

    def __init__(self, grid: tuple[int, int], rank: Tensor, size: int, values_per_position: int, dim: int):
        super().__init__()
        neighbour, inside = window(grid, size)  # (n, size^2) each
        visible = inside & (rank[neighbour] < rank[:, None])
        used = visible.any(0)  # slots some position sees
        self.register_buffer("neighbour", neighbour[:, used], persistent=False)  # (n, K) grid positions
        self.register_buffer("visible", visible[:, used].float(), persistent=False)  # (n, K)
        slots = int(used.sum())
        self.net = nn.Sequential(nn.Linear(slots * (values_per_position + 1), dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, values: Tensor, index: Tensor) -> Tensor:
        """values (B, n, k) long, filled at least where positions ``index`` (m,) see -> (B, m, d)."""
        visible = self.visible[index].to(self.net[0].weight.dtype)  # (m, K)
        seen = to_unit(values[:, self.neighbour[index]], visible.dtype) * visible[..., None]  # (B, m, K, k)
        flags = visible.expand(values.shape[0], -1, -1)[..., None]  # (B, m, K, 1)
        return self.net(torch.cat([seen, flags], -1).flatten(2))
