"""Views for visual anagrams: invertible rearrangements of an image's pixels.

A view must be a pixel permutation: then it maps standard Gaussian noise to standard Gaussian
noise, so a noise estimate made on the viewed image can be mapped back with ``inverse`` and
averaged with the others (Geng et al., "Visual Anagrams"). Colour changes or blurs would not be.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class View(ABC):
    """``apply`` shows the image as the view sees it; ``inverse`` undoes it. Both act on (..., H, W)."""

    name: str = "view"

    @abstractmethod
    def apply(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def inverse(self, x: Tensor) -> Tensor: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(View):
    name = "identity"

    def apply(self, x: Tensor) -> Tensor:
        return x

    def inverse(self, x: Tensor) -> Tensor:
        return x


class FlipVertical(View):
    """Upside down, as in the course (a mirror about the horizontal axis; its own inverse)."""

    name = "flip_vertical"

    def apply(self, x: Tensor) -> Tensor:
        return torch.flip(x, dims=[-2])

    inverse = apply
