"""Quality numbers for the report: PSNR and SSIM of a restored image against the clean one, and a
Fréchet distance between two sets of classifier features.

Images are tensors in [0, 1], (C, H, W) or (H, W); the metrics come from scikit-image and SciPy
so that the numbers mean what those libraries' documentation says they mean.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _hwc(image: torch.Tensor) -> np.ndarray:
    """A float64 (H, W, C) array clipped to [0, 1], the range both metrics are told about."""
    array = image.detach().float().cpu().clamp(0, 1).numpy().astype(np.float64)
    if array.ndim == 2:
        array = array[None]
    return array.transpose(1, 2, 0)


def psnr(image: torch.Tensor, clean: torch.Tensor) -> float:
    """PSNR = 10 log10(1 / MSE) in dB, for images in [0, 1]."""
    with np.errstate(divide="ignore"):  # identical images: infinitely many dB, not a warning
        return float(peak_signal_noise_ratio(_hwc(clean), _hwc(image), data_range=1.0))


def ssim(image: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004) with scikit-image's defaults: a 7 x 7 uniform window per channel."""
    a, b = _hwc(clean), _hwc(image)
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=2))


def quality(image: torch.Tensor, clean: torch.Tensor) -> tuple[float, float]:
    """(PSNR in dB, SSIM) of ``image`` against ``clean``."""
    return psnr(image, clean), ssim(image, clean)


def mean_quality(images: torch.Tensor, clean: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR and mean SSIM over a batch (N, C, H, W), image by image."""
    scores = np.array([quality(a, b) for a, b in zip(images, clean)])
    return float(scores[:, 0].mean()), float(scores[:, 1].mean())


def gaussian_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features, in float64."""
    f = features.detach().double().cpu().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(stats_a: tuple[np.ndarray, np.ndarray], stats_b: tuple[np.ndarray, np.ndarray]) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), the distance FID computes on Inception
    features (Heusel et al. 2017); here the features come from the project's MNIST classifier."""
    (mu_a, cov_a), (mu_b, cov_b) = stats_a, stats_b
    with warnings.catch_warnings():
        # ReLU units that never fire give zero rows in both covariances, so the product is
        # singular by construction; its square root is still well defined.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # A near-singular product: nudge both covariances, as the reference implementation does.
        eps = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real  # sqrtm returns tiny imaginary parts from rounding
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def frechet_spread(features: torch.Tensor, reference: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
                   resamples: int = 50) -> float:
    """Standard deviation of the Fréchet distance over bootstrap resamples of ``features`` (drawn
    with replacement, same size): how much the number would move with another set of samples."""
    f = features.detach().double().cpu().numpy()
    values = []
    for _ in range(resamples):
        pick = f[rng.integers(0, len(f), len(f))]
        values.append(frechet_distance((pick.mean(axis=0), np.cov(pick, rowvar=False)), reference))
    return float(np.std(values, ddof=1))


def class_histogram(predicted: torch.Tensor, num_classes: int = 10) -> list[float]:
    """Share of samples predicted as each class."""
    counts = torch.bincount(predicted.cpu(), minlength=num_classes).double()
    return (counts / counts.sum()).tolist()
