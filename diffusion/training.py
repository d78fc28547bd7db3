"""A small, fast, resumable trainer.

The whole data set lives on the device as one tensor and is indexed by a seeded permutation each
epoch (no DataLoader: on MNIST the per-item Python work, not the model, is what costs). Batches
are channels_last and the forward runs under bf16 autocast when asked, which is what makes CPU
training practical.

Resuming is exact: after every epoch a checkpoint with the model, optimizer, LR scheduler and
every random generator is written atomically, and a later call with the same `checkpoint_dir`
continues from it to bitwise the same weights and losses as an uninterrupted run.

On CUDA the optimizer step is fused Adam with its state and learning rate on the GPU, and every
full batch replays the whole step (forward, backward, Adam, the noise draws) as one CUDA graph
(see `GraphStep`); elsewhere, and whenever a graph cannot be had, the same step runs eagerly.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import cuda_graphs, rng

CHECKPOINT = "resume.pt"
NAN_CHECK_EVERY = 50  # steps between host syncs that look for a non-finite loss


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    epoch_seconds: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)  # the learning rate each epoch ran with
    steps_per_epoch: int = 0
    images_per_epoch: int = 0
    snapshots: dict[int, dict] = field(default_factory=dict)  # epoch -> CPU state_dict
    step: str = "eager"  # how the last call ran its steps: "eager" or "cuda-graph"
    step_note: str = ""  # why a graph was not used, or how its first step compared with eager

    @property
    def total_seconds(self) -> float:
        return sum(self.epoch_seconds)

    @property
    def images_per_second(self) -> float:
        return self.images_per_epoch * len(self.epoch_seconds) / max(self.total_seconds, 1e-9)


def _check(name, ok, value, what):
    if not ok:
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _positive_int(name, v):
    _check(name, isinstance(v, int) and not isinstance(v, bool) and v > 0, v, "a positive integer")


def resolve_dtype(dtype):
    """None, a torch.dtype, or its name ("bfloat16", "float16")."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    _check("autocast_dtype", isinstance(resolved, torch.dtype), dtype, "None, 'bfloat16' or 'float16'")
    return resolved


def validate(*, epochs, batch_size, lr, lr_decay, epoch_fraction, autocast_dtype, snapshot_epochs, data):
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    _check("lr", isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0,
           lr, "a finite number > 0")
    _check("lr_decay", isinstance(lr_decay, bool) or (isinstance(lr_decay, float) and 0 < lr_decay <= 1),
           lr_decay, "True (gamma = 0.1 ** (1 / epochs)), False, or a gamma in (0, 1]")
    _check("epoch_fraction", isinstance(epoch_fraction, (int, float)) and 0 < epoch_fraction <= 1,
           epoch_fraction, "a number in (0, 1]")
    if autocast_dtype not in (None, torch.bfloat16, torch.float16):
        raise ValueError(f"autocast_dtype must be None, bfloat16 or float16, got {autocast_dtype!r}")
    bad = [e for e in snapshot_epochs if not (isinstance(e, int) and 1 <= e <= epochs)]
    _check("snapshot_epochs", not bad, list(snapshot_epochs), f"epoch numbers in 1..{epochs}")
    _check("data", len(data) > 0 and all(isinstance(d, torch.Tensor) for d in data), data,
           "a non-empty tuple of tensors")
    n = data[0].shape[0]
    _check("data", n > 0 and all(d.shape[0] == n for d in data), [tuple(d.shape) for d in data],
           "tensors with the same, non-zero first dimension")


def _rng_state(shuffle_gen, noise_gen):
    state = {"shuffle": shuffle_gen.get_state(), "noise": noise_gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state, shuffle_gen, noise_gen):
    shuffle_gen.set_state(state["shuffle"])
    noise_gen.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj, path: Path):
    # Hidden and ending in .tmp, the cache's convention for temporary files, which it sweeps after a crash.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # a full disk must not be left fuller by the failed write
        for e in (exc, exc.__context__, exc.__cause__):  # torch wraps the OSError of a failed write
            if isinstance(e, OSError) and e.filename is None:
                e.filename = str(path)  # write, flush and fsync name no file; say which one it was
        raise


def _cpu_state(model):
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# one optimizer step


def make_optimizer(model, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam; on CUDA fused, with its state and learning rate on the GPU, so a CUDA graph can hold
    the whole step (the LR scheduler then updates the learning rate tensor in place)."""
    if device.type == "cuda":
        return torch.optim.Adam(model.parameters(), lr=torch.tensor(float(lr), device=device), fused=True,
                                capturable=True)
    return torch.optim.Adam(model.parameters(), lr=lr)


class EagerStep:
    """One optimizer step as written: the loss under autocast, backward, Adam."""

    def __init__(self, model, optimizer, loss_fn, generator, autocast):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.generator, self.autocast = generator, autocast

    def __call__(self, batch, *, keep_grads: bool = False) -> torch.Tensor:
        with self.autocast:
            loss = self.loss_fn(self.model, *batch, generator=self.generator)
        # keep_grads zeroes the gradient tensors in place rather than dropping them, for steps
        # that run between replays of a graph that writes into those very tensors.
        self.optimizer.zero_grad(set_to_none=not keep_grads)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class GraphStep:
    """The eager step recorded once as a CUDA graph and replayed for every full batch.

    The first full batch captures the graph (the capture's warm-up steps are undone), runs the
    eager step on it, rewinds, and replays the graph on the same batch: the replay is kept only if
    it agrees with the eager step, and that replay is the batch's real step. Any failure on the way
    rewinds and leaves the eager step in charge, with one warning. A batch of another size (the
    last one of an epoch) runs eagerly on the graph's own gradient tensors.
    """

    def __init__(self, eager: EagerStep, capture=None):
        self.eager = eager
        self._capture = capture or cuda_graphs.capture
        self._replay = None
        self._inputs: list[torch.Tensor] = []
        self._loss: list[torch.Tensor] = []
        self.failed = False
        self.note = ""

    @property
    def active(self) -> bool:
        return self._replay is not None

    def __call__(self, batch) -> torch.Tensor:
        if self._replay is None and not self.failed:
            return self._first(batch)
        if self._replay is not None and [b.shape for b in batch] == [b.shape for b in self._inputs]:
            for buffer, b in zip(self._inputs, batch):
                buffer.copy_(b)
            self._replay()
            return self._loss[0]
        return self.eager(batch, keep_grads=self._replay is not None)

    def _first(self, batch) -> torch.Tensor:
        state = TrainState(self.eager)
        before = state.save()
        self._inputs = [b.clone() for b in batch]

        def body():
            self._loss[:] = [self.eager(self._inputs)]

        try:
            replay = self._capture(body, generators=[self.eager.generator])
            state.restore(before)  # the warm-up steps trained on this batch; undo them
            expected_loss = self.eager(batch, keep_grads=True)
            expected = state.params()
            state.restore(before)
            replay()
            self.note = _agreement(expected_loss, expected, self._loss[0], state.params(), before["params"])
        except Exception as exc:  # noqa: BLE001 - a graph is an optimisation; never lose a build to it
            state.restore(before)
            self.eager.optimizer.zero_grad(set_to_none=True)  # drop gradients a failed capture may own
            self.failed = True
            self.note = cuda_graphs.warn_fallback("training step", exc)
            return self.eager(batch)
        self._replay = replay
        return self._loss[0]


def _agreement(loss_e, params_e, loss_g, params_g, params_0) -> str:
    """Raise unless the graph's step matches the eager one; else describe how closely it did."""
    if not bool(torch.isfinite(loss_g)) or not torch.allclose(loss_g.float(), loss_e.float(), rtol=1e-3, atol=1e-6):
        raise RuntimeError(f"its first step's loss {loss_g.item():.6g} differs from the eager step's {loss_e.item():.6g}")
    update_e = torch.cat([(e - p0).flatten().float() for e, p0 in zip(params_e, params_0)])
    update_g = torch.cat([(g - p0).flatten().float() for g, p0 in zip(params_g, params_0)])
    rel = ((update_g - update_e).norm() / update_e.norm().clamp_min(1e-30)).item()
    if not rel <= 0.05:
        raise RuntimeError(f"its first step's weight update differs from the eager step's by {rel:.1%} (relative L2)")
    return "bitwise equal to the eager step" if rel == 0 else f"first step within {rel:.2e} (relative L2) of eager"


class TrainState:
    """A copy of what a step changes (weights, BatchNorm statistics, Adam's state, the noise
    generator), restored in place: a captured graph keeps pointing at the same tensors."""

    def __init__(self, step: EagerStep):
        self.step = step

    def params(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.step.model.parameters()]

    def save(self) -> dict:
        optimizer = self.step.optimizer
        return {
            "model": {k: v.clone() for k, v in self.step.model.state_dict().items()},
            "params": self.params(),
            "optimizer": {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
                          for p, s in optimizer.state.items()},
            "generator": self.step.generator.get_state(),
        }

    def restore(self, saved: dict) -> None:
        with torch.no_grad():
            for k, v in self.step.model.state_dict().items():
                v.copy_(saved["model"][k])
            for p, s in self.step.optimizer.state.items():
                old = saved["optimizer"].get(p)
                for k, v in s.items():
                    if torch.is_tensor(v):
                        # State created after the save is Adam's fresh state: zeros.
                        v.copy_(old[k]) if old is not None else v.zero_()
        self.step.generator.set_state(saved["generator"])


# ---------------------------------------------------------------------------------------------
# the loop


def fit(model, loss_fn: Callable, data, *, epochs: int, batch_size: int, lr: float, lr_decay=False,
        seed: int = 0, device="cpu", autocast_dtype=None, channels_last: bool = True,
        epoch_fraction: float = 1.0, snapshot_epochs=(), checkpoint_dir=None,
        progress: Callable | None = None, graph=None) -> History:
    """Train `model` with Adam on `data`, a tuple of tensors sharing their first dimension.

    loss_fn(model, *batch, generator) -> scalar loss; `generator` is the trainer's seeded
    generator on `device`, the only source of the loss's randomness (noise, timesteps, dropped
    labels). Each epoch visits a fresh random `epoch_fraction` of the data in batches of
    `batch_size` (the last one may be smaller). lr_decay=True is the assignment's
    ExponentialLR(gamma = 0.1 ** (1 / epochs)) stepped after every epoch; a float is the gamma.

    `snapshot_epochs` keeps CPU copies of the weights after those epochs in History.snapshots
    (also kept in the checkpoint, so a resumed run still has them). progress(1) runs after every
    optimizer step (and only for steps trained in this call).

    `graph`: None replays the step as a CUDA graph on CUDA and runs it eagerly elsewhere; False
    always runs eagerly; a callable is used in place of `cuda_graphs.capture` (tests).
    """
    autocast_dtype = resolve_dtype(autocast_dtype)
    if isinstance(lr_decay, int) and not isinstance(lr_decay, bool):
        lr_decay = float(lr_decay)
    data = tuple(data)
    validate(epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay, epoch_fraction=epoch_fraction,
             autocast_dtype=autocast_dtype, snapshot_epochs=snapshot_epochs, data=data)
    device = torch.device(device)
    data = _place(model, data, device, channels_last)
    optimizer = make_optimizer(model, lr, device)
    gamma, scheduler = _lr_schedule(optimizer, lr_decay, epochs)
    shuffle_gen = rng.generator(seed)  # on the CPU: the same epoch order on every device
    noise_gen = rng.generator(seed + 1, device)

    n = data[0].shape[0]
    per_epoch = max(1, round(n * epoch_fraction))
    history = History(steps_per_epoch=math.ceil(per_epoch / batch_size), images_per_epoch=per_epoch)
    config = dict(epochs=epochs, batch_size=batch_size, lr=lr, gamma=gamma, seed=seed, n=n,
                  epoch_fraction=epoch_fraction, autocast=str(autocast_dtype), channels_last=channels_last,
                  snapshot_epochs=sorted(snapshot_epochs))

    start, ckpt_path = 0, _checkpoint_path(checkpoint_dir)
    if ckpt_path is not None and ckpt_path.exists():
        start, history = _resume(ckpt_path, config, model, optimizer, scheduler, shuffle_gen, noise_gen)

    step = _make_step(model, optimizer, loss_fn, noise_gen, autocast_dtype, graph, can_graph=per_epoch >= batch_size)
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        history.lrs.append(float(optimizer.param_groups[0]["lr"]))
        order = rng.randperm(n, shuffle_gen)[:per_epoch].to(device)
        losses = _train_epoch(step, data, order, batch_size, history.steps_per_epoch, epoch, progress)
        if scheduler is not None:
            scheduler.step()
        history.losses.extend(losses.tolist())
        history.epoch_seconds.append(time.perf_counter() - t0)
        if epoch in snapshot_epochs:
            history.snapshots[epoch] = _cpu_state(model)
        if isinstance(step, GraphStep):
            history.step, history.step_note = ("cuda-graph" if step.active else "eager"), step.note
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, config, epoch, model, optimizer, scheduler, (shuffle_gen, noise_gen), history)
    return history


def _checkpoint_path(checkpoint_dir) -> Path | None:
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save_checkpoint(path: Path, config: dict, epoch: int, model, optimizer, scheduler, gens, history) -> None:
    """Everything a resumed run needs after ``epoch``, written atomically (an interrupted write keeps the last)."""
    _save_atomic({"config": config, "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict() if scheduler is not None else None,
                  "rng": _rng_state(*gens), "history": vars(history)}, path)


def _lr_schedule(optimizer, lr_decay, epochs: int):
    """(gamma, scheduler): True is the assignment's ExponentialLR(0.1 ** (1 / epochs)), a float is the gamma,
    False or 0 no decay (None, None)."""
    gamma = (0.1 ** (1 / epochs) if lr_decay is True else lr_decay) or None
    return gamma, (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma) if gamma else None)


def _place(model, data: tuple, device: torch.device, channels_last: bool) -> tuple:
    """The model and the data on ``device`` once, before any step; images (4-D) in the memory format the
    step runs in. Returns the placed data."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def to_device(d):
        d = d.to(device)
        return d.contiguous(memory_format=memory_format) if d.ndim == 4 else d

    data = tuple(to_device(d) for d in data)
    model.to(device=device, memory_format=memory_format)
    return data


def step_autocast(device: torch.device, autocast_dtype):
    """The autocast a training step runs under (none when ``autocast_dtype`` is None). Its weight cache
    cannot live inside a CUDA graph, and it only saves casts, not results, so it is off on CUDA."""
    return torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None,
                          **({"cache_enabled": False} if device.type == "cuda" else {}))


def _make_step(model, optimizer, loss_fn, noise_gen, autocast_dtype, graph, can_graph: bool):
    """The optimizer step: eager, or replayed as a CUDA graph (on CUDA by default, or where ``graph`` asks for it,
    and only when every batch has the same shape)."""
    model.train()
    device = next(model.parameters()).device
    step = EagerStep(model, optimizer, loss_fn, noise_gen, step_autocast(device, autocast_dtype))
    if graph is not False and (graph is not None or device.type == "cuda") and can_graph:
        step = GraphStep(step, capture=graph if callable(graph) else None)
    return step


def _train_epoch(step, data, order, batch_size: int, steps: int, epoch: int, progress) -> torch.Tensor:
    """One epoch's optimizer steps over ``order`` (indices into ``data``); their losses, on the device.

    The losses stay on the device (a host read per step would stall the GPU); they are checked for
    divergence every NAN_CHECK_EVERY steps and at the end.
    """
    losses = torch.empty(steps, device=order.device)
    for i, lo in enumerate(range(0, len(order), batch_size)):
        idx = order[lo:lo + batch_size]
        losses[i] = step(tuple(d[idx] for d in data)).float()
        if (i + 1) % NAN_CHECK_EVERY == 0 or i + 1 == steps:
            _raise_if_diverged(losses[:i + 1], epoch)
        if progress is not None:
            progress(1)
    return losses


def _resume(ckpt_path: Path, config: dict, model, optimizer, scheduler, shuffle_gen, noise_gen) -> tuple[int, History]:
    """Load a checkpoint written by the same configuration: the model, the optimizer (its learning rate kept in
    the device tensor a CUDA graph reads), the scheduler and both generators. Returns (epochs done, history)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if ckpt["config"] != config:
        raise ValueError(f"checkpoint {ckpt_path} was written by a different training configuration "
                         f"({ckpt['config']}, now {config}); delete it or use another checkpoint_dir")
    model.load_state_dict(ckpt["model"])
    lr_tensors = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, lr_tensor in zip(optimizer.param_groups, lr_tensors):
        if torch.is_tensor(lr_tensor):  # keep the device tensor a CUDA graph will read
            lr_tensor.fill_(float(group["lr"]))
            group["lr"] = lr_tensor
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"], shuffle_gen, noise_gen)
    return ckpt["epoch"], History(**ckpt["history"])


def _raise_if_diverged(losses, epoch):
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        step = int((~finite).nonzero()[0]) + 1
        raise TrainingDiverged(f"training diverged: loss is {losses[step - 1].item()} at epoch {epoch}, "
                               f"step {step} of that epoch")
