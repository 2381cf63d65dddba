"""Multi-head attention over query blocks and their memory blocks.

The blocks and the mask come from :mod:`image_transformer.order`; this module only gathers them and
runs ``F.scaled_dot_product_attention`` once, batched over all blocks. Memory and time are
O(n * memory block), never O(n^2) (except for the global layout, which is one block by design).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .order import Layout


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(..., L, d) -> (..., heads, L, d / heads)."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """(..., heads, L, dh) -> (..., L, heads * dh)."""
    return x.transpose(-3, -2).flatten(-2)


def to_blocks(x: Tensor, index: Tensor) -> Tensor:
    """Gather grid positions into blocks: x (B, n + 1, d), index (nb, l) -> (B, nb, l, d)."""
    return x.index_select(1, index.reshape(-1)).unflatten(1, index.shape)


class BlockSelfAttention(nn.Module):
    """Masked multi-head self-attention where each query block reads its memory block."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, layout: Layout) -> Tensor:
        """x: (B, n, d) in grid order -> (B, n, d)."""
        b = x.shape[0]
        nb, lq, lk = layout.mask.shape
        qkv = F.pad(self.qkv(x), (0, 0, 0, 1))  # (B, n + 1, 3d): row n is the empty padding slot
        q, k, v = qkv.chunk(3, dim=-1)
        q = to_blocks(q, layout.query_index)  # (B, nb, lq, d)
        k = to_blocks(k, layout.memory_index)  # (B, nb, lk, d)
        v = to_blocks(v, layout.memory_index)
        # fold blocks into the batch: the fused CPU/GPU kernels take 4-D inputs
        q, k, v = (split_heads(t, self.heads).flatten(0, 1) for t in (q, k, v))  # (B*nb, h, l, dh)
        mask = layout.mask[None, :, None].expand(b, nb, 1, lq, lk).reshape(b * nb, 1, lq, lk)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B*nb, h, lq, dh)
        y = merge_heads(y).reshape(b, nb * lq, -1)  # (B, nb*lq, d)
        return self.out(y.index_select(1, layout.slot))  # (B, n, d)

    def step(self, x: Tensor, cache: "KVCache", position: int, visible: Tensor) -> Tensor:
        """One new position. x: (B, d); writes its key/value to the cache and reads ``visible`` (m,)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, d) each
        cache.k.select(1, position).copy_(k)
        cache.v.select(1, position).copy_(v)
        q = split_heads(q[:, None], self.heads)  # (B, h, 1, dh)
        keys = split_heads(cache.k.index_select(1, visible), self.heads)  # (B, h, m, dh)
        values = split_heads(cache.v.index_select(1, visible), self.heads)
        y = F.scaled_dot_product_attention(q, keys, values)  # (B, h, 1, dh)
        return self.out(merge_heads(y)[:, 0])


class CrossAttention(nn.Module):
    """Unmasked multi-head attention from the positions to a context (the encoder's output)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def context_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """context (B, m, d) -> keys, values (B, h, m, dh): computed once per batch when sampling."""
        k, v = self.kv(context).chunk(2, dim=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def forward(self, x: Tensor, context: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """x (B, L, d) attends to context (B, m, d) (or its precomputed keys and values) -> (B, L, d)."""
        k, v = self.context_kv(context) if isinstance(context, Tensor) else context
        q = split_heads(self.q(x), self.heads)  # (B, h, L, dh)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(merge_heads(y))


class KVCache:
    """Keys and values of every grid position generated so far, for one layer.

    ``context`` holds the layer's precomputed cross-attention keys and values, if it has any.
    """

    def __init__(self, batch: int, n: int, dim: int, device: torch.device, dtype: torch.dtype):
        self.k = torch.zeros(batch, n, dim, device=device, dtype=dtype)
        self.v = torch.zeros(batch, n, dim, device=device, dtype=dtype)
        self.context: tuple[Tensor, Tensor] | None = None
