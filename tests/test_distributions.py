import pytest
import torch

from image_transformer.nn.distributions import (
    Categorical,
    DiscretizedLogisticMixture,
    discretized_logistic_log_prob,
    make_distribution,
)

VALUES = torch.arange(256)


def all_values_log_prob(dist: DiscretizedLogisticMixture, params: torch.Tensor, context: torch.Tensor, c: int):
    """log p(x_c = v | x_<c = context) for all v: params (N, P), context (N, C) -> (N, 256)."""
    n = params.shape[0]
    x = context[:, None, :].repeat(1, 256, 1)  # (N, 256, C)
    x[:, :, c] = VALUES
    return dist.log_prob(params[:, None].expand(n, 256, -1), x)[..., c]


def random_params(dist, n, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dist.num_params, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0, 50.0, 1000.0])
def test_dmol_normalized_for_random_and_extreme_params(channels, scale):
    dist = DiscretizedLogisticMixture(channels, num_mixtures=10)
    params = random_params(dist, 64, scale, seed=int(scale * 10) + channels).float()
    context = torch.randint(0, 256, (64, channels))
    for c in range(channels):
        lp = all_values_log_prob(dist, params, context, c)
        assert torch.isfinite(lp).all()
        assert (torch.logsumexp(lp.double(), -1).exp() - 1).abs().max() < 1e-4


def test_dmol_extreme_hand_picked_cases_are_finite_and_normalized():
    dist = DiscretizedLogisticMixture(1, num_mixtures=1)
    cases = torch.tensor([
        [0.0, 0.0, -30.0],  # tiny scale on a bin centre
        [0.0, 1.0 / 255, -30.0],  # tiny scale on a bin edge
        [0.0, -1.0, -7.0],  # at the lowest edge
        [0.0, 1.0, -7.0],  # at the highest edge
        [0.0, 500.0, 0.0],  # far right of the range
        [0.0, -500.0, -3.0],  # far left
        [0.0, 0.3, 20.0],  # huge scale: almost all mass in the edge bins
        [0.0, 0.3, 8.0],
    ], requires_grad=True)
    lp = all_values_log_prob(dist, cases, torch.zeros(len(cases), 1, dtype=torch.long), 0)
    assert torch.isfinite(lp).all()
    assert (torch.logsumexp(lp.double(), -1).exp() - 1).abs().max() < 1e-4
    lp.sum().backward()
    assert torch.isfinite(cases.grad).all()


def test_discretized_logistic_matches_direct_cdf_difference_in_float64():
    mean = torch.tensor(0.1, dtype=torch.float64)
    log_scale = torch.tensor(-2.0, dtype=torch.float64)
    lp = discretized_logistic_log_prob(VALUES, mean, log_scale)
    x = VALUES.double() / 127.5 - 1
    s = log_scale.exp()
    upper = torch.where(VALUES == 255, torch.ones(()), torch.sigmoid((x + 1 / 255 - mean) / s))
    lower = torch.where(VALUES == 0, torch.zeros(()), torch.sigmoid((x - 1 / 255 - mean) / s))
    assert torch.allclose(lp.exp(), upper - lower, atol=1e-12)


def test_dmol_channels_condition_only_on_earlier_channels():
    dist = DiscretizedLogisticMixture(3, num_mixtures=4)
    params = random_params(dist, 1, 1.0, 0).float()
    x = torch.tensor([[10, 200, 30]])
    base = dist.log_prob(params, x)
    for c in range(3):
        y = x.clone()
        y[0, c] = 123
        moved = (dist.log_prob(params, y) - base).abs()[0] > 0
        assert not moved[:c].any()  # earlier channels do not see channel c
        assert moved[c:].any()


def test_dmol_joint_is_the_sum_of_conditionals():
    dist = DiscretizedLogisticMixture(3, num_mixtures=5)
    params = random_params(dist, 4, 1.0, 1)
    x = torch.randint(0, 256, (4, 3))
    logits, means, log_scales, coeffs = dist._unpack(params)
    # joint by brute force: sum_k w_k prod_c p_k(x_c | means shifted by earlier channels)
    xs = x.double() / 127.5 - 1
    mu = means.clone()
    mu[..., 1] = mu[..., 1] + coeffs[..., 0] * xs[:, None, 0]
    mu[..., 2] = mu[..., 2] + coeffs[..., 1] * xs[:, None, 0] + coeffs[..., 2] * xs[:, None, 1]
    per = discretized_logistic_log_prob(x[:, None, :], mu, log_scales).sum(-1)
    joint = torch.logsumexp(torch.log_softmax(logits, -1) + per, -1)
    assert torch.allclose(dist.log_prob(params, x).sum(-1), joint, atol=1e-10)


def test_dmol_parameter_count_matches_paper():
    assert DiscretizedLogisticMixture(3, 10).num_params == 100
    assert DiscretizedLogisticMixture(1, 10).num_params == 30
    assert DiscretizedLogisticMixture(2, 10).num_params == 60  # logit, 2 means, 2 scales, alpha on grey
    assert DiscretizedLogisticMixture(4, 10).num_params == 150  # logit, 4 means, 4 scales, 6 coefficients


@pytest.mark.parametrize("channels", [1, 3])
def test_dmol_samples_follow_the_distribution(channels):
    dist = DiscretizedLogisticMixture(channels, num_mixtures=3)
    params = random_params(dist, 1, 1.0, 5).float()
    params[:, 3:] *= 0.3  # keep mass spread over a few dozen bins
    n = 20000
    draws = dist.sample(params.expand(n, -1), 1.0, torch.Generator().manual_seed(0))
    assert draws.shape == (n, channels) and draws.min() >= 0 and draws.max() <= 255
    # the first channel's marginal
    probs = all_values_log_prob(dist, params, torch.zeros(1, channels, dtype=torch.long), 0)[0].exp()
    freq = torch.bincount(draws[:, 0], minlength=256).double() / n
    assert 0.5 * (freq - probs).abs().sum() < 0.04  # total variation
    # average log-likelihood of the draws equals minus the entropy (law of large numbers)
    if channels == 3:
        lp = dist.log_prob(params.expand(n, -1), draws).sum(-1)
        entropy_estimate = -lp.mean()
        # compare with an independent estimate from a second batch
        draws2 = dist.sample(params.expand(n, -1), 1.0, torch.Generator().manual_seed(1))
        assert abs(float(entropy_estimate + dist.log_prob(params.expand(n, -1), draws2).sum(-1).mean())) < 0.1


def test_dmol_temperature_zero_is_greedy_and_temperature_narrows():
    dist = DiscretizedLogisticMixture(1, num_mixtures=2)
    params = torch.tensor([[2.0, 0.0, 0.5, -0.5, -2.0, -2.0]])  # logits, means, log-scales (M=2, C=1)
    a = dist.sample(params.expand(5, -1), 0.0, torch.Generator().manual_seed(0))
    assert (a == round((0.5 + 1) * 127.5)).all()  # most likely component's mean
    hot = dist.sample(params.expand(4000, -1), 1.0, torch.Generator().manual_seed(0)).double().std()
    cold = dist.sample(params.expand(4000, -1), 0.3, torch.Generator().manual_seed(0)).double().std()
    assert cold < hot


def test_categorical_normalized_and_sampling_matches_softmax_with_temperature():
    dist = Categorical()
    logits = torch.randn(1, 256, generator=torch.Generator().manual_seed(0)) * 2
    lp = dist.log_prob(logits.expand(256, -1), VALUES[:, None])[:, 0]
    assert abs(float(lp.double().exp().sum()) - 1) < 1e-5
    n = 40000
    for t in (1.0, 0.5):
        draws = dist.sample(logits.expand(n, -1), t, torch.Generator().manual_seed(1))[:, 0]
        freq = torch.bincount(draws, minlength=256).double() / n
        target = torch.softmax(logits[0].double() / t, -1)
        assert 0.5 * (freq - target).abs().sum() < 0.05
    greedy = dist.sample(logits.expand(3, -1), 0.0, torch.Generator().manual_seed(2))[:, 0]
    assert (greedy == logits.argmax()).all()


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf")])
def test_bad_temperature_is_rejected(t):
    with pytest.raises(ValueError, match="temperature"):
        Categorical().sample(torch.zeros(1, 256), t)


def test_make_distribution_builds_by_name_and_refuses_an_unknown_one():
    assert isinstance(make_distribution("categorical", 3), Categorical)
    assert make_distribution("dmol", 3, 10).num_params == 100
    with pytest.raises(ValueError, match="unknown distribution"):
        make_distribution("gaussian", 3)


@pytest.mark.parametrize("name,channels", [("categorical", 1), ("dmol", 1), ("dmol", 2), ("dmol", 3), ("dmol", 4)])
def test_value_probs_sum_to_one_and_give_the_likelihood(name, channels):
    """The coder's table: rows sum to one, its entry at the true value is exp(log_prob), later channels don't matter."""
    dist = make_distribution(name, channels, num_mixtures=4)
    params = random_params(dist, 32, 3.0, seed=channels).float()
    values = torch.randint(0, 256, (32, dist.values_per_position))
    lp = dist.log_prob(params.double(), values)  # the table is float64 arithmetic
    for c in range(dist.values_per_position):
        probs = dist.value_probs(params, values, c)
        assert probs.dtype == torch.float64 and probs.shape == (32, 256)
        assert (probs.sum(-1) - 1).abs().max() < 1e-8  # bins narrower than 1e-3 scales use the midpoint rule
        assert torch.allclose(probs.gather(-1, values[:, c : c + 1])[:, 0].log(), lp[:, c], atol=1e-9)
        later = values.clone()
        later[:, c:] = torch.randint(0, 256, later[:, c:].shape)
        assert torch.equal(dist.value_probs(params, later, c), probs)


def test_the_distribution_decides_what_a_position_is():
    """Values per position, the grid, the parameters' shape per image and the input embedding, in one place."""
    from image_transformer.nn.config import ImageTransformerConfig
    from image_transformer.nn.distributions import DISTRIBUTIONS
    from image_transformer.nn.embeddings import PixelInput, SubPixelInput

    cat, mix = make_distribution("categorical", 3), make_distribution("dmol", 3, num_mixtures=2)
    assert (cat.values_per_position, cat.grid_shape((4, 5)), cat.params_shape((4, 5))) == (1, (4, 15), (4, 5, 3, 256))
    assert (mix.values_per_position, mix.grid_shape((4, 5)), mix.params_shape((4, 5))) == (3, (4, 5), (4, 5, 20))
    assert isinstance(cat.input_embedding(8, 60), SubPixelInput) and isinstance(mix.input_embedding(8, 20), PixelInput)
    values = torch.randint(0, 256, (2, 20, 3))
    assert mix.input_embedding(8, 20)(values, torch.arange(20)).shape == (2, 20, 8)
    assert cat.input_embedding(8, 60)(values[..., :1], torch.arange(20)).shape == (2, 20, 8)
    for name in DISTRIBUTIONS:  # every registered distribution is a valid config value
        assert ImageTransformerConfig(distribution=name).grid_shape == make_distribution(name, 1).grid_shape((28, 28))
