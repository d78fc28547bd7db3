import math

from pathlib import Path

import pytest
import torch

from diffusion import ddpm, training
from diffusion.training import TrainingDiverged, fit
from diffusion.unet import ClassConditionalUNet

SCHEDULE = ddpm.linear_schedule(50)
# fp32: bf16 autocast is emulated, and slow, on CPUs without bf16 instructions (one test below uses it).
SETTINGS = dict(epochs=2, batch_size=64, lr=1e-3, lr_decay=True, seed=3, autocast_dtype=None, snapshot_epochs=(1,))


def loss_fn(model, x0, labels, generator):
    return ddpm.class_loss(model, x0, labels, SCHEDULE, generator)


def tiny_data(n=200):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def tiny_model():
    torch.manual_seed(0)
    return ClassConditionalUNet(1, 10, 4)


def interrupt_after(epochs: int, steps_per_epoch: int):
    """A progress callback that interrupts training at the first step after ``epochs`` epochs, whose
    checkpoint is on disk by then, as a Ctrl-C there would."""
    done = 0

    def progress(n=1):
        nonlocal done
        done += n
        if done == epochs * steps_per_epoch + 1:
            raise KeyboardInterrupt

    return progress


def test_resume_after_interrupt_is_bitwise_identical(tmp_path):
    straight_model = tiny_model()
    straight = fit(straight_model, loss_fn, tiny_data(), **SETTINGS)

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), loss_fn, tiny_data(), checkpoint_dir=tmp_path, progress=interrupt_after(1, 4), **SETTINGS)
    steps = []
    resumed_model = ClassConditionalUNet(1, 10, 4)  # different init: everything must come from the checkpoint
    resumed = fit(resumed_model, loss_fn, tiny_data(), checkpoint_dir=tmp_path, progress=steps.append, **SETTINGS)

    assert len(steps) == 4, "only epoch 2 runs again"
    assert resumed.losses == straight.losses and len(straight.losses) == 2 * math.ceil(200 / 64)
    for (k, a), b in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k
    for k, v in straight.snapshots[1].items():
        assert torch.equal(v, resumed.snapshots[1][k]), k
    assert len(resumed.epoch_seconds) == 2
    assert not list(tmp_path.glob("*.tmp*"))  # only the atomically replaced checkpoint remains


def test_finished_checkpoint_returns_without_training(tmp_path):
    first = fit(tiny_model(), loss_fn, tiny_data(), checkpoint_dir=tmp_path, **SETTINGS)
    again = fit(ClassConditionalUNet(1, 10, 4), loss_fn, tiny_data(), checkpoint_dir=tmp_path,
                progress=lambda n: pytest.fail("no step should run"), **SETTINGS)
    assert again.losses == first.losses


def test_checkpoint_from_another_configuration_is_refused(tmp_path):
    fit(tiny_model(), loss_fn, tiny_data(), checkpoint_dir=tmp_path, **SETTINGS)
    with pytest.raises(ValueError, match="different training configuration"):
        fit(tiny_model(), loss_fn, tiny_data(), checkpoint_dir=tmp_path, **{**SETTINGS, "lr": 2e-3})


def test_epoch_fraction_and_progress():
    ticks = []
    history = fit(tiny_model(), loss_fn, tiny_data(), epochs=1, batch_size=32, lr=1e-3, epoch_fraction=0.5,
                  progress=ticks.append)
    assert history.images_per_epoch == 100 and history.steps_per_epoch == 4 and len(ticks) == 4


def test_nan_loss_raises_training_diverged_with_epoch_and_step():
    calls = []

    def poisoned(model, x0, labels, generator):
        calls.append(1)
        loss = loss_fn(model, x0, labels, generator)
        return loss * float("nan") if len(calls) == 5 else loss

    with pytest.raises(TrainingDiverged, match=r"^training diverged: loss is nan at epoch 2, step 1 of that epoch$"):
        fit(tiny_model(), poisoned, tiny_data(), epochs=3, batch_size=50, lr=1e-3)


@pytest.mark.parametrize("bad", [
    {"epochs": 0}, {"epochs": 2.5}, {"epochs": True}, {"batch_size": -1}, {"lr": 0.0}, {"lr": float("nan")},
    {"lr_decay": 1.5}, {"lr_decay": "yes"}, {"epoch_fraction": 0.0}, {"epoch_fraction": 1.2},
    {"autocast_dtype": "float64"}, {"snapshot_epochs": (3,)},
])
def test_invalid_hyperparameters_raise_before_any_work(bad):
    def never(*args, **kwargs):
        pytest.fail("the loss must not run")

    [name] = bad
    with pytest.raises(ValueError, match=rf"^{name} must be "):  # the message names the setting
        fit(tiny_model(), never, tiny_data(), **{**SETTINGS, **bad})


def test_mismatched_data_lengths_raise():
    x, y = tiny_data()
    with pytest.raises(ValueError, match="data"):
        fit(tiny_model(), loss_fn, (x, y[:-1]), **SETTINGS)


def test_lr_decay_true_is_the_assignment_schedule():
    history = fit(tiny_model(), loss_fn, tiny_data(64), epochs=4, batch_size=64, lr=1e-3, lr_decay=True)
    assert history.lrs == pytest.approx([1e-3 * 0.1 ** (k / 4) for k in range(4)])
    constant = fit(tiny_model(), loss_fn, tiny_data(64), epochs=2, batch_size=64, lr=1e-3)
    assert constant.lrs == [1e-3, 1e-3]
    assert training.resolve_dtype("bfloat16") is torch.bfloat16


def test_bf16_autocast_trains_and_resumes_exactly(tmp_path):
    settings = {**SETTINGS, "autocast_dtype": "bfloat16", "batch_size": 16}
    straight_model = tiny_model()
    straight = fit(straight_model, loss_fn, tiny_data(32), **settings)

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), loss_fn, tiny_data(32), checkpoint_dir=tmp_path, progress=interrupt_after(1, 2), **settings)
    resumed_model = ClassConditionalUNet(1, 10, 4)
    resumed = fit(resumed_model, loss_fn, tiny_data(32), checkpoint_dir=tmp_path, **settings)
    assert resumed.losses == straight.losses and all(math.isfinite(v) for v in straight.losses)
    for (k, a), b in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k


def test_the_cuda_random_state_is_saved_and_restored_when_there_is_one(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["gpu0 state"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(states))
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state = training._rng_state(a, b)
    assert state["cuda"] == ["gpu0 state"]
    training._set_rng_state(state, a, b)
    assert calls == [["gpu0 state"]]
    del state["cuda"]  # a checkpoint written on a machine without CUDA
    training._set_rng_state(state, a, b)
    assert calls == [["gpu0 state"]]


def test_a_failed_checkpoint_write_names_its_file_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    path = tmp_path / "resume.pt"

    def full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(training.torch, "save", full)
    with pytest.raises(OSError) as err:
        training._save_atomic({"x": 1}, path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []

    def refused(obj, f):  # an error that already names its file keeps that name
        raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/x")

    monkeypatch.setattr(training.torch, "save", refused)
    with pytest.raises(PermissionError) as err:
        training._save_atomic({"x": 1}, path)
    assert err.value.filename == "/elsewhere/x" and list(tmp_path.iterdir()) == []
    real_open = open

    def no_room(file, mode="r", *args, **kwargs):  # the temporary file is never created
        if Path(file).name.startswith(f".{path.name}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_room)
    with pytest.raises(OSError) as err:
        training._save_atomic({"x": 1}, path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)


def test_the_eager_step_drops_gradients_unless_asked_to_keep_their_tensors():
    from diffusion.training import EagerStep, make_optimizer

    torch.manual_seed(0)
    model = ClassConditionalUNet(1, 10, 4)
    step = EagerStep(model, make_optimizer(model, 1e-3, torch.device("cpu")), loss_fn, torch.Generator().manual_seed(1),
                     torch.autocast("cpu", enabled=False))
    x, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    step((x, labels))
    params = list(model.parameters())
    grads = [p.grad for p in params]
    step((x, labels), keep_grads=True)
    assert all(p.grad is g for p, g in zip(params, grads))  # zeroed in place
    step((x, labels))
    assert not any(p.grad is g for p, g in zip(params, grads))  # dropped, then made anew


def test_the_cpu_optimizer_is_adam_at_the_given_learning_rate():
    opt = training.make_optimizer(tiny_model(), 0.02, torch.device("cpu"))
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 0.02


def test_divergence_names_the_first_bad_loss_and_its_step():
    with pytest.raises(TrainingDiverged, match=r"^training diverged: loss is inf at epoch 4, step 2 of that epoch$"):
        training._raise_if_diverged(torch.tensor([0.5, float("inf"), 0.3, float("nan")]), 4)
    training._raise_if_diverged(torch.tensor([0.5, 0.25]), 1)  # finite: nothing to say


def test_the_divergence_check_reads_only_the_losses_written_so_far(tmp_path, monkeypatch):
    # 60 batches of 2: a check after step 50 of 60; the loss buffer's unwritten slots hold NaN here,
    # as uninitialised memory may
    real_full = torch.full

    def empty(*shape, **kw):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return real_full(tuple(shape), float("nan"), **kw)

    monkeypatch.setattr(training.torch, "empty", empty)
    history = fit(tiny_model(), loss_fn, tiny_data(120), epochs=1, batch_size=2, lr=1e-3,
                  checkpoint_dir=tmp_path / "new" / "deep")  # the checkpoint folder is made, parents too
    assert history.steps_per_epoch == len(history.losses) == 60 and (tmp_path / "new" / "deep").is_dir()
