"""DeepFloyd IF (stage I, 64x64; stage II, 256x256) as a :class:`~diffusion.denoiser.Denoiser`.

The denoiser is the pipeline's UNet and the schedule its DDPMScheduler's ``alphas_cumprod``; the
sampling loops of :mod:`diffusion.sampling` replace the pipeline's own loop. Images are in [-1, 1].

Weights are read from disk only: a directory the user names (argument or ``$DEEPFLOYD_DIR``), a
model id that is itself a path, or the local Hugging Face cache (``local_files_only``). The hub is
contacted only with ``allow_download=True``. Prompts go through the pipeline's T5 encoder, or come
from a precomputed embeddings file (``torch.save``'d ``{prompt: tensor[1, 77, 4096]}``), in which
case T5 (about 9 GB) is never loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..denoiser import Cond, Denoiser, Thresholding
from . import DEEPFLOYD_DIR_ENV, DEFAULT_STAGE1, DEFAULT_STAGE2, BackendUnavailable

LICENCE_URL = "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0"
STAGE1_CLASS = "IFPipeline"


def unavailable_message(model_ids: Sequence[str], searched: str, reason: str = "") -> str:
    """The one-paragraph explanation shown instead of a traceback when weights are missing."""
    ids = " and ".join(model_ids)
    because = f" ({reason})" if reason else ""
    return (
        f"DeepFloyd IF weights for {ids} were not found in {searched}{because}, and nothing is downloaded "
        f"unless you allow it. DeepFloyd IF is gated: accept the licence on the model card at {LICENCE_URL} "
        "(this covers the other IF models too), log in with `huggingface-cli login`, and fetch the weights "
        "once on a machine with network access (into the Hugging Face cache, or let the build download them with "
        f"--allow-download). Then keep them in the Hugging Face cache, or pass --deepfloyd-dir (or set "
        f"the environment variable {DEEPFLOYD_DIR_ENV}) to a directory that holds the saved pipelines "
        "(e.g. DIR/DeepFloyd/IF-I-XL-v1.0) or to a saved pipeline itself. Without them, use the local backend."
    )


# --- finding and loading the pipelines ----------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where a pipeline's files are: a folder on disk, or a hub id that may be downloaded."""

    location: str  # a folder, or a hub id when downloads are allowed
    description: str  # for messages and provenance
    revision: str | None = None  # hub commit of a cached snapshot


def _is_pipeline_dir(path: Path, class_name: str) -> bool:
    index = path / "model_index.json"
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("_class_name") == class_name
    except (OSError, ValueError):
        return False


def _cached_snapshot(model_id: str, cache_dir: Path | None) -> Path | None:
    """The folder of a fully or partly cached hub snapshot, found without any network access."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(model_id, local_files_only=True, cache_dir=cache_dir)
    except (OSError, ValueError):
        return None
    return Path(folder)


def find_source(model_id: str, class_name: str, deepfloyd_dir: str | os.PathLike | None = None,
                *, allow_download: bool = False) -> Source | None:
    """Resolve ``model_id`` to files on disk (or to the hub when allowed). None when not found.

    A named directory is authoritative: when the user names one, the default cache is not searched,
    so a figure never silently comes from weights other than the ones asked for.
    """
    root = deepfloyd_dir if deepfloyd_dir is not None else os.environ.get(DEEPFLOYD_DIR_ENV) or None
    if root is not None:
        root = Path(root).expanduser()
        for candidate in (root, root / model_id, root / model_id.split("/")[-1]):
            if _is_pipeline_dir(candidate, class_name):
                return Source(str(candidate), f"the directory {candidate}")
        for cache in (root, root / "hub"):  # a Hugging Face cache (or HF_HOME) copied as a whole
            if (cache / ("models--" + model_id.replace("/", "--"))).is_dir():
                snapshot = _cached_snapshot(model_id, cache)
                if snapshot is not None and _is_pipeline_dir(snapshot, class_name):
                    return Source(str(snapshot), f"the Hugging Face cache {cache}", snapshot.name)
        return None
    if Path(model_id).expanduser().is_dir():
        path = Path(model_id).expanduser()
        return Source(str(path), f"the directory {path}") if _is_pipeline_dir(path, class_name) else None
    snapshot = _cached_snapshot(model_id, None)
    if snapshot is not None and _is_pipeline_dir(snapshot, class_name):
        return Source(str(snapshot), "the local Hugging Face cache", snapshot.name)
    if allow_download:
        return Source(model_id, "the Hugging Face hub")
    return None


def searched(deepfloyd_dir) -> str:
    """Where weights were looked for, for messages."""
    root = deepfloyd_dir if deepfloyd_dir is not None else os.environ.get(DEEPFLOYD_DIR_ENV) or None
    return f"the directory {root}" if root is not None else "the local Hugging Face cache"


def weights_available(model_id: str = DEFAULT_STAGE1, deepfloyd_dir: str | os.PathLike | None = None) -> bool:
    """Whether stage I weights are on disk (cheap: reads no weights, touches no network)."""
    return find_source(model_id, STAGE1_CLASS, deepfloyd_dir) is not None


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


def fingerprint(folder: str | os.PathLike) -> str:
    """A cheap content identity of a saved pipeline: its configs by content, weights by name and
    size (hashing gigabytes of weights on every build would cost more than it protects)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.suffix in (".json", ".txt", ".model"):
            digest.update(path.read_bytes())
        else:
            digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()


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


# --- the backend ----------------------------------------------------------------------------------

class DeepFloydBackend(Denoiser):
    """DeepFloyd IF stage I as a denoiser; ``upsample`` runs stage II on its outputs."""

    def __init__(self, pipe, *, model_id: str = DEFAULT_STAGE1, source: Source | None = None,
                 embeddings: dict[str, Tensor] | None = None, embeddings_sha256: str | None = None,
                 device=None, dtype: torch.dtype | None = None, stage2_id: str = DEFAULT_STAGE2,
                 deepfloyd_dir=None, allow_download: bool = False):
        self.device = torch.device(device) if device is not None else pipe.unet.device
        self.dtype = dtype or pipe.unet.dtype
        self.pipe = pipe.to(self.device)
        self.unet = pipe.unet
        scheduler = pipe.scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.float().cpu()
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.image_size = int(self.unet.config.sample_size)
        self.channels = int(self.unet.config.in_channels)
        cfg = scheduler.config
        # Follow the checkpoint's own sampler, so the loops reproduce IFPipeline.
        self.thresholding = (Thresholding(float(cfg.dynamic_thresholding_ratio), float(cfg.sample_max_value))
                             if cfg.thresholding else None)
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
                                                 "thresholding", "dynamic_thresholding_ratio", "sample_max_value")},
        }

    @classmethod
    def load(cls, model_id: str = DEFAULT_STAGE1, *, dtype: torch.dtype, device=None,
             deepfloyd_dir=None, embeddings_path=None, allow_download: bool = False,
             stage2_id: str = DEFAULT_STAGE2) -> "DeepFloydBackend":
        """Load stage I from disk (see :func:`find_source`). With ``embeddings_path`` T5 is not loaded
        and prompts must be in the file; without it prompts are encoded by the pipeline's T5."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        embeddings = sha = None
        if embeddings_path is not None:
            embeddings, sha = load_embeddings(embeddings_path)
        pipe, source = load_pipeline(model_id, stage=1, deepfloyd_dir=deepfloyd_dir, allow_download=allow_download,
                                     dtype=dtype, text_encoder=embeddings is None)
        return cls(pipe, model_id=model_id, source=source, embeddings=embeddings, embeddings_sha256=sha,
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
        if out.shape[1] == 2 * self.channels:
            eps, v = out.split(self.channels, dim=1)
            return eps, v
        return out, None

    # --- stage II ---
    def stage2(self):
        """The stage II pipeline (loaded on first use, from the same places, without T5)."""
        if self._stage2 is None:
            args = self._stage2_args
            pipe, _ = load_pipeline(args["model_id"], stage=2, deepfloyd_dir=args["deepfloyd_dir"],
                                    allow_download=args["allow_download"], dtype=self.dtype, text_encoder=False)
            self._stage2 = pipe.to(self.device)
        return self._stage2

    @torch.no_grad()
    def upsample(self, images: Tensor, cond: Cond, generator: torch.Generator | None = None, *,
                 uncond: Cond | None = None, guidance: float = 4.0, num_inference_steps: int = 20,
                 noise_level: int = 250) -> Tensor:
        """Stage II super-resolution of 64x64 stage I images in [-1, 1] -> 256x256 in [-1, 1],
        with the prompt embeddings used for stage I (the course notebook's settings)."""
        n = images.shape[0]
        cond = self.repeat_cond(cond, n)
        uncond = self.repeat_cond(self.null_cond if uncond is None else uncond, n)
        return self.stage2()(image=images.to(self.device, self.dtype), prompt_embeds=cond,
                             negative_prompt_embeds=uncond, guidance_scale=guidance,
                             num_inference_steps=num_inference_steps, noise_level=noise_level,
                             generator=generator, output_type="pt").images
