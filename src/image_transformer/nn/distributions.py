"""Output distributions over 8-bit intensities: categorical and discretized mixture of logistics.

A distribution also decides what a *position* is: it carries ``values_per_position`` intensities (1
sub-pixel for the categorical, the C channels of a pixel for the mixture), the positions form the grid
``grid_shape(image_size)`` ([H, W*C] or [H, W]), the model reads the values of a position through
``input_embedding`` and predicts them from ``num_params`` numbers, reshaped to ``params_shape`` per image.
A new distribution is one class here and one entry in :data:`DISTRIBUTIONS`.

- ``log_prob(params (..., P), values (..., k) long) -> (..., k)``: log p of each value given the
  earlier ones of its position (nats).
- ``sample(params (..., P), temperature, generator, noise) -> (..., k)`` long in [0, 256).
- ``draw_noise(params (..., P), generator) -> list of uniforms``: the random numbers one ``sample`` call uses, drawn
  in the order it draws them; ``sample(..., noise=...)`` takes them instead of drawing (the CUDA-graph sampler
  draws them ahead, into a buffer the captured step reads).
- ``value_probs(params (B, P), values (B, k), c) -> (B, 256)`` float64: P(value c = v | values before c)
  for every v through the likelihood's own arithmetic, and ``channel_table`` (same signature) the same table computed
  from value c's bins alone: the tables an entropy coder codes value c with (rows sum to one).

Random numbers are drawn in a fixed pattern per call (uniforms in float64 on the generator's device, then cast
to the parameters' dtype and device), so two callers that pass the same parameters and the same generator state
draw the same values, whether they draw the noise first or let ``sample`` draw it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import HALF_RANGE, from_unit, to_unit
from .embeddings import PixelInput, SubPixelInput

__all__ = ["Categorical", "DiscretizedLogisticMixture", "DISTRIBUTIONS", "make_distribution"]


def _full_precision(x: Tensor) -> Tensor:
    """float32 or float64: the likelihood arithmetic is never done in half precision."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _uniform(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return u.to(device=like.device, dtype=like.dtype)


def _gumbel_argmax(logits: Tensor, temperature: float, u: Tensor) -> Tensor:
    """argmax(logits / T + Gumbel noise of the uniforms ``u``): a draw from softmax(logits / T); T = 0 is argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    return (logits / temperature + gumbel).argmax(-1)


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")


class Categorical:
    """A 256-way softmax per sub-pixel; the temperature divides the logits (0 = argmax).

    A position is a sub-pixel: the grid is [H, W*C], each value is embedded by its channel's table.
    """

    values_per_position = 1
    num_params = 256

    def __init__(self, channels: int = 1):
        self.channels = channels

    def grid_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        h, w = image_size
        return (h, w * self.channels)

    def params_shape(self, image_size: tuple[int, int]) -> tuple[int, ...]:
        """Parameters per image: logits (H, W, C, 256)."""
        return (*image_size, self.channels, self.num_params)

    def input_embedding(self, dim: int, num_positions: int, relu: bool = False) -> nn.Module:
        """Channel-specific embedding tables (``relu`` concerns the mixture's convolution only)."""
        return SubPixelInput(self.channels, dim, num_positions)

    def log_prob(self, logits: Tensor, values: Tensor) -> Tensor:
        """logits (..., 256), values (..., 1) -> (..., 1)."""
        return F.log_softmax(_full_precision(logits), dim=-1).gather(-1, values.long())

    def draw_noise(self, logits: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """The uniforms of one ``sample`` call: [(..., 256)] in the logits' full-precision dtype and device."""
        logits = _full_precision(logits)
        return [_uniform(logits.shape, logits, generator)]

    def sample(self, logits: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
               noise: list[Tensor] | None = None) -> Tensor:
        """logits (..., 256) -> (..., 1) long; ``noise`` (from ``draw_noise``) in place of drawing."""
        _check_temperature(temperature)
        (u,) = noise if noise is not None else self.draw_noise(logits, generator)
        return _gumbel_argmax(_full_precision(logits), temperature, u)[..., None]

    def value_probs(self, logits: Tensor, values: Tensor, c: int = 0) -> Tensor:
        """logits (B, 256) -> (B, 256) float64 probabilities of the position's one value."""
        return F.softmax(logits.double(), dim=-1)

    channel_table = value_probs  # the table is one softmax either way


def _log1mexp(z: Tensor) -> Tensor:
    """log(1 - exp(z)) for z < 0, accurate on both sides of -log 2."""
    return torch.where(z > -math.log(2.0), torch.log(-torch.expm1(z)), torch.log1p(-torch.exp(z)))


def discretized_logistic_log_prob(values: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(value) for a logistic(mean, exp(log_scale)) on [-1, 1] cut into 256 bins.

    Bin v covers x = v / 127.5 - 1 +- 1/255; the lowest bin extends to -inf and the highest to +inf,
    so the 256 probabilities sum to one exactly. The arithmetic never forms a difference of two
    probabilities close to one: for bins right of the mean it uses the mirrored tail
    sigmoid(a) - sigmoid(b) = sigmoid(-b) - sigmoid(-a), and works in log space throughout.
    Where a bin is narrower than 1e-3 scale units the exact difference loses precision, so the
    midpoint rule (density times bin width, error ~1e-7 relative) is used there instead.
    """
    x = to_unit(values, mean.dtype)
    centered = x - mean
    inv_scale = torch.exp(-log_scale)
    plus = inv_scale * (centered + 1.0 / 255.0)  # upper bin edge in standard units
    minus = inv_scale * (centered - 1.0 / 255.0)  # lower bin edge

    lowest = F.logsigmoid(plus)  # P(X < upper edge) for v = 0
    highest = F.logsigmoid(-minus)  # P(X > lower edge) for v = 255

    flip = (plus + minus) > 0  # bin right of the mean: use the mirrored tail
    hi = torch.where(flip, -minus, plus)
    lo = torch.where(flip, -plus, minus)
    log_hi, log_lo = F.logsigmoid(hi), F.logsigmoid(lo)
    exact = log_hi + _log1mexp((log_lo - log_hi).clamp(max=-1e-6))
    mid = inv_scale * centered
    midpoint = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2.0 / 255.0)
    middle = torch.where(plus - minus < 1e-3, midpoint, exact)

    return torch.where(values == 0, lowest, torch.where(values == 255, highest, middle))


class DiscretizedLogisticMixture:
    """PixelCNN++'s discretized mixture of logistics, with linear dependence between channels.

    Per mixture component: a logit, C means, C log-scales and C(C-1)/2 coefficients (G on R; B on R
    and G; alpha on all three), so 10 parameters per component for RGB, 3 for grey, 6 for grey + alpha and 15
    for RGBA. Channel c of component i has mean
    ``mean[i, c] + sum_{j<c} tanh(coeff[i, c, j]) * x_j`` with x_j the earlier channels in [-1, 1].

    ``log_prob`` returns per channel the exact conditional log p(x_c | x_<c) of the mixture
    (the components re-weighted by how well they explain the earlier channels), so summing over
    channels gives the joint.

    Temperature: the component logits are divided by T and the logistic noise is multiplied by T
    (a logistic of scale T*s); T = 0 takes the most likely component and its (conditional) mean.
    Continuous draws are rounded to the nearest of the 256 bins, which samples the discretized
    distribution exactly (the edge bins absorb the tails).

    A position is a pixel: the grid is [H, W], its C values go in through the 1xC strided convolution.
    """

    LOG_SCALE_MIN = -7.0  # as in PixelCNN++: keeps 1/scale finite in float32

    def __init__(self, channels: int, num_mixtures: int = 10):
        self.channels = channels
        self.num_mixtures = num_mixtures
        self.num_coeffs = channels * (channels - 1) // 2
        self.values_per_position = channels
        self.num_params = num_mixtures * (1 + 2 * channels + self.num_coeffs)

    def grid_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return tuple(image_size)

    def params_shape(self, image_size: tuple[int, int]) -> tuple[int, ...]:
        """Parameters per image: (H, W, P), all channels of a pixel together."""
        return (*image_size, self.num_params)

    def input_embedding(self, dim: int, num_positions: int, relu: bool = False) -> nn.Module:
        return PixelInput(self.channels, dim, relu)

    def _unpack(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m, c = self.num_mixtures, self.channels
        params = _full_precision(params)
        logits = params[..., :m]  # (..., M)
        rest = params[..., m:].unflatten(-1, (m, 2 * c + self.num_coeffs))  # (..., M, 2C + coeffs)
        means = rest[..., :c]
        log_scales = rest[..., c : 2 * c].clamp(min=self.LOG_SCALE_MIN)
        coeffs = torch.tanh(rest[..., 2 * c :])
        return logits, means, log_scales, coeffs

    def _channel_mean(self, means: Tensor, coeffs: Tensor, x: Tensor, c: int) -> Tensor:
        """Mean of channel c given earlier channels x (..., C) in [-1, 1]; means/coeffs (..., [M,] ...)."""
        mean = means[..., c]
        start = c * (c - 1) // 2  # coefficients of channel c on channels 0..c-1
        for j in range(c):
            mean = mean + coeffs[..., start + j] * x[..., j]
        return mean

    def log_prob(self, params: Tensor, values: Tensor) -> Tensor:
        """params (..., P), values (..., C) -> (..., C) conditional log-probabilities."""
        logits, means, log_scales, coeffs = self._unpack(params)
        values = values.long()
        x = to_unit(values, logits.dtype)
        x_mix = x[..., None, :]  # (..., 1, C): broadcast over components
        mean = torch.stack([self._channel_mean(means, coeffs, x_mix, c) for c in range(self.channels)], -1)
        per_channel = discretized_logistic_log_prob(values[..., None, :], mean, log_scales)  # (..., M, C)
        # log p(x_c | x_<c) = logsumexp_i [log p(i | x_<c) + log p_i(x_c | x_<c)]: the component
        # posterior given the earlier channels is a log_softmax, which never subtracts two large logs
        before = F.pad(per_channel.cumsum(-1)[..., :-1], (1, 0))  # (..., M, C): sum over channels < c
        log_w = F.log_softmax(logits, dim=-1)[..., None]  # (..., M, 1)
        posterior = F.log_softmax(log_w + before, dim=-2)  # (..., M, C)
        return torch.logsumexp(posterior + per_channel, dim=-2)  # (..., C)

    def value_probs(self, params: Tensor, values: Tensor, c: int) -> Tensor:
        """params (B, P), values (B, C) -> (B, 256) float64: P(channel c = v | channels < c), from ``log_prob``.

        Every candidate v goes through the same arithmetic as the likelihood (the 256 bins of the
        mixture's CDF), so the coder's cost equals -log2 p up to the coder's own quantization.
        """
        b = params.shape[0]
        candidates = values.long()[:, None, :].repeat(1, 256, 1)  # (B, 256, C)
        candidates[:, :, c] = torch.arange(256, device=values.device)
        lp = self.log_prob(params.double()[:, None, :].expand(b, 256, -1), candidates)[..., c]  # (B, 256)
        return lp.exp()

    def channel_table(self, params: Tensor, values: Tensor, c: int) -> Tensor:
        """params (B, P), values (B, C) -> (B, 256) float64: P(channel c = v | channels < c) from channel c's bins
        alone: the components re-weighted by how well they explain the earlier channels, then each component's
        logistic CDF at the 255 inner bin edges (given the earlier channels), differenced and mixed.

        ``value_probs``'s table (equal up to about 1e-12) at a small part of the work: that one runs the whole
        likelihood, every channel of every component in log space, for each of the 256 candidates. The entropy
        coder quantises tables to 24 bits, so differencing CDFs in float64 loses nothing it could use.
        """
        logits, means, log_scales, coeffs = self._unpack(params.double())
        values = values.long()
        x = to_unit(values, torch.float64)[:, None, :]  # (B, 1, C): broadcast over components
        log_w = F.log_softmax(logits, dim=-1)  # (B, M)
        for j in range(c):  # how well each component explains the earlier channels
            mean = self._channel_mean(means, coeffs, x, j)  # (B, M)
            log_w = log_w + discretized_logistic_log_prob(values[:, None, j], mean, log_scales[..., j])
        weights = F.softmax(log_w, dim=-1)[:, None, :]  # (B, 1, M)
        mean = self._channel_mean(means, coeffs, x, c)[..., None]  # (B, M, 1)
        edges = torch.arange(1, 256, device=params.device, dtype=torch.float64) / HALF_RANGE - 1.0 - 1.0 / 255.0
        cdf = torch.sigmoid((edges - mean) * torch.exp(-log_scales[..., c, None]))  # (B, M, 255)
        cdf = F.pad(F.pad(cdf, (1, 0), value=0.0), (0, 1), value=1.0)  # (B, M, 257): the edge bins take the tails
        return torch.matmul(weights, cdf.diff(dim=-1))[:, 0]  # (B, 256)

    def draw_noise(self, params: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """The uniforms of one ``sample`` call: [(..., M) for the component, (..., C) for the logistic noise]."""
        like = _full_precision(params)
        batch = params.shape[:-1]
        return [_uniform((*batch, self.num_mixtures), like, generator),
                _uniform((*batch, self.channels), like, generator)]

    def sample(self, params: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
               noise: list[Tensor] | None = None) -> Tensor:
        """params (..., P) -> (..., C) long: component, then channel by channel; ``noise`` (from ``draw_noise``)
        in place of drawing."""
        _check_temperature(temperature)
        u_component, u = noise if noise is not None else self.draw_noise(params, generator)
        logits, means, log_scales, coeffs = self._unpack(params)
        component = _gumbel_argmax(logits, temperature, u_component)[..., None, None]  # (..., 1, 1)
        pick = lambda t: t.gather(-2, component.expand(*t.shape[:-2], 1, t.shape[-1])).squeeze(-2)  # noqa: E731
        means, log_scales, coeffs = pick(means), pick(log_scales), pick(coeffs)  # (..., C) / (..., coeffs)
        u = u.clamp(1e-5, 1.0 - 1e-5)
        noise = torch.log(u) - torch.log1p(-u)  # standard logistic, (..., C)
        x = torch.zeros_like(means)
        values = torch.zeros(means.shape, dtype=torch.long, device=means.device)
        for c in range(self.channels):
            mean = self._channel_mean(means, coeffs, x, c)
            draw = mean + temperature * torch.exp(log_scales[..., c]) * noise[..., c]
            values[..., c] = from_unit(draw)
            x[..., c] = to_unit(values[..., c], x.dtype)
        return values


Distribution = Categorical | DiscretizedLogisticMixture

# name in a config -> the distribution, from (channels, num_mixtures)
DISTRIBUTIONS: dict[str, Callable[[int, int], Distribution]] = {
    "categorical": lambda channels, num_mixtures: Categorical(channels),
    "dmol": DiscretizedLogisticMixture,
}


def make_distribution(name: str, channels: int, num_mixtures: int = 10) -> Distribution:
    """The output distribution named in a config."""
    if name not in DISTRIBUTIONS:
        known = " or ".join(repr(name) for name in DISTRIBUTIONS)
        raise ValueError(f"unknown distribution {name!r}; expected {known}")
    return DISTRIBUTIONS[name](channels, num_mixtures)
