"""Part A 1.1-1.3: the forward process, classical (Gaussian blur) denoising, and one-step
denoising with the pretrained network, all on the same noisy images."""
import torch

from diffusion.blur import best_blur
from diffusion.sampling import forward, one_step_denoise
from generators._parta import (QUALITY_COLUMNS, QUALITY_METHOD, backend_label, denoiser, input_image, item, null_prompt,
                               part_a, provenance, quality_cells, scaled_t)

SECTION = part_a(
    id="a1_denoising",
    title="Part A 1.1-1.3: forward process, blur and one-step denoising",
    params={"timesteps": [250, 500, 750], "blur_sigmas": [0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]},
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    test = input_image(ctx, "test")
    cond = den.encode(null_prompt(ctx))
    gen = ctx.generator("forward")
    who = backend_label(ctx)
    ts = [scaled_t(ctx, t) for t in p.timesteps]
    T = den.num_train_timesteps

    noisy = [forward(test.image, t, den.alphas_cumprod, gen)[0] for t in ts]
    ctx.save_gallery("a1_forward", [{"caption": f"{test.description}, noised to t = {', '.join(map(str, ts))} of T = {T}",
                                     "items": [item(ctx, test.image, "original")] +
                                              [item(ctx, x, f"t = {t}", f"noisy image at t = {t}") for x, t in zip(noisy, ts)]}],
                     caption=f"The forward process x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε on {test.description}, at "
                             f"t = {', '.join(map(str, ts))} (the course's 250, 500, 750 on {who}'s T = {T}).",
                     alt="The test image and three increasingly noisy versions of it.",
                     meta=provenance(ctx, timesteps=ts))

    blur_items, one_rows, table = [], [], []
    for x, t in zip(noisy, ts):
        err, s, k, blurred = best_blur(x, test.image, p.blur_sigmas)
        blur_items.append(item(ctx, blurred, f"t = {t}: σ = {s}", f"Gaussian blur (kernel {k}, σ = {s}) of the t = {t} image"))
        estimate = one_step_denoise(den, x, t, cond)
        table += [[t, "noisy input"] + quality_cells(ctx, x, test.image),
                  [t, f"Gaussian blur, σ = {s}"] + quality_cells(ctx, blurred, test.image),
                  [t, "one-step denoising"] + quality_cells(ctx, estimate, test.image)]
        one_rows.append({"caption": f"t = {t}",
                         "items": [item(ctx, test.image, "original"), item(ctx, x, f"noisy, t = {t}"),
                                   item(ctx, estimate, "one-step estimate", f"one-step denoised estimate at t = {t}")]})
    ctx.save_gallery("a1_blur", [{"caption": "best Gaussian blur per noise level (lowest MSE to the original)",
                                  "items": blur_items}],
                     caption=f"Classical denoising: for each noisy image the Gaussian blur (σ searched over "
                             f"{p.blur_sigmas}, kernel 2·round(3σ) + 1) that comes closest to the original.",
                     alt="Three blurred versions of the noisy images: smoother, but still noisy and soft.",
                     meta=provenance(ctx, timesteps=ts, sigmas=p.blur_sigmas))
    ctx.save_gallery("a1_one_step", one_rows,
                     caption=f"One-step denoising with {who}: x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t, the noise "
                             f"estimated with the prompt “{null_prompt(ctx)}” and no guidance.",
                     alt="For each noise level: the original, the noisy image and the network's one-step estimate.",
                     meta=provenance(ctx, timesteps=ts, prompt=null_prompt(ctx)))
    ctx.save_table("a1_quality", ["t", "image"] + QUALITY_COLUMNS, table,
                   caption=f"How close each estimate of {test.description} is to the original: {QUALITY_METHOD}. "
                           f"The blur is the one chosen above (lowest MSE); the one-step estimate uses {who}.",
                   meta=provenance(ctx, timesteps=ts))
