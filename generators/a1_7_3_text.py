"""Part A 1.7.3: text-conditioned image-to-image translation."""
import torch

from generators._parta import SDEDIT, SDEDIT_SMOKE, backend_label, part_a, provenance, sdedit_rows

SECTION = part_a("a1_7_3_text", "Part A 1.7.3: text-conditioned image-to-image translation", SDEDIT, smoke=SDEDIT_SMOKE)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    prompts = p.prompts
    ctx.save_gallery("a1_7_3_text", sdedit_rows(ctx, ["test", "own1", "own2"], prompts, "text"),
                     caption=f"Text-conditioned translation: SDEdit at i_start = {p.i_starts} with a text prompt "
                             f"instead of the neutral one (CFG γ = {p.guidance}, {backend_label(ctx)}).",
                     alt="Rows of images that turn from the prompt's subject into the input image as i_start grows.",
                     meta=provenance(ctx, i_starts=p.i_starts, guidance=p.guidance, prompts=prompts))
