"""DeepFloyd IF (stage I, 64x64; stage II, 256x256) as a :class:`~diffusion.denoiser.Denoiser`.

The denoiser is the pipeline's UNet and the schedule its DDPMScheduler's ``alphas_cumprod`` (as a
``ddpm.Schedule``); the sampling loops of :mod:`diffusion.sampling` replace the pipeline's own loop.
Images are in [-1, 1].

Weights are read from disk only (found by :mod:`diffusion.deepfloyd_weights`): a directory the user names (argument or ``$DEEPFLOYD_DIR``), a
model id that is itself a path, or the local Hugging Face cache (``local_files_only``). The hub is
contacted only with ``allow_download=True``. Prompts go through the pipeline's T5 encoder, or come
from a precomputed embeddings file (``torch.save``'d ``{prompt: tensor[1, 77, 4096]}``), in which
case T5 (about 9 GB) is never loaded.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from .ddpm import Schedule
from .denoiser import Cond, Denoiser, Thresholding
from .deepfloyd_weights import (DEFAULT_STAGE1, DEFAULT_STAGE2, BackendUnavailable, Source, find_source, searched,
                                unavailable_message)
from .sampling import VARIANCE_TYPES, Generators, draw_noise, forward, iterative_denoise_cfg

def load_pipeline(model_id: str, *, stage: int = 1, deepfloyd_dir=None, allow_download: bool = False,
                  dtype: torch.dtype = torch.float32, text_encoder: bool = True):
    """Load IF stage I (``IFPipeline``) or II (``IFSuperResolutionPipeline``) without its safety
    checker and watermarker. Returns ``(pipeline, source)``; raises :class:`BackendUnavailable`."""
    from diffusers import IFPipeline, IFSuperResolutionPipeline

    cls = IFPipeline if stage == 1 else IFSuperResolutionPipeline
    source = find_source(model_id, cls.__name__, deepfloyd_dir, allow_download=allow_download)
    if source is None:
        raise BackendUnavailable(unavailable_message([model_id], searched(deepfloyd_dir)))
    kwargs = dict(dtype=dtype, local_files_only=not allow_download, safety_checker=None,
                  feature_extractor=None, watermarker=None, requires_safety_checker=False)
    if not text_encoder:
        kwargs.update(text_encoder=None, tokenizer=None)
    # The hub repositories hold fp16 and fp32 weights; a copy may hold either, so try the one that
    # matches the dtype first.
    variants = ("fp16", None) if dtype == torch.float16 else (None, "fp16")
    reason = ""
    for variant in variants:
        try:
            pipe = cls.from_pretrained(source.location, variant=variant, **kwargs)
        except (OSError, ValueError) as err:  # hub and file errors are OSErrors; variant mismatches ValueErrors
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            continue
        pipe.set_progress_bar_config(disable=True)
        return pipe, source
    raise BackendUnavailable(unavailable_message([model_id], source.description, reason)) from None


def load_embeddings(path: str | os.PathLike) -> tuple[dict[str, Tensor], str]:
    """A ``{prompt: tensor[1, 77, D]}`` file (the course's precomputed embeddings) and its sha256."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt embeddings file {path} does not exist")
    data = path.read_bytes()
    table = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in table.items()):
        raise ValueError(f"{path} must hold a dict {{prompt: tensor[1, 77, D]}}")
    table = {k: (v if v.ndim == 3 else v.unsqueeze(0)) for k, v in table.items()}
    return table, hashlib.sha256(data).hexdigest()


# --- the sampler settings the loops take over --------------------------------------------------------

class UnsupportedScheduler(ValueError):
    """A scheduler setting the hand-written loops would not reproduce; refused before any sampling."""


@dataclass(frozen=True)
class SamplerSettings:
    """What IFPipeline's scheduler does to x0 and to each step's noise."""

    thresholding: Thresholding | None
    clip_sample: float | None
    variance_type: str


def sampler_settings(scheduler, unet_config, image_channels: int) -> SamplerSettings:
    """Read the scheduler's configuration as the Part A loops use it, or refuse it in one sentence.

    Supported: DDPMScheduler predicting noise, dynamic thresholding or clipping (or neither), any of
    :data:`diffusion.sampling.VARIANCE_TYPES`, any beta schedule. The timestep spacing and
    ``steps_offset`` only decide which timesteps ``set_timesteps(n)`` picks; the loops take the list.
    """
    name = type(scheduler).__name__
    if name != "DDPMScheduler":
        raise UnsupportedScheduler(
            f"the pipeline's scheduler is {name}, but the Part A loops take DDPM posterior steps, which IFPipeline "
            "takes only with DDPMScheduler (the scheduler every DeepFloyd IF checkpoint ships); load the pipeline "
            "with its own scheduler.")
    cfg = scheduler.config
    if cfg.prediction_type != "epsilon":
        raise UnsupportedScheduler(
            f"the scheduler's prediction_type is {cfg.prediction_type!r}, but the Part A loops are written for "
            "noise prediction ('epsilon', the setting of every DeepFloyd IF checkpoint), so this model is refused "
            "rather than sampled wrongly.")
    if cfg.variance_type not in VARIANCE_TYPES:
        raise UnsupportedScheduler(
            f"the scheduler's variance_type is {cfg.variance_type!r}, which the Part A loops do not reproduce; "
            f"they follow IFPipeline for {', '.join(VARIANCE_TYPES)}.")
    if cfg.variance_type == "learned_range" and unet_config.out_channels != 2 * image_channels:
        raise UnsupportedScheduler(
            f"the scheduler's variance_type is 'learned_range', which needs a UNet with {2 * image_channels} output "
            f"channels (noise and variance), but this UNet has {unet_config.out_channels}.")
    thresholding = (Thresholding(float(cfg.dynamic_thresholding_ratio), float(cfg.sample_max_value))
                    if cfg.thresholding else None)
    clip = float(cfg.clip_sample_range) if not cfg.thresholding and cfg.clip_sample else None
    return SamplerSettings(thresholding, clip, cfg.variance_type)


# --- the backend ----------------------------------------------------------------------------------

def place(pipe, device: torch.device, offload: bool):
    """The pipeline on ``device``; with ``offload`` (a GPU with little memory) its models stay in CPU
    memory and each moves to the GPU only while it runs (diffusers' ``enable_model_cpu_offload``)."""
    if not offload:
        return pipe.to(device)
    if device.type == "cpu":
        raise ValueError("offloading moves models between CPU memory and a GPU; it needs a CUDA device, not the CPU")
    pipe.enable_model_cpu_offload(device=device)
    return pipe


class _IFStage(Denoiser):
    """What both IF stages are as denoisers: a pipeline placed on the device, its UNet, its schedule,
    and its scheduler's treatment of x0 and of the noise (so the loops reproduce the pipeline)."""

    def _adopt(self, pipe, device, dtype: torch.dtype | None, offload: bool, channels: int) -> None:
        self.device = torch.device(device) if device is not None else pipe.unet.device
        self.dtype = dtype or pipe.unet.dtype
        self.offload = offload
        self.pipe = place(pipe, self.device, offload)
        self.unet = pipe.unet
        self.schedule = Schedule.from_alphas_cumprod(pipe.scheduler.alphas_cumprod.float().cpu())
        self.num_train_timesteps = int(pipe.scheduler.config.num_train_timesteps)
        self.image_size = int(self.unet.config.sample_size)
        self.channels = channels
        settings = sampler_settings(pipe.scheduler, self.unet.config, channels)
        self.thresholding, self.clip_sample = settings.thresholding, settings.clip_sample
        self.variance_type = settings.variance_type

    def _noise_and_variance(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        """The UNet's output as (noise, learned-variance interpolation v); as in the pipelines, v is
        dropped unless the scheduler's variance is learned."""
        if out.shape[1] != 2 * self.channels:
            return out, None
        eps, v = out.split(self.channels, dim=1)
        return eps, (v if self.variance_type == "learned_range" else None)


class DeepFloydBackend(_IFStage):
    """DeepFloyd IF stage I as a denoiser; ``upsample`` runs stage II on its outputs."""

    def __init__(self, pipe, *, model_id: str = DEFAULT_STAGE1, source: Source | None = None,
                 embeddings: dict[str, Tensor] | None = None, embeddings_sha256: str | None = None,
                 device=None, dtype: torch.dtype | None = None, stage2_id: str = DEFAULT_STAGE2,
                 deepfloyd_dir=None, allow_download: bool = False, offload: bool = False):
        self._adopt(pipe, device, dtype, offload, int(pipe.unet.config.in_channels))
        cfg = pipe.scheduler.config
        self.embed_dim = int(self.unet.config.encoder_hid_dim or self.unet.config.cross_attention_dim)
        self._embeddings = embeddings
        self._encoded: dict[str, Tensor] = {}
        self._stage2 = None
        self._stage2_args = dict(model_id=stage2_id, deepfloyd_dir=deepfloyd_dir, allow_download=allow_download)
        # What made the predictions; the build's key uses the plug-in's identity (backends/deepfloyd.py),
        # which also fingerprints the weights' folder.
        self.identity = {
            "name": "deepfloyd",
            "model": model_id,
            "revision": source.revision if source else None,
            "dtype": str(self.dtype).removeprefix("torch."),
            "text": {"embeddings_sha256": embeddings_sha256} if embeddings is not None else "t5",
            "scheduler": {k: cfg.get(k) for k in ("num_train_timesteps", "beta_schedule", "variance_type",
                                                 "prediction_type", "thresholding", "dynamic_thresholding_ratio",
                                                 "sample_max_value", "clip_sample", "clip_sample_range")},
        }

    @classmethod
    def load(cls, model_id: str = DEFAULT_STAGE1, *, dtype: torch.dtype, device=None,
             deepfloyd_dir=None, embeddings_path=None, allow_download: bool = False,
             stage2_id: str = DEFAULT_STAGE2, offload: bool = False) -> "DeepFloydBackend":
        """Load stage I from disk (see :func:`find_source`). With ``embeddings_path`` T5 is not loaded
        and prompts must be in the file; without it prompts are encoded by the pipeline's T5."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        embeddings = sha = None
        if embeddings_path is not None:
            embeddings, sha = load_embeddings(embeddings_path)
        pipe, source = load_pipeline(model_id, stage=1, deepfloyd_dir=deepfloyd_dir, allow_download=allow_download,
                                     dtype=dtype, text_encoder=embeddings is None)
        return cls(pipe, model_id=model_id, source=source, embeddings=embeddings, embeddings_sha256=sha, offload=offload,
                   device=device, dtype=dtype, stage2_id=stage2_id, deepfloyd_dir=deepfloyd_dir,
                   allow_download=allow_download)

    # --- prompts ---
    def prompts(self) -> list[str]:
        """Prompts available without T5 (those in the embeddings file)."""
        return sorted(self._embeddings) if self._embeddings is not None else []

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> Tensor:
        if prompt not in self._encoded:
            if self._embeddings is not None and prompt in self._embeddings:
                emb = self._embeddings[prompt]
            elif self.pipe.text_encoder is not None:
                emb = self.pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=self.device,
                                              clean_caption=False)[0]
            else:
                raise ValueError(f"prompt {prompt!r} is not in the embeddings file and T5 is not loaded; "
                                 f"available prompts: {self.prompts()}")
            if emb.shape[0] != 1 or emb.shape[-1] != self.embed_dim:
                raise ValueError(f"embedding for {prompt!r} has shape {tuple(emb.shape)}, "
                                 f"expected (1, 77, {self.embed_dim})")
            self._encoded[prompt] = emb.to(self.device, self.dtype)
        return self._encoded[prompt]

    def encode(self, prompt: str | Sequence[str]) -> Cond:
        """T5 embeddings, (1, 77, 4096) per prompt; ``""`` is the unconditional prompt."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        return torch.cat([self._encode_one(p) for p in prompts])

    # --- the denoiser ---
    @torch.no_grad()
    def predict(self, x_t: Tensor, t: int, cond: Cond) -> tuple[Tensor, Tensor | None]:
        """One UNet call; its 6 output channels are (noise, learned-variance interpolation v)."""
        out = self.unet(x_t.to(self.device, self.dtype), int(t), encoder_hidden_states=cond.to(self.device, self.dtype),
                        return_dict=False)[0]
        return self._noise_and_variance(out)

    # --- stage II ---
    def stage2(self) -> "SuperResolution":
        """Stage II as a denoiser (loaded on first use, from the same places, without T5)."""
        if self._stage2 is None:
            args = self._stage2_args
            pipe, _ = load_pipeline(args["model_id"], stage=2, deepfloyd_dir=args["deepfloyd_dir"],
                                    allow_download=args["allow_download"], dtype=self.dtype, text_encoder=False)
            self._stage2 = SuperResolution(pipe, device=self.device, dtype=self.dtype, offload=self.offload)
        return self._stage2

    def upsample(self, images: Tensor, cond: Cond, generator: Generators = None, *,
                 uncond: Cond | None = None, guidance: float = 4.0, num_inference_steps: int = 20,
                 noise_level: int = 250) -> Tensor:
        """Stage II super-resolution of 64x64 stage I images in [-1, 1] -> 256x256 in [-1, 1], with
        the prompt embeddings used for stage I (the course notebook's settings), by :func:`upsample`."""
        n = images.shape[0]
        uncond = self.null_cond if uncond is None else uncond
        cond, uncond = self.repeat_cond(cond, n), self.repeat_cond(uncond, n)
        stage2 = self.stage2()
        if self.offload:  # stage I leaves the GPU before stage II comes, and stage II after it ran
            self.pipe.maybe_free_model_hooks()
        out = upsample(stage2, images, cond, generator, uncond=uncond, guidance=guidance,
                       timesteps=stage2.pipeline_timesteps(num_inference_steps), noise_level=noise_level)
        if self.offload:
            stage2.pipe.maybe_free_model_hooks()
        return out


class SuperResolution(_IFStage):
    """DeepFloyd IF stage II as a denoiser of 256x256 images, given the low-resolution image.

    Its UNet sees the noisy image and the upscaled, noised low-resolution one side by side (6 input
    channels) and that image's noise level as a class label; :meth:`given` binds them, and the result
    is an ordinary denoiser for the Part A loops. Prompts are stage I's embeddings.
    """

    def __init__(self, pipe, *, device=None, dtype: torch.dtype | None = None, offload: bool = False):
        # Its UNet's input is the noisy image and the low-resolution one, side by side.
        self._adopt(pipe, device, dtype, offload, int(pipe.unet.config.in_channels) // 2)
        self.image_noising_schedule = Schedule.from_alphas_cumprod(
            pipe.image_noising_scheduler.alphas_cumprod.float().cpu())
        self.identity = {"name": "deepfloyd-stage2", "dtype": str(self.dtype).removeprefix("torch.")}
        self.low_res: Tensor | None = None
        self.noise_level: int | None = None

    def given(self, low_res: Tensor, noise_level: int) -> "SuperResolution":
        """This denoiser with the (upscaled, noised) low-resolution images bound, one per image."""
        bound = object.__new__(SuperResolution)
        bound.__dict__.update(self.__dict__, low_res=low_res, noise_level=int(noise_level))
        return bound

    def pipeline_timesteps(self, num_inference_steps: int) -> list[int]:
        """The timesteps IFSuperResolutionPipeline takes for ``num_inference_steps`` (its scheduler's spacing)."""
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        return scheduler.timesteps.tolist()

    def encode(self, prompt):
        raise ValueError("stage II takes stage I's prompt embeddings; encode prompts with the stage I backend")

    @torch.no_grad()
    def predict(self, x_t: Tensor, t: int, cond: Cond) -> tuple[Tensor, Tensor | None]:
        if self.low_res is None:
            raise ValueError("bind the low-resolution images first: stage2.given(low_res, noise_level)")
        n = x_t.shape[0]
        low = self.low_res.repeat(n // self.low_res.shape[0], 1, 1, 1)  # CFG's two halves see the same image
        levels = torch.full((n,), self.noise_level, device=self.device)
        out = self.unet(torch.cat([x_t.to(self.device, self.dtype), low], dim=1), int(t),
                        encoder_hidden_states=cond.to(self.device, self.dtype), class_labels=levels,
                        return_dict=False)[0]
        return self._noise_and_variance(out)


@torch.no_grad()
def upsample(stage2: SuperResolution, images: Tensor, cond: Cond, generator: Generators, *, uncond: Cond,
             guidance: float, timesteps: Sequence[int], noise_level: int = 250) -> Tensor:
    """IF's super-resolution as a guided loop: the 64x64 images are upscaled bilinearly, noised once to
    ``noise_level`` (the augmentation stage II was trained with), and the 256x256 image is sampled
    with that as its condition. Draws as IFSuperResolutionPipeline: x_T, the image's noise, the steps'."""
    import torch.nn.functional as F

    n, size = images.shape[0], stage2.image_size
    x = draw_noise((n, stage2.channels, size, size), generator, device=stage2.device, dtype=stage2.dtype)
    upscaled = F.interpolate(images.to(stage2.device, stage2.dtype), (size, size), mode="bilinear", align_corners=True)
    # The schedule in the images' precision, as the pipeline's add_noise computes it.
    upscaled, _ = forward(upscaled, noise_level, stage2.image_noising_schedule.alphas_cumprod.to(upscaled.dtype), generator)
    return iterative_denoise_cfg(stage2.given(upscaled, noise_level), x, timesteps, 0, cond, generator,
                                 guidance=guidance, uncond=uncond)
