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


class Rotate180(View):
    """Upside down by rotation (the visual-anagrams paper's view): a 6 becomes a 9, not a mirrored 9.
    A half turn is its own inverse."""

    name = "rotate_180"

    def apply(self, x: Tensor) -> Tensor:
        return torch.rot90(x, 2, dims=(-2, -1))

    inverse = apply


def view_named(name: str) -> View:
    """The view a section's parameters name (``flip_vertical``, ``rotate_180``)."""
    views = {view.name: view for view in (FlipVertical(), Rotate180())}
    if name not in views:
        raise ValueError(f"unknown view {name!r}; views: {', '.join(views)}")
    return views[name]
