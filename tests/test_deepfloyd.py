"""The DeepFloyd backend against diffusers' own IFPipeline, on a tiny random IF saved to disk.

The pipeline under comparison is the one our loader returned (``backend.pipe``), so loading,
prompt encoding and the sampling loop are all exercised by the same code a real run uses.
"""
from __future__ import annotations

from tests import random_if

import pytest
import torch

from diffusion.deepfloyd_denoiser import DEFAULT_STAGE1, BackendUnavailable
from diffusion.deepfloyd_denoiser import DeepFloydBackend
from diffusion.sampling import StridedSchedule, dynamic_threshold, sample, strided_timesteps

diffusers = pytest.importorskip("diffusers")
from diffusers import DDPMScheduler  # noqa: E402
from diffusers.pipelines.deepfloyd_if import fast27_timesteps  # noqa: E402

PROMPTS = ["an oil painting of an old man", "a photo of a dog"]
SIZE = 32  # IF's layout at half its resolution: four times faster, same code paths


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepfloyd")
    random_if.save_tiny_if(root, sample_size=SIZE, with_stage2=True)
    return root


@pytest.fixture(scope="module")
def backend(tiny_root):
    return DeepFloydBackend.load(device="cpu", dtype=torch.float32, deepfloyd_dir=tiny_root)


def _gen(seed=0):
    return torch.Generator("cpu").manual_seed(seed)


@pytest.mark.parametrize("schedule", ["leading5", "fast27"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("guidance", [1.0, 7.0])
def test_cfg_loop_equals_ifpipeline(backend, schedule, batch, guidance):
    cond = backend.encode(PROMPTS[:batch])
    uncond = backend.null_cond.expand(batch, -1, -1)
    if schedule == "leading5":
        timesteps, pipe_kwargs = [800, 600, 400, 200, 0], dict(num_inference_steps=5)
    else:
        timesteps, pipe_kwargs = list(fast27_timesteps), dict(timesteps=list(fast27_timesteps))
    expected = backend.pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=guidance,
                            generator=_gen(3), output_type="pt", **pipe_kwargs).images
    assert backend.pipe.scheduler.timesteps.tolist() == timesteps
    ours = sample(backend, cond, _gen(3), timesteps=timesteps, guidance=guidance)
    assert ours.shape == (batch, 3, SIZE, SIZE)
    assert torch.equal(ours, expected)  # bit for bit, as the README says


def test_variance_step_equals_scheduler(backend):
    scheduler = DDPMScheduler.from_config(backend.pipe.scheduler.config)
    ts = strided_timesteps(backend)
    scheduler.set_timesteps(timesteps=ts)
    ours = StridedSchedule(backend.alphas_cumprod, ts)
    v = torch.randn(2, 3, 8, 8, generator=_gen(1)) * 1.5  # a random UNet's v leaves [-1, 1] too
    for i, t in enumerate(ts):
        expected = scheduler._get_variance(t, predicted_variance=v)
        assert torch.allclose(ours.log_variance(i, v), expected, rtol=1e-6, atol=1e-6), t
        fixed = torch.log(scheduler._get_variance(t, variance_type="fixed_small"))
        assert torch.allclose(ours.log_variance(i), fixed, rtol=1e-6, atol=1e-6), t


def test_dynamic_threshold_equals_scheduler(backend):
    # The second sample's 95th percentile of |x0| (about 1.3) lies inside the clamp range [1, 1.5].
    x0 = torch.randn(4, 3, 16, 16, generator=_gen(2)) * torch.tensor([0.5, 0.65, 1.2, 6.0]).view(4, 1, 1, 1)
    expected = backend.pipe.scheduler._threshold_sample(x0)
    assert torch.equal(dynamic_threshold(x0, backend.thresholding), expected)
    assert backend.thresholding.ratio == 0.95 and backend.thresholding.max_value == 1.5


def test_backend_attributes(backend):
    assert backend.num_train_timesteps == 1000 and backend.alphas_cumprod.shape == (1000,)
    assert backend.alphas_cumprod.dtype == torch.float32
    assert torch.equal(backend.alphas_cumprod, backend.pipe.scheduler.alphas_cumprod)
    assert (backend.image_size, backend.channels) == (SIZE, 3)
    assert backend.identity["name"] == "deepfloyd" and backend.identity["model"] == "DeepFloyd/IF-I-XL-v1.0"
    assert backend.identity["text"] == "t5" and backend.identity["dtype"] == "float32"
    x = torch.linspace(-1, 1, 5)
    assert torch.allclose(backend.from_unit(backend.to_unit(x)), x)


def test_t5_prompt_path(backend):
    one = backend.encode(PROMPTS[0])
    assert one.shape == (1, 77, 32)
    assert backend.encode(PROMPTS).shape == (2, 77, 32)
    # The null condition is exactly the negative embedding the pipeline makes for "".
    _, negative = backend.pipe.encode_prompt(PROMPTS[0], do_classifier_free_guidance=True, clean_caption=False)
    assert torch.equal(backend.null_cond, negative)
    eps, var = backend.predict(torch.zeros(2, 3, SIZE, SIZE), 500, backend.encode(PROMPTS))
    assert eps.shape == var.shape == (2, 3, SIZE, SIZE)


def test_embeddings_file_path(tiny_root, tmp_path):
    table = {p: torch.randn(1, 77, 32, generator=_gen(i)) for i, p in enumerate(["", *PROMPTS])}
    path = tmp_path / "embeds.pth"
    torch.save(table, path)
    den = DeepFloydBackend.load(device="cpu", dtype=torch.float32, deepfloyd_dir=tiny_root, embeddings_path=path)
    assert den.pipe.text_encoder is None and den.pipe.tokenizer is None
    assert torch.equal(den.encode(PROMPTS[1]), table[PROMPTS[1]])
    assert den.encode(PROMPTS).shape == (2, 77, 32) and torch.equal(den.null_cond, table[""])
    assert "embeddings_sha256" in den.identity["text"]
    with pytest.raises(ValueError, match="a photo of a dog"):
        den.encode("a lithograph of a waterfall")


def test_embeddings_file_with_t5_xxl_width(tmp_path):
    # The real (1, 77, 4096) shape, through a UNet whose text projection is T5-XXL wide.
    random_if.build_stage1(text_dim=4096, sample_size=SIZE).save_pretrained(tmp_path / "IF-I-XL-v1.0")
    torch.save({"": torch.zeros(1, 77, 4096), "a photo of a dog": torch.ones(1, 77, 4096) / 64}, tmp_path / "e.pth")
    den = DeepFloydBackend.load(device="cpu", dtype=torch.float32, deepfloyd_dir=tmp_path, embeddings_path=tmp_path / "e.pth")
    cond = den.encode("a photo of a dog")
    assert cond.shape == (1, 77, 4096)
    eps, var = den.predict(torch.zeros(2, 3, SIZE, SIZE), 990, den.cat_conds([den.null_cond, cond]))
    assert eps.shape == var.shape == (2, 3, SIZE, SIZE)


def test_saved_pipeline_dir_and_env_var(tiny_root, monkeypatch):
    stage1 = tiny_root / "DeepFloyd" / "IF-I-XL-v1.0"
    direct = DeepFloydBackend.load(device="cpu", dtype=torch.float32, deepfloyd_dir=stage1)
    monkeypatch.setenv("DEEPFLOYD_DIR", str(tiny_root))
    via_env = DeepFloydBackend.load(device="cpu", dtype=torch.float32)
    assert direct.identity == via_env.identity  # same files, same identity
    x = torch.randn(1, 3, SIZE, SIZE, generator=_gen(0))
    assert torch.equal(direct.predict(x, 10, direct.null_cond)[0], via_env.predict(x, 10, via_env.null_cond)[0])


def test_offload_needs_a_gpu(tiny_root):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        DeepFloydBackend.load(device="cpu", dtype=torch.float32, deepfloyd_dir=tiny_root, offload=True)


def _assert_helpful(message: str):
    for needle in ("DeepFloyd/IF-I-XL-v1.0", "huggingface.co/DeepFloyd/IF-I-XL-v1.0", "huggingface-cli login",
                   "--deepfloyd-dir", "DEEPFLOYD_DIR", "licence"):
        assert needle in message
    assert "\n" not in message


def test_missing_weights_in_named_dir(tmp_path):
    with pytest.raises(BackendUnavailable) as info:
        DeepFloydBackend.load(device="cpu", dtype=torch.float32, deepfloyd_dir=tmp_path)
    _assert_helpful(str(info.value))
    assert str(tmp_path) in str(info.value)
    err = info.value  # no chained traceback behind the message
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_missing_weights_hub_id_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("DEEPFLOYD_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(BackendUnavailable) as info:
        DeepFloydBackend.load(device="cpu", dtype=torch.float32)
    _assert_helpful(str(info.value))
    assert _choose("auto", "cuda", None) == "local"  # no weights: never auto-picked


def _choose(name, device, deepfloyd_dir):
    import argparse

    import backends

    args = argparse.Namespace(backend=name, deepfloyd_dir=deepfloyd_dir, deepfloyd_model=DEFAULT_STAGE1)
    return backends.choose(args, device).name


def test_auto_picks_deepfloyd_only_on_cuda_with_its_weights(tiny_root):
    assert _choose("auto", "cpu", tiny_root) == "local"
    assert _choose("auto", "cuda", tiny_root) == "deepfloyd"
    assert _choose("local", "cuda", tiny_root) == "local" and _choose("deepfloyd", "cpu", None) == "deepfloyd"
    from builder import BuildError

    with pytest.raises(BuildError, match="unknown backend 'stable-diffusion'; choose auto or one of deepfloyd, local"):
        _choose("stable-diffusion", "cpu", None)


@pytest.mark.parametrize("steps, guidance, noise_level", [(3, 4.0, 250), (2, 1.0, 100)])
def test_stage2_upsample_equals_ifsuperresolutionpipeline(backend, steps, guidance, noise_level):
    images = torch.rand(2, 3, SIZE, SIZE, generator=_gen(4)) * 2 - 1
    cond = backend.encode(PROMPTS)
    up = backend.upsample(images, cond, _gen(5), num_inference_steps=steps, guidance=guidance, noise_level=noise_level)
    assert up.shape == (2, 3, 2 * SIZE, 2 * SIZE)  # the tiny stage II upsamples 2x; the real one 4x
    stage2 = backend.stage2()
    expected = stage2.pipe(image=images, prompt_embeds=cond, negative_prompt_embeds=backend.null_cond.expand(2, -1, -1),
                           guidance_scale=guidance, num_inference_steps=steps, noise_level=noise_level,
                           generator=_gen(5), output_type="pt").images
    assert stage2.pipe.scheduler.timesteps.tolist() == stage2.pipeline_timesteps(steps)
    assert torch.equal(up, expected)
    assert stage2.thresholding.max_value == 1.0  # stage II's own setting, not stage I's 1.5


def test_the_plugin_identity_fingerprints_the_weights_once(tiny_root, tmp_path):
    import argparse
    import shutil

    import backends
    from project import PROJECT

    def identity(folder):
        args = argparse.Namespace(backend="deepfloyd", deepfloyd_dir=folder, deepfloyd_model=DEFAULT_STAGE1,
                                  embeddings=None, upsample=False, allow_download=False)
        return backends.resource(args, "cpu", PROJECT).identity

    first = identity(tiny_root)
    assert len(first["fingerprint"]) == 64 and first["dtype"] == "float32" and first["text"] == "t5"
    assert identity(tiny_root) == first
    copy = tmp_path / "copy"
    shutil.copytree(tiny_root, copy)
    assert identity(copy) == first  # the same files elsewhere are the same model
    config = next((copy / "DeepFloyd" / "IF-I-XL-v1.0" / "unet").glob("config.json"))
    config.write_text(config.read_text().replace("{", '{"edited": 1, ', 1))
    assert identity(copy)["fingerprint"] != first["fingerprint"]
