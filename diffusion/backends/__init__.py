"""Denoiser backends for Part A, chosen by name.

``local``: the project's class-conditioned MNIST UNet (the embedded default; runs on a CPU).
``deepfloyd``: DeepFloyd IF through diffusers (needs its weights on disk, and in practice a GPU).

Nothing heavy is imported here: diffusers is imported only when the DeepFloyd backend is used.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

BACKENDS = ("local", "deepfloyd")

DEFAULT_STAGE1 = "DeepFloyd/IF-I-XL-v1.0"
DEFAULT_STAGE2 = "DeepFloyd/IF-II-L-v1.0"
DEEPFLOYD_DIR_ENV = "DEEPFLOYD_DIR"


class BackendUnavailable(RuntimeError):
    """A backend cannot be used here; the message (one paragraph) says what to do about it."""


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_backend(name: str = "auto", device=None, deepfloyd_dir: str | os.PathLike | None = None,
                    *, model_id: str = DEFAULT_STAGE1) -> str:
    """``"local"`` or ``"deepfloyd"``. ``"auto"`` picks DeepFloyd only when the device is CUDA
    (default: CUDA if available) *and* its weights are on disk; otherwise the local model."""
    if name in BACKENDS:
        return name
    if name != "auto":
        raise ValueError(f"unknown backend {name!r}; choose auto, {', '.join(BACKENDS)}")
    if _device(device).type != "cuda":
        return "local"
    from .deepfloyd import weights_available

    return "deepfloyd" if weights_available(model_id, deepfloyd_dir) else "local"


def load_backend(name: str, *, device=None, dtype: torch.dtype | None = None,
                 local_checkpoint: str | os.PathLike | dict | None = None, local_checkpoint_hash: str | None = None,
                 local_config: dict | None = None,
                 deepfloyd_dir: str | os.PathLike | None = None, embeddings_path: str | os.PathLike | None = None,
                 allow_download: bool = False, model_id: str = DEFAULT_STAGE1, stage2_id: str = DEFAULT_STAGE2):
    """Build a :class:`~diffusion.denoiser.Denoiser` by backend name (``"auto"`` allowed).

    ``dtype`` defaults to float16 for DeepFloyd on CUDA and float32 otherwise. DeepFloyd weights come
    from ``deepfloyd_dir`` (or ``$DEEPFLOYD_DIR``) or the local Hugging Face cache, never from the
    network unless ``allow_download``; missing weights raise :class:`BackendUnavailable`.
    ``local_config`` overrides the local checkpoint's architecture/schedule settings (``num_hiddens``,
    ``T``, ``beta1``, ``beta2``...; see :meth:`LocalBackend.from_checkpoint`).
    """
    dev = _device(device)
    name = resolve_backend(name, dev, deepfloyd_dir, model_id=model_id)
    if name == "local":
        if local_checkpoint is None:
            raise BackendUnavailable(
                "The local backend needs a trained class-conditioned UNet checkpoint; train it first "
                "(the Part B class-conditioning section produces it) and pass its path.")
        from .local import LocalBackend

        return LocalBackend.from_checkpoint(local_checkpoint, checkpoint_hash=local_checkpoint_hash,
                                            device=dev, dtype=dtype or torch.float32, **(local_config or {}))
    from .deepfloyd import DeepFloydBackend

    if dtype is None:
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
    return DeepFloydBackend.load(model_id, device=dev, dtype=dtype, deepfloyd_dir=deepfloyd_dir,
                                 embeddings_path=None if embeddings_path is None else Path(embeddings_path),
                                 allow_download=allow_download, stage2_id=stage2_id)
