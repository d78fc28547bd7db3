"""Figures shared by the Part B results sections: loss curves, hyperparameter tables, GIFs.

Kept apart from the training helpers so that changing how a figure looks never invalidates a
trained model's cache entry.
"""
from __future__ import annotations

import numpy as np
import torch


def loss_plot(ctx, fig_id: str, history: dict, title: str, caption: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(history["losses"])
    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(steps, losses, color="#9db7d6", linewidth=0.7, label="per step")
    ax.plot(steps[window - 1:], smooth, color="#0b5cad", linewidth=1.6, label=f"mean of {window} steps")
    for e in range(1, history["epochs"]):
        ax.axvline(e * history["steps_per_epoch"], color="#cccccc", linewidth=0.6, zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (MSE)")
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    fig.tight_layout()
    ctx.save_plot(fig_id, fig, caption=caption,
                  alt=f"{title}: the loss falls from {losses[:window].mean():.3g} to {smooth[-1]:.3g} "
                      f"over {len(losses)} steps on a log scale.")


def ddpm_loss_plot(ctx, fig_id: str, title: str, model: str, history: dict):
    """A trained DDPM's loss curve; ``model`` names the network and its algorithm for the caption."""
    loss_plot(ctx, fig_id, history, title, caption=f"Training loss of the {model}, one point per optimizer step over "
                                                   f"{history['epochs']} epochs.")


def hyperparameter_table(ctx, fig_id: str, train_section: str, model_name: str, extra: dict | None = None):
    """The settings the model was actually trained with, and what the training cost."""
    up = ctx.upstream(train_section)
    params, history = up.params, up.json("history")
    rows = [("model", model_name), ("hidden channels D", params["num_hiddens"]),
            ("trainable parameters", f"{history['parameters']:,}"),
            ("batch size", params["batch_size"]), ("epochs", params["epochs"]),
            ("images per epoch", f"{history['images_per_epoch']:,}"
             + (f" ({params['epoch_fraction']:.0%} of the training set)" if params["epoch_fraction"] < 1 else "")),
            ("optimizer", f"Adam, learning rate {params['lr']:g}"),
            ("learning-rate schedule", "ExponentialLR, gamma = 0.1^(1/epochs), stepped per epoch"
             if params["lr_decay"] is True else ("constant" if not params["lr_decay"] else f"ExponentialLR, gamma = {params['lr_decay']}")),
            ]
    rows += [(k, v) for k, v in (extra or {}).items()]
    rows += [("device, autocast dtype", f"{history['device']}, {history['dtype']}"),
             ("optimizer steps", f"{len(history['losses']):,} ({history['steps_per_epoch']:,} per epoch)"),
             ("profile", up.profile)]
    ctx.save_table(fig_id, ["setting", "value"], rows,
                   caption=f"Hyperparameters of the {model_name} as trained for this build "
                           f"(profile {up.profile}); how long the training took is in the appendix's benchmarks.")


def digits_row(images: torch.Tensor, labels: list[str], caption: str, alt_prefix: str):
    return {"caption": caption,
            "items": [{"image": img.clamp(0, 1), "label": lab, "alt": f"{alt_prefix} {lab}".strip()}
                      for img, lab in zip(images, labels)]}


def trajectory_gif(ctx, fig_id: str, trajectory: torch.Tensor, timesteps: list[int], ncol: int, fps: float,
                   caption: str, meta: dict | None = None):
    """An animation of x_t (clipped to [0, 1] for display), one grid of all samples per frame."""
    from builder.figures import grid_array

    frames = [grid_array(list(frame.float().clamp(0, 1)), ncol) for frame in trajectory]
    ctx.save_gif(fig_id, frames, caption=caption, fps=fps, meta=meta,
                 alt="An animation in which static noise gradually resolves into handwritten digits.",
                 frame_labels=[f"t = {t}" for t in timesteps])
