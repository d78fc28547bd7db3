"""Gaussian blur: the low-pass filter of the hybrid images (1.9) and the classical baseline the
one-step denoisers are compared against (1.2, 1.3, Part B 1.2).

A module of its own so that sections needing only a blur do not depend on the sampling loops.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel1d(kernel_size: int, sigma: float, *, dtype=torch.float32, device=None) -> Tensor:
    """Normalised samples of a Gaussian at the integer offsets -(k//2) .. k//2."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Gaussian blur of (..., C, H, W) images, per channel, as a separable convolution.

    Borders are reflected like torchvision's ``gaussian_blur`` (replicated when the image is too
    small to reflect), so a constant image stays constant.
    """
    shape = x.shape
    imgs = x.reshape(-1, 1, shape[-2], shape[-1])
    work = imgs.float() if imgs.dtype in (torch.float16, torch.bfloat16) else imgs
    k = gaussian_kernel1d(kernel_size, sigma, dtype=work.dtype, device=work.device)
    pad = kernel_size // 2
    mode = "reflect" if pad < min(shape[-2], shape[-1]) else "replicate"
    work = F.pad(work, (pad, pad, pad, pad), mode=mode)
    work = F.conv2d(work, k.view(1, 1, 1, -1))
    work = F.conv2d(work, k.view(1, 1, -1, 1))
    return work.to(x.dtype).reshape(shape)


def best_blur(noisy: Tensor, clean: Tensor, sigmas: Sequence[float]) -> tuple[float, float, int, Tensor]:
    """The Gaussian blur of ``noisy`` closest to ``clean`` (mean squared error over the whole batch),
    searched over ``sigmas`` with kernel 2·round(3σ) + 1: (error, σ, kernel, blurred)."""
    best = None
    for s in sigmas:
        k = 2 * int(round(3 * s)) + 1
        out = gaussian_blur(noisy, k, s)
        err = (out - clean).pow(2).mean().item()
        if best is None or err < best[0]:
            best = (err, s, k, out)
    return best
