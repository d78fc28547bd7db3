"""Training through the engine, shared by the Part B training sections (figures live in _partb_figures)."""
from __future__ import annotations

import math

import torch

from builder import BuildError
from builder.section import Needs, Section
from diffusion import data
from diffusion.ddpm import Schedule, linear_schedule
from diffusion.training import History, TrainingDiverged, fit, validate

# What a Part B section that computes on the GPU holds of it in a parallel build (--jobs, the default on
# CUDA): half the card and 4 GB. On the H200 (ec4297a) each such section peaked at 2.1 GB or less, and the
# graphed training step ran at 8% of the card's bf16 peak, so two of them share a GPU without waiting on
# each other's kernels. Scheduling only: it changes no result.
GPU_SHARE = Needs(gpu=0.5, gpu_memory_gb=4)

# The training both DDPMs of Part B share (2.2 and 2.4); each section adds its own model's parameters.
DDPM_TRAINING = {"T": 300, "beta1": 1e-4, "beta2": 0.02, "num_hiddens": 64, "batch_size": 128, "epochs": 20,
                 "epoch_fraction": 1.0, "lr": 1e-3, "lr_decay": True, "snapshot_epochs": [1, 5, 10, 15, 20]}
DDPM_TRAINING_PROFILES = {
    # D = 32 (4x fewer FLOPs than 64) and each epoch a fresh random 15% of MNIST, so the 20 epochs,
    # the learning-rate decay and the 1/5/10/15/20 snapshots keep their meaning: about 5 min a model
    # here, and the class-conditioned one's samples still show the requested digit nearly always.
    "cpu": {"num_hiddens": 32, "batch_size": 64, "epoch_fraction": 0.15},
    "smoke": {"num_hiddens": 8, "batch_size": 64, "epochs": 2, "train_images": 512, "snapshot_epochs": [1, 2]},
}


def schedule_of(params) -> dict:
    """The noise schedule's settings among a training section's parameters (its own ``ctx.params``, or an
    upstream's ``params`` dict), as ``linear_schedule`` takes them."""
    read = params.__getitem__ if isinstance(params, dict) else lambda name: getattr(params, name)
    return {"T": read("T"), "beta1": read("beta1"), "beta2": read("beta2")}


def ddpm_training(id: str, title: str, **own) -> Section:
    """A DDPM training section (2.2, 2.4): the shared training parameters, plus the model's own."""
    return Section(id=id, title=title, params={**DDPM_TRAINING, **own}, profiles=DDPM_TRAINING_PROFILES,
                   inputs=("mnist",), needs=GPU_SHARE)


def ddpm_schedule(ctx) -> Schedule:
    """A training section's noise schedule, placed on its device once, before the training loop."""
    return linear_schedule(**schedule_of(ctx.params)).to(ctx.device)


def trained_ddpm(ctx, section_id: str) -> tuple[object, dict, dict, Schedule]:
    """A trained DDPM section as its samplers read it: the upstream, its parameters, its training history
    and its noise schedule (on the CPU)."""
    up = ctx.upstream(section_id)
    return up, up.params, up.json("history"), linear_schedule(**schedule_of(up.params))


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
