"""How to draw: the settings every sampler reads, as one value that a caller builds once.

``model.sample(n, options=Sampling(temperature=0.9, generator=g))`` or, the same, ``model.sample(n,
temperature=0.9, generator=g)``: the keywords of ``sample``, ``complete`` and ``generate`` are this class's fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

# on_step: called with (values (B, n, k), t) before generation step t is drawn, and once more with t = n at the end
StepHook = Callable[[Tensor, int], None]


@dataclass(frozen=True)
class Sampling:
    """The settings of one sampling call.

    ``temperature`` divides the categorical logits (see ``DiscretizedLogisticMixture`` for the mixture); 0 is
    greedy; None is the model's ``default_temperature``. ``generator``: the random numbers (the same generator
    draws the same images on every path). ``use_cache`` computes every position once per layer; False recomputes
    the whole image at every step (the slow reference). ``graphs``: run the cached step as a CUDA graph (the same
    images); None where that is the faster path, on CUDA with a 1D local or global layout. ``progress``: a progress
    bar. ``on_step(values, t)`` is called before each step t is drawn (the values of steps < t filled) and once more
    with t = n at the end: a caller can show the images growing, or raise to stop.
    """

    temperature: float | None = None
    generator: torch.Generator | None = None
    use_cache: bool = True
    graphs: bool | None = None
    progress: bool = False
    on_step: StepHook | None = None

    def settle(self, settings: dict[str, Any], temperature: float) -> Sampling:
        """These settings with ``settings`` (keywords named as the fields) laid over them, and ``temperature`` (the
        model's default) where none is set."""
        options = replace(self, **settings) if settings else self
        return options if options.temperature is not None else replace(options, temperature=temperature)
