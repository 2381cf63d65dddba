"""The cached step with static shapes (the CUDA-graph sampler's), run eagerly on the CPU: it must draw the eager
cached sampler's images, read nothing of later steps, and give the parallel pass's parameters at every step."""

import itertools

import pytest
import torch

from helpers import ATTENTION, static_generate, tiny
from image_transformer import SuperResolutionConfig, SuperResolutionTransformer
from image_transformer.nn.static_step import StaticSampler, StepIndex, sampler_for

CASES = list(itertools.product(ATTENTION, ["categorical", "dmol"]))


@pytest.mark.parametrize("attention,distribution", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_static_step_draws_the_eager_samplers_images(attention, distribution, dtype):
    model = tiny(attention, distribution, 3, size=(4, 5)).to(dtype)
    eager = model.sample(3, generator=torch.Generator().manual_seed(7))
    values = torch.zeros(3, model.layout.n, model.dist.values_per_position, dtype=torch.long)
    static = static_generate(model, values, generator=torch.Generator().manual_seed(7))
    assert torch.equal(model.to_images(static).to(torch.uint8), eager)


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_static_step_reads_nothing_of_later_steps(attention):
    """What the buffers hold at steps not yet drawn (here random values) never changes a draw."""
    model = tiny(attention, "categorical", 3, size=(4, 5))
    zeros = torch.zeros(2, model.layout.n, 1, dtype=torch.long)
    noise = torch.randint(0, 256, zeros.shape, generator=torch.Generator().manual_seed(1))
    a = static_generate(model, zeros, generator=torch.Generator().manual_seed(3))
    b = static_generate(model, noise, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, noise)


@pytest.mark.parametrize("attention,distribution", CASES)
def test_static_step_parameters_equal_the_parallel_pass(attention, distribution):
    model = tiny(attention, distribution, 3, size=(4, 5), num_classes=3)
    labels = torch.tensor([0, 2])
    seen = []
    draw = model.dist.sample
    model.dist.sample = lambda params, *a, **k: (seen.append(params.clone()), draw(params, *a, **k))[1]
    values = torch.zeros(2, model.layout.n, model.dist.values_per_position, dtype=torch.long)
    try:
        values = static_generate(model, values, labels=labels, generator=torch.Generator().manual_seed(2))
    finally:
        model.dist.sample = draw
    full = model.distribution_params(values, labels)  # (B, n, P)
    assert len(seen) == model.layout.n
    for t, pos in enumerate(model.layout.order.tolist()):
        assert torch.allclose(seen[t], full[:, pos], atol=1e-9), f"step {t}"


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_static_step_completes_from_a_known_prefix_as_the_eager_sampler(attention):
    model = tiny(attention, "categorical", 3, size=(4, 6))
    x = torch.randint(0, 256, (2, 4, 6, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    eager = model.complete(x, 2, generator=torch.Generator().manual_seed(4))
    start = model.known_prefix(2)
    static = static_generate(model, model.to_positions(x), start=start, generator=torch.Generator().manual_seed(4))
    assert torch.equal(model.to_images(static).to(torch.uint8), eager)


def test_static_step_of_the_super_resolution_decoder_draws_the_eager_images():
    cfg = SuperResolutionConfig(image_size=(4, 4), input_size=(2, 2), channels=3, hidden_size=16, num_layers=2,
                                encoder_layers=1, num_heads=2, ffn_size=32, dropout=0.0, query_length=8,
                                memory_length=8)
    torch.manual_seed(0)
    model = SuperResolutionTransformer(cfg).double().eval()
    inputs = torch.randint(0, 256, (2, 2, 2, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    eager = model.sample(inputs, temperature=0.9, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        context = model.encoder(inputs)
    decoder = model.decoder
    values = torch.zeros(2, decoder.layout.n, 1, dtype=torch.long)
    static = static_generate(decoder, values, context=context, generator=torch.Generator().manual_seed(5),
                             temperature=0.9)
    assert torch.equal(decoder.to_images(static).to(torch.uint8), eager)


def test_the_ring_is_smaller_than_the_image_for_1d_local_and_wraps():
    model = tiny("local_1d", "categorical", 3, size=(4, 5))
    index = StepIndex(model.layout.step_plan(), torch.device("cpu"))
    assert index.contiguous and index.width == 7 + 5 < model.layout.n  # query 7 + memory 5


def test_samplers_are_kept_per_batch_and_renewed_when_the_weights_move():
    model = tiny("local_1d", "categorical", 3, size=(4, 5))
    a = sampler_for(model, 2, 1.0, None, None, graph=False)
    assert sampler_for(model, 2, 1.0, None, None, graph=False) is a
    b = sampler_for(model, 3, 1.0, None, None, graph=False)
    c = sampler_for(model, 4, 1.0, None, None, graph=False)
    kept = model.__dict__["_static_samplers"]
    assert len(kept) == 2 and a not in kept.values() and {b, c} == set(kept.values())
    model.float()  # new parameter storage: the old samplers would read freed memory
    d = sampler_for(model, 4, 1.0, None, None, graph=False)
    assert list(kept.values()) == [d]


def test_graphs_are_refused_off_cuda():
    model = tiny("local_1d", "categorical", 3, size=(4, 5))
    with pytest.raises(ValueError, match="CUDA"):
        model.sample(1, graphs=True)
    with pytest.raises(ValueError, match="CUDA"):
        StaticSampler(model, 1, 1.0, False, None, graph=True)
