"""The Image Transformer (Parmar et al., 2018): a decoder-only stack of masked local self-attention.

Data flow: images (B, H, W, C) uint8 -> values on the position grid (B, n, k) -> inputs shifted by one
in generation order (B, n, d) -> layers -> distribution parameters (B, n, P) -> log p or samples.
A position is a sub-pixel for the categorical distribution (k = 1, n = H*W*C) and a pixel for the
logistic mixture (k = C, n = H*W); either way, a flat grid index is also a flat index of (H, W, k).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..files.pretrained import PretrainedModel
from ..images import check_images
from .attention import BlockSelfAttention, CrossAttention, KVCache
from .config import ImageTransformerConfig
from .conv import CausalConv
from .distributions import make_distribution
from .embeddings import NeighbourhoodInput, PositionEncoding
from .order import Layout, make_layout
from .sampling import Sampling, StepHook  # noqa: F401 - StepHook: callers import it from here too
from .static_step import sampler_for


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Post-layer-norm block, equations 1 and 2 of the paper:
    qa = LayerNorm(q + Dropout(Attention(q))),  q' = LayerNorm(qa + Dropout(FFN(qa))).

    The attention pattern is the layout's: masked in generation order for the decoder, unmasked for the
    super-resolution encoder. With ``cross_attention`` (the super-resolution decoder), attention over the
    encoder output follows the self-attention, in the same form. With ``cfg.norm == "pre"`` each sub-layer
    instead reads a normalised copy and adds to an un-normalised residual stream,
    q' = q + Dropout(F(LayerNorm(q))) (Xiong et al. 2020: stable at higher learning rates without long
    warm-up); a stack of such blocks is then normalised once more at its output.

    Given the decoder's ``layout`` and ``cfg.conv_size``, a causal convolution sub-layer (:mod:`.conv`) comes
    first, in the same residual form, as PixelSNAIL interleaves convolutions with attention.
    """

    def __init__(self, cfg: ImageTransformerConfig, cross_attention: bool = False, layout: Layout | None = None):
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        if layout is not None and cfg.conv_size:
            self.conv = CausalConv(layout.grid, layout.rank, cfg.conv_size, cfg.hidden_size)
            self.norm_conv = nn.LayerNorm(cfg.hidden_size)
        else:
            self.conv = None
        self.attn = BlockSelfAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_dropout)
        self.norm1 = nn.LayerNorm(cfg.hidden_size)
        if cross_attention:
            self.cross = CrossAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_dropout)
            self.norm_cross = nn.LayerNorm(cfg.hidden_size)
        else:
            self.cross = None
        self.ffn = FeedForward(cfg.hidden_size, cfg.ffn_size)
        self.norm2 = nn.LayerNorm(cfg.hidden_size)
        self.drop = nn.Dropout(cfg.dropout)

    def _residual(self, x: Tensor, norm: nn.LayerNorm, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.pre_norm:
            return x + self.drop(sublayer(norm(x)))
        return norm(x + self.drop(sublayer(x)))

    def forward(self, x: Tensor, layout: Layout, context: Tensor | None = None,
                cache: KVCache | None = None, steps: int = 0) -> Tensor:  # (B, n, d)
        if self.conv is not None:
            x = self._residual(x, self.norm_conv, lambda h: self._conv(h, layout, cache, steps))
        x = self._residual(x, self.norm1, lambda h: self.attn(h, layout, cache, steps))
        if self.cross is not None:
            x = self._residual(x, self.norm_cross, lambda h: self.cross(h, context))
        return self._residual(x, self.norm2, self.ffn)

    def _conv(self, h: Tensor, layout: Layout, cache: KVCache | None, steps: int) -> Tensor:
        if cache is not None and steps:  # a known prefix: its inputs are what later steps' convolutions read
            known = layout.order[:steps]
            cache.inputs.index_copy_(1, known, h.index_select(1, known))
        return self.conv(h)

    def new_inputs(self, batch: int, n: int, device: torch.device, dtype: torch.dtype) -> Tensor | None:
        """The buffer of the convolution's inputs at every grid position (B, n, d) that the cached step fills;
        None without a convolution."""
        if self.conv is None:
            return None
        return torch.zeros(batch, n, self.norm1.normalized_shape[0], device=device, dtype=dtype)

    def step(self, x: Tensor, cache: KVCache, t: int, pos: Tensor) -> Tensor:  # (B, d); eval mode, so no dropout
        """Generation step ``t`` at grid position ``pos`` (1,) long."""
        if self.conv is not None:
            x = self._residual(x, self.norm_conv, lambda h: self._conv_step(h, cache, pos))
        x = self._residual(x, self.norm1, lambda h: self.attn.step(h, cache, t))
        if self.cross is not None:
            x = self._residual(x, self.norm_cross, lambda h: self.cross(h[:, None], cache.context)[:, 0])
        return self._residual(x, self.norm2, self.ffn)

    def _conv_step(self, h: Tensor, cache: KVCache, pos: Tensor) -> Tensor:
        cache.inputs.index_copy_(1, pos, h[:, None])
        return self.conv.step(cache.inputs, pos)


class ImageTransformer(PretrainedModel):
    """Autoregressive image model: ``log_prob``, ``sample`` and ``complete`` follow ``generation_order()``.

    Built with ``cross_attention`` it is the super-resolution decoder: every method that runs the network
    then takes ``context`` (B, m, d), the encoder's output.
    """

    config_class = ImageTransformerConfig
    # what this kind of model can do (see PretrainedModel), and the temperature it samples at unless told otherwise
    pipeline_tag = "unconditional-image-generation"
    tasks = ("sample", "complete", "compress", "evaluate", "likelihood", "score")
    low_resolution_input = False
    default_temperature: ClassVar[float] = 1.0

    def __init__(self, config: ImageTransformerConfig, cross_attention: bool = False):
        super().__init__()
        self.config = cfg = config
        self.dist = make_distribution(cfg.distribution, cfg.channels, cfg.num_mixtures)
        grid = self.dist.grid_shape(cfg.image_size)
        self.layout = make_layout(
            cfg.attention, grid, cfg.query_length, cfg.memory_length, cfg.query_shape, cfg.memory_flange
        )
        self.values_in = self.dist.input_embedding(cfg.hidden_size, self.layout.n, relu=cfg.pixel_input_relu)
        self.positions = PositionEncoding(grid, cfg.hidden_size, cfg.position_encoding)
        self.neighbourhood = NeighbourhoodInput(grid, self.layout.rank, cfg.neighbourhood,
                                                self.dist.values_per_position, cfg.hidden_size
                                                ) if cfg.neighbourhood else None
        self.classes = nn.Embedding(cfg.num_classes, cfg.hidden_size) if cfg.num_classes else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, cross_attention, self.layout) for _ in range(cfg.num_layers))
        self.norm_out = nn.LayerNorm(cfg.hidden_size) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.hidden_size, self.dist.num_params)  # shared by all channels
        # super-resolution: for each grid position, the context rows (encoder outputs of the input sub-pixels) under
        # it, (n, k), whose mean is added to the position's input; set by the model that owns the encoder
        self.register_buffer("context_under", None, persistent=False)

    # ----- shapes -------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w = self.config.image_size
        return (h, w, self.config.channels)

    def to_positions(self, images: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, n, k) long: the values of each position."""
        return images.long().reshape(images.shape[0], self.layout.n, self.dist.values_per_position)

    def to_images(self, values: Tensor) -> Tensor:
        """(B, n, k) -> (B, H, W, C), same dtype."""
        return values.reshape(values.shape[0], *self.image_shape)

    def generation_order(self) -> Tensor:
        """Permutation of the flattened (H, W, C) sub-pixels in the order they are generated."""
        k = self.dist.values_per_position
        order = self.layout.order.cpu()
        return (order[:, None] * k + torch.arange(k)).reshape(-1)

    # ----- checks -------------------------------------------------------------------------------
    def check_labels(self, labels: Tensor | None, batch: int) -> Tensor | None:
        """The class labels (batch,) long on the model's device, or None for an unconditional model."""
        num_classes = self.config.num_classes
        if not num_classes:
            if labels is not None:
                raise ValueError("labels were given but the model is unconditional (num_classes = 0)")
            return None
        if labels is None:
            raise ValueError(f"the model is class-conditional ({num_classes} classes): pass labels of shape ({batch},)")
        labels = torch.as_tensor(labels, device=self.head.weight.device)
        if labels.dtype.is_floating_point or labels.shape != (batch,):
            raise ValueError(f"labels must be integers of shape ({batch},), got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels must be in [0, {num_classes}), got range [{int(labels.min())}, "
                             f"{int(labels.max())}]")
        return labels.long()

    def _check_context(self, context: Tensor | None) -> None:
        if (context is None) != (self.blocks[0].cross is None):
            raise ValueError("a context (encoder output) is needed exactly when the model has cross-attention")

    def condition_for(self, images: Tensor, labels: Tensor | None) -> Tensor | None:
        """What ``log_prob(images, ...)`` is conditioned on, from a data set's images and labels: the labels
        for a class-conditional model, nothing otherwise."""
        return labels if self.config.num_classes else None

    # ----- the network --------------------------------------------------------------------------
    def _embed(self, values: Tensor, index: Tensor, labels: Tensor | None) -> Tensor:
        """Inputs at grid positions ``index`` (m,): the value generated just before each, + position + class.

        values: (B, n, k) long -> (B, m, d).
        """
        n = self.layout.n
        src = self.layout.prev[index]  # (m,): previous position in generation order, n for the first
        has_prev = (src < n)[None, :, None]
        src = src.clamp(max=n - 1)
        x = self.values_in(values[:, src], src) * has_prev + self.positions(index)
        if self.neighbourhood is not None:
            x = x + self.neighbourhood(values, index)
        if self.classes is not None:
            x = x + self.classes(labels)[:, None]
        return self.drop(x)

    def under(self, context: Tensor | None) -> Tensor | None:
        """(B, n, d): for each grid position, the mean of the context rows under it (see ``context_under``); None
        without them. Known before any value is drawn, so it changes nothing about who sees whom."""
        if context is None or self.context_under is None:
            return None
        return context[:, self.context_under].mean(2)

    def _hidden(self, values: Tensor, labels: Tensor | None, context: Tensor | None = None,
                caches: list[KVCache] | None = None, steps: int = 0) -> Tensor:
        """(B, n, k) values -> (B, n, d) outputs of the last block, all positions in parallel.

        With ``caches``, each layer also stores the keys and values of the first ``steps`` generation steps.
        """
        self._check_context(context)
        if values.shape[0] == 0:  # an empty batch: nothing to compute (the head reshapes need a size)
            return self.head.weight.new_zeros(0, self.layout.n, self.config.hidden_size)
        x = self._embed(values, torch.arange(self.layout.n, device=values.device), labels)
        under = self.under(context)
        if under is not None:
            x = x + under
        for i, block in enumerate(self.blocks):
            x = block(x, self.layout, context, caches[i] if caches else None, steps)
        return x

    def distribution_params(self, values: Tensor, labels: Tensor | None = None,
                            context: Tensor | None = None) -> Tensor:
        """(B, n, k) values -> (B, n, P) distribution parameters, all positions in parallel."""
        return self.head(self.norm_out(self._hidden(values, labels, context)))

    def forward(self, images: Tensor, labels: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        """Distribution parameters: logits (B, H, W, C, 256) or mixture parameters (B, H, W, P)."""
        check_images(images, self.image_shape)
        labels = self.check_labels(labels, images.shape[0])
        params = self.distribution_params(self.to_positions(images), labels, context)
        return params.reshape(-1, *self.dist.params_shape(self.config.image_size))

    def log_prob(self, images: Tensor, labels: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        """log p(x_t | x_<t) in nats for every sub-pixel: uint8 (B, H, W, C) -> float (B, H, W, C)."""
        check_images(images, self.image_shape)
        labels = self.check_labels(labels, images.shape[0])
        values = self.to_positions(images.to(self.head.weight.device))
        lp = self.dist.log_prob(self.distribution_params(values, labels, context), values)  # (B, n, k)
        return self.to_images(lp)

    # ----- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_images: int, labels: Tensor | None = None, *, context: Tensor | None = None,
               options: Sampling | None = None, **settings: Any) -> Tensor:
        """Draw ``num_images`` images, uint8 (N, H, W, C). ``labels`` (N,) for class-conditional models.

        How to draw: ``options`` (:class:`~image_transformer.nn.sampling.Sampling`) or its fields as keywords,
        e.g. ``sample(16, temperature=0.9, generator=g)``; cached and uncached sampling (``use_cache=False``, the
        slow reference) give identical images for the same generator.
        """
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive int, got {num_images!r}")
        labels = self.check_labels(labels, num_images)
        values = torch.zeros(num_images, self.layout.n, self.dist.values_per_position,
                             dtype=torch.long, device=self.head.weight.device)
        values = self.generate(values, 0, labels, context, options, **settings)
        return self.to_images(values).to(torch.uint8)

    @torch.no_grad()
    def complete(self, images: Tensor, num_rows: int, labels: Tensor | None = None, *,
                 options: Sampling | None = None, **settings: Any) -> Tensor:
        """Keep the top ``num_rows`` rows of each image and sample the rest: uint8 (B, H, W, C); how to draw as in
        :meth:`sample`."""
        check_images(images, self.image_shape)
        labels = self.check_labels(labels, images.shape[0])
        known = self.known_prefix(num_rows)
        values = self.to_positions(images.to(self.head.weight.device)).clone()
        values = self.generate(values, known, labels, options=options, **settings)
        return self.to_images(values).to(torch.uint8)

    def known_prefix(self, num_rows: int) -> int:
        """Number of generation steps covered by the top ``num_rows`` image rows (must be a prefix)."""
        h = self.config.image_size[0]
        rows, cols = self.layout.grid
        if not isinstance(num_rows, int) or not 0 <= num_rows <= h:
            raise ValueError(f"num_rows must be an int in [0, {h}], got {num_rows!r}")
        steps = num_rows * cols  # positions in the top rows (grid rows are image rows)
        if bool((self.layout.order[:steps] // cols < num_rows).all()):
            return steps
        allowed = [r for r in range(h + 1) if bool((self.layout.order[: r * cols] // cols < r).all())]
        raise ValueError(
            f"the top {num_rows} rows are not a prefix of the generation order ({self.config.attention}); "
            f"allowed row counts: {allowed}"
        )

    def generate(self, values: Tensor, start: int, labels: Tensor | None = None, context: Tensor | None = None,
                 options: Sampling | None = None, **settings: Any) -> Tensor:
        """Fill ``values`` (B, n, k) long at generation steps >= ``start``; earlier steps are given.

        The sampler behind ``sample`` and ``complete``, drawing as ``options`` (or its fields as keywords) say; call
        without grad. With ``graphs`` the cached step runs as a CUDA graph (:mod:`~image_transformer.nn.static_step`),
        which draws the same images.
        """
        self._check_context(context)
        options = (options or Sampling()).settle(settings, self.default_temperature)
        with self.evaluating():
            return _generate(self, values, start, labels, context, options)

    def cached_steps(self, values: Tensor, start: int, labels: Tensor | None, context: Tensor | None,
                     choose: Callable[[int, Tensor], Tensor],
                     reorder: Callable[[int], Tensor | None] | None = None) -> Tensor:
        """The cached sampler: for each generation step t >= ``start``, ``values[:, order[t]] = choose(t, params)``.

        values (B, n, k) long, filled in place; params (B, P) are the distribution parameters at step t
        given every earlier value. The known steps before ``start`` go through the layers as one parallel
        pass that fills the caches; from there each step runs every layer on one position, reading the
        keys and values that its plan (``Layout.step_plan``) says it sees. Call in eval mode, without grad.
        The codec drives it too, with a ``choose`` that codes each value; ``reorder(t)``, rows to go on from.
        """
        n, b = self.layout.n, values.shape[0]
        caches = _new_caches(self, b, context)
        if start >= n:
            return values
        if start > 0:
            self._hidden(values, labels, context, caches, start)
        order = self.layout.order.tolist()
        step_order = self.layout.order.to(values.device)
        prev_src = self.layout.prev[step_order].clamp(max=n - 1)  # (n,): grid position read by each step
        inputs = self.positions(step_order)  # (n, d): position encodings in generation order
        classes = self.classes(labels) if self.classes is not None else None  # (B, d)
        under = self.under(context)  # (B, n, d) or None
        under = under[:, step_order] if under is not None else None  # in generation order
        last = values[:, order[start - 1], None] if start > 0 else None  # (B, 1, k): the value before step t
        for t in range(start, n):
            x = inputs[t].expand(b, -1)  # (B, d)
            if last is not None:
                x = x + self.values_in(last, prev_src[t : t + 1])[:, 0]
            if self.neighbourhood is not None:
                x = x + self.neighbourhood(values, step_order[t : t + 1])[:, 0]
            if classes is not None:
                x = x + classes
            if under is not None:
                x = x + under[:, t]
            pos = step_order[t : t + 1]
            for block, cache in zip(self.blocks, caches):
                x = block.step(x, cache, t, pos)
            last = values[:, order[t], None]  # (B, 1, k), a view: filled just below
            last.copy_(choose(t, self.head(self.norm_out(x)))[:, None])
            rows = reorder(t) if reorder is not None else None
            if rows is not None:
                values.copy_(values[rows])
                for cache in caches:
                    cache.reorder(rows)
                classes = classes[rows] if classes is not None else None
                under = under[rows] if under is not None else None
        return values


def _generate(model: "ImageTransformer", values: Tensor, start: int, labels: Tensor | None, context: Tensor | None,
              options: Sampling) -> Tensor:
    """``ImageTransformer.generate`` with its options settled, in eval mode: the progress bar, the ``on_step`` calls,
    and the choice between the CUDA-graph, cached and reference samplers."""
    use_cache, on_step = options.use_cache, options.on_step
    graphs = options.graphs
    if graphs is None:
        graphs = use_cache and values.device.type == "cuda" and model.layout.step_plan().contiguous
    if graphs and (not use_cache or values.device.type != "cuda"):
        raise ValueError(f"graphs=True needs the cached sampler on a CUDA device (values on {values.device}, "
                         f"use_cache={use_cache})")
    bar = tqdm(total=model.layout.n - start, disable=not options.progress, unit="pos", desc="sampling",
               dynamic_ncols=True, leave=False)
    started = time.monotonic()

    def tick() -> None:
        bar.update(1)
        if bar.n % 64 == 0 or bar.n == bar.total:  # images/s at the current pace
            rate = values.shape[0] * bar.n / bar.total / max(time.monotonic() - started, 1e-9)
            bar.set_postfix(images_per_s=f"{rate:.3g}")

    def draw(t: int, params: Tensor) -> Tensor:
        if on_step is not None:
            on_step(values, t)
        drawn = model.dist.sample(params, options.temperature, options.generator)
        tick()
        return drawn

    if graphs:
        sampler = sampler_for(model, values.shape[0], options.temperature, labels, context, graph=True)
        sampler.run(values, start, labels, context, options.generator, on_step, tick)
    elif use_cache:
        model.cached_steps(values, start, labels, context, draw)
    else:
        for t, pos in enumerate(model.layout.order.tolist()[start:], start):
            values[:, pos] = draw(t, model.distribution_params(values, labels, context)[:, pos])  # (B, P)
    if on_step is not None:
        on_step(values, model.layout.n)
    bar.close()
    return values


def _new_caches(model: ImageTransformer, batch: int, context: Tensor | None) -> list[KVCache]:
    """One empty cache per block for the cached sampler, on the model's device and dtype."""
    plan, w, heads, n = model.layout.step_plan(), model.head.weight, model.config.num_heads, model.layout.n
    return [KVCache(batch, plan, heads, model.config.hidden_size // heads, w.device, w.dtype,
                    block.cross.context_kv(context) if block.cross is not None else None,
                    block.new_inputs(batch, n, w.device, w.dtype))
            for block in model.blocks]
