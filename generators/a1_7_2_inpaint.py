"""Part A 1.7.2: inpainting, new content inside a mask and the original everywhere else."""
import torch

from diffusion.edits import inpaint
from generators._parta import (GUIDANCE, STRIDED, STRIDED_SMOKE, backend_label, denoiser, input_image, item,
                               null_prompt, part_a, provenance, timesteps)

SECTION = part_a(
    id="a1_7_2_inpaint",
    title="Part A 1.7.2: inpainting",
    # The masks (rectangles, as fractions of the image side) come with the backend's inputs.
    params={**STRIDED, **GUIDANCE},
    smoke=STRIDED_SMOKE,
)


def rectangle_mask(den, box):
    size = den.image_size
    left, top, right, bottom = (round(v * size) for v in box)
    mask = torch.zeros(1, 1, size, size)
    mask[..., top:bottom, left:right] = 1.0
    return mask


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    prompt = null_prompt(ctx)
    cond = den.encode(prompt)
    masks = p.masks
    rows = []
    for role in ("test", "own1", "own2"):
        inp = input_image(ctx, role)
        mask = rectangle_mask(den, masks[role])
        result = inpaint(den, inp.image, mask.to(den.device, den.dtype), cond, ctx.generator(f"inpaint-{role}"),
                         timesteps=timesteps(ctx), guidance=p.guidance)
        hole = inp.image * (1 - mask.to(inp.image))
        rows.append({"caption": inp.description,
                     "items": [item(ctx, inp.image, "original"),
                               {"image": mask[0], "label": "mask (white = new)", "alt": "the inpainting mask"},
                               item(ctx, hole, "kept (outside the mask)", "the original with the masked region blacked out"),
                               item(ctx, result, "inpainted")]})
    ctx.save_gallery("a1_7_2_inpaint", rows,
                     caption=f"Inpainting: after every step of the CFG loop (γ = {p.guidance}, prompt “{prompt}”), "
                             f"x_t ← m x_t + (1 − m) forward(x_orig, t), so only the white region of the mask is "
                             f"generated; {backend_label(ctx)}.",
                     alt="For each image: the original, the mask, the image with the hole, and the inpainted result.",
                     meta=provenance(ctx, masks=masks, guidance=p.guidance, prompt=prompt))
