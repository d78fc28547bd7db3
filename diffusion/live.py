"""The live sampler of Part B 2.5: Algorithm 4 as the reader's browser runs it, written here in Python.

The page (templates/static/live-sampler-worker.js) runs the same loop in JavaScript on an ONNX export
of the class-conditioned UNet. Two things make its result comparable with this one:

* **Portable noise.** torch's generator cannot be reproduced in a browser, so the page draws its
  Gaussian noise from a counter-based generator that both languages compute with 32-bit integer
  arithmetic: the normal for (seed, digit, draw, pixel) is Box-Muller on two uniforms, each a
  hash of that position. A digit's noise depends on the seed and the digit alone, so digit 4 with
  seed 7 is the same image whether it is drawn alone or with the other nine.
* **The same step.** ``sample`` below takes its noise from a callable, so the very loop that the
  page mirrors can also be fed a torch generator's draws, and then it equals
  ``diffusion.ddpm.sample_class`` (tests/test_live.py). It takes the model the same way: a function
  from (x_t, c, t/T) to the pair (eps_c, eps_u), which the page's ONNX graph computes with the
  encoder shared (diffusion/onnx_export.py) and ``doubled`` computes as sample_class does.

A strided schedule visits t = T, T - k, ..., k (k = T / steps) and steps from t to s = t - k with
the cumulative products at those two steps: alpha = abar_t / abar_s and beta = 1 - alpha take the
places of alpha_t and beta_t in the posterior mean and in the noise scale, as Part A's strided
DeepFloyd loop does. With k = 1 they are the schedule's own alpha_t and beta_t.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .ddpm import Schedule, predict_x0
from .onnx_export import INPUTS, OUTPUTS

_GOLDEN = 0x9E3779B9
_TWO_24 = float(1 << 24)


def _mix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser: every input bit flips about half of the output bits."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


def _uniform(seed: int, which: int, counter: np.ndarray) -> np.ndarray:
    """Uniforms in (0, 1) with 24 random bits, one per counter, from stream ``which`` of ``seed``."""
    key = _mix32(np.array([(seed ^ ((which + 1) * _GOLDEN)) & 0xFFFFFFFF], dtype=np.uint32))
    h = _mix32(_mix32(counter.astype(np.uint32) ^ key) + key)
    return ((h >> np.uint32(8)).astype(np.float64) + 0.5) / _TWO_24


def portable_normal(seed: int, digit: int, draw: int, size: int, draws_per_digit: int) -> np.ndarray:
    """``size`` standard normals (float32) for one digit's ``draw``-th noise image (0 is x_T).

    ``draws_per_digit`` (T + 1: x_T and at most T steps) spaces the digits' counters apart.
    """
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"the live sampler's seed is a 32-bit unsigned integer, got {seed}")
    if not 0 <= draw < draws_per_digit:
        raise ValueError(f"draw {draw} is outside 0..{draws_per_digit - 1}")
    counter = (digit * draws_per_digit + draw) * size + np.arange(size, dtype=np.int64)
    if counter[-1] >= 2 ** 32:
        raise ValueError("the live sampler's noise counter would pass 2**32; fewer digits or steps")
    u1, u2 = _uniform(seed, 0, counter), _uniform(seed, 1, counter)
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def strided_timesteps(T: int, steps: int) -> list[int]:
    """t = T, T - k, ..., k with k = T / steps; ``steps`` must divide T."""
    if not (isinstance(steps, int) and 1 <= steps <= T and T % steps == 0):
        raise ValueError(f"the number of steps must divide T = {T} (e.g. {T}, {T // 2}, {T // 10}), got {steps!r}")
    k = T // steps
    return list(range(T, 0, -k))


def step_coefficients(schedule: Schedule, t: int, s: int) -> tuple[float, float]:
    """(alpha, beta) of one step from t to s < t: the schedule's own when s = t - 1, else abar_t / abar_s."""
    if s == t - 1:
        return schedule.alphas[t], schedule.betas[t]
    alpha = schedule.alpha_bars[t] / schedule.alpha_bars[s]
    return alpha, 1 - alpha


# (x_t, one-hot c, t/T) -> (eps_theta(x_t, c, t/T), eps_theta(x_t, null, t/T))
GuidedPairFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def doubled(model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> GuidedPairFn:
    """The pair from one call of ``model`` on the batch [x_t, x_t] with [c, 0], as sample_class computes it."""
    def pair(x, c, t):
        return model(torch.cat([x, x]), torch.cat([c, torch.zeros_like(c)]), torch.cat([t, t])).chunk(2)
    return pair


def onnx_pair(session) -> GuidedPairFn:
    """The pair from an onnxruntime session of the exported graph (diffusion/onnx_export.py)."""
    def pair(x, c, t):
        eps_c, eps_u = session.run(list(OUTPUTS), {name: v.numpy() for name, v in zip(INPUTS, (x, c, t))})
        return torch.from_numpy(eps_c), torch.from_numpy(eps_u)
    return pair


def sample(guided_pair: GuidedPairFn, digits: Sequence[int], schedule: Schedule, guidance: float,
           timesteps: Sequence[int], noise: Callable[[int], torch.Tensor], num_classes: int = 10,
           on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Algorithm 4 over ``timesteps`` (descending); ``noise(i)`` is x_T for i = 0 and z of step i otherwise.

    ``on_step(t, x_s, x0_hat)`` sees each step's result, as the page draws it.
    """
    n = len(digits)
    c = F.one_hot(torch.as_tensor(list(digits)), num_classes).float()
    x = noise(0)
    T = schedule.T
    for i, t in enumerate(timesteps):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else 0
        eps_c, eps_u = (e.float() for e in guided_pair(x, c, torch.full((n,), t / T)))
        eps = eps_u + guidance * (eps_c - eps_u)
        abar_t, abar_s = schedule.alpha_bars[t], schedule.alpha_bars[s]
        alpha, beta = step_coefficients(schedule, t, s)
        x0_hat = predict_x0(x, eps, abar_t)
        mean = (abar_s.sqrt() * beta / (1 - abar_t)) * x0_hat + (alpha.sqrt() * (1 - abar_s) / (1 - abar_t)) * x
        x = mean + beta.sqrt() * noise(i + 1) if s > 0 else mean
        if on_step is not None:
            on_step(t, x, x0_hat)
    return x


def portable_noise(seed: int, digits: Sequence[int], T: int, shape=(1, 28, 28)) -> Callable[[int], torch.Tensor]:
    """The page's noise for ``digits``, as ``sample`` takes it."""
    size = int(np.prod(shape))

    def draw(i: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([portable_normal(seed, d, i, size, T + 1).reshape(shape) for d in digits]))
    return draw
