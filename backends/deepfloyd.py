"""The DeepFloyd IF backend: stage I of the course's pixel-space text-to-image model, 64 x 64 colour
images, from weights on disk (never downloaded unless allowed); optionally stage II to 256 x 256."""
from __future__ import annotations

from pathlib import Path

from builder import BuildError
from builder.graph.engine import Resource

from diffusion.deepfloyd_weights import DEFAULT_STAGE1, DEFAULT_STAGE2

from . import RESOURCE, Backend, model_code

_PHOTOS = {"test": {"file": "rocket.png", "description": "the rocket launch (test image)"},
           "own1": {"file": "cat.png", "description": "the cat"},
           "own2": {"file": "coffee.png", "description": "the espresso"}}
_DRAWN = {"web": {"file": "astronaut.png", "description": "the astronaut photo"},
          "drawn1": {"file": "sketch_house.png", "description": "the house sketch"},
          "drawn2": {"file": "sketch_tree.png", "description": "the tree sketch"}}

# What this backend gives each Part A section, on top of the section's own parameters.
PARAMS = {
    "a0_setup": {"prompts": ["an oil painting of a snowy mountain village", "a man wearing a hat", "a rocket ship"]},
    "a1_denoising": {"inputs": {"test": _PHOTOS["test"]}},
    "a1_4_iterative": {"inputs": {"test": _PHOTOS["test"]}},
    "a1_5_sampling": {"cfg_prompts": ["a high quality photo"] * 5},
    "a1_7_sdedit": {"inputs": {**_PHOTOS, **_DRAWN}},
    # Masks are rectangles (left, top, right, bottom) as fractions of the image side.
    "a1_7_2_inpaint": {"inputs": _PHOTOS, "masks": {"test": [0.36, 0.02, 0.64, 0.45], "own1": [0.25, 0.2, 0.75, 0.6],
                                                    "own2": [0.2, 0.15, 0.8, 0.55]}},
    "a1_7_3_text": {"inputs": _PHOTOS,
                    "prompts": ["a pencil", "a photo of a dog", "an oil painting of a snowy mountain village"]},
    "a1_8_anagrams": {"view": "flip_vertical", "pairs": [["an oil painting of people around a campfire", "an oil painting of an old man"],
                                ["an oil painting of a snowy mountain village", "a photo of a hipster barista"],
                                ["a lithograph of waterfalls", "a lithograph of a skull"]]},
    "a1_9_hybrids": {"blur": [33, 2.0], "pairs": [["a lithograph of a skull", "a lithograph of waterfalls"],
                               ["an oil painting of an old man", "an oil painting of a snowy mountain village"],
                               ["a rocket ship", "a pencil"]]},
}

# What the pages say of this backend's domain, place by place (backends.WORDS): Markdown, with the
# pages' helpers (param, ref, build ...).
WORDS = {
    "overview": "Part A ran on **{{ build.resources.backend.model or build.resources.backend.name }}**.",
    "setup_backend": "This build uses **DeepFloyd IF** ({{ build.resources.backend.model }}).",
    "unguided_samples": "These samples use no guidance; the next section adds it, from the same starting noise.",
    "cfg_prompts": """{{ ref("fig-a1_6_cfg") }} uses $\\gamma = {{ param("a1_5_sampling", "guidance") }}$; compare it with the unguided
samples of {{ ref("fig-a1_5_samples") }}.""",
    "sdedit_inputs": "",
    "sdedit_reading": "",
    "web_image": "a web image",
    "edits_reading": "",
    "inpaint_reading": "",
    "hybrid_blur": "",
}

UPSAMPLE_STEPS = {"spec": 20, "cpu": 20, "smoke": 3}
MEMORY_HINTS = ("--embeddings FILE, so that T5 is never loaded onto the GPU",
                "--offload, so that only the model that runs is on the GPU",
                "a smaller stage I with --deepfloyd-model DeepFloyd/IF-I-L-v1.0 (or -M)")


def _add_options(group) -> None:
    group.add_argument("--deepfloyd-dir", type=Path, default=None,
                       help="a directory holding the saved IF pipelines (or a copied Hugging Face cache); "
                            "also read from $DEEPFLOYD_DIR. Default: the local Hugging Face cache")
    group.add_argument("--deepfloyd-model", default=DEFAULT_STAGE1,
                       help="stage I model id, e.g. DeepFloyd/IF-I-L-v1.0 or -M (default: %(default)s)")
    group.add_argument("--embeddings", type=Path, default=None,
                       help="a torch.save'd {prompt: tensor[1, 77, 4096]} file of T5 prompt embeddings, so that "
                            "T5 need not be loaded (for GPUs without room for it)")
    group.add_argument("--upsample", action="store_true",
                       help="also upsample Part A results to 256x256 with DeepFloyd stage II (IF-II-L-v1.0)")
    group.add_argument("--offload", action="store_true",
                       help="keep DeepFloyd's models in CPU memory and move each to the GPU only while it runs "
                            "(diffusers' enable_model_cpu_offload): for GPUs with less than 24 GB; slower, same images")
    group.add_argument("--allow-download", action="store_true",
                       help="let diffusers download missing DeepFloyd weights (needs the licence accepted and "
                            "`huggingface-cli login`); off by default, nothing is downloaded")


def _available(args, device: str) -> bool:
    """Only on CUDA, and only with stage I's weights on disk: on a CPU, IF takes hours."""
    if not device.startswith("cuda"):
        return False
    from diffusion.deepfloyd_weights import weights_available

    return weights_available(args.deepfloyd_model, args.deepfloyd_dir)


def dtype_for(device: str) -> str:
    """IF's weights are published in float16, which CPUs run slowly or not at all."""
    return "float16" if device.startswith("cuda") else "float32"


def _resource(args, device: str, project) -> Resource:
    from diffusion import deepfloyd_weights as weights

    source = weights.find_source(args.deepfloyd_model, weights.STAGE1_CLASS, args.deepfloyd_dir,
                                 allow_download=args.allow_download)
    if source is None:
        raise BuildError(weights.unavailable_message(
            [args.deepfloyd_model] + ([DEFAULT_STAGE2] if args.upsample else []),
            weights.searched(args.deepfloyd_dir)))
    folder = Path(source.location)
    text = "t5"
    if args.embeddings is not None:
        if not Path(args.embeddings).is_file():
            raise BuildError(f"--embeddings {args.embeddings} does not exist; give a torch.save'd dict "
                             f"{{prompt: tensor[1, 77, 4096]}} or leave the option out to encode prompts with T5.")
        from builder.fingerprint import sha256_file

        text = {"embeddings_sha256": sha256_file(Path(args.embeddings))}
    dtype = dtype_for(device)
    identity = {"name": "deepfloyd", "domain": "photos", "label": f"DeepFloyd IF stage I ({args.deepfloyd_model})",
                "model": args.deepfloyd_model, "revision": source.revision,
                "fingerprint": weights.fingerprint(folder) if folder.is_dir() else None,
                "dtype": dtype, "text": text, "stage2": DEFAULT_STAGE2 if args.upsample else None,
                "code": model_code(project, "diffusion.deepfloyd_denoiser")}

    def load(ctx):
        import torch

        from diffusion import deepfloyd_denoiser as deepfloyd

        try:
            return deepfloyd.DeepFloydBackend.load(
                args.deepfloyd_model, device=ctx.device, dtype=getattr(torch, dtype),
                deepfloyd_dir=args.deepfloyd_dir, embeddings_path=args.embeddings,
                allow_download=args.allow_download, stage2_id=DEFAULT_STAGE2,
                offload=args.offload)
        except deepfloyd.BackendUnavailable as exc:
            raise BuildError(str(exc)) from None
        except deepfloyd.UnsupportedScheduler as exc:
            raise BuildError(f"DeepFloyd IF in {source.description} cannot be used: {exc}") from None

    def params(section: str, profile: str) -> dict:
        own = dict(PARAMS.get(section, {}))
        if section == "a0_setup" and args.upsample:  # stage II's steps, only when it runs
            own["upsample_steps"] = UPSAMPLE_STEPS[profile]
        return own

    return Resource(RESOURCE, identity, load=load, params=params, memory_hints=MEMORY_HINTS)


BACKEND = Backend(
    name="deepfloyd", words=WORDS, auto_order=10,
    help="DeepFloyd IF from local weights (in practice a CUDA GPU)",
    add_options=_add_options, available=_available, resource=_resource)
