"""Part A 1.9: hybrid images, one prompt in the low frequencies and another in the high."""
import torch

from builder.section import Section
from diffusion.edits import hybrid, hybrid_blur_params
from sections._parta import (BACKEND, GUIDANCE, INPUTS, STRIDED, STRIDED_SMOKE, backend_label, denoiser, item,
                               provenance, timesteps)

SECTION = Section(
    id="a1_9_hybrids",
    title="Part A 1.9: hybrid images",
    params={**STRIDED, **GUIDANCE, "samples_per_pair": 2, "display_px": {"large": 160, "small": 32}},
    profiles={"smoke": {**STRIDED_SMOKE, "samples_per_pair": 1}},
    inputs=INPUTS,
    uses=(BACKEND,),
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    kernel, sigma = hybrid_blur_params(den.image_size)
    for k, (low, high) in enumerate(p.pairs, start=1):
        images = hybrid(den, den.encode(low), den.encode(high), ctx.generator(f"pair{k}"), n=p.samples_per_pair,
                        timesteps=timesteps(ctx), guidance=p.guidance)
        items = []
        for i, x in enumerate(images, start=1):
            items.append({**item(ctx, x, f"sample {i}, close up", f"hybrid sample {i} seen large"),
                          "width": p.display_px["large"]})
            items.append({**item(ctx, x, f"sample {i}, from afar", f"hybrid sample {i} seen small"),
                          "width": p.display_px["small"]})
        ctx.save_gallery(f"a1_9_hybrid{k}", [{"caption": f"low frequencies: “{low}”; high frequencies: “{high}”",
                                              "items": items}],
                         caption=f"Hybrid image {k}: the noise estimate is the Gaussian low-pass (kernel {kernel}, "
                                 f"σ = {sigma:g}) of the CFG estimate for “{low}” plus the high-pass of the one for "
                                 f"“{high}” (γ = {p.guidance}); seen small, the low frequencies dominate. "
                                 f"{p.samples_per_pair} samples, none picked; {backend_label(ctx)}.",
                         alt=f"Hybrid images shown large (meant to read as {high}) and small (meant to read as {low}).",
                         meta=provenance(ctx, prompts=[low, high], kernel=kernel, sigma=sigma, guidance=p.guidance,
                                         display="hybrid"))
