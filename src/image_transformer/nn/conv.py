"""A causal convolution over the position grid, the convolutional sub-layer a block can hold beside its attention.

PixelSNAIL (Chen et al. 2018) interleaves causal convolutions with self-attention and learns faster than either
alone: the convolution hands every position its neighbourhood at every depth, which attention would otherwise have to
find through position encodings. Here it is a depthwise k x k convolution masked to what each position may see,
a ReLU, and a pointwise linear map; in the cached step it reads the earlier positions' inputs from a buffer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .order import window


def causal_taps(grid: tuple[int, int], rank: Tensor, size: int) -> Tensor:
    """(size, size) bool: the kernel offsets at which, for every position of the grid, the neighbour (where it is
    inside the grid) is generated no later than the position itself.

    "No later" includes the position: a block's input at p depends only on values generated before p. For raster
    orders this is PixelCNN's mask B (the rows above, and the row's own positions up to p); for the 2D layouts'
    block-raster order it drops the offsets that reach into a later block.
    """
    neighbour, inside = window(grid, size)  # (n, size^2) each
    causal = ~inside | (rank[neighbour] <= rank[:, None])  # outside the grid constrains nothing
    return (causal.all(0) & inside.any(0)).reshape(size, size)


class CausalConv(nn.Module):
    """Depthwise ``size`` x ``size`` convolution over the grid, masked by :func:`causal_taps`, a ReLU, then a
    pointwise map: (B, n, d) -> (B, n, d), every position from positions generated no later than it."""

    def __init__(self, grid: tuple[int, int], rank: Tensor, size: int, dim: int):
        super().__init__()
        self.grid = grid
        self.depthwise = nn.Conv2d(dim, dim, size, padding=size // 2, groups=dim)
        self.pointwise = nn.Linear(dim, dim)
        taps = causal_taps(grid, rank, size)
        self.register_buffer("mask", taps.float(), persistent=False)  # (size, size)
        # for the one-position step: the kept taps (K,) as flat kernel indices, and for each position the grid
        # index of its neighbour at each tap (n, K) and whether that neighbour is inside the grid
        tap = taps.reshape(-1).nonzero()[:, 0]
        neighbour, inside = window(grid, size)
        self.register_buffer("taps", tap, persistent=False)
        self.register_buffer("neighbour", neighbour[:, tap], persistent=False)
        self.register_buffer("inside", inside[:, tap].float(), persistent=False)

    def forward(self, h: Tensor) -> Tensor:
        """h (B, n, d) in grid order -> (B, n, d)."""
        b, n, d = h.shape
        x = h.transpose(1, 2).reshape(b, d, *self.grid)  # (B, d, rows, cols)
        weight = self.depthwise.weight * self.mask.to(h.dtype)
        y = F.conv2d(x, weight, self.depthwise.bias, padding=self.depthwise.padding, groups=d)
        return self.pointwise(F.relu(y.flatten(2).transpose(1, 2)))

    def step(self, inputs: Tensor, pos: Tensor) -> Tensor:
        """The output at grid position ``pos`` (1,) long, from ``inputs`` (B, n, d), which holds this layer's input
        at every position generated so far (``pos`` included) -> (B, d)."""
        d = inputs.shape[-1]
        neighbour = self.neighbour.index_select(0, pos)[0]  # (K,)
        inside = self.inside.index_select(0, pos)[0].to(inputs.dtype)  # (K,)
        weight = self.depthwise.weight.view(d, -1).index_select(1, self.taps) * inside  # (d, K)
        seen = inputs.index_select(1, neighbour)  # (B, K, d)
        y = torch.einsum("bkd,dk->bd", seen, weight) + self.depthwise.bias
        return self.pointwise(F.relu(y))
