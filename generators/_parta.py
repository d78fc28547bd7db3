"""Shared pieces of the Part A sections: the common parameters, the backend, input images, helpers.

Part A runs on whichever backend the build selected (see ``backends/``): DeepFloyd IF sees 64 x 64
colour photographs and free-text prompts, the local MNIST model 28 x 28 digits and class prompts.
What differs between backends (prompts, masks, input images) is not declared here or in the
sections: the selected backend adds its own values to each section's parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from builder.section import Section
from diffusion import data
from diffusion.sampling import NULL_PHOTO_PROMPT, strided_timesteps

IMAGES = Path(__file__).resolve().parent.parent / "content" / "images"
INPUTS = ("content/images", "mnist")  # every Part A section's input files, for the cache key
BACKEND = "backend"  # the resource every Part A section uses

# The course's strided schedule (990, 960, ..., 0; coarser in the smoke profile) and CFG scale.
STRIDED = {"start": 990, "stride": 30}
STRIDED_SMOKE = {"stride": 200}
GUIDANCE = {"guidance": 7.0}
# SDEdit's starts (1.7, 1.7.1 and 1.7.3): indices into the strided schedule, noisiest first.
SDEDIT = {**STRIDED, **GUIDANCE, "i_starts": [1, 3, 5, 7, 10, 20]}
SDEDIT_SMOKE = {**STRIDED_SMOKE, "i_starts": [1, 3]}


def part_a(id: str, title: str, params: dict, smoke: dict | None = None, depends: tuple[str, ...] = ()) -> Section:
    """A Part A section: it runs on the selected backend and reads the input images (and MNIST)."""
    return Section(id=id, title=title, params=params, profiles={} if smoke is None else {"smoke": smoke},
                   inputs=INPUTS, uses=(BACKEND,), depends=depends)


@dataclass
class InputImage:
    name: str
    description: str
    image: torch.Tensor  # (1, C, H, W) in the backend's data space


def denoiser(ctx):
    """The selected backend's denoiser (loaded on first use)."""
    return ctx.resource(BACKEND)


def backend_label(ctx) -> str:
    """How captions name the backend's model (each plug-in says it in its identity)."""
    return ctx.resource_identity(BACKEND)["label"]


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
    """The image playing ``role`` (test, own1, own2, web, drawn1, drawn2), as the backend's
    ``inputs`` parameter names it: a file under content/images or an MNIST test digit."""
    den = denoiser(ctx)
    spec = ctx.params.inputs[role]
    if "mnist_test" in spec:
        x, label = _mnist_digit(den, spec["mnist_test"])
        return InputImage(role, f"MNIST test digit #{spec['mnist_test']}, a {label} ({spec['role']})", x)
    return InputImage(role, spec["description"], _load_png(den, spec["file"]))


def null_prompt(ctx) -> str:
    return NULL_PHOTO_PROMPT


def timesteps(ctx) -> list[int]:
    """The course's strided schedule (990, 960, ..., 0 on T = 1000), scaled to the backend's T."""
    return strided_timesteps(denoiser(ctx), ctx.params.start, ctx.params.stride)


def scaled_t(ctx, t: int) -> int:
    """A timestep given on the course's 1000-step scale, on the backend's scale."""
    return int(round(t * denoiser(ctx).num_train_timesteps / 1000))


def leading_timesteps(T: int, n: int) -> list[int]:
    """diffusers' "leading" spacing for ``n`` inference steps, as IFPipeline(num_inference_steps=n) uses."""
    step = T // n
    return [i * step for i in range(n)][::-1]


def unit(ctx, x: torch.Tensor) -> torch.Tensor:
    """One image (or a batch of one) in [0, 1] for saving."""
    out = denoiser(ctx).to_unit(x.detach().float().cpu())
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
    ident = ctx.resource_identity(BACKEND)
    return {"backend": ident["name"], "model": ident["model"], **extra}


def sdedit_rows(ctx, roles, prompts, gen_name: str) -> list[dict]:
    """One gallery row per input: SDEdit from each i_start (noisiest first), then the original."""
    from diffusion.edits import sdedit

    p, den = ctx.params, denoiser(ctx)
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


JUDGE = "b0_classifier"  # the independent MNIST classifier, which measures whether an illusion works


def two_readings(first: list[int], want_first: int, second: list[int], want_second: int) -> tuple[int, int, int]:
    """Of the classifier's readings of the same samples in two views: how many show ``want_first`` in the first
    view, how many ``want_second`` in the second, and how many both (the illusion working)."""
    first_ok = [d == want_first for d in first]
    second_ok = [d == want_second for d in second]
    return sum(first_ok), sum(second_ok), sum(a and b for a, b in zip(first_ok, second_ok))


def digit_judge(ctx):
    """For a backend whose images are digits: a function from images (the backend's space) to the digits
    the independent classifier reads in them, and one from a prompt to the digit it asks for. None for
    other domains: nothing here can judge a photograph."""
    if ctx.resource_identity(BACKEND)["domain"] != "digits":
        return None
    from diffusion.local_denoiser import prompt_to_class
    from diffusion.classifier import predict

    classifier = ctx.upstream(JUDGE).model("final")
    den = denoiser(ctx)
    return (lambda x: predict(classifier, den.to_unit(x.float())).tolist()), prompt_to_class
