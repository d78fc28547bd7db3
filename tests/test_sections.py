"""The sections' declared settings: valid before any work starts, and exact in the spec profile."""
import pytest
import torch

from builder.graph.registry import discover
from builder.section import PROFILES
from diffusion import training

TRAINING_SECTIONS = ("b0_classifier", "b1_train_denoiser", "b2_train_time", "b3_train_class")


@pytest.fixture(scope="module")
def sections():
    return discover("generators")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("section", TRAINING_SECTIONS)
def test_training_profiles_pass_the_trainers_validation(sections, section, profile):
    p = sections[section].section.resolve(profile)
    x = torch.zeros(4, 1, 28, 28)
    training.validate(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], lr_decay=p["lr_decay"],
                      epoch_fraction=p["epoch_fraction"], autocast_dtype=None,
                      snapshot_epochs=p.get("snapshot_epochs", [p["epochs"]]), data=(x,))


def test_spec_profile_is_the_assignment(sections):
    den = sections["b1_train_denoiser"].section.resolve("spec")
    assert (den["sigma"], den["num_hiddens"], den["batch_size"], den["epochs"], den["lr"], den["lr_decay"]) == \
        (0.5, 128, 256, 5, 1e-4, False)
    for sid in ("b2_train_time", "b3_train_class"):
        p = sections[sid].section.resolve("spec")
        assert (p["T"], p["beta1"], p["beta2"], p["num_hiddens"], p["batch_size"], p["epochs"], p["lr"],
                p["lr_decay"], p["epoch_fraction"]) == (300, 1e-4, 0.02, 64, 128, 20, 1e-3, True, 1.0)
        assert p["snapshot_epochs"] == [1, 5, 10, 15, 20]
    assert sections["b3_train_class"].section.resolve("spec")["p_uncond"] == 0.1
    assert sections["b3_class_samples"].section.resolve("spec")["guidance"] == 5.0


def test_invalid_hyperparameters_fail_before_training(sections, tmp_path):
    from types import SimpleNamespace

    from builder import BuildError
    from generators._partb import train

    ctx = SimpleNamespace(params=SimpleNamespace(epochs=2, batch_size=0, lr=1e-3, lr_decay=False, epoch_fraction=1.0),
                          section_id="b1_train_denoiser", profile="smoke", dtype="float32", device="cpu",
                          scratch=tmp_path, progress=lambda total, desc: SimpleNamespace(update=None, close=lambda: None),
                          generator=lambda name: torch.Generator().manual_seed(0))
    with pytest.raises(BuildError, match="invalid hyperparameters.*batch_size"):
        train(ctx, torch.nn.Linear(1, 1), lambda *a, **k: None, (torch.zeros(8, 1),))
    assert not any(tmp_path.iterdir()), "nothing may be written before the settings are checked"
