"""The one interface every Part A algorithm is written against.

A *denoiser* is a noise-prediction network together with the noise schedule it was trained on and
a way to turn prompts into conditions. Conventions (those of diffusers):

* timesteps are integers ``t`` in ``0 .. T-1``; ``alphas_cumprod[t]`` is :math:`\\bar\\alpha_t`;
  one step past the last timestep is the clean image, where :math:`\\bar\\alpha = 1`;
* images live in the backend's *data space* (DeepFloyd: ``[-1, 1]``; the local MNIST model:
  ``[0, 1]``, the space it was trained in). ``to_unit``/``from_unit`` map that space to and from
  ``[0, 1]`` so figure code can save any backend's images the same way;
* a condition is a tensor whose first dimension is the batch; ``encode`` returns a batch of one
  per prompt, and ``cat_conds`` joins conditions so that CFG's two halves and several anagram
  views go through the network in one call.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from .ddpm import Schedule

Cond = Tensor


@dataclass(frozen=True)
class Thresholding:
    """Imagen's dynamic thresholding of the predicted clean image, as DeepFloyd's scheduler does it:
    per sample, ``s = clamp(quantile(|x0|, ratio), 1, max_value)``, then ``x0 = clamp(x0, -s, s) / s``."""

    ratio: float = 0.95
    max_value: float = 1.5


class Denoiser(ABC):
    """A noise predictor with its schedule. Subclasses set the attributes in ``__init__``."""

    schedule: Schedule  # the noise schedule, the same object training and the live sampler use (on the CPU)
    num_train_timesteps: int
    image_size: int
    channels: int
    identity: dict[str, Any]  # what made the predictions: for cache keys and captions
    device: torch.device
    dtype: torch.dtype
    # What the backend's own sampler does to x0: dynamic thresholding, or else clipping to
    # [-clip_sample, clip_sample]; None for both means nothing (generic DDPM).
    thresholding: Thresholding | None = None
    clip_sample: float | None = None
    # How a step's noise is scaled (DDPMScheduler's names, see diffusion.sampling.VARIANCE_TYPES);
    # "learned_range" uses the variance channels that ``predict`` returns.
    variance_type: str = "fixed_small_log"

    @property
    def alphas_cumprod(self) -> Tensor:
        """abar_t for the timesteps t = 0 .. T-1 the loops use (diffusers' indexing of ``schedule``)."""
        return self.schedule.alphas_cumprod

    @alphas_cumprod.setter
    def alphas_cumprod(self, value: Tensor) -> None:
        self.schedule = Schedule.from_alphas_cumprod(value)

    @abstractmethod
    def encode(self, prompt: str | Sequence[str]) -> Cond:
        """Condition(s) for one prompt or a list of prompts; ``""`` is the null prompt."""

    @abstractmethod
    def predict(self, x_t: Tensor, t: int, cond: Cond) -> tuple[Tensor, Tensor | None]:
        """Noise estimate (and the learned-variance channels, or None) for a batch at timestep ``t``.

        ``cond`` has one row per image of ``x_t``.
        """

    @property
    def null_cond(self) -> Cond:
        """The unconditional condition, the one CFG subtracts."""
        return self.encode("")

    def cat_conds(self, conds: Sequence[Cond]) -> Cond:
        """Concatenate conditions along the batch, in order."""
        return torch.cat([c.to(self.device) for c in conds], dim=0)

    def repeat_cond(self, cond: Cond, n: int) -> Cond:
        """A condition for ``n`` images: a batch of one is repeated, a batch of ``n`` kept."""
        if cond.shape[0] == n:
            return cond.to(self.device)
        if cond.shape[0] != 1:
            raise ValueError(f"condition has batch {cond.shape[0]}, expected 1 or {n}")
        return cond.to(self.device).expand(n, *cond.shape[1:])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return (self.channels, self.image_size, self.image_size)

    # Data space <-> [0, 1]. The default is DeepFloyd's [-1, 1].
    def to_unit(self, x: Tensor) -> Tensor:
        """Images in the backend's data space -> [0, 1] (clamped), for saving."""
        return (x.float() / 2 + 0.5).clamp(0, 1)

    def from_unit(self, x: Tensor) -> Tensor:
        """[0, 1] images (e.g. loaded from disk) -> the backend's data space."""
        return (x * 2 - 1).to(self.device, self.dtype)
