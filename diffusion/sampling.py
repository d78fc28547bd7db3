"""Sampling loops of Part A, written once against :class:`~diffusion.denoiser.Denoiser`.

The pieces map onto the report's equations:

* forward process (A.2):   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
* one-step estimate:       x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
* strided step (A.3), from t to the next listed timestep t' (abar_t' = 1 after the last):
      alpha_t = abar_t / abar_t',  beta_t = 1 - alpha_t
      x_t' = sqrt(abar_t') beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_t') / (1 - abar_t) x_t + v_sigma
* classifier-free guidance (A.4):  eps = eps_u + gamma (eps_c - eps_u), for gamma >= 1

Separation as in diffusers: the *model* is the denoiser, the *scheduler* is :class:`StridedSchedule`
(one step of A.3 and its variance), and the *pipelines* are the loops below, which only decide
which noise estimate to hand the scheduler. With a backend's sampler settings (thresholding or
clipping of x0, the variance type) the loop reproduces ``IFPipeline`` bitwise (tests/test_deepfloyd.py)
given the same generator, because it draws in the same order: x_T first, then one z per step from
every timestep above 0 (the schedules here end at 0, so every step but the last; a schedule that
ends above 0 adds noise on its last step too, as DDPMScheduler does).

All randomness comes from an explicit ``torch.Generator``, or a list of them with one per image (as
diffusers accepts), drawn through :mod:`diffusion.rng`: on the generator's device and then moved, so
a CPU generator gives the same noise whatever device the model runs on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from .ddpm import predict_x0
from .denoiser import Cond, Denoiser, Thresholding
from .rng import randn

# An estimator maps (x_t, t) to the noise estimate and the variance channels (or None); CFG,
# anagrams and hybrids differ only in this function.
Estimator = Callable[[Tensor, int], "tuple[Tensor, Tensor | None]"]
ThresholdingArg = Union[str, Thresholding, None, bool]
# One generator for the whole batch, or one per image (row i of every draw comes from generator i).
Generators = Union[torch.Generator, Sequence[torch.Generator], None]

# How the noise of a step is scaled, named as DDPMScheduler's ``variance_type``: the posterior
# variance as is or through its log, beta_t, or learned (the network's v interpolates the two logs).
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "learned_range")

NULL_PHOTO_PROMPT = "a high quality photo"  # the course's "null" prompt for unconditional generation


def draw_noise(shape, generator: Generators, *, device=None, dtype=None) -> Tensor:
    """Standard normal noise for a batch: from one generator, or row by row from one generator per
    image (as diffusers' ``randn_tensor``, so a list reproduces IFPipeline's draws)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) == 1:
            generator = generator[0]
        elif len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators were given for a batch of {shape[0]} images; "
                             "pass one generator, or exactly one per image")
        else:
            return torch.cat([randn((1, *shape[1:]), g, device=device, dtype=dtype) for g in generator])
    return randn(shape, generator, device=device, dtype=dtype)


def check_guidance(guidance: float) -> None:
    """Refuse a guidance scale below 1, where IFPipeline and the CFG formula part ways."""
    if guidance < 1:
        raise ValueError(f"guidance γ = {guidance} is below 1, where IFPipeline turns guidance off (it uses the "
                         "conditional estimate alone) but the CFG formula would push away from the prompt; use "
                         "γ = 1 for no guidance, γ > 1 for guidance, or the null prompt for unconditional samples.")


def forward(x0: Tensor, t, alphas_cumprod: Tensor, generator: Generators = None,
            *, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Noise a clean image to timestep ``t`` (an int, or one per sample). Returns ``(x_t, eps)``."""
    eps = noise if noise is not None else draw_noise(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    abar = alphas_cumprod[torch.as_tensor(t)].to(x0.device)
    if abar.ndim:  # one timestep per sample
        abar = abar.reshape(-1, *([1] * (x0.ndim - 1)))
    x_t = (abar ** 0.5).to(x0.dtype) * x0 + ((1 - abar) ** 0.5).to(x0.dtype) * eps
    return x_t, eps


@torch.no_grad()
def one_step_denoise(den: Denoiser, x_t: Tensor, t: int, cond: Cond) -> Tensor:
    """Course 1.3: the clean-image estimate from a single noise prediction (no guidance)."""
    eps, _ = den.predict(x_t, t, den.repeat_cond(cond, x_t.shape[0]))
    return predict_x0(x_t, eps, den.alphas_cumprod[t])


def dynamic_threshold(x0: Tensor, th: Thresholding) -> Tensor:
    """Per-sample dynamic thresholding, computed as DeepFloyd's scheduler does (quantile in fp32)."""
    dtype, shape = x0.dtype, x0.shape
    flat = x0.reshape(shape[0], -1)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile has no half-precision kernel
    s = torch.quantile(flat.abs(), th.ratio, dim=1).clamp(min=1, max=th.max_value).unsqueeze(1)
    return (flat.clamp(-s, s) / s).reshape(shape).to(dtype)


def strided_timesteps(den_or_T: Denoiser | int = 1000, start: int = 990, stride: int = 30,
                      *, reference_T: int = 1000) -> list[int]:
    """The course schedule (990, 960, ..., 30, 0), rescaled to a backend with T training steps.

    ``start`` and ``stride`` are read on a ``reference_T``-step scale (DeepFloyd's 1000), so T=300
    gives 297, 288, ..., 9, 0: the same fractions of the noise range. Rounded half up, clipped to
    T-1, duplicates dropped; the list always ends at 0, so the last step lands on the clean image.
    """
    T = den_or_T if isinstance(den_or_T, int) else den_or_T.num_train_timesteps
    grid = list(range(start, -1, -stride))
    if grid[-1] != 0:
        grid.append(0)
    out: list[int] = []
    for t in grid:
        scaled = min((t * T + reference_T // 2) // reference_T, T - 1)
        if not out or scaled != out[-1]:
            out.append(scaled)
    return out


def _check_timesteps(timesteps: Sequence[int], T: int) -> list[int]:
    ts = [int(t) for t in timesteps]
    if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[0] >= T or ts[-1] < 0:
        raise ValueError(f"timesteps must strictly decrease within [0, {T - 1}], got {ts}")
    return ts


@dataclass
class StridedSchedule:
    """The scheduler: DDPM posterior steps between the listed timesteps (A.3).

    Step ``i`` goes from ``timesteps[i]`` to ``timesteps[i + 1]``; the step after the last entry goes
    to the clean image (abar = 1). A step adds noise when it starts above t = 0, so a schedule ending
    at 0 lands on the clean image without noise. The x0 estimate is thresholded, or else clipped to
    ``[-clip, clip]`` (DDPMScheduler's ``clip_sample``), or left alone.
    """

    alphas_cumprod: Tensor
    timesteps: list[int]
    thresholding: Thresholding | None = None
    clip: float | None = None
    variance_type: str = "fixed_small_log"

    def __post_init__(self):
        self.timesteps = _check_timesteps(self.timesteps, len(self.alphas_cumprod))
        if self.variance_type not in VARIANCE_TYPES:
            raise ValueError(f"variance_type {self.variance_type!r} is not one of {', '.join(VARIANCE_TYPES)}")

    def abar(self, i: int) -> Tensor:
        """abar at ``timesteps[i]``; 1 one past the end."""
        if i >= len(self.timesteps):
            return torch.tensor(1.0)
        return self.alphas_cumprod[self.timesteps[i]]

    def log_variance(self, i: int, v: Tensor | None = None) -> Tensor:
        """Log-variance of v_sigma for step ``i``.

        Without a learned variance it is the posterior variance (1 - abar_t')/(1 - abar_t) beta_t.
        With one (``learned_range``, DeepFloyd) the network's ``v`` in [-1, 1] interpolates in log
        space between that and beta_t: ``frac = (v + 1)/2``, ``frac log beta_t + (1 - frac) log var``.
        """
        a_t, a_p = self.abar(i), self.abar(i + 1)
        beta = 1 - a_t / a_p
        # Clamped because the posterior variance is 0 on the way to the clean image.
        log_small = torch.log(torch.clamp((1 - a_p) / (1 - a_t) * beta, min=1e-20))
        if v is None:
            return log_small
        frac = (v + 1) / 2
        return frac * torch.log(beta) + (1 - frac) * log_small

    def noise_scale(self, i: int, v: Tensor | None = None) -> Tensor:
        """The standard deviation of v_sigma for step ``i``, computed as DDPMScheduler does for the
        variance type (the same value each way, up to rounding)."""
        if self.variance_type == "learned_range" and v is None:
            raise ValueError("variance_type 'learned_range' needs the network's variance channels")
        if self.variance_type in ("fixed_small_log", "learned_range"):
            return torch.exp(0.5 * self.log_variance(i, v if self.variance_type == "learned_range" else None))
        a_t, a_p = self.abar(i), self.abar(i + 1)
        beta = 1 - a_t / a_p
        if self.variance_type == "fixed_large":
            return beta ** 0.5
        return torch.clamp((1 - a_p) / (1 - a_t) * beta, min=1e-20) ** 0.5

    def step(self, x_t: Tensor, i: int, eps: Tensor, v: Tensor | None,
             generator: Generators) -> tuple[Tensor, Tensor]:
        """One step of A.3 from ``timesteps[i]``. Returns ``(x_t', x0_estimate)``."""
        a_t, a_p = self.abar(i), self.abar(i + 1)
        alpha = a_t / a_p
        beta = 1 - alpha
        x0 = predict_x0(x_t, eps, a_t)
        if self.thresholding is not None:
            x0 = dynamic_threshold(x0, self.thresholding)
        elif self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        mean = (a_p ** 0.5 * beta) / (1 - a_t) * x0 + alpha ** 0.5 * (1 - a_p) / (1 - a_t) * x_t
        if self.timesteps[i] == 0:
            return mean, x0
        z = draw_noise(eps.shape, generator, device=eps.device, dtype=eps.dtype)
        return mean + self.noise_scale(i, v) * z, x0


def resolve_thresholding(den: Denoiser, thresholding: ThresholdingArg) -> Thresholding | None:
    """``"auto"``: what the backend's own sampler does; ``True``: DeepFloyd's (0.95, 1.5); falsy: off."""
    if isinstance(thresholding, Thresholding):
        return thresholding
    if thresholding == "auto":
        return den.thresholding
    if thresholding is True:
        return Thresholding()
    if not thresholding:
        return None
    raise ValueError(f"thresholding must be 'auto', a Thresholding, True or None; got {thresholding!r}")


@torch.no_grad()
def denoise_loop(den: Denoiser, x: Tensor, timesteps: Sequence[int], i_start: int, estimate: Estimator,
                 generator: Generators, *, thresholding: ThresholdingArg = "auto", every: int = 0,
                 after_step: Callable[[Tensor, int], Tensor] | None = None):
    """The shared loop: from ``timesteps[i_start]`` to the clean image with ``estimate``'s noise.

    ``after_step(x, j)`` may rewrite the state now at index ``j`` (``len(timesteps)`` = clean);
    inpainting uses it. With ``every=k > 0`` also returns the states entering steps
    ``i_start, i_start + k, ...`` as ``[(t, x_t), ...]`` (for figures).
    """
    schedule = StridedSchedule(den.alphas_cumprod, list(timesteps), resolve_thresholding(den, thresholding),
                               den.clip_sample, den.variance_type)
    if not 0 <= i_start < len(schedule.timesteps):
        raise ValueError(f"i_start={i_start} outside 0..{len(schedule.timesteps) - 1}")
    frames: list[tuple[int, Tensor]] = []
    for i in range(i_start, len(schedule.timesteps)):
        t = schedule.timesteps[i]
        if every and (i - i_start) % every == 0:
            frames.append((t, x.detach().clone()))
        eps, v = estimate(x, t)
        x, _ = schedule.step(x, i, eps, v, generator)
        if after_step is not None:
            x = after_step(x, i + 1)
    return (x, frames) if every else x


def cfg_estimate(den: Denoiser, x: Tensor, t: int, cond: Cond, guidance: float,
                 uncond: Cond | None = None) -> tuple[Tensor, Tensor | None]:
    """Guided noise (A.4) with the variance of the conditional half, in one network call.

    The batch is ``[unconditional, conditional]`` as in diffusers. ``guidance == 1`` is the
    conditional estimate itself, so the unconditional half is skipped, as IFPipeline does; below 1
    the two part ways, so it is refused (:func:`check_guidance`).
    """
    check_guidance(guidance)
    n = x.shape[0]
    cond = den.repeat_cond(cond, n)
    if guidance == 1.0:
        return den.predict(x, t, cond)
    uncond = den.repeat_cond(den.null_cond if uncond is None else uncond, n)
    eps, var = den.predict(torch.cat([x, x]), t, den.cat_conds([uncond, cond]))
    eps_u, eps_c = eps.chunk(2)
    return eps_u + guidance * (eps_c - eps_u), None if var is None else var.chunk(2)[1]


def iterative_denoise(den: Denoiser, x: Tensor, timesteps: Sequence[int], i_start: int, cond: Cond,
                      generator: Generators = None, *, thresholding: ThresholdingArg = "auto",
                      every: int = 0):
    """Course 1.4/1.5: denoise ``x`` (at ``timesteps[i_start]``) with the plain conditional estimate."""
    def estimate(x_t: Tensor, t: int):
        return den.predict(x_t, t, den.repeat_cond(cond, x_t.shape[0]))

    return denoise_loop(den, x, timesteps, i_start, estimate, generator, thresholding=thresholding, every=every)


def iterative_denoise_cfg(den: Denoiser, x: Tensor, timesteps: Sequence[int], i_start: int, cond: Cond,
                          generator: Generators = None, *, guidance: float = 7.0,
                          uncond: Cond | None = None, thresholding: ThresholdingArg = "auto", every: int = 0):
    """Course 1.6: as :func:`iterative_denoise` with classifier-free guidance (``uncond`` defaults to ``""``)."""
    return denoise_loop(den, x, timesteps, i_start, lambda x_t, t: cfg_estimate(den, x_t, t, cond, guidance, uncond),
                        generator, thresholding=thresholding, every=every)


def sample(den: Denoiser, cond: Cond, generator: Generators, *, n: int | None = None,
           timesteps: Sequence[int] | None = None, guidance: float = 7.0, uncond: Cond | None = None,
           thresholding: ThresholdingArg = "auto", every: int = 0):
    """Generate from pure noise: draw x_T (``n`` images, default one per row of ``cond``) and run
    :func:`iterative_denoise_cfg` from the first timestep (``guidance=1`` means no guidance)."""
    check_guidance(guidance)
    n = cond.shape[0] if n is None else n
    x = draw_noise((n, *den.shape), generator, device=den.device, dtype=den.dtype)
    ts = strided_timesteps(den) if timesteps is None else timesteps
    return iterative_denoise_cfg(den, x, ts, 0, cond, generator, guidance=guidance, uncond=uncond,
                                 thresholding=thresholding, every=every)
