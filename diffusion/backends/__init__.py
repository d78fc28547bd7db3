"""Denoiser backends for Part A: the model code behind the build's plug-ins (``backends/``).

``local``: the project's class-conditioned MNIST UNet (the embedded default; runs on a CPU).
``deepfloyd``: DeepFloyd IF through diffusers (needs its weights on disk, and in practice a GPU).

Nothing heavy is imported here: diffusers is imported only when the DeepFloyd backend is used.
"""
from __future__ import annotations

DEFAULT_STAGE1 = "DeepFloyd/IF-I-XL-v1.0"
DEFAULT_STAGE2 = "DeepFloyd/IF-II-L-v1.0"
DEEPFLOYD_DIR_ENV = "DEEPFLOYD_DIR"


class BackendUnavailable(RuntimeError):
    """A backend cannot be used here; the message (one paragraph) says what to do about it."""
