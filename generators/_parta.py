"""Shared pieces of the Part A generators: per-backend inputs and prompts, image helpers.

Part A runs on whichever backend the build selected. DeepFloyd IF sees 64 x 64 colour photographs
and free-text prompts; the local MNIST model sees 28 x 28 digits and class prompts. Parameters that
differ between the two are written as ``{"deepfloyd": ..., "local": ...}`` and picked here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffusion import data
from diffusion.sampling import NULL_PHOTO_PROMPT, strided_timesteps

IMAGES = Path(__file__).resolve().parent.parent / "content" / "images"
INPUTS = ("content/images", "mnist")  # every Part A section's input files, for the cache key

# MNIST test digits standing in for the local backend's "test image" and "own images".
LOCAL_TEST_DIGITS = {"test": 0, "own1": 1, "own2": 18}  # indices into the MNIST test split: a 7, a 2, a 3


@dataclass
class InputImage:
    name: str
    description: str
    image: torch.Tensor  # (1, C, H, W) in the backend's data space


def backend_name(ctx) -> str:
    return ctx.backend.identity["backend"]


def pick(ctx, value):
    """A per-backend parameter value, or the value itself when it is the same for both."""
    if isinstance(value, dict) and set(value) <= {"deepfloyd", "local"}:
        return value[backend_name(ctx)]
    return value


def backend_label(ctx) -> str:
    ident = ctx.backend.identity
    if ident["backend"] == "deepfloyd":
        return f"DeepFloyd IF stage I ({ident['model_id']})"
    return "the local class-conditioned MNIST UNet"


def _load_png(den, name: str) -> torch.Tensor:
    img = Image.open(IMAGES / name)
    img = img.convert("RGB" if den.channels == 3 else "L").resize((den.image_size, den.image_size), Image.LANCZOS)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    arr = arr.permute(2, 0, 1) if arr.ndim == 3 else arr[None]
    return den.from_unit(arr[None])


def _mnist_digit(den, index: int) -> tuple[torch.Tensor, int]:
    test = data.load("test")
    x = torch.from_numpy(test.images[index].astype(np.float32) / 255.0)[None, None]
    return den.from_unit(x), int(test.labels[index])


def input_image(ctx, role: str) -> InputImage:
    """The image playing ``role``: test, own1, own2, web, drawn1, drawn2."""
    den = ctx.backend
    if backend_name(ctx) == "deepfloyd":
        files = {"test": ("rocket.png", "the rocket launch (test image)"), "own1": ("cat.png", "the cat"),
                 "own2": ("coffee.png", "the espresso"), "web": ("astronaut.png", "the astronaut photo"),
                 "drawn1": ("sketch_house.png", "the house sketch"), "drawn2": ("sketch_tree.png", "the tree sketch")}
        name, description = files[role]
        return InputImage(role, description, _load_png(den, name))
    if role in LOCAL_TEST_DIGITS:
        x, label = _mnist_digit(den, LOCAL_TEST_DIGITS[role])
        which = "test image" if role == "test" else "own image"
        return InputImage(role, f"MNIST test digit #{LOCAL_TEST_DIGITS[role]}, a {label} ({which})", x)
    files = {"web": ("typed_digit7.png", "a typed 7"), "drawn1": ("sketch_digit4.png", "the sketched 4"),
             "drawn2": ("sketch_digit2.png", "the sketched 2")}
    name, description = files[role]
    return InputImage(role, description, _load_png(den, name))


def null_prompt(ctx) -> str:
    return NULL_PHOTO_PROMPT


def timesteps(ctx) -> list[int]:
    """The course's strided schedule (990, 960, ..., 0 on T = 1000), scaled to the backend's T."""
    return strided_timesteps(ctx.backend, ctx.params.start, ctx.params.stride)


def scaled_t(ctx, t: int) -> int:
    """A timestep given on the course's 1000-step scale, on the backend's scale."""
    return int(round(t * ctx.backend.num_train_timesteps / 1000))


def leading_timesteps(T: int, n: int) -> list[int]:
    """diffusers' "leading" spacing for ``n`` inference steps, as IFPipeline(num_inference_steps=n) uses."""
    step = T // n
    return [i * step for i in range(n)][::-1]


def unit(ctx, x: torch.Tensor) -> torch.Tensor:
    """One image (or a batch of one) in [0, 1] for saving."""
    out = ctx.backend.to_unit(x.detach().float().cpu())
    return out[0] if out.ndim == 4 else out


def item(ctx, x, label: str, alt: str | None = None) -> dict:
    return {"image": unit(ctx, x), "label": label, "alt": alt or label}


def quality_cells(ctx, x, clean) -> list[str]:
    """PSNR (dB) and SSIM of an image against the clean one, both shown in [0, 1]."""
    from diffusion.metrics import quality

    psnr, ssim = quality(unit(ctx, x), unit(ctx, clean))
    return [f"{psnr:.2f}", f"{ssim:.3f}"]


QUALITY_COLUMNS = ["PSNR (dB)", "SSIM"]
QUALITY_METHOD = ("PSNR and SSIM against the original, on the images as shown (mapped to [0, 1], "
                  "SSIM with a 7 × 7 window); higher is closer")


def provenance(ctx, **extra) -> dict:
    """Figure metadata: the backend and the figure's own parameters."""
    ident = ctx.backend.identity
    return {"backend": ident["backend"], "model": ident.get("model_id") or ident.get("model"), **extra}


def sdedit_rows(ctx, roles, prompts, gen_name: str) -> list[dict]:
    """One gallery row per input: SDEdit from each i_start (noisiest first), then the original."""
    from diffusion.edits import sdedit

    p, den = ctx.params, ctx.backend
    ts = timesteps(ctx)
    rows = []
    for role, prompt in zip(roles, prompts):
        inp = input_image(ctx, role)
        cond = den.encode(prompt)
        gen = ctx.generator(f"{gen_name}-{role}")
        items = [item(ctx, sdedit(den, inp.image, i, cond, gen, timesteps=ts, guidance=p.guidance),
                      f"i_start = {i} (t = {ts[i]})", f"edit of {inp.description} from i_start = {i}")
                 for i in p.i_starts]
        rows.append({"caption": f"{inp.description}, prompt “{prompt}”",
                     "items": items + [item(ctx, inp.image, "original", inp.description)]})
    return rows
