"""Multi-head attention over query blocks and their memory blocks.

The blocks and the mask come from :mod:`image_transformer.nn.order`; this module only gathers them and
runs ``F.scaled_dot_product_attention`` once, batched over all blocks. Memory and time are
O(n * memory block), never O(n^2) (except for the global layout, which is one block by design).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .order import Layout, StepPlan
from .static_step import StaticKVCache


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(..., L, d) -> (..., heads, L, d / heads)."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """(..., heads, L, dh) -> (..., L, heads * dh)."""
    return x.transpose(-3, -2).flatten(-2)


def attend_one(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(dh)) v for one query per head: q (B, h, 1, dh), k and v (B, h, m, dh) -> (B, h, 1, dh).

    ``mask`` (broadcast to (B, h, 1, m), True = visible): for caches that hold more than the step may see.
    Written as two batched matmuls rather than the fused kernel: the fused CPU kernel splits one query's
    keys over threads, so its sums (and the codec's probabilities) change with the thread count; these
    do not, and at one query they are as fast.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)  # (B, h, 1, m)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(scores.softmax(-1), v)


def to_blocks(x: Tensor, index: Tensor) -> Tensor:
    """Gather grid positions into blocks: x (B, n, d), index (nb, l) -> (B, nb, l, d)."""
    return x.index_select(1, index.reshape(-1)).unflatten(1, index.shape)


class BlockSelfAttention(nn.Module):
    """Multi-head self-attention where each query block reads its memory block, masked as the layout says."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, layout: Layout, cache: "KVCache | None" = None, steps: int = 0) -> Tensor:
        """x: (B, n, d) in grid order -> (B, n, d).

        With ``cache``, the keys and values of the first ``steps`` generation steps are also stored in it
        (a known prefix, computed in one parallel pass before the sampler steps on from there).
        """
        b, n, d = x.shape
        nb, lq, lk = layout.mask.shape
        # one product (two would round differently from the step's, and from saved models' reference outputs)
        q, kv = self.qkv(x).split([d, 2 * d], dim=-1)  # (B, n, d), (B, n, 2d): views
        if cache is not None and steps:
            cache.fill(kv.index_select(1, layout.order[:steps]))
        q = q.view(b, nb, lq, d) if layout.in_place else to_blocks(q, layout.query_gather)  # (B, nb, lq, d)
        k, v = to_blocks(kv, layout.memory_gather).chunk(2, dim=-1)  # (B, nb, lk, d) each
        # fold blocks into the batch: the fused CPU/GPU kernels take 4-D inputs
        q, k, v = (split_heads(t, self.heads).flatten(0, 1) for t in (q, k, v))  # (B*nb, h, l, dh)
        mask = None if layout.full else layout.mask[None, :, None].expand(b, nb, 1, lq, lk).flatten(0, 1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B*nb, h, lq, dh)
        y = merge_heads(y).reshape(b, nb * lq, d)  # (B, nb*lq, d)
        return self.out(y if layout.in_place else y.index_select(1, layout.slot))  # (B, n, d)

    def step(self, x: Tensor, cache: KVCache | StaticKVCache, t: int | Tensor) -> Tensor:
        """Generation step ``t``. x: (B, d); stores its key and value, attends to all it may see -> (B, d).

        ``t`` is an int for the eager :class:`KVCache`, a device tensor for the graph sampler's static cache.
        """
        b = x.shape[0]
        qkv = self.qkv(x).view(b, 3, self.heads, -1)  # (B, 3, h, dh): the layout of chunk(3) + split_heads
        cache.write(t, qkv[:, 1:])
        k, v, mask = cache.read(t)  # (B, h, m, dh) each, and which of the m the step sees (None: all)
        y = attend_one(qkv[:, 0, :, None], k, v, mask)  # (B, h, 1, dh)
        return self.out(y.reshape(b, -1))


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
    """Keys and values of one layer for the cached step, stored in generation order.

    ``k`` and ``v`` (B, h, n, dh) hold step t's key and value at ``[:, :, t]``; two tensors, so that a
    slice of either is a plain strided batch of matrices that matmul reads in place. When the plan is
    contiguous (1D local, global), what step t sees is the slice ``low[t] .. t``: no gather, no copy.
    Otherwise (2D local) ``window`` (two (B, h, E + L, dh) tensors) holds the current block's earlier
    memory right-aligned before slot E = ``max_earlier`` (gathered once per block), then the block's own
    steps, so a step again reads one slice. All buffers are allocated here, once.
    ``context`` holds the layer's precomputed cross-attention keys and values, if it has any; ``inputs`` its
    convolution's inputs by grid position (B, n, d), if it has one.
    """

    def __init__(self, batch: int, plan: StepPlan, heads: int, head_dim: int, device: torch.device,
                 dtype: torch.dtype, context: tuple[Tensor, Tensor] | None = None, inputs: Tensor | None = None):
        self.plan = plan
        self.inputs = inputs

        def buffer(length: int) -> Tensor:
            return torch.zeros(batch, heads, length, head_dim, device=device, dtype=dtype)

        self.k, self.v = buffer(len(plan.block)), buffer(len(plan.block))
        self.window = None if plan.contiguous else (buffer(plan.max_earlier + plan.max_block),
                                                    buffer(plan.max_earlier + plan.max_block))
        self.block = -1  # the block whose memory ``window`` holds
        self.context = context

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B,) long, in that order: a particle sampler's resampling copies its ancestors."""
        self.k, self.v = self.k[index], self.v[index]
        if self.window is not None:
            self.window = (self.window[0][index], self.window[1][index])
        if self.inputs is not None:
            self.inputs = self.inputs[index]
        if self.context is not None:
            self.context = (self.context[0][index], self.context[1][index])

    def fill(self, kv: Tensor) -> None:
        """Store the first steps from a parallel pass: kv (B, s, 2d) in generation order."""
        b, s, _ = kv.shape
        k_v = kv.view(b, s, 2, self.k.shape[1], -1).permute(2, 0, 3, 1, 4)  # (2, B, h, s, dh)
        self.k[:, :, :s] = k_v[0]
        self.v[:, :, :s] = k_v[1]

    def write(self, t: int, kv: Tensor) -> None:
        """Store step t's key and value, kv (B, 2, h, dh)."""
        self.k.select(2, t).copy_(kv[:, 0])
        self.v.select(2, t).copy_(kv[:, 1])
        if self.window is not None:
            plan = self.plan
            b = plan.block[t]
            if b != self.block:
                self._gather(b, t)
            slot = plan.max_earlier + t - plan.first[b]
            self.window[0].select(2, slot).copy_(kv[:, 0])
            self.window[1].select(2, slot).copy_(kv[:, 1])

    def _gather(self, b: int, t: int) -> None:
        """Point the window at block b, whose steps before t are already generated."""
        plan, e, first = self.plan, self.plan.earlier[b], self.plan.first[b]
        start, end = plan.max_earlier - e.numel(), plan.max_earlier
        for source, window in zip((self.k, self.v), self.window):
            torch.index_select(source, 2, e.to(source.device), out=window[:, :, start:end])
            window[:, :, end : end + t - first] = source[:, :, first:t]
        self.block = b

    def read(self, t: int) -> tuple[Tensor, Tensor, None]:
        """What step t sees (after ``write(t)``): keys and values (B, h, m, dh), in generation order, and no mask
        (every one of the m is visible)."""
        plan = self.plan
        if self.window is None:
            lo, hi = plan.low[t], t + 1
            return self.k[:, :, lo:hi], self.v[:, :, lo:hi], None
        b = plan.block[t]
        lo, hi = plan.max_earlier - plan.earlier[b].numel(), plan.max_earlier + t - plan.first[b] + 1
        return self.window[0][:, :, lo:hi], self.window[1][:, :, lo:hi], None
