"""Shared fixtures: the autoregressive and normalization checks for any model with ``log_prob``, builders of tiny
models and data, and the options and thread setting of the whole suite. Plain helpers (no fixture needed) are in
helpers.py."""

from __future__ import annotations

import pytest
import torch

from helpers import write_tiny_mnist
from image_transformer import ImageTransformer, ImageTransformerConfig


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' tiny models run faster on one thread (no OpenMP hand-offs), the more so on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dependency_violations(log_prob_fn, order: torch.Tensor, shape: tuple[int, int, int], seed: int = 0,
                           base_in_batch: bool = False):
    """Change each sub-pixel in turn; return (violations, changed_later).

    violations: pairs (changed i, earlier j) where log p at j moved although j comes before i in ``order``.
    changed_later: how many (i, later j) pairs moved (a model that ignores its inputs would give 0).
    ``base_in_batch``: score the unchanged image in the same call as the changed ones (its first row), for kernels
    whose arithmetic depends on the batch size (GPU libraries, compiled code); the same pairs, the same threshold.
    """
    g = torch.Generator().manual_seed(seed)
    d = order.numel()
    base = torch.randint(0, 256, (1, *shape), generator=g, dtype=torch.uint8)
    flat = base.reshape(1, d).repeat(d, 1)
    shift = torch.randint(1, 256, (d,), generator=g)
    idx = torch.arange(d)
    flat[idx, idx] = ((flat[idx, idx].long() + shift) % 256).to(torch.uint8)
    with torch.no_grad():
        if base_in_batch:
            both = log_prob_fn(torch.cat([base, flat.reshape(d, *shape)])).reshape(d + 1, d)
            lp0, lp = both[:1], both[1:]
        else:
            lp0 = log_prob_fn(base).reshape(1, d)
            lp = log_prob_fn(flat.reshape(d, *shape)).reshape(d, d)
    moved = (lp - lp0).abs() > 1e-9
    rank = torch.empty(d, dtype=torch.long)
    rank[order] = torch.arange(d)
    earlier = rank[None, :] < rank[:, None]  # [i, j]: j generated before i
    violations = (moved & earlier).nonzero().tolist()
    later = rank[None, :] > rank[:, None]
    return violations, int((moved & later).sum())


def _normalization_errors(log_prob_fn, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """For every sub-pixel i with a fixed random context: |sum_v p(x_i = v | context) - 1|, shape (D,)."""
    g = torch.Generator().manual_seed(seed)
    d = shape[0] * shape[1] * shape[2]
    base = torch.randint(0, 256, (1, d), generator=g, dtype=torch.uint8)
    errors = torch.empty(d, dtype=torch.float64)
    values = torch.arange(256, dtype=torch.uint8)
    with torch.no_grad():
        for i in range(d):
            batch = base.repeat(256, 1)
            batch[:, i] = values
            lp = log_prob_fn(batch.reshape(256, *shape)).reshape(256, d)[:, i]
            errors[i] = (torch.logsumexp(lp.double(), 0).exp() - 1).abs()
    return errors


@pytest.fixture
def dependency_violations():
    """The autoregressive check: ``dependency_violations(log_prob_fn, order, shape)`` (see below)."""
    return _dependency_violations


@pytest.fixture
def normalization_errors():
    """The normalization check: ``normalization_errors(log_prob_fn, shape)`` (see below)."""
    return _normalization_errors


@pytest.fixture
def tiny_model():
    """A builder of tiny 4x4 grey models: ``tiny_model(seed=0, **config_overrides)``."""

    def build(seed=0, **kw):
        torch.manual_seed(seed)
        values = dict(image_size=(4, 4), channels=1, hidden_size=16, num_layers=2, num_heads=2, ffn_size=32,
                      dropout=0.1, query_length=8, memory_length=8)
        return ImageTransformer(ImageTransformerConfig(**{**values, **kw}))

    return build


@pytest.fixture
def data():
    """A builder of ``n`` learnable 4x4 grey images: ``data(n=40, seed=0)``."""

    def build(n=40, seed=0):
        g = torch.Generator().manual_seed(seed)
        # a learnable pattern: left half dark, right half bright, plus noise
        x = torch.zeros(n, 4, 4, 1, dtype=torch.long)
        x[:, :, 2:] = 200
        return (x + torch.randint(0, 40, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)

    return build


@pytest.fixture
def tiny_mnist(tmp_path):
    """48 training and 12 test 6x6 grey images in MNIST's layout, dark left half, bright right half."""
    return write_tiny_mnist(tmp_path / "mnist")
