"""The single-step denoiser of Part B: z = x + sigma * eps, trained so that D(z) ~ x."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import rng


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """z = x + sigma * eps with eps ~ N(0, I), drawn from ``generator``."""
    eps = rng.randn(x.shape, generator, device=x.device, dtype=x.dtype)
    return x + sigma * eps


def denoiser_loss(model, x: torch.Tensor, generator: torch.Generator, sigma: float = 0.5) -> torch.Tensor:
    """L = || D(x + sigma eps) - x ||^2, averaged over pixels (fresh noise every batch)."""
    return F.mse_loss(model(add_noise(x, sigma, generator)), x)
