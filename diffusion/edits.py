"""Image edits of Part A (1.7-1.9), each a small change to the guided sampling loop.

* SDEdit / image-to-image (1.7, 1.7.1) and text-conditioned translation (1.7.3): noise the image to
  ``timesteps[i_start]`` and denoise from there; the prompt decides which of the two it is.
* Inpainting (1.7.2, RePaint): after every step, x_t <- m x_t + (1 - m) forward(x_orig, t).
* Visual anagrams (1.8): eps = mean_v  v^-1( CFG(v(x_t), p_v) ).
* Hybrid images (1.9, factorized diffusion): eps = lowpass(eps_1) + highpass(eps_2).

Every function takes the denoiser, conditions from ``den.encode`` and an explicit generator; the
timesteps default to the course's strided schedule rescaled to the backend (``strided_timesteps``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .blur import gaussian_blur
from .denoiser import Cond, Denoiser
from .sampling import (Generators, ThresholdingArg, cfg_estimate, check_guidance, denoise_loop, draw_noise, forward,
                       iterative_denoise_cfg, strided_timesteps)
from .views import FlipVertical, Identity, View


def _timesteps(den: Denoiser, timesteps: Sequence[int] | None) -> list[int]:
    return strided_timesteps(den) if timesteps is None else list(timesteps)


# --- image-to-image ------------------------------------------------------------------------------

def sdedit(den: Denoiser, x_orig: Tensor, i_start: int, cond: Cond, generator: Generators,
           *, timesteps: Sequence[int] | None = None, guidance: float = 7.0, uncond: Cond | None = None,
           thresholding: ThresholdingArg = "auto", every: int = 0):
    """SDEdit: forward ``x_orig`` to ``timesteps[i_start]``, then guided denoising from there.

    With the null-ish prompt ("a high quality photo") it projects onto the image manifold (1.7);
    with a text prompt it is text-conditioned translation (1.7.3). Larger ``i_start`` = less noise =
    closer to the original.
    """
    check_guidance(guidance)
    ts = _timesteps(den, timesteps)
    x_orig = x_orig.to(den.device, den.dtype)
    # The schedule in the image's precision, as IFImg2ImgPipeline's add_noise computes it.
    x_t, _ = forward(x_orig, ts[i_start], den.alphas_cumprod.to(x_orig.dtype), generator)
    return iterative_denoise_cfg(den, x_t, ts, i_start, cond, generator, guidance=guidance, uncond=uncond,
                                 thresholding=thresholding, every=every)


def inpaint(den: Denoiser, x_orig: Tensor, mask: Tensor, cond: Cond, generator: Generators,
            *, timesteps: Sequence[int] | None = None, i_start: int = 0, guidance: float = 7.0,
            uncond: Cond | None = None, thresholding: ThresholdingArg = "auto", every: int = 0):
    """RePaint-style inpainting: new content where ``mask`` is 1, the original where it is 0.

    Draws, in order: x at ``timesteps[i_start]``; then per step the sampler's z (if any) followed by
    the noise that forwards ``x_orig`` to the state's new timestep. The constraint is applied to the
    starting noise too, and after the last step the kept region is ``x_orig`` itself (abar = 1).
    """
    ts = _timesteps(den, timesteps)
    x_orig = x_orig.to(den.device, den.dtype)
    mask = mask.to(den.device, den.dtype)

    def keep_known(x: Tensor, j: int) -> Tensor:
        known = x_orig if j >= len(ts) else forward(x_orig, ts[j], den.alphas_cumprod, generator)[0]
        return mask * x + (1 - mask) * known

    check_guidance(guidance)
    x = keep_known(draw_noise(x_orig.shape, generator, device=den.device, dtype=den.dtype), i_start)
    return denoise_loop(den, x, ts, i_start, lambda x_t, t: cfg_estimate(den, x_t, t, cond, guidance, uncond),
                        generator, thresholding=thresholding, every=every, after_step=keep_known)


# --- visual anagrams -----------------------------------------------------------------------------

def anagram_estimate(den: Denoiser, x: Tensor, t: int, conds: Sequence[Cond], views: Sequence[View],
                     guidance: float, uncond: Cond | None = None) -> tuple[Tensor, Tensor | None]:
    """Noise and variance for an anagram, all views (and both CFG halves) in one network call.

    Each view sees its own viewed image with its own prompt; its estimate is mapped back by the
    inverse view (noise and variance alike, since both are per-pixel maps) and the views averaged.
    """
    if len(conds) != len(views):
        raise ValueError(f"{len(views)} views need {len(views)} conditions, got {len(conds)}")
    n = x.shape[0]
    x_views = torch.cat([view.apply(x) for view in views])
    c_views = den.cat_conds([den.repeat_cond(c, n) for c in conds])
    eps, var = cfg_estimate(den, x_views, t, c_views, guidance, uncond)

    def unview_mean(out: Tensor) -> Tensor:
        return torch.stack([view.inverse(o) for view, o in zip(views, out.chunk(len(views)))]).mean(0)

    return unview_mean(eps), None if var is None else unview_mean(var)


def visual_anagram(den: Denoiser, conds: Sequence[Cond], generator: Generators, *,
                   views: Sequence[View] = (Identity(), FlipVertical()), n: int = 1, x: Tensor | None = None,
                   timesteps: Sequence[int] | None = None, guidance: float = 7.0, uncond: Cond | None = None,
                   thresholding: ThresholdingArg = "auto", every: int = 0):
    """An image that reads as ``conds[k]`` when seen through ``views[k]`` (default: upright and
    upside down). Starts from ``x`` or from fresh noise for ``n`` images."""
    ts = _timesteps(den, timesteps)
    check_guidance(guidance)
    if x is None:
        x = draw_noise((n, *den.shape), generator, device=den.device, dtype=den.dtype)
    return denoise_loop(den, x, ts, 0, lambda x_t, t: anagram_estimate(den, x_t, t, conds, views, guidance, uncond),
                        generator, thresholding=thresholding, every=every)


# --- hybrid images -------------------------------------------------------------------------------

def hybrid_blur_params(image_size: int, *, reference_size: int = 64, reference_sigma: float = 2.0) -> tuple[int, float]:
    """The course's low-pass (kernel 33, sigma 2 at 64x64), scaled to another resolution.

    Rule: sigma grows with the image side (same cut-off as a fraction of the image), and the kernel
    spans +-8 sigma, rounded to the nearest odd size >= 3. 64 -> (33, 2.0); 28 -> (15, 0.875);
    256 -> (129, 8.0).
    """
    sigma = reference_sigma * image_size / reference_size
    half = max(1, math.floor(8 * sigma + 0.5))
    return 2 * half + 1, sigma


def hybrid_estimate(den: Denoiser, x: Tensor, t: int, cond_low: Cond, cond_high: Cond, guidance: float,
                    kernel_size: int, sigma: float, uncond: Cond | None = None) -> tuple[Tensor, Tensor | None]:
    """Low frequencies of ``cond_low``'s guided noise plus high frequencies of ``cond_high``'s, from one
    network call; the (unfiltered) variances are averaged."""
    n = x.shape[0]
    conds = den.cat_conds([den.repeat_cond(cond_low, n), den.repeat_cond(cond_high, n)])
    eps, var = cfg_estimate(den, torch.cat([x, x]), t, conds, guidance, uncond)
    eps_low, eps_high = eps.chunk(2)
    eps = gaussian_blur(eps_low, kernel_size, sigma) + (eps_high - gaussian_blur(eps_high, kernel_size, sigma))
    if var is not None:
        var_low, var_high = var.chunk(2)
        var = (var_low + var_high) / 2
    return eps, var


def hybrid(den: Denoiser, cond_low: Cond, cond_high: Cond, generator: Generators, *,
           n: int = 1, x: Tensor | None = None, kernel_size: int | None = None, sigma: float | None = None,
           timesteps: Sequence[int] | None = None, guidance: float = 7.0, uncond: Cond | None = None,
           thresholding: ThresholdingArg = "auto", every: int = 0):
    """A hybrid image: ``cond_low`` from afar, ``cond_high`` up close. The blur defaults to
    :func:`hybrid_blur_params` for the backend's resolution."""
    default_k, default_sigma = hybrid_blur_params(den.image_size)
    k = default_k if kernel_size is None else kernel_size
    s = default_sigma if sigma is None else sigma
    ts = _timesteps(den, timesteps)
    check_guidance(guidance)
    if x is None:
        x = draw_noise((n, *den.shape), generator, device=den.device, dtype=den.dtype)
    return denoise_loop(
        den, x, ts, 0, lambda x_t, t: hybrid_estimate(den, x_t, t, cond_low, cond_high, guidance, k, s, uncond),
        generator, thresholding=thresholding, every=every)
