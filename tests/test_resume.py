"""Interrupting a training section and building again resumes it, to the same weights."""
import math

import pytest
import torch

from builder.graph.engine import BuildConfig, Engine
from builder.graph.registry import discover
import generators._partb as partb
from project import PROJECT
from tests.test_training import interrupt_after


def engine(cache):
    config = BuildConfig(profile="smoke", device="cpu", dtype="float32", seed=3, cache_root=cache)
    return Engine(PROJECT, config, discover(PROJECT.sections))


def final_weights(eng, result):
    entry = {r.id: r.entry for r in result.results}["b1_train_denoiser"]
    return torch.load(eng.store.object_path(
        next(o for o in entry.outputs if o["id"] == "model-final")["files"][0]["sha"]), weights_only=True)["state_dict"]


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = engine(tmp_path / "straight")
    expected = final_weights(straight, straight.build(["b1_train_denoiser"]))

    real_fit = partb.fit
    p = straight.sections["b1_train_denoiser"].section.resolve("smoke")
    per_epoch = math.ceil(p["train_images"] * p["epoch_fraction"] / p["batch_size"])

    def interrupted_fit(*args, progress, **kwargs):
        stop = interrupt_after(1, per_epoch)  # as if Ctrl-C arrived after epoch 1 was checkpointed

        def both(n=1):
            progress(n)
            stop(n)

        return real_fit(*args, **kwargs, progress=both)

    monkeypatch.setattr(partb, "fit", interrupted_fit)
    first = engine(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        first.build(["b1_train_denoiser"])
    [resume] = (tmp_path / "resumed" / "scratch").rglob("resume.pt")
    assert torch.load(resume, weights_only=False)["epoch"] == 1
    assert first.store.entries_of("b1_train_denoiser") == [], "an interrupted section must leave no entry"

    monkeypatch.setattr(partb, "fit", real_fit)
    second = engine(tmp_path / "resumed")
    got = final_weights(second, second.build(["b1_train_denoiser"]))
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert not any((tmp_path / "resumed" / "scratch").rglob("*.pt")), "resume state is removed after success"


def test_nan_loss_names_the_section_and_step(tmp_path, monkeypatch):
    def nan_loss(model, x, generator, sigma):
        return model(x).sum() * float("nan")

    monkeypatch.setattr("generators.b1_train_denoiser.denoiser_loss", nan_loss)
    result = engine(tmp_path).build(["b1_train_denoiser"])
    res = result.results[-1]
    assert res.status == "failed"
    assert "b1_train_denoiser" in res.error and "step" in res.error and "epoch 1" in res.error
