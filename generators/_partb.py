"""Shared pieces of the Part B generators: training through the engine, loss plots, tables."""
from __future__ import annotations

import math

import numpy as np
import torch

from builder import BuildError
from diffusion import data
from diffusion.training import History, TrainingDiverged, fit

# The names a training section's parameters use, in the order the hyperparameter tables show them.
TRAINING_KEYS = ("num_hiddens", "batch_size", "epochs", "epoch_fraction", "lr", "lr_decay")


def autocast_dtype(ctx):
    """The build's dtype as an autocast dtype; float32 means no autocast."""
    return None if ctx.dtype == "float32" else getattr(torch, ctx.dtype)


def mnist_train(ctx, fraction_key: str | None = None):
    x, labels = data.as_tensor(data.load("train"))
    limit = getattr(ctx.params, "train_images", None)
    if limit:  # the smoke profile trains on a slice so that tests take seconds
        x, labels = x[:limit], labels[:limit]
    return x, labels


def train(ctx, model, loss_fn, tensors, *, seed_name: str = "train") -> History:
    """Run ``fit`` with the section's parameters, resumable through the section's scratch folder.

    Saves the snapshot checkpoints (``epoch{N}`` and ``final``) and the training history
    (``history``) as artifacts for the results sections.
    """
    p = ctx.params
    snapshots = sorted(set(getattr(p, "snapshot_epochs", [p.epochs])) | {p.epochs})
    steps = math.ceil(round(len(tensors[0]) * p.epoch_fraction) / p.batch_size) * p.epochs
    bar = ctx.progress(steps, "training")
    try:
        history = fit(model, loss_fn, tensors, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                      lr_decay=p.lr_decay, seed=ctx.generator(seed_name).initial_seed(), device=ctx.device,
                      autocast_dtype=autocast_dtype(ctx), epoch_fraction=p.epoch_fraction,
                      snapshot_epochs=snapshots, checkpoint_dir=ctx.scratch, progress=bar.update)
    except TrainingDiverged as exc:
        raise BuildError(f"section {ctx.section_id}: {exc}. Lower the learning rate in its profile "
                         f"or use --dtype float32.") from None
    except ValueError as exc:
        raise BuildError(f"section {ctx.section_id} has invalid hyperparameters for profile "
                         f"{ctx.profile!r}: {exc}.") from None
    finally:
        bar.close()
    for epoch in snapshots:
        ctx.save_checkpoint(f"epoch{epoch}", history.snapshots[epoch])
    ctx.save_checkpoint("final", history.snapshots[p.epochs])
    ctx.save_json("history", {
        "losses": history.losses, "epoch_seconds": [round(s, 3) for s in history.epoch_seconds],
        "lrs": history.lrs, "steps_per_epoch": history.steps_per_epoch,
        "images_per_epoch": history.images_per_epoch, "snapshot_epochs": snapshots,
        "train_seconds": round(history.total_seconds, 1), "images_per_second": round(history.images_per_second, 1),
        "device": ctx.device, "dtype": ctx.dtype, "parameters": sum(t.numel() for t in model.parameters()),
    })
    return history


def load_model(upstream, cls, name: str, device: str, **kwargs):
    model = cls(**kwargs)
    model.load_state_dict(upstream.checkpoint(name, map_location="cpu"))
    return model.to(device).eval()


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
    for e in range(1, len(history["epoch_seconds"])):
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


def hyperparameter_table(ctx, fig_id: str, train_section: str, model_name: str, extra: dict | None = None):
    """The settings the model was actually trained with, and what the training cost."""
    record = ctx.upstream(train_section).entry.record
    params = record["components"]["params"]
    history = ctx.upstream(train_section).json("history")
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
             ("training wall time", f"{history['train_seconds']:.0f} s ({history['images_per_second']:.0f} images/s)"),
             ("profile", record["components"]["profile"])]
    ctx.save_table(fig_id, ["setting", "value"], rows,
                   caption=f"Hyperparameters of the {model_name} as trained for this build "
                           f"(profile {record['components']['profile']}), and what the training cost.")


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
