"""The local MNIST backend satisfies the same interface, with a tiny random ClassConditionalUNet."""
from __future__ import annotations

import pytest
import torch

from diffusion.local_denoiser import LocalBackend, accepted_prompts
from diffusion.ddpm import linear_schedule
from diffusion.edits import hybrid, inpaint, sdedit, visual_anagram
from diffusion.sampling import one_step_denoise, sample, strided_timesteps
from diffusion.unet import ClassConditionalUNet
from tests.test_sampling import gen


SCHEDULE = {"T": 300, "beta1": 1e-4, "beta2": 0.02}


@pytest.fixture(scope="module")
def den():
    torch.manual_seed(0)
    return LocalBackend.from_model(ClassConditionalUNet(1, 10, 8), SCHEDULE, checkpoint_sha256="ab" * 32, device="cpu")


def test_schedule_maps_ho_to_diffusers_indexing(den):
    abar_ho = linear_schedule(300, 1e-4, 0.02).alpha_bars
    assert den.num_train_timesteps == 300 and den.alphas_cumprod.dtype == torch.float32
    assert torch.equal(den.alphas_cumprod, abar_ho[1:])  # backend t=k is Ho's t=k+1
    assert (den.image_size, den.channels, den.shape) == (28, 1, (1, 28, 28))
    assert den.thresholding is None
    assert strided_timesteps(den) == list(range(297, -1, -9))


def test_predict_feeds_the_unet_ho_time_and_one_hot(den, monkeypatch):
    seen = {}
    original = den.model.forward

    def spy(x, c, t):
        seen.update(c=c.clone(), t=t.clone())
        return original(x, c, t)

    monkeypatch.setattr(den.model, "forward", spy)
    x = torch.randn(3, 1, 28, 28, generator=gen(0))
    cond = den.encode(["a handwritten 3", "7", ""])
    eps, var = den.predict(x, 0, cond)
    assert eps.shape == (3, 1, 28, 28) and var is None
    assert torch.equal(seen["t"], torch.full((3,), 1 / 300))
    assert torch.equal(seen["c"], torch.stack([torch.eye(10)[3], torch.eye(10)[7], torch.zeros(10)]))
    den.predict(x, 299, cond)
    assert torch.equal(seen["t"], torch.ones(3))


def test_prompts(den):
    assert torch.equal(den.encode("a handwritten 7"), den.encode("7"))
    assert torch.equal(den.encode("a high quality photo"), torch.zeros(1, 10))
    assert torch.equal(den.null_cond, torch.zeros(1, 10))
    assert den.encode([f"a handwritten {d}" for d in range(10)]).argmax(1).tolist() == list(range(10))
    with pytest.raises(ValueError, match="a handwritten 0"):
        den.encode("a handwritten digit 7")
    assert "a handwritten 9" in accepted_prompts()


def test_identity_names_the_model_its_weights_and_schedule(den):
    assert den.identity == {"name": "local", "model": "ClassConditionalUNet", "checkpoint_sha256": "ab" * 32,
                            "config": {"in_channels": 1, "num_classes": 10, "num_hiddens": 8, **SCHEDULE},
                            "T": 300, "dtype": "float32"}
    shorter = LocalBackend.from_model(ClassConditionalUNet(1, 10, 8), {**SCHEDULE, "T": 100}, checkpoint_sha256="0")
    assert shorter.num_train_timesteps == 100


def test_data_space_is_unit_interval(den):
    x = torch.tensor([-0.5, 0.0, 0.25, 1.0, 1.5])
    assert torch.equal(den.to_unit(x), torch.tensor([0.0, 0.0, 0.25, 1.0, 1.0]))
    assert torch.equal(den.from_unit(x), x)


def test_algorithms_run_on_the_local_backend(den):
    cond = den.encode(["a handwritten 3", "a handwritten 8"])
    ts = strided_timesteps(den, stride=90)  # 12 steps: 297, 270, ..., 0
    a = sample(den, cond, gen(1), timesteps=ts, guidance=5.0)
    assert a.shape == (2, 1, 28, 28) and torch.equal(a, sample(den, cond, gen(1), timesteps=ts, guidance=5.0))
    x0 = torch.rand(2, 1, 28, 28, generator=gen(2))
    assert one_step_denoise(den, x0, 150, cond).shape == (2, 1, 28, 28)
    assert sdedit(den, x0, 5, cond, gen(3), timesteps=ts).shape == (2, 1, 28, 28)
    mask = torch.zeros(28, 28)
    mask[:14] = 1
    out = inpaint(den, x0, mask, cond, gen(4), timesteps=ts)
    assert torch.equal(out[..., 14:, :], x0[..., 14:, :])
    six, nine = den.encode("6"), den.encode("9")
    assert visual_anagram(den, [six, nine], gen(5), timesteps=ts).shape == (1, 1, 28, 28)
    assert hybrid(den, six, nine, gen(6), timesteps=ts).shape == (1, 1, 28, 28)
