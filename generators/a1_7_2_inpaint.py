"""Part A 1.7.2: inpainting, new content inside a mask and the original everywhere else."""
import torch

from builder.section import Section
from diffusion.edits import inpaint
from generators._parta import (INPUTS, backend_label, input_image, item, null_prompt, pick, provenance,
                               timesteps)

SECTION = Section(
    id="a1_7_2_inpaint",
    title="Part A 1.7.2: inpainting",
    # Masks are rectangles (left, top, right, bottom) as fractions of the image side.
    params={"start": 990, "stride": 30, "guidance": 7.0,
            "masks": {"deepfloyd": {"test": [0.36, 0.02, 0.64, 0.45], "own1": [0.25, 0.2, 0.75, 0.6],
                                    "own2": [0.2, 0.15, 0.8, 0.55]},
                      "local": {"test": [0.0, 0.0, 1.0, 0.45], "own1": [0.0, 0.5, 1.0, 1.0],
                                "own2": [0.5, 0.0, 1.0, 1.0]}}},
    profiles={"smoke": {"stride": 200}},
    inputs=INPUTS,
    uses_backend=True,
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
    den = ctx.backend
    prompt = null_prompt(ctx)
    cond = den.encode(prompt)
    masks = pick(ctx, p.masks)
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
                               item(ctx, hole, "to replace", "the original with the masked region blacked out"),
                               item(ctx, result, "inpainted")]})
    ctx.save_gallery("a1_7_2_inpaint", rows,
                     caption=f"Inpainting: after every step of the CFG loop (γ = {p.guidance}, prompt “{prompt}”), "
                             f"x_t ← m x_t + (1 − m) forward(x_orig, t), so only the white region of the mask is "
                             f"generated; {backend_label(ctx)}.",
                     alt="For each image: the original, the mask, the image with the hole, and the inpainted result.",
                     meta=provenance(ctx, masks=masks, guidance=p.guidance, prompt=prompt))
