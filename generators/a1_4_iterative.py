"""Part A 1.4: iterative denoising along the strided schedule, against one step and a blur."""
import torch

from diffusion.blur import best_blur
from diffusion.sampling import forward, iterative_denoise, one_step_denoise
from generators._parta import (QUALITY_COLUMNS, QUALITY_METHOD, STRIDED, STRIDED_SMOKE, backend_label, denoiser,
                               input_image, item, null_prompt, part_a, provenance, quality_cells, timesteps)

SECTION = part_a(
    id="a1_4_iterative",
    title="Part A 1.4: iterative denoising",
    # quality_i_starts: where the three methods are compared (t = 750, 690, 510 and 240 on T = 1000).
    params={**STRIDED, "i_start": 10, "every": 5, "blur_sigmas": [0.5, 1.0, 1.5, 2.0, 3.0],
            "quality_i_starts": [8, 10, 16, 25]},
    smoke={**STRIDED_SMOKE, "i_start": 2, "every": 1, "quality_i_starts": [1, 2]},
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    den = denoiser(ctx)
    ts = timesteps(ctx)
    test = input_image(ctx, "test")
    cond = den.encode(null_prompt(ctx))
    t0 = ts[p.i_start]
    x_t, _ = forward(test.image, t0, den.alphas_cumprod, ctx.generator("forward"))
    final, states = iterative_denoise(den, x_t, ts, p.i_start, cond, ctx.generator("loop"), every=p.every)
    ctx.save_gallery("a1_4_trajectory", [{
        "caption": f"x_t entering every {p.every}th step, then the final image",
        "items": [item(ctx, x, f"t = {t}", f"partly denoised image at t = {t}") for t, x in states] +
                 [item(ctx, final, "t = 0 (final)", "the fully denoised image")]}],
        caption=f"Iterative denoising of {test.description} noised to t = {t0} (i_start = {p.i_start} of the "
                f"strided schedule {ts[0]}, {ts[1]}, …, 0; stride {ts[0] - ts[1]} on T = {den.num_train_timesteps}), "
                f"with {backend_label(ctx)}, prompt “{null_prompt(ctx)}”, no guidance.",
        alt="A row of images going from noisy to clean as the loop proceeds.",
        meta=provenance(ctx, i_start=p.i_start, t_start=t0, timesteps=ts, every=p.every))
    one = one_step_denoise(den, x_t, t0, cond)
    _, s, k, blurred = best_blur(x_t, test.image, p.blur_sigmas)
    ctx.save_gallery("a1_4_comparison", [{
        "caption": f"all three start from the same x_t at t = {t0}",
        "items": [item(ctx, test.image, "original"), item(ctx, x_t, f"noisy, t = {t0}"),
                  item(ctx, final, "iterative"), item(ctx, one, "one step"),
                  item(ctx, blurred, f"Gaussian blur σ = {s}", f"Gaussian blur with kernel {k}, σ = {s}")]}],
        caption=f"Iteratively denoised (the final image above) against a single denoising step from the same "
                f"t = {t0}, and against the best Gaussian blur.",
        alt="The original, the noisy input, and three denoised versions side by side.",
        meta=provenance(ctx, t_start=t0, blur_sigma=s))

    # The comparison again from several starting points; i_start's row reuses the images above.
    table = []
    for i in p.quality_i_starts:
        t = ts[i]
        if i == p.i_start:
            noisy, iterated, single, sigma, smooth = x_t, final, one, s, blurred
        else:
            noisy, _ = forward(test.image, t, den.alphas_cumprod, ctx.generator(f"quality-{i}"))
            iterated = iterative_denoise(den, noisy, ts, i, cond, ctx.generator(f"quality-loop-{i}"))
            single = one_step_denoise(den, noisy, t, cond)
            _, sigma, _, smooth = best_blur(noisy, test.image, p.blur_sigmas)
        table += [[t, i, "noisy input"] + quality_cells(ctx, noisy, test.image),
                  [t, i, f"Gaussian blur, σ = {sigma}"] + quality_cells(ctx, smooth, test.image),
                  [t, i, "one step"] + quality_cells(ctx, single, test.image),
                  [t, i, "iterative"] + quality_cells(ctx, iterated, test.image)]
    ctx.save_table("a1_4_quality", ["t", "i_start", "image"] + QUALITY_COLUMNS, table,
                   caption=f"Blur, one step and the iterative loop from several starting points (i_start = "
                           f"{p.i_start} is the comparison above): {QUALITY_METHOD}.",
                   meta=provenance(ctx, i_starts=p.quality_i_starts))
