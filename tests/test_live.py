"""The live sampler's Python side: the portable noise, the strided step, Algorithm 4 fed any noise, the
ONNX export against torch, the committed settings against the training schedule, and the vendored
runtime. The browser runs of the same loop are in tests/test_browser.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion import live, rng, unet
from diffusion.ddpm import linear_schedule, sample_class
from diffusion.unet import ClassConditionalUNet

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site"
VENDOR = ROOT / "templates" / "static" / "vendor" / "onnxruntime-web"
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (a test dependency) is not installed")


def tiny_model(seed=0, hiddens=4):
    torch.manual_seed(seed)
    model = ClassConditionalUNet(num_hiddens=hiddens).eval()
    for m in model.modules():  # BatchNorm statistics away from 0 and 1, so the export must fold them right
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    # At its initial scale the class hardly moves an untrained model's output (1e-6): too little for a test
    # to tell eps_c from eps_u. Unit-normal conditioning weights make it 1e-4 to 1e-3.
    for fc in (model.fc1_c, model.fc2_c, model.fc1_t, model.fc2_t):
        for linear in (fc[0], fc[2]):
            torch.nn.init.normal_(linear.weight)
            torch.nn.init.normal_(linear.bias)
    return model


def test_portable_noise_is_standard_normal_per_seed_and_digit_and_the_same_every_time():
    draw = live.portable_normal(7, 3, 5, 200_000, 301)
    assert draw.dtype == np.float32 and abs(draw.mean()) < 0.01 and abs(draw.std() - 1) < 0.01
    assert abs(np.mean(draw ** 4) - 3) < 0.06  # a normal's fourth moment, not only its first two
    assert np.array_equal(draw, live.portable_normal(7, 3, 5, 200_000, 301))
    others = [live.portable_normal(8, 3, 5, 784, 301), live.portable_normal(7, 4, 5, 784, 301),
              live.portable_normal(7, 3, 6, 784, 301)]
    for other in others:
        assert abs(np.corrcoef(draw[:784], other)[0, 1]) < 0.15
    # Neighbouring pixels are independent too (a weak hash of a counter would correlate them).
    assert abs(np.corrcoef(draw[:-1], draw[1:])[0, 1]) < 0.01
    with pytest.raises(ValueError, match="32-bit"):
        live.portable_normal(2 ** 32, 0, 0, 4, 301)
    with pytest.raises(ValueError, match="outside"):
        live.portable_normal(0, 0, 301, 4, 301)


def test_strided_timesteps_and_their_step_coefficients():
    assert live.strided_timesteps(300, 300) == list(range(300, 0, -1))
    assert live.strided_timesteps(300, 30) == list(range(300, 0, -10))
    with pytest.raises(ValueError, match="divide T = 300"):
        live.strided_timesteps(300, 7)
    s = linear_schedule(300)
    alpha, beta = live.step_coefficients(s, 120, 119)
    assert alpha == s.alphas[120] and beta == s.betas[120]
    alpha, beta = live.step_coefficients(s, 120, 110)
    assert torch.isclose(alpha, s.alpha_bars[120] / s.alpha_bars[110]) and torch.isclose(alpha + beta, torch.tensor(1.0))
    assert torch.isclose(alpha, torch.prod(s.alphas[111:121]), rtol=1e-5)


def test_the_loop_fed_a_torch_generator_equals_sample_class():
    """With every step and the noise drawn in the order sample_class draws it, the page's loop is Algorithm 4."""
    model, schedule = tiny_model(), linear_schedule(20)
    labels = [3, 0, 7]
    expected = sample_class(model, labels, schedule, rng.generator(5), guidance=3.0, keep_every=0).images
    gen = rng.generator(5)
    got = live.sample(live.doubled(model), labels, schedule, 3.0, live.strided_timesteps(20, 20),
                      lambda i: rng.randn((3, 1, 28, 28), gen))
    assert torch.equal(got, expected)


def test_the_loop_with_portable_noise_is_per_digit_and_strided_steps_change_it():
    from diffusion.onnx_export import GuidedPair

    model, schedule = tiny_model(), linear_schedule(20)
    pair, every = GuidedPair(model), live.strided_timesteps(20, 20)  # the exported graph's torch twin
    with torch.no_grad():
        alone = live.sample(pair, [4], schedule, 5.0, every, live.portable_noise(9, [4], 20))
        all_ten = live.sample(pair, list(range(10)), schedule, 5.0, every, live.portable_noise(9, list(range(10)), 20))
        assert torch.allclose(alone[0], all_ten[4], atol=1e-5)
        doubled = live.sample(live.doubled(model), [4], schedule, 5.0, every, live.portable_noise(9, [4], 20))
        assert torch.allclose(alone, doubled, atol=1e-5)  # sharing the encoder changes no result
        strided = live.sample(pair, [4], schedule, 5.0, live.strided_timesteps(20, 5), live.portable_noise(9, [4], 20))
    assert strided.isfinite().all() and not torch.allclose(strided, alone, atol=1e-3)


def test_the_onnx_export_computes_both_halves_of_guidance_as_torch_does_for_any_batch():
    """The graph shares the encoder between eps_c and eps_u; each must still be the UNet's own output."""
    from diffusion.onnx_export import OUTPUTS, export_guided_pair

    model = tiny_model(hiddens=8)
    data = export_guided_pair(model)
    assert data == export_guided_pair(model)  # bytes decided by the weights: cacheable by content
    # ... and not by where the checkout or the environment is (the exporter's stack traces name both)
    assert b"stack_trace" not in data and str(Path(__file__).resolve().parent.parent).encode() not in data
    assert sys.prefix.encode() not in data
    session = ort.InferenceSession(data)
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    gen = torch.Generator().manual_seed(0)
    for n in (1, 3, 20):
        x = torch.randn(n, 1, 28, 28, generator=gen)
        c = torch.nn.functional.one_hot(torch.randint(0, 10, (n,), generator=gen), 10).float()
        t = torch.rand(n, generator=gen)
        with torch.no_grad():
            expected = model(x, c, t).numpy(), model(x, torch.zeros_like(c), t).numpy()
        for got, want in zip(live.onnx_pair(session)(x, c, t), expected):
            assert got.shape == (n, 1, 28, 28) and np.abs(got.numpy() - want).max() < 1e-5


@pytest.mark.parametrize("make", [lambda: unet.Conv(6, 5), lambda: unet.UpConv(6, 5)], ids=["conv", "upconv"])
def test_a_shared_skip_equals_the_block_on_the_concatenation(make):
    """conv(cat([h, s]), W) = conv(h, W_h) + conv(s, W_s): the skip's share computed once for both halves,
    with the BatchNorm folded in. Variances near BatchNorm's eps, so a fold that forgets eps is caught."""
    from diffusion.onnx_export import _SharedSkip

    torch.manual_seed(3)
    block = make().eval()
    bn = block[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(1e-6, 1e-4)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    h, s = torch.randn(4, 2, 7, 7), torch.randn(2, 4, 7, 7)  # h: both halves of 2 inputs; s: one copy each
    with torch.no_grad():
        expected = block(torch.cat([h, torch.cat([s, s])], dim=1))
        got = _SharedSkip(block, h_channels=2)(h, s)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


# The published editions: the spec edition at the site's root, the cpu edition in its folder.
EDITIONS = {"spec": SITE, "cpu": SITE / "cpu"}


def committed_settings(edition="spec"):
    path = EDITIONS[edition] / "figures" / "b3_live-settings.json"
    if not path.is_file():
        pytest.skip(f"the committed {edition} edition has no live sampler")
    return json.loads(path.read_text()), json.loads((EDITIONS[edition] / "manifest.json").read_text())["sections"]


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_the_committed_settings_hold_the_schedule_part_b_trains_with(edition):
    settings, sections = committed_settings(edition)
    p = sections["b3_train_class"]["params"]
    schedule = linear_schedule(p["T"], p["beta1"], p["beta2"])
    assert settings["T"] == p["T"] and settings["num_classes"] == p["num_classes"]
    for name in ("betas", "alphas", "alpha_bars"):
        assert torch.equal(torch.tensor(settings[name], dtype=torch.float32), getattr(schedule, name))
    assert settings["noise"]["draws_per_digit"] == p["T"] + 1
    assert all(p["T"] % s == 0 for s in settings["controls"]["steps"]) and p["T"] in settings["controls"]["steps"]


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_the_committed_onnx_model_is_the_frozen_final_model(edition):
    """Each edition's published file against the torch model it came from (its freeze's b3_train_class)."""
    _settings, sections = committed_settings(edition)
    key = sections["b3_train_class"]["key"]
    record = json.loads((ROOT / "frozen" / edition / "entries" / "b3_train_class" / f"{key}.json").read_text())
    sha = next(o for o in record["outputs"] if o["id"] == "model-final")["files"][0]["sha"]
    saved = torch.load(ROOT / "frozen" / edition / "objects" / sha[:2] / sha, weights_only=False)
    model = ClassConditionalUNet(**saved["config"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    session = ort.InferenceSession(str(EDITIONS[edition] / "figures" / "b3_live-model.onnx"))
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(8, 1, 28, 28, generator=gen), torch.rand(8, generator=gen)
    c = torch.eye(10)[:8]
    with torch.no_grad():
        expected = model(x, c, t).numpy(), model(x, torch.zeros_like(c), t).numpy()
    for got, want in zip(live.onnx_pair(session)(x, c, t), expected):
        assert np.abs(got.numpy() - want).max() < 1e-4


def test_the_vendored_runtime_is_npms_onnxruntime_web_1_30_0_with_its_licence():
    bundle = (VENDOR / "ort.wasm.bundle.min.mjs").read_bytes()
    assert b"ONNX Runtime Web v1.30.0" in bundle[:200]
    assert "MIT License" in (VENDOR / "LICENSE.txt").read_text()
    assert b"ONNX Runtime Web v1.30.0" in (VENDOR / "ort.webgpu.bundle.min.mjs").read_bytes()[:200]
    # Each backend's bundle and the one binary it loads (the WebGPU build's is the asyncify one), nothing else.
    runtime = ["ort-wasm-simd-threaded.asyncify.wasm", "ort-wasm-simd-threaded.wasm", "ort.wasm.bundle.min.mjs",
               "ort.webgpu.bundle.min.mjs"]
    assert sorted(p.name for p in VENDOR.iterdir()) == ["LICENSE.txt"] + runtime
    assert b"ort-wasm-simd-threaded.asyncify.wasm" in (VENDOR / "ort.webgpu.bundle.min.mjs").read_bytes()
    npm = ROOT / "node_modules" / "onnxruntime-web" / "dist"
    if not npm.is_dir():
        pytest.skip("node_modules/onnxruntime-web is not installed (npm ci)")
    for name in runtime:
        assert (VENDOR / name).read_bytes() == (npm / name).read_bytes(), name
