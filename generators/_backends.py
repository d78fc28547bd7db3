"""The Part A backend as the engine sees it: a cache identity, its dependencies, a lazy loader.

``local`` is the class-conditioned MNIST UNet that Part B trains (section ``b3_train_class``), so
Part A sections depend on that section when it is selected; ``deepfloyd`` is DeepFloyd IF from
local weights. The identity joins every Part A cache key and every figure's provenance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from builder import BuildError
from builder.engine import BackendSpec
from diffusion.backends import BackendUnavailable, DEFAULT_STAGE1, DEFAULT_STAGE2, resolve_backend

LOCAL_MODEL_SECTION = "b3_train_class"


@dataclass(frozen=True)
class BackendOptions:
    name: str = "auto"
    deepfloyd_dir: Path | None = None
    model_id: str = DEFAULT_STAGE1
    stage2_id: str = DEFAULT_STAGE2
    embeddings: Path | None = None
    allow_download: bool = False
    upsample: bool = False


def backend_spec(options: BackendOptions, device: str) -> BackendSpec:
    try:
        name = resolve_backend(options.name, device, options.deepfloyd_dir, model_id=options.model_id)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    if name == "local":
        return BackendSpec(
            name="local",
            identity={"name": "local", "model": f"class-conditioned MNIST UNet trained by {LOCAL_MODEL_SECTION}",
                      "dtype": "float32"},
            depends=(LOCAL_MODEL_SECTION,),
            load=_load_local,
        )
    return _deepfloyd_spec(options, device)


def _load_local(ctx):
    from diffusion.backends.local import LocalBackend

    up = ctx.upstream(LOCAL_MODEL_SECTION)
    params = up.params
    return LocalBackend.from_checkpoint(
        up.path("checkpoint-final"), checkpoint_hash=up.checkpoint_sha("final"), device=ctx.device,
        num_hiddens=params["num_hiddens"], num_classes=params["num_classes"], in_channels=1, T=params["T"],
        beta1=params["beta1"], beta2=params["beta2"])


def _deepfloyd_spec(options: BackendOptions, device: str) -> BackendSpec:
    from diffusion.backends import deepfloyd

    source = deepfloyd.find_source(options.model_id, deepfloyd.STAGE1_CLASS, options.deepfloyd_dir,
                                   allow_download=options.allow_download)
    if source is None:
        raise BuildError(deepfloyd.unavailable_message(
            [options.model_id] + ([options.stage2_id] if options.upsample else []),
            deepfloyd._searched(options.model_id, options.deepfloyd_dir)))
    folder = Path(source.location)
    dtype = "float16" if device.startswith("cuda") else "float32"
    text = "t5"
    if options.embeddings is not None:
        if not Path(options.embeddings).is_file():
            raise BuildError(f"--embeddings {options.embeddings} does not exist; give a torch.save'd dict "
                             f"{{prompt: tensor[1, 77, 4096]}} or leave the option out to encode prompts with T5.")
        from builder.fingerprint import sha256_file

        text = {"embeddings_sha256": sha256_file(Path(options.embeddings))}
    identity = {"name": "deepfloyd", "model": options.model_id, "revision": source.revision,
                "fingerprint": deepfloyd.fingerprint(folder) if folder.is_dir() else None,
                "dtype": dtype, "text": text,
                "stage2": options.stage2_id if options.upsample else None}

    def load(ctx):
        try:
            return deepfloyd.DeepFloydBackend.load(
                options.model_id, device=ctx.device, dtype=getattr(torch, dtype),
                deepfloyd_dir=options.deepfloyd_dir, embeddings_path=options.embeddings,
                allow_download=options.allow_download, stage2_id=options.stage2_id)
        except BackendUnavailable as exc:
            raise BuildError(str(exc)) from None

    return BackendSpec(name="deepfloyd", identity=identity, depends=(), load=load)
