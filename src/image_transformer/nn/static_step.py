"""The cached sampler's step with static shapes, captured once as a CUDA graph and replayed.

The eager cached step (:meth:`ImageTransformer.cached_steps`) reads exactly the keys step t sees, a slice whose
length changes with t, and draws its noise as it goes: a few hundred small kernels per step, each launched from
Python, which on a GPU costs more than the kernels themselves. A CUDA graph replays a fixed sequence of kernels on
fixed buffers, so here the same step is restated with shapes that do not depend on t:

- t lives on the device (:class:`StepIndex`); all that the step reads for t comes from tables indexed by it;
- keys and values of a contiguous plan (1D local, global) go to a ring of W slots, W the most any step sees: slot s
  holds step t - (t - s) mod W, and the step attends to the whole ring with a mask of the slots it may see; other
  plans (2D local) keep the generation-ordered cache and gather a fixed number of rows per step from a table, again
  with a mask;
- the noise of the draws is drawn ahead, with the caller's generator and in the eager sampler's order, into a
  buffer that the step reads at t (``Distribution.draw_noise``).

The function is the eager step's and so are its random numbers: the images are the eager sampler's for the same
generator (the masked softmax only sums in another order, a rounding-level difference in the parameters). Without
a graph the same code runs eagerly on any device, which is how the CPU tests check it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .order import StepPlan
from .sampling import StepHook


class StepIndex:
    """The step t on the device, and what every layer's cache reads at t, computed once per step (``advance``).

    Contiguous plans: ``width`` W = the most steps any step sees; ``slot`` (1,) = t mod W is where step t's key
    goes; ``mask`` (1, 1, 1, W) marks the ring slots t sees. Other plans: ``rows`` (1, W) are the cache rows step t
    reads (the block's earlier steps, then its own up to t, padded), ``mask`` which of them are real.
    """

    def __init__(self, plan: StepPlan, device: torch.device):
        n = len(plan.block)
        self.contiguous = plan.contiguous
        self.t = torch.zeros(1, dtype=torch.long, device=device)  # set before each step
        if plan.contiguous:
            self.width = max(t - plan.low[t] + 1 for t in range(n))
            self.low = torch.tensor(plan.low, dtype=torch.long, device=device)  # (n,) first visible step
            self.slots = torch.arange(self.width, device=device)
        else:
            self.width = plan.max_earlier + plan.max_block
            rows = torch.zeros(n, self.width, dtype=torch.long)
            seen = torch.zeros(n, self.width, dtype=torch.bool)
            for t, b in enumerate(plan.block):
                visible = torch.cat([plan.earlier[b], torch.arange(plan.first[b], t + 1)])
                rows[t, : len(visible)] = visible
                seen[t, : len(visible)] = True
            self.rows_table, self.seen_table = rows.to(device), seen.to(device)
        self.slot = self.rows = self.mask = None

    def advance(self) -> None:
        """Derive this step's slot, rows and mask from ``t`` (device ops only: part of the captured step)."""
        if self.contiguous:
            self.slot = self.t % self.width
            held = self.t - (self.t - self.slots) % self.width  # (W,) the step each slot holds at t
            self.mask = (held >= self.low.index_select(0, self.t)).view(1, 1, 1, -1)
        else:
            self.rows = self.rows_table.index_select(0, self.t)[0]  # (W,)
            self.mask = self.seen_table.index_select(0, self.t).view(1, 1, 1, -1)


class StaticKVCache:
    """One layer's keys and values for the static step; ``fill``, ``write`` and ``read`` as :class:`KVCache`'s, with
    t on the device: a ring of W slots (contiguous plans) or the whole generation-ordered cache read through the
    step's rows. ``context`` holds the layer's cross-attention keys and values, if it has any."""

    def __init__(self, batch: int, index: StepIndex, n: int, heads: int, head_dim: int, device: torch.device,
                 dtype: torch.dtype, context: tuple[Tensor, Tensor] | None = None, inputs: Tensor | None = None):
        self.index = index
        self.inputs = inputs  # the convolution's inputs by grid position (B, n, d), where the block has one
        length = index.width if index.contiguous else n
        self.k = torch.zeros(batch, heads, length, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.context = context

    def fill(self, kv: Tensor) -> None:
        """Store the first s steps from a parallel pass: kv (B, s, 2d) in generation order."""
        b, s, _ = kv.shape
        k_v = kv.view(b, s, 2, self.k.shape[1], -1).permute(2, 0, 3, 1, 4)  # (2, B, h, s, dh)
        if self.index.contiguous:  # the last W steps, each in its slot
            steps = torch.arange(max(0, s - self.index.width), s, device=kv.device)
            slots = steps % self.index.width
            self.k[:, :, slots] = k_v[0][:, :, steps]
            self.v[:, :, slots] = k_v[1][:, :, steps]
        else:
            self.k[:, :, :s] = k_v[0]
            self.v[:, :, :s] = k_v[1]

    def write(self, t: Tensor, kv: Tensor) -> None:
        """Store step t's key and value, kv (B, 2, h, dh)."""
        where = self.index.slot if self.index.contiguous else t
        self.k.index_copy_(2, where, kv[:, 0, :, None])
        self.v.index_copy_(2, where, kv[:, 1, :, None])

    def read(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Keys and values (B, h, W, dh) and the mask (1, 1, 1, W) of those step t sees."""
        if self.index.contiguous:
            return self.k, self.v, self.index.mask
        return self.k.index_select(2, self.index.rows), self.v.index_select(2, self.index.rows), self.index.mask


class StaticSampler:
    """The cached sampler of one :class:`ImageTransformer` for one batch size, temperature and conditioning, on
    static buffers.

    ``run`` fills ``values`` (B, n, k) at steps >= start like :meth:`ImageTransformer.generate`'s cached path. With
    ``graph`` (CUDA only) the step is captured once, at the first call, and every step after that is one replay;
    later calls with the same key reuse the capture (:func:`sampler_for`).
    """

    def __init__(self, model: nn.Module, batch: int, temperature: float, conditional: bool,
                 context: Tensor | None, graph: bool, chunk: int = 64):
        w = model.head.weight
        self.device, self.batch, self.temperature, self.chunk = w.device, batch, temperature, chunk
        if graph and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a model on a CUDA device, not {self.device}")
        self.model, self.use_graph, self.graph = model, graph, None
        layout, cfg = model.layout, model.config
        n = layout.n
        self.index = StepIndex(layout.step_plan(), self.device)
        heads = cfg.num_heads
        self.caches = [StaticKVCache(batch, self.index, n, heads, cfg.hidden_size // heads, self.device, w.dtype,
                                     None if block.cross is None else  # static copies, refilled by each call
                                     tuple(t.clone() for t in block.cross.context_kv(context)),
                                     block.new_inputs(batch, n, self.device, w.dtype))
                       for block in model.blocks]
        self.values = torch.zeros(batch, n, model.dist.values_per_position, dtype=torch.long, device=self.device)
        self.classes = torch.zeros(batch, cfg.hidden_size, device=self.device, dtype=w.dtype) if conditional else None
        under = model.under(context)  # (B, n, d): static, refilled by each call
        self.under = None if under is None else torch.zeros_like(under)
        order = layout.order.to(self.device)
        self.order = order
        self.prev_src = layout.prev[order].clamp(max=n - 1)  # (n,): grid position read by each step
        self.has_prev = (torch.arange(n, device=self.device) > 0).to(w.dtype)  # (n,): step 0 reads no value
        # one chunk of noise per distribution draw, in the dtype and on the device the draw is used in
        like = torch.empty(batch, model.dist.num_params, device="meta", dtype=w.dtype)
        self.noise = [torch.zeros(chunk, *u.shape, device=self.device, dtype=u.dtype)
                      for u in model.dist.draw_noise(like)]

    def _step(self) -> None:
        """Generation step ``index.t``: every layer on one position, the draw, the value stored (device ops only)."""
        m, t = self.model, self.index.t
        self.index.advance()
        pos, src = self.order.index_select(0, t), self.prev_src.index_select(0, t)  # (1,) each
        x = m.positions(pos).expand(self.batch, -1)  # (B, d)
        last = self.values.index_select(1, src)  # (B, 1, k): the value generated just before step t
        x = x + m.values_in(last, src)[:, 0] * self.has_prev.index_select(0, t)
        if m.neighbourhood is not None:
            x = x + m.neighbourhood(self.values, pos)[:, 0]
        if self.classes is not None:
            x = x + self.classes
        if self.under is not None:
            x = x + self.under.index_select(1, pos)[:, 0]
        for block, cache in zip(m.blocks, self.caches):
            x = block.step(x, cache, t, pos)
        params = m.head(m.norm_out(x))  # (B, P)
        slot = t % self.chunk
        drawn = m.dist.sample(params, self.temperature, noise=[u.index_select(0, slot)[0] for u in self.noise])
        self.values.index_copy_(1, pos, drawn[:, None])

    def _draw_noise(self, t: int, n: int, generator: torch.Generator | None) -> None:
        """The draws of steps t .. the end of t's chunk, made exactly as the eager sampler makes them."""
        device = generator.device if generator is not None else self.device
        like = torch.empty(self.batch, self.model.dist.num_params, device=device, dtype=self.noise[0].dtype)
        end = min((t // self.chunk + 1) * self.chunk, n)
        draws = [self.model.dist.draw_noise(like, generator) for _ in range(t, end)]
        rows = torch.arange(t, end, device=self.device) % self.chunk
        for j, buffer in enumerate(self.noise):
            buffer.index_copy_(0, rows, torch.stack([d[j] for d in draws]).to(self.device))

    def _capture(self) -> None:
        """Record the step as a CUDA graph (after two eager warm-up steps on a side stream, as CUDA graphs need).

        The warm-up steps write step t's key, value and draw, which the first replay then writes again.
        """
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        self.graph = graph

    def run(self, values: Tensor, start: int, labels: Tensor | None, context: Tensor | None,
            generator: torch.Generator | None, on_step: StepHook | None = None,
            advance: Callable[[], Any] = lambda: None) -> Tensor:
        """Fill ``values`` (B, n, k) long at steps >= ``start``; ``on_step(values, t)`` before each step as in
        ``generate``, ``advance()`` after each (a progress bar)."""
        m, n = self.model, self.model.layout.n
        self.values.copy_(values)
        if self.classes is not None:
            self.classes.copy_(m.classes(labels))
        if self.under is not None:
            self.under.copy_(m.under(context))
        for block, cache in zip(m.blocks, self.caches):
            if block.cross is not None:
                for buffer, new in zip(cache.context, block.cross.context_kv(context)):
                    buffer.copy_(new)
        if start > 0:  # the known prefix in one parallel pass, filling the caches
            m._hidden(self.values, labels, context, self.caches, start)
        for t in range(start, n):
            if on_step is not None:
                on_step(self.values, t)
            if t == start or t % self.chunk == 0:
                self._draw_noise(t, n, generator)
            self.index.t.fill_(t)
            if not self.use_graph:
                self._step()
            else:
                if self.graph is None:
                    self._capture()
                self.graph.replay()
            advance()
        values.copy_(self.values)
        return values


def sampler_for(model: nn.Module, batch: int, temperature: float, labels: Tensor | None,
                context: Tensor | None, graph: bool, keep: int = 2) -> StaticSampler:
    """The model's static sampler for this call, made (and captured, on first use) once per batch size,
    temperature and conditioning, and kept on the model; ``keep`` of them at most, the oldest dropped first.

    A sampler is tied to the model's parameter storage: moving or replacing the weights makes a new one, while
    weights changed in place (training) are read by the next replay.
    """
    key = (batch, float(temperature), labels is not None,
           None if context is None else tuple(context.shape), graph, model.head.weight.device,
           tuple(p.data_ptr() for p in model.parameters()))
    samplers: dict[tuple, StaticSampler] = model.__dict__.setdefault("_static_samplers", {})
    for old in [k for k in samplers if k[-1] != key[-1]]:  # weights moved: those captures read freed memory
        del samplers[old]
    if key not in samplers:
        while len(samplers) >= keep:
            del samplers[next(iter(samplers))]
        samplers[key] = StaticSampler(model, batch, temperature, labels is not None, context, graph)
    return samplers[key]
