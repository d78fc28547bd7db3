"""The CUDA-graph paths, run on the CPU with a stand-in for the capture itself.

A real capture records kernels without running them; ``record`` below does the same for a CPU:
it runs the body's warm-up calls for real (as the real one does) and hands back the body as the
"replay", which refuses what a capture refuses: a copy between devices (a CUDA capture fails on
one from the host, as the H200 showed when a schedule on the CPU met images on the GPU).
Everything around the capture is the production code: static input buffers, undoing the warm-up,
the check of the first replay against the eager step, the fallback, the eager steps on a batch of
another size, resume. The capture itself is checked on a GPU (tests marked ``gpu``).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diffusion import cuda_graphs, ddpm, training
from diffusion.training import fit
from diffusion.unet import ClassConditionalUNet, TimeConditionalUNet

from tests.test_training import SCHEDULE, SETTINGS, interrupt_after, loss_fn, tiny_data, tiny_model

# SETTINGS: 200 images in batches of 64, so three full batches (the graph) and one of 8 (eager) per epoch.


class RefusedInCapture(TorchDispatchMode):
    """What a CUDA graph's capture refuses and a CPU would let pass: copying a tensor between devices."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        source, target = None, None
        if func is torch.ops.aten._to_copy.default and kwargs.get("device") is not None:
            source, target = args[0].device, torch.device(kwargs["device"])
        elif func is torch.ops.aten.copy_.default:
            source, target = args[1].device, args[0].device
        if source is not None and source != target:
            raise RuntimeError(f"Cannot copy between {source} and {target} tensors during the stand-in CUDA graph "
                               f"capture")
        return func(*args, **kwargs)


def record(body, *, generators=(), before_capture=None):
    for _ in range(cuda_graphs.WARMUP):
        body()
    if before_capture is not None:
        before_capture()

    def replay():
        with RefusedInCapture():
            body()
    return replay


def assert_same_training(a_model, a, b_model, b):
    assert a.losses == b.losses
    for (name, x), y in zip(a_model.state_dict().items(), b_model.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.fixture(scope="module")
def eager():
    model = tiny_model()
    return model, fit(model, loss_fn, tiny_data(), graph=False, **SETTINGS)


def test_graph_step_trains_exactly_as_the_eager_step(eager):
    model = tiny_model()
    history = fit(model, loss_fn, tiny_data(), graph=record, **SETTINGS)
    assert history.step == "cuda-graph" and history.step_note == "bitwise equal to the eager step"
    assert_same_training(*eager, model, history)


def test_warm_up_steps_are_undone_even_the_batchnorm_statistics(eager):
    # Warm-up trains on the first batch twice more; if any of it stayed (weights, Adam moments,
    # step count, BatchNorm running statistics, the noise stream), the weights would differ.
    model = tiny_model()
    history = fit(model, loss_fn, tiny_data(), graph=record, **SETTINGS)
    assert torch.equal(model.up1[0][1].running_mean, eager[0].up1[0][1].running_mean)
    assert model.up1[0][1].num_batches_tracked.item() == 2 * math.ceil(200 / 64)
    assert_same_training(*eager, model, history)


def test_capture_failure_falls_back_to_eager_with_one_warning(eager):
    def broken(body, **kwargs):
        body()  # half a warm-up, then the driver says no
        raise RuntimeError("operation not permitted when stream is capturing")

    model = tiny_model()
    with pytest.warns(RuntimeWarning, match="cuda-graph fallback: the training step runs eagerly .* operation not "
                                            "permitted") as caught:
        history = fit(model, loss_fn, tiny_data(), graph=broken, **SETTINGS)
    assert len([w for w in caught if cuda_graphs.FALLBACK in str(w.message)]) == 1
    assert history.step == "eager" and "operation not permitted" in history.step_note
    assert_same_training(*eager, model, history)


def test_the_stand_in_capture_refuses_a_copy_between_devices_as_a_real_capture_does(eager):
    def copying_loss(model, x0, labels, generator):
        torch.ones(3).to("meta")  # what a schedule on the host did inside the H200's capture
        return loss_fn(model, x0, labels, generator)

    model = tiny_model()
    with pytest.warns(RuntimeWarning, match="cuda-graph fallback: .* Cannot copy between cpu and meta tensors"):
        history = fit(model, copying_loss, tiny_data(), graph=record, **SETTINGS)
    assert history.step == "eager"
    assert_same_training(*eager, model, history)


def test_a_replay_that_disagrees_with_eager_is_not_used(eager):
    def wrong_noise(body, *, generators=(), before_capture=None):
        replay = record(body, generators=generators)

        def shifted():  # as if the graph did not advance the noise generator with the eager step
            generators[0].manual_seed(12345)
            replay()
        return shifted

    model = tiny_model()
    with pytest.warns(RuntimeWarning, match="differs from the eager step"):
        history = fit(model, loss_fn, tiny_data(), graph=wrong_noise, **SETTINGS)
    assert history.step == "eager"
    assert_same_training(*eager, model, history)


def test_resume_with_the_graph_step_is_exact(eager, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), loss_fn, tiny_data(), graph=record, checkpoint_dir=tmp_path,
            progress=interrupt_after(1, 4), **SETTINGS)
    model = ClassConditionalUNet(1, 10, 4)
    history = fit(model, loss_fn, tiny_data(), graph=record, checkpoint_dir=tmp_path, **SETTINGS)
    assert history.step == "cuda-graph"
    assert_same_training(*eager, model, history)


def test_a_learning_rate_tensor_is_updated_in_place_and_survives_resume(monkeypatch, tmp_path):
    # On CUDA, Adam's learning rate is a tensor the graph reads; the scheduler must change it in
    # place and a resumed run must go on with the same tensor. Fused Adam on the CPU takes a
    # tensor learning rate too, so the CUDA configuration can be checked here.
    made = []

    def tensor_lr_adam(model, lr, device):
        opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(float(lr)), fused=True)
        made.append(opt.param_groups[0]["lr"])
        return opt

    monkeypatch.setattr(training, "make_optimizer", tensor_lr_adam)
    straight_model = tiny_model()
    straight = fit(straight_model, loss_fn, tiny_data(), graph=record, **SETTINGS)
    assert straight.lrs == pytest.approx([1e-3, 1e-3 * 0.1 ** 0.5])
    assert made[0].item() == pytest.approx(1e-3 * 0.1)  # decayed twice, in place

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), loss_fn, tiny_data(), graph=record, checkpoint_dir=tmp_path,
            progress=interrupt_after(1, 4), **SETTINGS)
    resumed_model = ClassConditionalUNet(1, 10, 4)
    resumed = fit(resumed_model, loss_fn, tiny_data(), graph=record, checkpoint_dir=tmp_path, **SETTINGS)
    assert torch.is_tensor(made[-1]) and made[-1].item() == pytest.approx(1e-3 * 0.1)
    assert_same_training(straight_model, straight, resumed_model, resumed)


def test_no_graph_when_no_batch_is_full():
    history = fit(tiny_model(), loss_fn, tiny_data(40), graph=record, epochs=1, batch_size=64, lr=1e-3)
    assert history.step == "eager" and len(history.losses) == 1


def test_the_cpu_never_captures(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "capture", lambda *a, **k: pytest.fail("no capture on a CPU"))
    history = fit(tiny_model(), loss_fn, tiny_data(), **SETTINGS)
    assert history.step == "eager" and history.step_note == ""
    samples = ddpm.sample_time(TimeConditionalUNet(1, 4), 2, SCHEDULE, torch.Generator().manual_seed(0))
    assert samples.images.shape == (2, 1, 28, 28)


# ---------------------------------------------------------------------------------------------
# the sampler's network call


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "enabled_for", lambda device: True)
    monkeypatch.setattr(cuda_graphs, "capture", record)


def _samples(**kw):
    torch.manual_seed(0)
    model = ClassConditionalUNet(1, 10, 4)
    return ddpm.sample_class(model, [3, 7, 1], SCHEDULE, torch.Generator().manual_seed(5), guidance=3.0,
                             keep_every=10, **kw)


def test_graphed_sampler_gives_the_eager_samples(graphs_on_cpu, recwarn):
    graphed = _samples()
    assert not [w for w in recwarn if "cuda-graph fallback" in str(w.message)], "the graph must be used, not eager"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cuda_graphs, "enabled_for", lambda device: False)
        eager = _samples()
    assert torch.equal(graphed.images, eager.images) and torch.equal(graphed.trajectory, eager.trajectory)


def test_graphed_call_copies_inputs_and_output(graphs_on_cpu):
    calls = []

    def double(x):
        calls.append(1)
        return 2 * x

    f = cuda_graphs.graphed(double, torch.ones(3))
    a = f(torch.full((3,), 2.0))
    b = f(torch.full((3,), 5.0))
    assert a.tolist() == [4.0] * 3 and b.tolist() == [10.0] * 3  # the first result was not overwritten
    assert f(torch.ones(4)).tolist() == [2.0] * 4  # another shape runs the function itself


def test_graphed_call_falls_back_when_capture_fails_or_disagrees(graphs_on_cpu, monkeypatch):
    def double(x):
        return 2 * x

    monkeypatch.setattr(cuda_graphs, "capture", lambda body, **k: (_ for _ in ()).throw(RuntimeError("no graphs")))
    with pytest.warns(RuntimeWarning, match="cuda-graph fallback: .* no graphs"):
        assert cuda_graphs.graphed(double, torch.ones(2)) is double

    monkeypatch.setattr(cuda_graphs, "capture", record)
    calls = iter(range(100))

    def drifting(x):  # not a pure function of its input, so its replay cannot match
        return x + next(calls)

    with pytest.warns(RuntimeWarning, match="differs from the eager call by up to 1"):
        assert cuda_graphs.graphed(drifting, torch.zeros(2)) is drifting


# ---------------------------------------------------------------------------------------------
# the pieces of the graph step


def _step():
    from diffusion.training import EagerStep, make_optimizer

    model = tiny_model()
    opt = make_optimizer(model, 1e-3, torch.device("cpu"))
    return EagerStep(model, opt, loss_fn, torch.Generator().manual_seed(1), torch.autocast("cpu", enabled=False))


def test_a_smaller_batch_between_replays_keeps_the_gradient_tensors_the_graph_writes():
    from diffusion.training import GraphStep

    graph = GraphStep(_step(), capture=record)
    assert (graph.active, graph.failed, graph.note) == (False, False, "")  # what fit reports if it never runs
    x, labels = tiny_data(24)
    graph((x[:16], labels[:16]))
    assert graph.active and graph.note == "bitwise equal to the eager step"
    params = list(graph.eager.model.parameters())
    grads = [p.grad for p in params]
    graph((x[16:], labels[16:]))  # 8 images: eager, in place
    assert all(p.grad is g for p, g in zip(params, grads))


def test_agreement_of_the_first_graph_step_with_the_eager_one():
    from diffusion.training import _agreement

    p0 = [torch.zeros(4), torch.zeros(2)]
    step = [torch.tensor([1.0, 2.0, 0.0, 0.0]), torch.tensor([2.0, 0.0])]  # an update of norm 3
    same = [t.clone() for t in step]
    one = torch.tensor(1.0)
    assert _agreement(one, step, one, same, p0) == "bitwise equal to the eager step"
    near = [step[0] + torch.tensor([0.03, 0, 0, 0]), step[1]]  # 1% of the update's norm
    assert _agreement(one, step, torch.tensor(1.0009), near, p0) == "first step within 1.00e-02 (relative L2) of eager"
    far = [step[0] + torch.tensor([0.2, 0, 0, 0]), step[1]]  # 6.7%
    with pytest.raises(RuntimeError, match=r"^its first step's weight update differs from the eager step's by 6\.7% "
                                           r"\(relative L2\)$"):
        _agreement(one, step, one, far, p0)
    edge = [step[0] + torch.tensor([0.15, 0, 0, 0]), step[1]]  # exactly 5%: still accepted
    assert _agreement(one, step, one, edge, p0).startswith("first step within 5.00e-02")
    tiny = [torch.full((4,), 1e-3), torch.zeros(2)]  # a tiny update is compared relative to itself
    with pytest.raises(RuntimeError, match="weight update differs"):
        _agreement(one, tiny, one, [t * 1.2 for t in tiny], p0)
    for loss_g in (torch.tensor(1.002), torch.tensor(float("nan")), torch.tensor(float("inf"))):
        with pytest.raises(RuntimeError, match=r"^its first step's loss .* differs from the eager step's 1$"):
            _agreement(one, step, loss_g, same, p0)
    zero = torch.tensor(0.0)
    assert _agreement(zero, step, torch.tensor(5e-7), same, p0).startswith("bitwise")  # within atol
    with pytest.raises(RuntimeError, match="loss 2e-06 differs"):
        _agreement(zero, step, torch.tensor(2e-6), same, p0)
