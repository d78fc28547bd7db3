"""Part A 1.7.3: text-conditioned image-to-image translation."""
import torch

from builder.section import Section
from generators._parta import (BACKEND, GUIDANCE, INPUTS, STRIDED, STRIDED_SMOKE, backend_label, provenance,
                               sdedit_rows)

SECTION = Section(
    id="a1_7_3_text",
    title="Part A 1.7.3: text-conditioned image-to-image translation",
    params={**STRIDED, **GUIDANCE, "i_starts": [1, 3, 5, 7, 10, 20]},
    profiles={"smoke": {**STRIDED_SMOKE, "i_starts": [1, 3]}},
    inputs=INPUTS,
    uses=(BACKEND,),
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    prompts = p.prompts
    ctx.save_gallery("a1_7_3_text", sdedit_rows(ctx, ["test", "own1", "own2"], prompts, "text"),
                     caption=f"Text-conditioned translation: SDEdit at i_start = {p.i_starts} with a text prompt "
                             f"instead of the neutral one (CFG γ = {p.guidance}, {backend_label(ctx)}).",
                     alt="Rows of images that turn from the prompt's subject into the input image as i_start grows.",
                     meta=provenance(ctx, i_starts=p.i_starts, guidance=p.guidance, prompts=prompts))
