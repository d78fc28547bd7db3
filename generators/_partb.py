"""Training through the engine, shared by the Part B training sections (figures live in _partb_figures)."""
from __future__ import annotations

import math

import torch

from builder import BuildError
from diffusion import data
from diffusion.training import History, TrainingDiverged, fit, validate


def autocast_dtype(ctx):
    """The build's dtype as an autocast dtype; float32 means no autocast."""
    return None if ctx.dtype == "float32" else getattr(torch, ctx.dtype)


def mnist_train(ctx):
    x, labels = data.as_tensor(data.load("train"))
    limit = getattr(ctx.params, "train_images", None)
    if limit:  # the smoke profile trains on a slice so that tests take seconds
        x, labels = x[:limit], labels[:limit]
    return x, labels


def train(ctx, model, loss_fn, tensors, *, seed_name: str = "train", meta: dict | None = None) -> History:
    """Run ``fit`` with the section's parameters, resumable through the section's scratch folder.

    Saves the snapshot models (``epoch{N}`` and ``final``, each with ``meta``, e.g. the noise
    schedule) and the training history (``history``) as artifacts for the results sections.
    """
    p = ctx.params
    snapshots = sorted(set(getattr(p, "snapshot_epochs", [p.epochs])) | {p.epochs})
    try:
        validate(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, lr_decay=p.lr_decay,
                 epoch_fraction=p.epoch_fraction, autocast_dtype=autocast_dtype(ctx), snapshot_epochs=snapshots,
                 data=tuple(tensors))
    except ValueError as exc:
        raise BuildError(f"section {ctx.section_id} has invalid hyperparameters for profile "
                         f"{ctx.profile!r}: {exc}. Fix its Section profiles.") from None
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
    finally:
        bar.close()
    for epoch in snapshots:
        ctx.save_model(f"epoch{epoch}", model, history.snapshots[epoch], meta)
    ctx.save_model("final", model, history.snapshots[p.epochs], meta)
    # No timings here: this artifact feeds downstream cache keys and pages, which must be the same
    # bytes in every build; the section's run time is in its cache record and the benchmarks.
    ctx.save_json("history", {
        "losses": history.losses, "epochs": p.epochs, "lrs": history.lrs, "steps_per_epoch": history.steps_per_epoch,
        "images_per_epoch": history.images_per_epoch, "snapshot_epochs": snapshots,
        "device": ctx.device, "dtype": ctx.dtype, "parameters": sum(t.numel() for t in model.parameters()),
        "training_step": {"path": history.step, "note": history.step_note},
    })
    return history
