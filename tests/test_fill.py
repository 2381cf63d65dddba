"""Any-region completion by sequential Monte Carlo (nn/fill.py): exact where it can be enumerated."""

import pytest
import torch

from helpers import ATTENTION, tiny
from image_transformer.nn import attention
from image_transformer.nn.fill import fill, missing_steps
from image_transformer.nn.sampling import Sampling


def sharpened(model):
    """Large logits, so that a value's probability depends strongly on what came before it: uneven weights."""
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(8)
    return model


@pytest.mark.parametrize("attention_type", list(ATTENTION))
@pytest.mark.parametrize("distribution", ["categorical", "dmol"])
def test_known_pixels_are_kept_and_their_log_probability_is_the_models(monkeypatch, attention_type, distribution):
    """Whatever the resampling did (the caches follow each particle's ancestor), the completion's reported
    log-probability of the known values after the hole is what log_prob gives the finished image."""
    model = sharpened(tiny(attention_type, distribution, 3, size=(4, 5)))
    reorders = []
    real = attention.KVCache.reorder
    monkeypatch.setattr(attention.KVCache, "reorder", lambda self, rows: reorders.append(1) or real(self, rows))
    x = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    missing = torch.zeros(4, 5, dtype=torch.bool)
    missing[1:3, 1:3] = True
    out, known_lp = fill(model, x, missing, particles=8, options=Sampling(generator=torch.Generator().manual_seed(0)))
    assert reorders  # the particles were resampled at least once
    assert torch.equal(out[:, ~missing], x[:, ~missing])
    steps = missing_steps(model, missing)
    first = int(steps.nonzero()[0])
    rank = torch.empty_like(model.layout.order)
    rank[model.layout.order] = torch.arange(model.layout.n)
    sub_rank = rank[torch.arange(4 * 5 * 3) // model.dist.values_per_position]  # step of each (H, W, C) value
    after = (sub_rank > first) & ~missing.reshape(-1).repeat_interleave(3)
    expected = model.log_prob(out).reshape(2, -1)[:, after].sum(1)
    torch.testing.assert_close(known_lp, expected.double(), rtol=0, atol=1e-9)


def test_more_particles_draw_closer_to_the_exact_conditional():
    """1x3 grey images, the first pixel missing, two known after it: p(x0 | x1, x2) enumerated over its 256 values
    with log_prob. Naive completion (one particle) draws from p(x0) and misses it; 64 particles come within
    sampling noise (total variation over 16 bins of 16 values, 2,000 completions)."""
    model = sharpened(tiny("local_1d", "categorical", 1, size=(1, 3), dtype=torch.float32))
    x = torch.tensor([[[[0], [200], [37]]]], dtype=torch.uint8)
    missing = torch.tensor([[True, False, False]])
    candidates = x.repeat(256, 1, 1, 1)
    candidates[:, 0, 0, 0] = torch.arange(256)
    exact = torch.softmax(model.log_prob(candidates).sum((1, 2, 3)).double(), 0).view(16, 16).sum(1)
    tv = {}
    for k in (1, 4, 64):
        out, _ = fill(model, x.repeat(2000, 1, 1, 1), missing, particles=k,
                      options=Sampling(generator=torch.Generator().manual_seed(1)))
        drawn = torch.bincount(out[:, 0, 0, 0].long(), minlength=256).double().view(16, 16).sum(1) / 2000
        tv[k] = 0.5 * float((drawn - exact).abs().sum())
    assert tv[1] > 0.3 and tv[64] < 0.05 and tv[1] > tv[4] > tv[64], tv


def test_nothing_missing_returns_the_image_and_a_wrong_mask_is_refused():
    model = tiny("local_1d", "categorical", 3, size=(4, 5))
    x = torch.randint(0, 256, (1, 4, 5, 3), dtype=torch.uint8)
    out, lp = fill(model, x, torch.zeros(4, 5, dtype=torch.bool))
    assert torch.equal(out, x) and lp.tolist() == [0.0]
    with pytest.raises(ValueError, match="the mask is \\(5, 4\\) but the model's images are 4x5"):
        fill(model, x, torch.zeros(5, 4, dtype=torch.bool))
