"""Part B 1.2.1-1.2.2: the single-step denoiser's loss, its outputs after the first and last
epoch, and how it copes with noise levels it was not trained on."""
import torch

from builder.section import Section
from diffusion import data
from diffusion.blur import best_blur
from diffusion.metrics import mean_quality
from diffusion.one_step import add_noise
from diffusion.rng import randperm
from generators._partb_figures import digits_row, hyperparameter_table, loss_plot
from generators._partb import GPU_SHARE

SECTION = Section(
    id="b1_denoiser",
    title="Part B 1.2.1-1.2.2: single-step denoising results",
    params={"num_digits": 8, "ood_sigmas": [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0], "ood_digits": 2,
            "quality_digits": 500, "blur_sigmas": [0.5, 0.75, 1.0, 1.5, 2.0]},
    profiles={"smoke": {"num_digits": 3, "ood_digits": 1, "quality_digits": 20}},
    depends=("b1_train_denoiser",),
    inputs=("mnist",),
    needs=GPU_SHARE,
)


@torch.no_grad()
def run(ctx):
    p = ctx.params
    up = ctx.upstream("b1_train_denoiser")
    train_params = up.params
    sigma = train_params["sigma"]
    history = up.json("history")
    loss_plot(ctx, "b1_loss", history, "Single-step denoiser (σ = 0.5)",
              caption=f"Training loss of the single-step denoiser at σ = {sigma}, one point per optimizer step "
                      f"({len(history['losses'])} steps over {train_params['epochs']} epochs; grey lines mark epochs).")

    x, labels = data.as_tensor(data.load("test"))
    pick = randperm(len(x), ctx.generator("pick"), device="cpu")[: p.num_digits]
    clean = x[pick]
    noisy = add_noise(clean, sigma, ctx.generator("noise"))
    names = [f"a {labels[i].item()}" for i in pick.tolist()]
    for epoch, fig_id, when in ((1, "b1_denoised_epoch1", "after epoch 1"),
                                (train_params["epochs"], "b1_denoised_final", f"after epoch {train_params['epochs']}")):
        model = up.model(f"epoch{epoch}")
        out = model(noisy.to(ctx.device)).float().cpu()
        ctx.save_gallery(fig_id, [
            digits_row(noisy, names, f"input: test digits with noise σ = {sigma}", "noisy"),
            digits_row(out, names, f"output of the denoiser {when}", "denoised"),
            digits_row(clean, names, "the clean digits", "clean"),
        ], caption=f"Single-step denoising of {p.num_digits} test digits {when} (σ = {sigma}): noisy input, "
                   f"the UNet's output, and the original.",
            alt=f"Three rows of digits: noisy, denoised {when}, clean.", meta={"epoch": epoch, "sigma": sigma})

    model = up.model("final")
    rows = []
    gen = ctx.generator("ood")
    for i in pick[: p.ood_digits].tolist():
        inputs = torch.stack([add_noise(x[i], s, gen) for s in p.ood_sigmas])
        outputs = model(inputs.to(ctx.device)).float().cpu()
        sig = [f"σ = {s}" for s in p.ood_sigmas]
        rows.append(digits_row(inputs, sig, f"test digit #{i}: noisy inputs", "noisy input at"))
        rows.append(digits_row(outputs, sig, f"test digit #{i}: denoised outputs", "denoised output at"))
    ctx.save_gallery("b1_ood", rows,
                     caption=f"Out-of-distribution noise levels: the denoiser trained at σ = {sigma} applied to "
                             f"inputs noised with σ in {p.ood_sigmas}.",
                     alt="Pairs of rows: increasingly noisy digits and the denoiser's outputs for them.",
                     meta={"sigmas": p.ood_sigmas})
    quality_table(ctx, model, x[: p.quality_digits], sigma)
    hyperparameter_table(ctx, "b1_hparams", "b1_train_denoiser", "single-step denoiser (unconditional UNet)",
                         extra={"noise level σ": sigma, "loss": "MSE between D(x + σε) and x"})


def quality_table(ctx, model, clean, trained_sigma):
    """Mean PSNR/SSIM over test digits at each noise level: the noisy input, the best Gaussian blur
    (σ_blur chosen per level by mean squared error), and the denoiser's output."""
    p = ctx.params
    gen = ctx.generator("quality")
    rows = []
    for s in p.ood_sigmas:
        noisy = add_noise(clean, s, gen)
        out = model(noisy.to(ctx.device)).float().cpu()
        _, b, _, blurred = best_blur(noisy, clean, p.blur_sigmas)
        cells = [_scores(noisy, clean), _scores(blurred, clean), _scores(out, clean)]
        rows.append([f"{s:g}" + (" (trained)" if s == trained_sigma else ""), *cells[0], f"{b:g}", *cells[1],
                     *cells[2]])
    ctx.save_table("b1_quality", ["σ", "noisy PSNR", "noisy SSIM", "blur σ", "blur PSNR", "blur SSIM",
                                  "UNet PSNR", "UNet SSIM"], rows,
                   caption=f"Mean PSNR (dB) and SSIM against the clean digit over the first {len(clean)} MNIST test "
                           f"digits (fresh noise per level), for the noisy input, the best Gaussian blur, and the "
                           f"denoiser trained at σ = {trained_sigma}. Images are clipped to [0, 1] before scoring.",
                   meta={"sigmas": p.ood_sigmas, "digits": len(clean)})


def _scores(images, clean):
    psnr, ssim = mean_quality(images, clean)
    return ["∞" if psnr == float("inf") else f"{psnr:.2f}", f"{ssim:.3f}"]
