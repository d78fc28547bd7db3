import math

import numpy as np
import pytest
import torch

from diffusion import metrics


def test_psnr_is_ten_log10_of_one_over_mse():
    clean = torch.zeros(1, 8, 8)
    noisy = clean + 0.1  # MSE = 0.01 -> 20 dB
    assert metrics.psnr(noisy, clean) == pytest.approx(20.0)
    assert math.isinf(metrics.psnr(clean, clean))


def test_psnr_and_ssim_clip_to_the_unit_range():
    clean = torch.ones(3, 16, 16)
    assert math.isinf(metrics.psnr(clean + 0.5, clean))  # 1.5 is shown as 1.0
    assert metrics.ssim(clean + 0.5, clean) == pytest.approx(1.0)


def test_both_metrics_fall_as_noise_grows():
    g = torch.Generator().manual_seed(0)
    clean = torch.zeros(1, 28, 28)
    clean[0, 6:22, 12:16] = 1.0  # a "1"
    eps = torch.randn(clean.shape, generator=g)
    scores = [metrics.quality(clean + s * eps, clean) for s in (0.05, 0.2, 0.5)]
    assert metrics.ssim(clean, clean) == pytest.approx(1.0)
    assert scores[0][0] > scores[1][0] > scores[2][0]
    assert 1.0 > scores[0][1] > scores[1][1] > scores[2][1]


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert metrics.frechet_distance(metrics.gaussian_stats(a), metrics.gaussian_stats(a)) == pytest.approx(0, abs=1e-8)
    # Shift by d and scale by s: ||d||^2 + sum (1 + s^2 - 2 s) for unit covariances.
    mu_a, cov_a = np.zeros(3), np.eye(3)
    d, s = np.array([1.0, 2.0, 0.0]), 3.0
    got = metrics.frechet_distance((mu_a, cov_a), (d, s * s * np.eye(3)))
    assert got == pytest.approx(5.0 + 3 * (1 + 9 - 6))


def test_class_histogram_sums_to_one():
    hist = metrics.class_histogram(torch.tensor([0, 0, 3, 9]))
    assert len(hist) == 10 and hist[0] == 0.5 and hist[3] == 0.25 and sum(hist) == pytest.approx(1)


def test_frechet_spread_shrinks_with_more_samples():
    g = torch.Generator().manual_seed(2)
    reference = metrics.gaussian_stats(torch.randn(5000, 4, generator=g, dtype=torch.float64))
    rng = np.random.default_rng(0)
    small = metrics.frechet_spread(torch.randn(50, 4, generator=g) + 1, reference, rng)
    large = metrics.frechet_spread(torch.randn(2000, 4, generator=g) + 1, reference, rng)
    assert 0 < large < small
