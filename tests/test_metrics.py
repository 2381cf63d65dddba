import math

import numpy as np
import pytest
import torch

from image_transformer.images import area_downsample, area_downsample_float
from image_transformer.metrics import consistency, ms_ssim, nearest_neighbour_ms_ssim, psnr, spread, ssim


def random_images(n, h=32, w=32, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, c), generator=g, dtype=torch.uint8)


def smooth_images(n, h=32, w=32, c=3, seed=0):
    """Natural-ish images: upsampled noise, so that SSIM is far from 0 for small perturbations."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, h // 4, w // 4, c), generator=g, dtype=torch.uint8)
    return low.repeat_interleave(4, 1).repeat_interleave(4, 2)


def add_noise(images, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(-scale, scale + 1, images.shape, generator=g)
    return (images.long() + noise).clamp(0, 255).to(torch.uint8)


def test_identical_images_give_infinite_psnr_unit_ssim_and_zero_consistency_error():
    x = random_images(3)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    assert torch.equal(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(ms_ssim(x, x), torch.ones(3, dtype=torch.float64), atol=1e-12)
    result = consistency(x, x)
    assert torch.equal(result["rmse"], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(result["l2"], torch.zeros(3, dtype=torch.float64))


def test_psnr_of_a_constant_shift():
    x = torch.randint(0, 246, (2, 8, 8, 3), dtype=torch.uint8)
    expected = 20 * math.log10(255 / 10)
    assert torch.allclose(psnr(x, x + 10), torch.full((2,), expected, dtype=torch.float64))
    assert torch.allclose(psnr(x + 10, x), psnr(x, x + 10))
    assert torch.allclose(psnr(x.float() / 255, (x.float() + 10) / 255, max_value=1.0), psnr(x, x + 10), atol=1e-5)


def test_area_downsample_of_a_known_pattern():
    pattern = torch.tensor([
        [0, 2, 10, 10],
        [4, 6, 10, 11],
        [255, 255, 0, 1],
        [255, 254, 0, 0],
    ], dtype=torch.uint8)[None, :, :, None]
    # 10.25 -> 10, 254.75 -> 255, 0.25 -> 0
    assert area_downsample(pattern, (2, 2))[0, :, :, 0].tolist() == [[3, 10], [255, 0]]
    assert area_downsample_float(pattern, 2)[0, :, :, 0].tolist() == [[3.0, 10.25], [254.75, 0.25]]
    assert area_downsample(pattern, (1, 1)).item() == round(sum(map(int, pattern.flatten())) / 16)
    assert area_downsample(pattern, (4, 2))[0, :, :, 0].tolist() == [[1, 10], [5, 11], [255, 1], [255, 0]]  # halves up
    assert torch.equal(area_downsample(pattern, (4, 4)), pattern)
    rgb = torch.stack([pattern[..., 0], 255 - pattern[..., 0]], -1)  # channels are averaged separately
    assert area_downsample(rgb, 2)[0, 0, 0].tolist() == [3, 252]
    with pytest.raises(ValueError, match="multiple"):
        area_downsample(pattern, (3, 3))
    with pytest.raises(ValueError, match="uint8"):
        area_downsample(pattern.float(), (2, 2))


def test_consistency_of_an_exact_upsampling_is_zero():
    inputs = random_images(4, 8, 8, 3)
    upsampled = torch.from_numpy(np.repeat(np.repeat(inputs.numpy(), 4, axis=1), 4, axis=2))
    result = consistency(upsampled, inputs)
    assert torch.equal(result["rmse"], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(result["l2"], torch.zeros(4, dtype=torch.float64))


def test_consistency_gives_rmse_and_l2_in_pixel_values_and_refuses_a_non_multiple_size():
    inputs = torch.full((2, 2, 2, 3), 100, dtype=torch.uint8)
    samples = torch.full((2, 8, 8, 3), 106, dtype=torch.uint8)
    samples[1, :4, :4, 0] = 100 + 6 + 16  # one input value off by 16 more
    result = consistency(samples, inputs)
    assert torch.allclose(result["rmse"][0], torch.tensor(6.0, dtype=torch.float64))
    assert torch.allclose(result["l2"][0], torch.tensor(6.0 * math.sqrt(12), dtype=torch.float64))
    assert torch.allclose(result["l2"][1] ** 2, torch.tensor(11 * 36 + 22**2, dtype=torch.float64))
    assert torch.allclose(result["rmse"], result["l2"] / math.sqrt(12))
    with pytest.raises(ValueError, match="multiple"):
        consistency(samples, torch.zeros(2, 3, 3, 3, dtype=torch.uint8))


def test_ssim_is_symmetric_and_below_one_for_noisy_images():
    x = smooth_images(3)
    y = add_noise(x, 20)
    s = ssim(x, y)
    assert torch.allclose(s, ssim(y, x), atol=1e-12)
    assert ((s < 1) & (s > 0.5)).all()
    noisier = ssim(x, add_noise(x, 60))
    assert (noisier < s).all()
    m = ms_ssim(x, y)
    assert torch.allclose(m, ms_ssim(y, x), atol=1e-12) and ((m < 1) & (m > 0.5)).all()
    assert (ms_ssim(x, add_noise(x, 60)) < m).all()


def test_ssim_matches_a_direct_computation_on_one_window():
    """An 11x11 image has exactly one window position: SSIM is the global formula with Gaussian weights."""
    x = random_images(1, 11, 11, 1).double()
    y = random_images(1, 11, 11, 1, seed=5).double()
    t = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-t**2 / (2 * 1.5**2))
    w = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    a, b = x[0, :, :, 0], y[0, :, :, 0]
    ma, mb = (w * a).sum(), (w * b).sum()
    va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
    cov = (w * a * b).sum() - ma * mb
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert torch.allclose(ssim(x, y), expected[None], atol=1e-12)


def test_small_images_use_a_smaller_window_and_one_scale():
    x = smooth_images(2, 8, 8, 3)
    y = add_noise(x, 30)
    s = ssim(x, y)
    assert s.shape == (2,) and torch.isfinite(s).all() and (s < 1).all()
    assert torch.allclose(ms_ssim(x, y), s.clamp(min=0))  # 8 < 11: a single scale, MS-SSIM = SSIM
    assert torch.equal(ssim(x[:, :1, :1], x[:, :1, :1]), torch.ones(2, dtype=torch.float64))


def test_ms_ssim_scales_and_weights():
    x = smooth_images(2)
    y = add_noise(x, 30)
    two = ms_ssim(x, y)  # 32x32: scales 32 and 16
    assert torch.allclose(two, ms_ssim(x, y, weights=(0.0448, 0.2856)))
    assert torch.allclose(two, ms_ssim(x, y, weights=(1.0, 2856 / 448)))  # renormalised
    assert not torch.allclose(two, ms_ssim(x, y, min_size=8))  # three scales
    assert torch.allclose(ms_ssim(x, y, weights=(1.0,)), ssim(x, y))


def test_nearest_neighbour_finds_the_sample_itself():
    train = random_images(50, 8, 8, 3, seed=3)
    samples = torch.stack([add_noise(train[17], 3)[None], train[42][None], train[5][None]])[:, 0]
    index, score = nearest_neighbour_ms_ssim(samples, train, (2, 2), batch_size=7)
    assert index.tolist() == [17, 42, 5]
    assert score[1:].tolist() == [1.0, 1.0] and score[0] < 1
    index_np, score_np = nearest_neighbour_ms_ssim(samples, train.numpy(), 2)
    assert torch.equal(index_np, index) and torch.equal(score_np, score)
    with pytest.raises(ValueError, match="same image shape"):
        nearest_neighbour_ms_ssim(samples, random_images(3, 4, 4, 3), 2)


def test_metrics_refuse_images_of_different_shapes_or_without_a_batch():
    with pytest.raises(ValueError, match="same shape"):
        psnr(random_images(1, 4, 4), random_images(1, 4, 5))
    with pytest.raises(ValueError, match="same shape"):
        ssim(random_images(2, 4, 4), random_images(1, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        ms_ssim(torch.zeros(4, 4), torch.zeros(4, 4))


def test_spread_covers_the_whole_split():
    assert spread(10, 0).tolist() == list(range(10))
    assert spread(10, 20).tolist() == list(range(10))
    idx = spread(1000, 10)
    assert idx[0] == 0 and idx[-1] == 999 and len(idx.unique()) == 10
