"""DDPM for Part B: the noise schedule, the training losses (Algorithms 1 and 3) and the
ancestral samplers (Algorithms 2 and 4, the latter with classifier-free guidance).

Time is 1-indexed as in the algorithms: t runs over 1..T, and every schedule tensor has length
T + 1 so that `betas[t]`, `alphas[t]`, `alpha_bars[t]` read exactly like beta_t, alpha_t,
abar_t. Index 0 is the clean image: beta_0 = 0 and abar_0 = 1, which makes the last sampling
step (t = 1) need no special case. The network sees t / T, a float in (0, 1].

All randomness comes from an explicit torch.Generator, so a figure is a function of its seed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import cuda_graphs, rng


@dataclass(frozen=True)
class Schedule:
    betas: torch.Tensor  # (T + 1,), betas[0] = 0
    alphas: torch.Tensor  # 1 - betas
    alpha_bars: torch.Tensor  # cumulative product, alpha_bars[0] = 1

    @property
    def T(self) -> int:
        return self.betas.shape[0] - 1

    def to(self, device) -> "Schedule":
        return Schedule(self.betas.to(device), self.alphas.to(device), self.alpha_bars.to(device))

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t for t = 0 .. T-1 as diffusers (and Part A's loops) index it: their t is the t + 1 here."""
        return self.alpha_bars[1:]

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> "Schedule":
        """The schedule of a diffusers scheduler's ``alphas_cumprod`` (its dtype kept): abar_0 = 1 put in front,
        alpha_t = abar_t / abar_{t-1} and beta_t = 1 - alpha_t."""
        alpha_bars = torch.cat([torch.ones(1, dtype=alphas_cumprod.dtype), alphas_cumprod.flatten().cpu()])
        alphas = torch.cat([torch.ones(1, dtype=alpha_bars.dtype), alpha_bars[1:] / alpha_bars[:-1]])
        return cls(1 - alphas, alphas, alpha_bars)


def linear_schedule(T: int = 300, beta1: float = 1e-4, beta2: float = 0.02) -> Schedule:
    """betas evenly spaced from beta_1 = beta1 to beta_T = beta2 (computed in float64, stored as float32)."""
    if not (isinstance(T, int) and T >= 1):
        raise ValueError(f"T must be a positive integer, got {T!r}")
    betas = torch.cat([torch.zeros(1, dtype=torch.float64), torch.linspace(beta1, beta2, T, dtype=torch.float64)])
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, dim=0)
    return Schedule(betas.float(), alphas.float(), alpha_bars.float())


def _at(v: torch.Tensor, t) -> torch.Tensor:
    """v_t ready to broadcast against images: a scalar for an int t, (N, 1, 1, 1) for a tensor t.

    It never copies between devices: a schedule is placed once, before any loop, so that no step
    reads the host (a CUDA graph's capture refuses that, and eagerly it is one copy per step).
    """
    if isinstance(t, torch.Tensor) and t.device != v.device:
        raise ValueError(f"the schedule is on {v.device} and t on {t.device}; place the schedule where the "
                         f"images are before the loop, with schedule.to({str(t.device)!r})")
    v = v[t]
    return v.reshape(-1, 1, 1, 1) if v.ndim else v


def q_sample(x0, t, eps, schedule: Schedule):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    abar = _at(schedule.alpha_bars, t)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def predict_x0(x_t, eps, abar_t: torch.Tensor):
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): the forward process inverted with an estimate of
    its noise. The one formula of both parts: Part B indexes its schedule with ``_at``, Part A passes a
    backend's ``alphas_cumprod[t]``."""
    return (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()


def posterior_mean(x_t, x0_hat, t, schedule: Schedule):
    """Mean of q(x_{t-1} | x_t, x0_hat):
    sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0_hat + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t."""
    beta, alpha = _at(schedule.betas, t), _at(schedule.alphas, t)
    abar, abar_prev = _at(schedule.alpha_bars, t), _at(schedule.alpha_bars, t - 1)
    return (abar_prev.sqrt() * beta / (1 - abar)) * x0_hat + (alpha.sqrt() * (1 - abar_prev) / (1 - abar)) * x_t


def step(x_t, eps, t: int, schedule: Schedule, generator):
    """One ancestral step x_t -> x_{t-1} (lines 4-6 of Algorithm 2); noise only while t > 1."""
    x0_hat = predict_x0(x_t, eps, _at(schedule.alpha_bars, t))
    mean = posterior_mean(x_t, x0_hat, t, schedule)
    if t == 1:
        return mean
    z = rng.randn(x_t.shape, generator, device=x_t.device, dtype=x_t.dtype)
    return mean + schedule.betas[t].sqrt() * z


# ---------------------------------------------------------------------------------------------
# training losses


def _uniform_t(n, schedule: Schedule, generator, device):
    return rng.randint(1, schedule.T + 1, (n,), generator, device=device)


def time_loss(model, x0, schedule: Schedule, generator):
    """Algorithm 1: t ~ U{1..T}, eps ~ N(0, I), MSE between eps and eps_theta(x_t, t/T)."""
    t = _uniform_t(x0.shape[0], schedule, generator, x0.device)
    eps = rng.randn(x0.shape, generator, device=x0.device)
    x_t = q_sample(x0, t, eps, schedule)
    return F.mse_loss(model(x_t, t / schedule.T).float(), eps)


def drop_class(onehot, p: float, generator):
    """Zero each row with probability p: the null condition classifier-free guidance needs."""
    keep = rng.rand((onehot.shape[0],), generator, device=onehot.device) >= p
    return onehot * keep[:, None].to(onehot.dtype)


def class_loss(model, x0, labels, schedule: Schedule, generator, p_uncond: float = 0.1, num_classes: int = 10):
    """Algorithm 3: as Algorithm 1, conditioned on a one-hot label that is dropped with probability p_uncond."""
    c = drop_class(F.one_hot(labels, num_classes).float(), p_uncond, generator)
    t = _uniform_t(x0.shape[0], schedule, generator, x0.device)
    eps = rng.randn(x0.shape, generator, device=x0.device)
    x_t = q_sample(x0, t, eps, schedule)
    return F.mse_loss(model(x_t, c, t / schedule.T).float(), eps)


# ---------------------------------------------------------------------------------------------
# sampling


class Samples(NamedTuple):
    images: torch.Tensor  # (N, C, H, W), x_0
    trajectory: torch.Tensor  # (F, N, C, H, W), x_t at kept_timesteps(T, keep_every), on the CPU


def kept_timesteps(T: int, keep_every: int) -> list[int]:
    """The t of each trajectory frame: T, T - k, T - 2k, ..., and always 0 (the final image)."""
    if not (isinstance(keep_every, int) and keep_every >= 0):
        raise ValueError(f"keep_every must be a non-negative integer (0 keeps only x_T and x_0), got {keep_every!r}")
    ts = list(range(T, 0, -keep_every)) if keep_every else [T]
    return ts + [0]


@contextlib.contextmanager
def _inference(model, device, autocast_dtype):
    was_training = model.training
    model.eval()  # BatchNorm must use its running statistics, not the batch's
    try:
        with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=autocast_dtype,
                                             enabled=autocast_dtype is not None):
            yield
    finally:
        model.train(was_training)


def _ancestral(eps_fn, shape, schedule: Schedule, generator, keep_every, device):
    """x_T ~ N(0, I), then T steps with eps_fn(x_t, t/T as a tensor of shape (N,)).

    On CUDA eps_fn runs as one CUDA graph per step (its inputs keep their shapes from step to step).
    """
    x = rng.randn(shape, generator, device=device)
    keep = set(kept_timesteps(schedule.T, keep_every))
    frames = [x.cpu()]
    n = shape[0]
    net = None
    for t in range(schedule.T, 0, -1):
        t_frac = torch.full((n,), t / schedule.T, device=device)
        if net is None:
            net = cuda_graphs.graphed(eps_fn, x, t_frac)
        x = step(x, net(x, t_frac).float(), t, schedule, generator)
        if t - 1 in keep:
            frames.append(x.cpu())
    return Samples(x, torch.stack(frames))


def _device_of(model):
    return next(model.parameters()).device


def sample_time(model, n: int, schedule: Schedule, generator, keep_every: int = 10,
                autocast_dtype=None, shape=(1, 28, 28)) -> Samples:
    """Algorithm 2: x_T ~ N(0, I), then T ancestral steps with eps_theta(x_t, t/T)."""
    device = _device_of(model)
    schedule = schedule.to(device)
    with _inference(model, device, autocast_dtype):
        return _ancestral(model, (n, *shape), schedule, generator, keep_every, device)


def sample_class(model, labels, schedule: Schedule, generator, guidance: float = 5.0, keep_every: int = 10,
                 autocast_dtype=None, num_classes: int = 10, shape=(1, 28, 28)) -> Samples:
    """Algorithm 4: eps = eps_u + gamma (eps_c - eps_u), both estimates from one batched forward.

    (The assignment's line 8 divides by sqrt(alpha_t); x0_hat needs sqrt(abar_t), as in
    Algorithm 2, and that is what runs here.)
    """
    device = _device_of(model)
    schedule = schedule.to(device)
    labels = torch.as_tensor(labels, device=device)
    n = labels.shape[0]
    c = torch.cat([F.one_hot(labels, num_classes).float(), torch.zeros(n, num_classes, device=device)])
    with _inference(model, device, autocast_dtype):
        def eps_fn(x, t_frac):
            eps_c, eps_u = model(torch.cat([x, x]), c, torch.cat([t_frac, t_frac])).float().chunk(2)
            return eps_u + guidance * (eps_c - eps_u)
        return _ancestral(eps_fn, (n, *shape), schedule, generator, keep_every, device)
