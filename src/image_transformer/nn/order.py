"""Generation orders and the block partition of the position grid.

This is the one place that decides who may see whom. Everything here is index arithmetic on a
position grid of shape (rows, cols) = [H, W*C] (one position per sub-pixel) or [H, W] (one per pixel).
A grid position is named by its flat index ``row * cols + col``; ``n = rows * cols`` is used as the
index of an always-empty padding slot.

A :class:`Layout` holds, for a model's attention type:

- ``order``  (n,): flat indices in generation order; ``rank`` (n,): the inverse (step of each index).
- ``prev``   (n,): the index generated just before each position (``n`` for the first). The model's
  input at a position is the *value* of ``prev``: this is the shift by one in generation order.
- ``query_index``  (nb, lq): the positions of each query block (``n`` where the block is padded).
- ``memory_index`` (nb, lk): the positions each block may read (``n`` outside the grid).
- ``mask``   (nb, lq, lk): True where the query may attend to the memory slot. A query sees a memory
  position exactly when that position is inside the grid and not later than the query in generation
  order (it sees itself, since its own input is the previous value). Without ``causal`` (the
  super-resolution encoder, :func:`unmasked`), it sees every memory position inside the grid.
- ``slot``   (n,): where each position sits in ``query_index.view(-1)``, to scatter results back.
- ``query_gather``, ``memory_gather``: ``query_index`` and ``memory_index`` with the padding slot replaced by
  position 0, for attention's gathers (padded slots are masked or dropped, so their contents never matter);
  ``in_place``: the query blocks are the grid cut in order (1D local, global), so no gather is needed at all.

For the cached one-position step, :meth:`Layout.step_plan` restates the same "who sees whom" in
generation steps: with keys stored in generation order, what each step reads is computed once here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class Layout(nn.Module):
    """Index tables of one attention pattern over a grid (buffers only, no weights)."""

    order: Tensor
    rank: Tensor
    prev: Tensor
    query_index: Tensor
    memory_index: Tensor
    mask: Tensor
    slot: Tensor
    query_gather: Tensor
    memory_gather: Tensor

    def __init__(self, grid: tuple[int, int], order: Tensor, query_index: Tensor, memory_index: Tensor,
                 causal: bool = True):
        super().__init__()
        rows, cols = grid
        n = rows * cols
        self.grid = (rows, cols)
        self.n = n
        rank = torch.empty(n, dtype=torch.long)
        rank[order] = torch.arange(n)
        prev = torch.full((n,), n, dtype=torch.long)
        prev[order[1:]] = order[:-1]

        # rank of every slot, with padding ranked after everything (so never visible)
        rank_pad = torch.cat([rank, torch.tensor([n + 1])])
        q_rank = rank_pad[query_index]  # (nb, lq)
        m_rank = rank_pad[memory_index]  # (nb, lk)
        # a causal query sees what is generated no later than itself; any other sees the whole grid
        limit = q_rank if causal else torch.full_like(q_rank, n)
        mask = m_rank[:, None, :] <= limit[:, :, None]  # (nb, lq, lk)
        # padded query slots are computed and thrown away; let them see everything so no row is empty
        mask |= (query_index == n)[:, :, None]
        self.full = bool(mask.all())  # every query sees every memory slot: attention needs no mask

        flat = query_index.reshape(-1)
        real = flat < n
        slot = torch.empty(n, dtype=torch.long)
        slot[flat[real]] = torch.arange(flat.numel())[real]
        # the query blocks are the grid cut in order, without padding: blocks are a view, nothing to scatter back
        self.in_place = flat.numel() == n and bool((flat == torch.arange(n)).all())
        # gather tables for attention, with the padding slot pointed at position 0: what a padded slot holds
        # never matters (padded memory is masked for every real query, padded queries' outputs are dropped),
        # so the keys and values need no padding row and no copy to make one
        query_gather = torch.where(query_index < n, query_index, 0)
        memory_gather = torch.where(memory_index < n, memory_index, 0)

        for name, value in dict(
            order=order, rank=rank, prev=prev, query_index=query_index,
            memory_index=memory_index, mask=mask, slot=slot, query_gather=query_gather,
            memory_gather=memory_gather,
        ).items():
            self.register_buffer(name, value, persistent=False)

    @property
    def query_length(self) -> int:
        return self.query_index.shape[1]

    def step_plan(self) -> "StepPlan":
        """What each generation step reads, for keys and values stored in generation order (computed once)."""
        plan = self.__dict__.get("_step_plan")
        if plan is None:
            plan = self.__dict__["_step_plan"] = StepPlan.of(self)
        return plan

    def visible(self, position: int) -> Tensor:
        """Flat indices that the query at ``position`` attends to (all generated no later than it)."""
        block, i = divmod(int(self.slot[position]), self.query_length)
        return self.memory_index[block][self.mask[block, i]]


@dataclass(frozen=True)
class StepPlan:
    """The memory each generation step reads, in generation steps (ranks) rather than grid positions.

    A query sees exactly the memory positions generated no later than itself, so, sorted by rank, what
    step ``t`` of block ``b`` sees is the block's ``earlier`` steps (generated before the block began)
    followed by the block's own steps ``first[b] .. t``. When every block's earlier steps are one run
    ending right before the block (1D local, global), the visible memory is the single range
    ``[low[t], t + 1)`` of a generation-ordered cache (``contiguous``). Otherwise (2D local) the cached
    sampler gathers ``earlier[b]`` once per block into a window and appends the block's own steps.
    """

    contiguous: bool
    block: list[int]  # (n,) block of each step
    first: list[int]  # (nb,) first step of each block
    low: list[int]  # (n,) first visible step when contiguous: t - low[t] + 1 steps are read
    earlier: list[Tensor]  # (nb,) long tensors: steps generated before the block that it reads, ascending
    max_earlier: int  # the longest ``earlier``
    max_block: int  # the most steps of one block

    @staticmethod
    def of(layout: "Layout") -> "StepPlan":
        n, lq = layout.n, layout.query_length
        rank_pad = torch.cat([layout.rank, torch.tensor([n + 1])])
        block = (layout.slot[layout.order] // lq).tolist()  # the order visits blocks one after another
        nb = layout.query_index.shape[0]
        first, count = [n] * nb, [0] * nb
        for t, b in enumerate(block):
            first[b] = min(first[b], t)
            count[b] += 1
        earlier = []
        for b in range(nb):
            ranks = rank_pad[layout.memory_index[b]]
            earlier.append(ranks[ranks < first[b]].sort().values)
            own = (ranks >= first[b]) & (ranks < first[b] + count[b])
            assert int(own.sum()) == count[b], "a query block must be part of its own memory"
        contiguous = all(
            e.numel() == 0 or (int(e[-1]) == first[b] - 1 and int(e[-1] - e[0]) == e.numel() - 1)
            for b, e in enumerate(earlier)
        )
        low = [first[b] - earlier[b].numel() for b in block]
        return StepPlan(contiguous, block, first, low, earlier, max(e.numel() for e in earlier), max(count))


def window(grid: tuple[int, int], size: int) -> tuple[Tensor, Tensor]:
    """The ``size`` x ``size`` window around every grid position, as the convolutions that read it need it:
    (n, size^2) flat indices of the neighbour at each offset (raster order of offsets, 0 where outside the grid) and
    (n, size^2) bool, whether that neighbour is inside the grid. Who of them a position may see is the caller's rank
    comparison."""
    rows, cols = grid
    r = size // 2
    pos = torch.arange(rows * cols)
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    nrow, ncol = (pos // cols)[:, None] + dy.reshape(-1), (pos % cols)[:, None] + dx.reshape(-1)
    inside = (nrow >= 0) & (nrow < rows) & (ncol >= 0) & (ncol < cols)
    return torch.where(inside, nrow * cols + ncol, 0), inside


def raster_1d(grid: tuple[int, int], query_length: int, memory_length: int) -> Layout:
    """1D local attention in raster order.

    The flattened grid is cut into blocks of ``query_length`` positions (the last one padded);
    each block also reads the ``memory_length`` positions just before it.
    """
    rows, cols = grid
    n = rows * cols
    lq = min(query_length, n)
    lm = min(memory_length, n)
    nb = math.ceil(n / lq)
    starts = torch.arange(nb)[:, None] * lq  # (nb, 1)
    query = starts + torch.arange(lq)  # (nb, lq)
    memory = starts - lm + torch.arange(lm + lq)  # (nb, lm + lq): lm earlier positions, then the block
    query = torch.where(query < n, query, n)
    memory = torch.where((memory >= 0) & (memory < n), memory, n)
    return Layout(grid, torch.arange(n), query, memory)


def global_causal(grid: tuple[int, int]) -> Layout:
    """Every position attends to every earlier one (one block holding the whole grid)."""
    rows, cols = grid
    return raster_1d(grid, rows * cols, 0)


def unmasked(grid: tuple[int, int]) -> Layout:
    """Every position attends to every position (one block holding the whole grid, no mask)."""
    rows, cols = grid
    everything = torch.arange(rows * cols)
    return Layout(grid, everything, everything[None], everything[None], causal=False)


def block_raster_2d(grid: tuple[int, int], query_shape: tuple[int, int], memory_flange: tuple[int, int]) -> Layout:
    """2D local attention in block-raster order.

    The grid is padded to whole query blocks of ``query_shape = (qh, qw)``; blocks are generated in
    raster order, positions inside a block in raster order. A block reads the memory block that
    extends it by ``memory_flange = (fh, fw)``: ``fh`` rows up, ``fw`` columns left and right.
    """
    rows, cols = grid
    n = rows * cols
    qh, qw = min(query_shape[0], rows), min(query_shape[1], cols)
    fh, fw = memory_flange
    nbh, nbw = math.ceil(rows / qh), math.ceil(cols / qw)

    def flat(r: Tensor, c: Tensor) -> Tensor:
        inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        return torch.where(inside, r * cols + c, n)

    # block origins, raster order of blocks: (nb, 1)
    top = (torch.arange(nbh)[:, None] * qh).expand(nbh, nbw).reshape(-1, 1)
    left = (torch.arange(nbw)[None, :] * qw).expand(nbh, nbw).reshape(-1, 1)
    # query block, raster inside: (nb, qh*qw)
    qr, qc = torch.meshgrid(torch.arange(qh), torch.arange(qw), indexing="ij")
    query = flat(top + qr.reshape(1, -1), left + qc.reshape(1, -1))
    # memory block: rows [top - fh, top + qh), cols [left - fw, left + qw + fw): (nb, (fh+qh)*(qw+2fw))
    mr, mc = torch.meshgrid(torch.arange(-fh, qh), torch.arange(-fw, qw + fw), indexing="ij")
    memory = flat(top + mr.reshape(1, -1), left + mc.reshape(1, -1))

    q = query.reshape(-1)
    order = q[q < n]  # block-raster order, padding skipped
    return Layout(grid, order, query, memory)


def make_layout(attention: str, grid: tuple[int, int], query_length: int = 256, memory_length: int = 256,
                query_shape: tuple[int, int] = (8, 16), memory_flange: tuple[int, int] = (8, 16)) -> Layout:
    """The layout of one attention type over a grid."""
    if attention == "local_1d":
        return raster_1d(grid, query_length, memory_length)
    if attention == "local_2d":
        return block_raster_2d(grid, query_shape, memory_flange)
    if attention == "global":
        return global_causal(grid)
    raise ValueError(f"unknown attention type {attention!r}; expected local_1d, local_2d or global")
