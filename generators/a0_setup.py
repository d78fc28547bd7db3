"""Part A 0: sampling the three course prompts with a few numbers of inference steps."""
from diffusion.sampling import sample
from generators._parta import BACKEND, GUIDANCE, backend_label, denoiser, item, leading_timesteps, part_a, provenance

SECTION = part_a(
    id="a0_setup",
    title="Part A 0: setup and first samples",
    params={"num_inference_steps": [20, 50, 100], **GUIDANCE},
    smoke={"num_inference_steps": [5, 10]},
)


def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    prompts = p.prompts
    cond = den.encode(prompts)
    stage2 = ctx.resource_identity(BACKEND).get("stage2")
    rows, upsampled = [], []
    for steps in p.num_inference_steps:
        ts = leading_timesteps(den.num_train_timesteps, steps)
        # One generator per row: each row starts from the same noise, so rows differ only in steps.
        images = sample(den, cond, ctx.generator("noise"), timesteps=ts, guidance=p.guidance)
        rows.append({"caption": f"num_inference_steps = {steps} (γ = {p.guidance})",
                     "items": [item(ctx, img, prompt, f"{prompt}, {steps} steps") for img, prompt in zip(images, prompts)]})
        if stage2:
            big = den.upsample(images, cond, ctx.generator(f"stage2-{steps}"), num_inference_steps=p.upsample_steps)
            upsampled.append({"caption": f"stage II, 256 x 256, from the {steps}-step row",
                              "items": [item(ctx, img, prompt) for img, prompt in zip(big, prompts)]})
    ctx.save_gallery("a0_samples", rows,
                     caption=f"The three prompts sampled by {backend_label(ctx)} with classifier-free guidance "
                             f"γ = {p.guidance} and {', '.join(map(str, p.num_inference_steps))} inference steps "
                             f"(diffusers' leading spacing); one starting noise per column, shared by the rows.",
                     alt="A grid of generated images, one column per prompt and one row per number of steps.",
                     meta=provenance(ctx, prompts=prompts, guidance=p.guidance, steps=p.num_inference_steps))
    if upsampled:
        ctx.save_gallery("a0_samples_stage2", upsampled,
                         caption=f"The same samples upsampled to 256 x 256 by DeepFloyd IF stage II "
                                 f"({stage2}, {p.upsample_steps} steps).",
                         alt="The samples above at four times the resolution.",
                         meta=provenance(ctx, stage2=stage2, steps=p.upsample_steps))
