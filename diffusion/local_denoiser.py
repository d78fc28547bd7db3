"""The project's class-conditioned MNIST UNet as a :class:`~diffusion.denoiser.Denoiser`.

Two conventions meet here (``ddpm.Schedule.alphas_cumprod`` is the one view between them):

* The UNet was trained Ho-style (``diffusion/ddpm.py``): timesteps ``1..T`` (T = 300), schedule
  tensors of length T+1 with abar_0 = 1, and the network sees ``t / T``.
* The Part A algorithms use diffusers' ``0..T-1``. Backend timestep ``k`` is Ho's ``k + 1``, so
  ``alphas_cumprod[k] = abar_ho[k + 1]`` and the network gets ``(k + 1) / T``; "one past the last
  step" (abar = 1) is Ho's x_0.

Data space: the model was trained on images in [0, 1], and a noisy image of that space is not an
affine image of a noisy [-1, 1] image (the noise would be halved and shifted), so the backend works
in the model's own [0, 1] space: ``to_unit`` only clamps. It predicts no variance, so the loops use
the posterior variance, and no thresholding (DeepFloyd's assumes [-1, 1]).

Prompts are class captions, "a handwritten 0" .. "a handwritten 9" (or the bare digit); ``""`` and
"a high quality photo" are the null class, the all-zero class vector the UNet was trained to read
as unconditional.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from .ddpm import Schedule
from .denoiser import Cond, Denoiser

NUM_CLASSES = 10
NULL_PROMPTS = ("", "a high quality photo")


def class_prompt(digit: int) -> str:
    """The canonical caption of a class."""
    return f"a handwritten {digit}"


def accepted_prompts() -> list[str]:
    return [class_prompt(d) for d in range(NUM_CLASSES)] + [str(d) for d in range(NUM_CLASSES)] + list(NULL_PROMPTS)


def prompt_to_class(prompt: str) -> int | None:
    """The digit a prompt names, or None for the null prompts; ValueError for anything else."""
    text = prompt.strip().lower()
    if text in NULL_PROMPTS:
        return None
    for d in range(NUM_CLASSES):
        if text in (class_prompt(d), str(d)):
            return d
    raise ValueError(f"the local MNIST backend does not know the prompt {prompt!r}; accepted prompts: "
                     + ", ".join(repr(p) for p in accepted_prompts()))


class LocalBackend(Denoiser):
    """A class-conditioned UNet ``model(x, c_onehot, t_normalised)`` with its Ho-indexed schedule."""

    def __init__(self, model: nn.Module, alpha_bars: Tensor, *, checkpoint_sha256: str, device=None,
                 dtype: torch.dtype = torch.float32, image_size: int = 28, channels: int = 1,
                 config: Mapping[str, Any] | None = None):
        alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64).flatten()
        if abs(float(alpha_bars[0]) - 1.0) > 1e-6:
            raise ValueError("alpha_bars must be Ho-indexed (length T+1, alpha_bars[0] == 1)")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.model = model.to(self.device, dtype).eval()
        self.num_train_timesteps = len(alpha_bars) - 1
        self.schedule = Schedule.from_alphas_cumprod(alpha_bars[1:].float())
        self.image_size = image_size
        self.channels = channels
        self.thresholding = None
        self.identity = {
            "name": "local",
            "model": type(model).__name__,
            "checkpoint_sha256": checkpoint_sha256,
            "config": dict(config or {}),
            "T": self.num_train_timesteps,
            "dtype": str(dtype).removeprefix("torch."),
        }

    @classmethod
    def from_model(cls, model: nn.Module, schedule: Mapping[str, Any], *, checkpoint_sha256: str, device=None,
                   dtype: torch.dtype = torch.float32) -> "LocalBackend":
        """The backend of a trained class-conditioned UNet and the linear schedule it was trained on
        (``{"T", "beta1", "beta2"}``, as Part B saves it with the model)."""
        from .ddpm import linear_schedule

        alpha_bars = linear_schedule(schedule["T"], schedule["beta1"], schedule["beta2"]).alpha_bars
        return cls(model, alpha_bars, checkpoint_sha256=checkpoint_sha256, device=device, dtype=dtype,
                   channels=model.config["in_channels"], config={**model.config, **schedule})

    def encode(self, prompt: str | Sequence[str]) -> Cond:
        """One-hot class vectors, (1, 10) per prompt; the null prompts give the zero vector."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        cond = torch.zeros(len(prompts), NUM_CLASSES)
        for row, prompt_ in enumerate(prompts):
            digit = prompt_to_class(prompt_)
            if digit is not None:
                cond[row, digit] = 1.0
        return cond.to(self.device, self.dtype)

    @torch.no_grad()
    def predict(self, x_t: Tensor, t: int, cond: Cond) -> tuple[Tensor, None]:
        """The UNet's noise estimate at backend timestep ``t`` (Ho's ``t + 1``); no variance."""
        t_ho = int(t) + 1
        t_net = torch.full((x_t.shape[0],), t_ho / self.num_train_timesteps, device=self.device, dtype=self.dtype)
        eps = self.model(x_t.to(self.device, self.dtype), cond.to(self.device, self.dtype), t_net)
        return eps, None

    def to_unit(self, x: Tensor) -> Tensor:
        """Already [0, 1]; only clamped."""
        return x.float().clamp(0, 1)

    def from_unit(self, x: Tensor) -> Tensor:
        return x.to(self.device, self.dtype)
