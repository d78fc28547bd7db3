"""Part A 1.8: visual anagrams, images that show one prompt upright and another upside down."""
import torch

from builder.section import Section
from diffusion.edits import visual_anagram
from diffusion.views import FlipVertical, Identity
from sections._parta import (BACKEND, GUIDANCE, INPUTS, STRIDED, STRIDED_SMOKE, backend_label, denoiser, item,
                               provenance, timesteps)

SECTION = Section(
    id="a1_8_anagrams",
    title="Part A 1.8: visual anagrams",
    params={**STRIDED, **GUIDANCE, "samples_per_pair": 2},
    profiles={"smoke": {**STRIDED_SMOKE, "samples_per_pair": 1}},
    inputs=INPUTS,
    uses=(BACKEND,),
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    flip = FlipVertical()
    for k, (upright, flipped) in enumerate(p.pairs, start=1):
        images = visual_anagram(den, [den.encode(upright), den.encode(flipped)], ctx.generator(f"pair{k}"),
                                views=(Identity(), flip), n=p.samples_per_pair, timesteps=timesteps(ctx),
                                guidance=p.guidance)
        items = []
        for i, x in enumerate(images, start=1):
            items += [item(ctx, x, f"sample {i}: {upright}", f"sample {i} upright, meant to show {upright}"),
                      item(ctx, flip.apply(x[None])[0], f"sample {i} flipped: {flipped}",
                           f"sample {i} upside down, meant to show {flipped}")]
        ctx.save_gallery(f"a1_8_anagram{k}", [{"caption": f"upright: “{upright}”; upside down: “{flipped}”",
                                               "items": items}],
                         caption=f"Visual anagram {k}: at every step the CFG noise estimate (γ = {p.guidance}) for "
                                 f"“{upright}” on x_t and the flipped-back estimate for “{flipped}” on flip(x_t) are "
                                 f"averaged; {p.samples_per_pair} samples, none picked, each shown upright and "
                                 f"flipped; {backend_label(ctx)}.",
                         alt=f"Generated images shown upright ({upright}) and upside down ({flipped}).",
                         meta=provenance(ctx, prompts=[upright, flipped], guidance=p.guidance, view="flip vertical",
                                         display="anagram"))
