"""Part A 1.7 and 1.7.1: SDEdit (image-to-image translation) of photos, a web image and drawings."""
import torch

from generators._parta import (SDEDIT, SDEDIT_SMOKE, backend_label, null_prompt, part_a, provenance, sdedit_rows,
                               timesteps)

SECTION = part_a("a1_7_sdedit", "Part A 1.7-1.7.1: image-to-image translation (SDEdit)", SDEDIT, smoke=SDEDIT_SMOKE)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    prompt = null_prompt(ctx)
    how = (f"noised to timesteps[i_start] of the strided schedule and denoised with CFG γ = {p.guidance}, "
           f"prompt “{prompt}”, {backend_label(ctx)}")
    ctx.save_gallery("a1_7_sdedit", sdedit_rows(ctx, ["test", "own1", "own2"], [prompt] * 3, "sdedit"),
                     caption=f"SDEdit of the test image and two own images at i_start = {p.i_starts}: each input "
                             f"{how}. Small i_start means more noise and more freedom.",
                     alt="Rows of edits that move from unrelated images to near-copies of the original.",
                     meta=provenance(ctx, i_starts=p.i_starts, guidance=p.guidance, prompt=prompt,
                                     timesteps=timesteps(ctx)))
    ctx.save_gallery("a1_7_1_edits", sdedit_rows(ctx, ["web", "drawn1", "drawn2"], [prompt] * 3, "edits"),
                     caption=f"SDEdit of {p.inputs['web']['description']} and two hand-drawn sketches at "
                             f"i_start = {p.i_starts}: each {how}.",
                     alt=f"Rows of edits of {p.inputs['web']['description']} and two sketches, from each start.",
                     meta=provenance(ctx, i_starts=p.i_starts, guidance=p.guidance, prompt=prompt))
