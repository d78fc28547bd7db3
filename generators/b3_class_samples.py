"""Part B 2.5: sampling from the class-conditioned DDPM with classifier-free guidance (Algorithm 4),
and an independent classifier's verdict on whether each sample is the digit that was asked for."""
import torch

from builder.section import Section
from diffusion.classifier import predict
from diffusion.ddpm import kept_timesteps, sample_class
from generators._partb import GPU_SHARE, autocast_dtype, trained_ddpm
from generators._partb_figures import ddpm_loss_plot, digits_row, hyperparameter_table, trajectory_gif

SECTION = Section(
    id="b3_class_samples",
    title="Part B 2.5: sampling from the class-conditioned DDPM",
    params={"per_digit": 4, "guidance": 5.0, "keep_every": 10, "fps": 12,
            "sweep_guidances": [0.0, 1.0, 3.0, 5.0, 10.0], "sweep_per_digit": 10, "eval_per_digit": 30},
    # The sweep is the dearest part on a CPU (two network passes per image per step).
    profiles={"cpu": {"sweep_per_digit": 4, "eval_per_digit": 20},
              "smoke": {"per_digit": 1, "keep_every": 100, "sweep_guidances": [0.0, 5.0], "sweep_per_digit": 1,
                        "eval_per_digit": 2}},
    depends=("b3_train_class", "b0_classifier"),
    needs=GPU_SHARE,
)


def run(ctx):
    p = ctx.params
    up, tp, history, schedule = trained_ddpm(ctx, "b3_train_class")
    ddpm_loss_plot(ctx, "b3_loss", "Class-conditioned DDPM",
                   f"class-conditioned UNet (Algorithm 3, p_uncond = {tp['p_uncond']})", history)
    dtype = autocast_dtype(ctx)

    model_at = up.model

    # Digits run along the columns and each row holds one sample of every digit.
    labels = torch.arange(10).repeat(p.per_digit)
    for epoch in history["snapshot_epochs"]:
        samples = sample_class(model_at(f"epoch{epoch}"), labels, schedule, ctx.generator("samples"),
                               guidance=p.guidance, keep_every=p.keep_every, autocast_dtype=dtype)
        ctx.save_grid(f"b3_samples_epoch{epoch}", samples.images.float().cpu().clamp(0, 1), ncol=10,
                      caption=f"Class-conditioned samples after epoch {epoch} of {tp['epochs']}: {p.per_digit} of "
                              f"each digit 0-9 (columns), classifier-free guidance γ = {p.guidance}.",
                      alt=f"A grid of generated digits 0 to 9 in columns after epoch {epoch}.",
                      meta={"epoch": epoch, "guidance": p.guidance})
        trajectory_gif(ctx, f"b3_gif_epoch{epoch}", samples.trajectory, kept_timesteps(tp["T"], p.keep_every), 10,
                       p.fps, caption=f"Sampling digits 0-9 after epoch {epoch} (γ = {p.guidance}): x_t every "
                                      f"{p.keep_every} steps from t = {tp['T']} to t = 0.",
                       meta={"epoch": epoch, "guidance": p.guidance})

    judge = ctx.upstream("b0_classifier").model("final").cpu()
    judge_accuracy = ctx.upstream("b0_classifier").json("test_accuracy")
    final = model_at("final")
    rows, table, curves = [], [], []
    for gamma in p.sweep_guidances:
        per_digit = p.eval_per_digit if gamma == p.guidance else p.sweep_per_digit
        want = torch.arange(10).repeat_interleave(per_digit)
        images = sample_class(final, want, schedule, ctx.generator(f"sweep-{gamma}"), guidance=gamma,
                              keep_every=0, autocast_dtype=dtype).images.float().cpu()
        got = predict(judge, images)
        correct = (got == want).float()
        acc = correct.mean().item()
        per = [correct[want == d].mean().item() for d in range(10)]
        first = images[::per_digit]
        rows.append(digits_row(first, [str(d) for d in range(10)],
                               f"γ = {gamma:g}: classifier agrees on {acc:.0%} of {len(want)} samples", f"γ = {gamma:g}, digit"))
        table.append([f"{gamma:g}", len(want), f"{acc:.1%}"] + [f"{a:.0%}" for a in per])
        curves.append((gamma, acc, per, len(want)))
    ctx.save_gallery("b3_guidance", rows,
                     caption=f"The effect of the guidance scale γ on the final model: one sample of each digit per "
                             f"γ (same noise seed per row), and how often an independent MNIST classifier "
                             f"(test accuracy {judge_accuracy:.1%}) reads the requested digit.",
                     alt="Rows of generated digits 0 to 9, one row per guidance scale.",
                     meta={"guidances": p.sweep_guidances})
    ctx.save_table("b3_accuracy", ["γ", "samples", "recognised"] + [f"digit {d}" for d in range(10)], table,
                   caption=f"Share of class-conditioned samples that the independent classifier (test accuracy "
                           f"{judge_accuracy:.1%}) recognises as the requested digit, per guidance scale γ.")
    accuracy_plot(ctx, curves, judge_accuracy)
    ctx.save_json("accuracy", {row[0]: row[2] for row in table})
    hyperparameter_table(ctx, "b3_hparams", "b3_train_class", "class-conditioned UNet",
                         extra={"diffusion steps T": tp["T"], "β schedule": f"linear, {tp['beta1']} to {tp['beta2']}",
                                "p_uncond (class dropped to the zero vector)": tp["p_uncond"],
                                "guidance scale γ for samples": p.guidance})


def accuracy_plot(ctx, curves, judge_accuracy):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gammas = [c[0] for c in curves]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for d in range(10):
        ax.plot(gammas, [c[2][d] for c in curves], color="#9db7d6", linewidth=0.8,
                label="one digit" if d == 0 else None)
    ax.plot(gammas, [c[1] for c in curves], marker="o", color="#0b5cad", linewidth=2, label="all digits")
    ax.axhline(0.1, color="#777777", linestyle="--", linewidth=1, label="chance (10%)")
    ax.set_xticks(gammas)
    ax.set_xlabel("guidance scale γ")
    ax.set_ylabel("recognised as the requested digit")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.set_ylim(0, 1.04)
    ax.legend(frameon=False, loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    sizes = ", ".join(f"{c[3]} at γ = {c[0]:g}" for c in curves)
    ctx.save_plot("b3_accuracy_plot", fig,
                  caption=f"Classifier-free guidance against class accuracy: the share of samples that the "
                          f"independent classifier (test accuracy {judge_accuracy:.1%}) reads as the requested digit, "
                          f"for all digits (bold) and each digit alone (thin); samples: {sizes}.",
                  alt=f"Accuracy rises from {curves[0][1]:.0%} at γ = {gammas[0]:g} to {curves[-1][1]:.0%} at "
                      f"γ = {gammas[-1]:g}.")
