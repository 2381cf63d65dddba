import itertools

import pytest
import torch

from helpers import ATTENTION, tiny
from image_transformer import ImageTransformer, ImageTransformerConfig, bits_per_dim

CASES = list(itertools.product(ATTENTION, ["categorical", "dmol"], [1, 2, 3, 4]))  # grey, grey + alpha, RGB, RGBA


@pytest.mark.parametrize("attention,distribution,channels", CASES)
def test_autoregressive_every_position(attention, distribution, channels, dependency_violations):
    model = tiny(attention, distribution, channels)
    violations, later = dependency_violations(model.log_prob, model.generation_order(), model.image_shape)
    assert violations == []
    assert later > 0  # the check has teeth: later positions do react


def test_dependency_check_catches_a_leak(dependency_violations):
    model = tiny("local_1d")
    model.layout.mask.fill_(True)  # every query sees its whole memory block, future included
    violations, _ = dependency_violations(model.log_prob, model.generation_order(), model.image_shape)
    assert violations


@pytest.mark.parametrize("attention,distribution,channels", CASES)
def test_normalized_every_position(attention, distribution, channels, normalization_errors):
    model = tiny(attention, distribution, channels, size=(3, 4))
    assert normalization_errors(model.log_prob, model.image_shape).max() < 1e-6


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_generation_order_is_a_permutation_and_raster_for_1d(attention):
    model = tiny(attention, channels=3)
    order = model.generation_order()
    assert sorted(order.tolist()) == list(range(5 * 6 * 3))
    if attention != "local_2d":
        assert order.tolist() == list(range(90))


def test_2d_order_is_block_raster():
    cfg = ImageTransformerConfig(image_size=(4, 4), channels=1, hidden_size=8, num_layers=1, num_heads=1,
                                 ffn_size=8, attention="local_2d", query_shape=(2, 2), memory_flange=(1, 1))
    order = ImageTransformer(cfg).generation_order().tolist()
    assert order == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]


def test_dmol_orders_channels_inside_a_pixel():
    model = tiny("local_2d", "dmol", 3)
    order = model.generation_order().reshape(-1, 3)
    assert (order[:, 1] == order[:, 0] + 1).all() and (order[:, 2] == order[:, 0] + 2).all()


def test_forward_gives_256_logits_per_sub_pixel_or_30_mixture_parameters_per_pixel():
    model = tiny("local_1d", "categorical", 3)
    x = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    assert model(x).shape == (2, 5, 6, 3, 256)
    assert model.log_prob(x).shape == (2, 5, 6, 3)
    dmol = tiny("local_1d", "dmol", 3)
    assert dmol(x).shape == (2, 5, 6, 30)  # 3 mixtures x 10 parameters
    assert dmol.log_prob(x).shape == (2, 5, 6, 3)


def test_bits_per_dim_definition():
    lp = torch.full((2, 4, 4, 3), -torch.log(torch.tensor(256.0)).item())
    assert torch.allclose(bits_per_dim(lp), torch.tensor([8.0, 8.0]))


@pytest.mark.parametrize("attention,distribution", list(itertools.product(ATTENTION, ["categorical", "dmol"])))
def test_cached_sampler_equals_reference(attention, distribution):
    model = tiny(attention, distribution, 3, size=(4, 5))
    a = model.sample(3, generator=torch.Generator().manual_seed(7))
    b = model.sample(3, generator=torch.Generator().manual_seed(7), use_cache=False)
    assert a.dtype == torch.uint8 and a.shape == (3, 4, 5, 3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("attention,distribution", list(itertools.product(ATTENTION, ["categorical", "dmol"])))
def test_cached_step_distribution_matches_log_prob(attention, distribution):
    """At every step the sampler's parameters equal the full forward pass on the same prefix."""
    model = tiny(attention, distribution, 3, size=(4, 5)).float()
    seen = []
    draw = model.dist.sample
    model.dist.sample = lambda params, *a, **k: (seen.append(params.clone()), draw(params, *a, **k))[1]
    images = model.sample(2, generator=torch.Generator().manual_seed(3))
    model.dist.sample = draw
    full = model.distribution_params(model.to_positions(images), None)  # (B, n, P)
    order = model.layout.order
    assert len(seen) == len(order)
    for t, pos in enumerate(order.tolist()):
        assert torch.allclose(seen[t], full[:, pos], atol=1e-4), f"step {t}"


def test_temperature_zero_is_deterministic():
    model = tiny("local_1d", "categorical", 1, size=(3, 3))
    a = model.sample(2, temperature=0.0, generator=torch.Generator().manual_seed(1))
    b = model.sample(2, temperature=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and torch.equal(a[0], a[1])


def test_sampling_restores_training_mode():
    model = tiny()
    model.train()
    model.sample(1)
    assert model.training


@pytest.mark.parametrize("bad,message", [
    (torch.zeros(2, 5, 6, 3), "uint8"),
    (torch.zeros(2, 5, 6, dtype=torch.uint8), "shape"),
    (torch.zeros(2, 6, 5, 3, dtype=torch.uint8), "shape"),
    (torch.full((1, 5, 6, 3), 300, dtype=torch.int64), r"\[0, 255\]"),
    ([[1, 2]], "torch.Tensor"),
])
def test_bad_images_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny().log_prob(bad)


def test_bad_config_raises_value_error():
    with pytest.raises(ValueError, match="attention must be one of"):
        ImageTransformerConfig(attention="local_3d")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        ImageTransformerConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="channels"):
        ImageTransformerConfig(channels=5)  # 1 to 4 are grey, grey + alpha, RGB, RGBA


def test_log_prob_demands_labels_in_range_and_refuses_them_for_an_unconditional_model():
    model = tiny(num_classes=4)
    x = torch.zeros(2, 5, 6, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="pass labels"):
        model.log_prob(x)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        model.log_prob(x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="unconditional"):
        tiny().log_prob(x, torch.tensor([0, 1]))


def test_class_conditioning_changes_log_probs():
    model = tiny(num_classes=3)
    x = torch.randint(0, 256, (1, 5, 6, 3), dtype=torch.uint8).repeat(2, 1, 1, 1)
    lp = model.log_prob(x, torch.tensor([0, 2]))
    assert not torch.allclose(lp[0], lp[1])
    samples = model.sample(2, labels=torch.tensor([1, 2]))
    assert samples.shape == (2, 5, 6, 3)


def test_complete_keeps_known_rows_and_checks_prefix():
    model = tiny("local_1d", size=(4, 5))
    x = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8)
    out = model.complete(x, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :2], x[:, :2])
    ref = model.complete(x, 2, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(out, ref)
    model2d = tiny("local_2d", size=(5, 6))  # query rows 2: only 0, 2, 4, 5 rows are prefixes
    with pytest.raises(ValueError, match=r"allowed row counts: \[0, 2, 4, 5\]"):
        model2d.complete(torch.zeros(1, 5, 6, 3, dtype=torch.uint8), 3)
    assert model2d.complete(torch.zeros(1, 5, 6, 3, dtype=torch.uint8), 4)[:, :4].sum() == 0


@pytest.mark.parametrize("encoding", ["sinusoidal", "learned"])
def test_save_and_load_pretrained(tmp_path, encoding):
    model = tiny(position_encoding=encoding).float()
    model.save_pretrained(tmp_path / "m")
    again = ImageTransformer.from_pretrained(tmp_path / "m")
    x = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    assert torch.equal(model.log_prob(x), again.log_prob(x))
    assert again.config == model.config


@pytest.mark.parametrize("distribution", ["categorical", "dmol"])
def test_cached_sampler_equals_reference_with_labels_and_batch_of_one(distribution):
    model = tiny("local_2d", distribution, 3, size=(4, 5), num_classes=3)
    for labels in (torch.tensor([2]), torch.tensor([0, 1, 2, 1])):
        a = model.sample(len(labels), labels=labels, generator=torch.Generator().manual_seed(5))
        b = model.sample(len(labels), labels=labels, generator=torch.Generator().manual_seed(5), use_cache=False)
        assert torch.equal(a, b)


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_complete_runs_the_known_rows_as_one_parallel_pass(attention):
    """The known prefix fills the caches in one pass: the one-position step runs only for the rest."""
    model = tiny(attention, size=(4, 6))
    rows = 2
    start = model.known_prefix(rows)
    calls = []
    step = model.blocks[0].step
    model.blocks[0].step = lambda x, cache, t, pos: (calls.append(t), step(x, cache, t, pos))[1]
    x = torch.randint(0, 256, (2, 4, 6, 3), dtype=torch.uint8)
    out = model.complete(x, rows, generator=torch.Generator().manual_seed(0))
    del model.blocks[0].step
    assert calls == list(range(start, model.layout.n))
    ref = model.complete(x, rows, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(out, ref) and torch.equal(out[:, :rows], x[:, :rows])


@pytest.mark.parametrize("attention,distribution", list(itertools.product(ATTENTION, ["categorical", "dmol"])))
def test_step_path_is_bit_identical_when_teacher_forced(attention, distribution):
    """The codec's contract: stepping with given values reproduces the sampler's parameters bit for bit."""
    model = tiny(attention, distribution, 3, size=(4, 5), num_classes=3).float()
    labels = torch.tensor([0, 2])
    drawn, seen = [], []

    def draw(t, params):
        drawn.append(params.clone())
        return model.dist.sample(params, 1.0, torch.Generator().manual_seed(t))

    values = torch.zeros(2, model.layout.n, model.dist.values_per_position, dtype=torch.long)
    with torch.no_grad():
        model.cached_steps(values, 0, labels, None, draw)
        forced = values.clone()
        model.cached_steps(torch.zeros_like(values), 0, labels, None,
                           lambda t, params: (seen.append(params.clone()), forced[:, model.layout.order[t]])[1])
    assert len(seen) == model.layout.n
    assert all(torch.equal(a, b) for a, b in zip(drawn, seen))


def test_an_empty_batch_has_an_empty_log_prob():
    model = tiny()
    assert model.log_prob(torch.zeros(0, 5, 6, 3, dtype=torch.uint8)).shape == (0, 5, 6, 3)
    assert model(torch.zeros(0, 5, 6, 3, dtype=torch.uint8)).shape == (0, 5, 6, 3, 256)


@pytest.mark.parametrize("attention,distribution", list(itertools.product(ATTENTION, ["categorical", "dmol"])))
def test_pre_norm_blocks_are_autoregressive_normalised_and_cached_alike(attention, distribution, dependency_violations,
                                                                       normalization_errors):
    model = tiny(attention, distribution, 3, size=(3, 4), norm="pre")
    assert isinstance(model.norm_out, torch.nn.LayerNorm)  # the pre-norm stream is normalised before the head
    violations, later = dependency_violations(model.log_prob, model.generation_order(), model.image_shape)
    assert violations == [] and later > 0
    assert normalization_errors(model.log_prob, model.image_shape).max() < 1e-6
    a = model.sample(2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, model.sample(2, generator=torch.Generator().manual_seed(5), use_cache=False))


def test_pre_norm_computes_another_function_than_the_papers_post_norm():
    x = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    post, pre = tiny(), tiny(norm="pre")
    pre.load_state_dict(post.state_dict(), strict=False)  # the same weights; pre has one more LayerNorm
    assert isinstance(post.norm_out, torch.nn.Identity)
    assert not torch.allclose(post.log_prob(x), pre.log_prob(x))
    with pytest.raises(ValueError, match="norm must be one of"):
        ImageTransformerConfig(norm="sandwich")


def test_on_step_sees_the_values_fill_in_generation_order_and_can_stop_the_sampler():
    model = ImageTransformer(ImageTransformerConfig(image_size=(3, 4), channels=1, hidden_size=8, num_layers=1,
                                                    num_heads=2, ffn_size=8, attention="local_2d",
                                                    query_shape=(2, 2), memory_flange=(1, 1)))
    seen = []
    final = model.sample(2, generator=torch.Generator().manual_seed(0),
                         on_step=lambda values, t: seen.append((t, values.clone())))
    assert [t for t, _ in seen] == list(range(13))  # before each of the 12 steps, and once at the end
    order = model.layout.order
    for t, values in seen:
        assert torch.equal(values[:, order[:t]], model.to_positions(final)[:, order[:t]])
        assert (values[:, order[t:]] == 0).all()

    class Stop(Exception):
        pass

    steps = []

    def stop_at_10(values, t):
        steps.append(t)
        if t == 10:
            raise Stop

    with pytest.raises(Stop):
        model.complete(final, 2, on_step=stop_at_10)
    assert steps == [8, 9, 10]  # the top 2 rows (8 steps) were given
    assert model.training  # the sampler's mode restored on the way out
