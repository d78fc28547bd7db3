"""Part A 1.5 and 1.6: images from pure noise, without and with classifier-free guidance."""
import torch

from diffusion.sampling import sample
from generators._parta import (GUIDANCE, STRIDED, STRIDED_SMOKE, backend_label, denoiser, item, null_prompt, part_a,
                               provenance, timesteps)

SECTION = part_a(
    id="a1_5_sampling",
    title="Part A 1.5-1.6: sampling from pure noise, and classifier-free guidance",
    params={**STRIDED, **GUIDANCE, "num_samples": 5},
    smoke={**STRIDED_SMOKE, "num_samples": 2},
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    ts = timesteps(ctx)
    who = backend_label(ctx)
    prompt = null_prompt(ctx)
    plain = sample(den, den.encode(prompt), ctx.generator("plain"), n=p.num_samples, timesteps=ts, guidance=1.0)
    ctx.save_gallery("a1_5_samples", [{"caption": f"prompt “{prompt}”, no guidance",
                                       "items": [item(ctx, x, f"sample {i + 1}") for i, x in enumerate(plain)]}],
                     caption=f"{p.num_samples} images sampled from pure noise by {who} along the strided schedule "
                             f"({len(ts)} steps from t = {ts[0]}), conditioned on “{prompt}” without guidance.",
                     alt=f"{p.num_samples} generated images.", meta=provenance(ctx, prompt=prompt, timesteps=ts))
    prompts = p.cfg_prompts[: p.num_samples]
    guided = sample(den, den.encode(prompts), ctx.generator("cfg"), timesteps=ts, guidance=p.guidance)
    ctx.save_gallery("a1_6_cfg", [{"caption": f"γ = {p.guidance}, unconditional prompt “”",
                                   "items": [item(ctx, x, pr) for x, pr in zip(guided, prompts)]}],
                     caption=f"{len(prompts)} samples with classifier-free guidance γ = {p.guidance}: "
                             f"ε = ε_u + γ (ε_c − ε_u), prompts as labelled, the empty prompt as the unconditional "
                             f"one; {who}, {len(ts)} steps.",
                     alt=f"{len(prompts)} images generated with classifier-free guidance.",
                     meta=provenance(ctx, prompts=prompts, guidance=p.guidance, timesteps=ts))
