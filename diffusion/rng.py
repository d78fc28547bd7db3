"""Random numbers, one rule for every device: draw where the generator lives, then move the result.

torch refuses a draw on CUDA from a CPU ``torch.Generator`` (and the other way round), so code that
passes ``device=x.device`` next to a generator works on a CPU and breaks on a GPU. Drawing on the
generator's own device makes every stream valid for every device: a CPU stream gives the same
numbers whichever device computes with them (as diffusers' ``randn_tensor``), and a stream created
on the GPU draws there without a host round trip, which the training step needs to be one CUDA graph.

Every random draw and every generator in ``diffusion/`` and ``generators/`` goes through this
module (``builder.context.Context.generator`` aside, which builds a section's named streams);
tests/test_rng.py enforces it.
"""
from __future__ import annotations

import torch
from torch import Tensor


def generator(seed: int, device="cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def _where(generator: torch.Generator | None, device) -> torch.device:
    """The device a draw happens on: the generator's own; without one, where the result goes."""
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _moved(x: Tensor, device) -> Tensor:
    return x if device is None else x.to(device)


def randn(shape, generator: torch.Generator | None, *, device=None, dtype=None) -> Tensor:
    """Standard normal noise of ``shape``, on ``device`` (default: where it was drawn)."""
    x = torch.randn(tuple(shape), generator=generator, device=_where(generator, device), dtype=dtype)
    return _moved(x, device)


def rand(shape, generator: torch.Generator | None, *, device=None, dtype=None) -> Tensor:
    """Uniform numbers in [0, 1) of ``shape``, on ``device``."""
    x = torch.rand(tuple(shape), generator=generator, device=_where(generator, device), dtype=dtype)
    return _moved(x, device)


def randint(low: int, high: int, shape, generator: torch.Generator | None, *, device=None) -> Tensor:
    """Integers uniform in [low, high) of ``shape``, on ``device``."""
    x = torch.randint(low, high, tuple(shape), generator=generator, device=_where(generator, device))
    return _moved(x, device)


def randperm(n: int, generator: torch.Generator | None, *, device=None) -> Tensor:
    """A random permutation of 0..n-1, on ``device``."""
    x = torch.randperm(n, generator=generator, device=_where(generator, device))
    return _moved(x, device)
