"""Part B 2.3: sampling from the time-conditioned DDPM (Algorithm 2) at every snapshot epoch."""
from builder.section import Section
from diffusion.ddpm import kept_timesteps, sample_time
from generators._partb import GPU_SHARE, autocast_dtype, trained_ddpm
from generators._partb_figures import ddpm_loss_plot, hyperparameter_table, trajectory_gif

SECTION = Section(
    id="b2_time_samples",
    title="Part B 2.3: sampling from the time-conditioned DDPM",
    params={"num_samples": 40, "ncol": 10, "keep_every": 10, "fps": 12},
    profiles={"smoke": {"num_samples": 10, "ncol": 5, "keep_every": 100}},
    depends=("b2_train_time",),
    needs=GPU_SHARE,
)


def run(ctx):
    p = ctx.params
    up, tp, history, schedule = trained_ddpm(ctx, "b2_train_time")
    ddpm_loss_plot(ctx, "b2_loss", "Time-conditioned DDPM", f"time-conditioned UNet (Algorithm 1, T = {tp['T']})",
                   history)
    for epoch in history["snapshot_epochs"]:
        model = up.model(f"epoch{epoch}")
        # The same starting noise for every snapshot, so the grids differ only by the weights.
        samples = sample_time(model, p.num_samples, schedule, ctx.generator("samples"), keep_every=p.keep_every,
                              autocast_dtype=autocast_dtype(ctx))
        ctx.save_grid(f"b2_samples_epoch{epoch}", samples.images.float().cpu().clamp(0, 1), ncol=p.ncol,
                      caption=f"{p.num_samples} samples of the time-conditioned DDPM after epoch {epoch} of "
                              f"{tp['epochs']} ({tp['T']} denoising steps from pure noise).",
                      alt=f"A grid of {p.num_samples} generated handwritten digits after epoch {epoch}.",
                      meta={"epoch": epoch})
        trajectory_gif(ctx, f"b2_gif_epoch{epoch}", samples.trajectory, kept_timesteps(tp["T"], p.keep_every),
                       p.ncol, p.fps,
                       caption=f"The sampling process after epoch {epoch}: x_t every {p.keep_every} steps from "
                               f"t = {tp['T']} (pure noise) to t = 0.",
                       meta={"epoch": epoch})
    hyperparameter_table(ctx, "b2_hparams", "b2_train_time", "time-conditioned UNet",
                         extra={"diffusion steps T": tp["T"], "β schedule": f"linear, {tp['beta1']} to {tp['beta2']}"})
