"""Every scheduler setting IFPipeline honours: the hand-written loops match it bit for bit, or the
backend refuses the setting before sampling, in one sentence that names it.

Each case builds a tiny random IF (in memory, no files) with one setting changed from IF's own
configuration, runs diffusers' pipeline and our loop from the same generator, and compares.
"""
from __future__ import annotations

from types import SimpleNamespace

from tests import random_if

import pytest
import torch

from diffusion.deepfloyd_denoiser import DeepFloydBackend, UnsupportedScheduler, sampler_settings
from diffusion.edits import sdedit, visual_anagram
from diffusion.sampling import sample

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler, IFImg2ImgPipeline  # noqa: E402

# (text width, image side): the shape of the test pipelines.
SHAPES = {"t32-s32": (32, 32), "t48-s16": (48, 16)}

# One setting changed from IF's stage I scheduler (dynamic thresholding 0.95 / 1.5, learned range).
SETTINGS = {
    "IF's own": {},
    "thresholding 0.9, max 2": dict(dynamic_thresholding_ratio=0.9, sample_max_value=2.0),
    "clip [-1, 1] (diffusers' default)": dict(thresholding=False),
    "clip [-0.8, 0.8]": dict(thresholding=False, clip_sample_range=0.8),
    "no thresholding, no clip": dict(thresholding=False, clip_sample=False),
    "fixed_small": dict(variance_type="fixed_small"),
    "fixed_small_log, clipped": dict(variance_type="fixed_small_log", thresholding=False),
    "fixed_large": dict(variance_type="fixed_large"),
    "linear betas": dict(beta_schedule="linear"),
}

# How the pipeline is told its timesteps: (scheduler settings, pipeline arguments).
SCHEDULES = {
    "leading, 5 steps": ({}, dict(num_inference_steps=5)),
    "trailing, 4 steps (ends at 249)": (dict(timestep_spacing="trailing"), dict(num_inference_steps=4)),
    "leading, steps_offset 1 (ends at 1)": (dict(steps_offset=1), dict(num_inference_steps=5)),
    "custom, ending at 120": ({}, dict(timesteps=[999, 600, 300, 120])),
    "fast27": ({}, "fast27"),
}


@pytest.fixture(scope="module")
def pipes():
    return {name: random_if.build_stage1(text_dim, size) for name, (text_dim, size) in SHAPES.items()}


def _backend(pipe, **scheduler) -> DeepFloydBackend:
    """The loaded pipeline with one scheduler changed, as a backend (the pipeline is shared)."""
    pipe.scheduler = DDPMScheduler(**{**random_if.IF_STAGE1_SCHEDULER, **scheduler})
    return DeepFloydBackend(pipe, device="cpu", dtype=torch.float32)


def _gen(seed):
    return torch.Generator("cpu").manual_seed(seed)


def _pipeline_and_ours(den, schedule_args, *, batch, guidance, seed=3, generators=None):
    """The pipeline's images and ours, from the same draws; the timesteps are the ones the pipeline
    itself used."""
    from diffusers.pipelines.deepfloyd_if import fast27_timesteps

    if schedule_args == "fast27":
        schedule_args = dict(timesteps=list(fast27_timesteps))
    text_dim = den.embed_dim
    cond = torch.randn(batch, 77, text_dim, generator=_gen(100 + batch))
    uncond = torch.randn(1, 77, text_dim, generator=_gen(99)).expand(batch, -1, -1)
    make = generators or (lambda: _gen(seed))
    expected = den.pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=guidance,
                        generator=make(), output_type="pt", **schedule_args).images
    timesteps = den.pipe.scheduler.timesteps.tolist()
    ours = sample(den, cond, make(), timesteps=timesteps, guidance=guidance, uncond=uncond[:1])
    return expected, ours, timesteps


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_each_setting_matches_ifpipeline(pipes, setting, shape):
    for schedule in ("leading, 5 steps", "trailing, 4 steps (ends at 249)"):
        scheduler, args = SCHEDULES[schedule]
        den = _backend(pipes[shape], **SETTINGS[setting], **scheduler)
        expected, ours, _ = _pipeline_and_ours(den, args, batch=2, guidance=7.0)
        assert torch.equal(ours, expected), (setting, schedule, (ours - expected).abs().max())


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("batch, guidance", [(1, 7.0), (3, 1.0), (2, 1.5)])
def test_each_schedule_matches_ifpipeline(pipes, schedule, batch, guidance):
    scheduler, args = SCHEDULES[schedule]
    den = _backend(pipes["t32-s32"], **scheduler)
    expected, ours, timesteps = _pipeline_and_ours(den, args, batch=batch, guidance=guidance)
    assert torch.equal(ours, expected), (schedule, (ours - expected).abs().max())
    if timesteps[-1] >= 100:  # the last step added noise, as DDPMScheduler does from any t > 0
        assert expected.abs().max() > 1.5


def test_a_schedule_ending_above_zero_adds_noise_on_its_last_step(pipes):
    den = _backend(pipes["t32-s32"], thresholding=False)
    ending_at_zero = sample(den, torch.zeros(1, 77, 32), _gen(1), timesteps=[999, 500, 0], guidance=1.0)
    ending_above = sample(den, torch.zeros(1, 77, 32), _gen(1), timesteps=[999, 500, 200], guidance=1.0)
    assert ending_at_zero.abs().max() <= 1.0  # clipped x0, no noise on the last step: inside [-1, 1]
    assert ending_above.abs().max() > 1.0


def test_a_list_of_generators_one_per_image(pipes):
    den = _backend(pipes["t32-s32"])
    per_image = lambda: [_gen(s) for s in (5, 6, 7)]  # noqa: E731
    expected, ours, _ = _pipeline_and_ours(den, dict(num_inference_steps=5), batch=3, guidance=7.0,
                                           generators=per_image)
    assert torch.equal(ours, expected)
    # Row i comes from generator i alone: the second image is the one generator 6 makes alone (up to
    # the rounding of a batch of 3 against a batch of 1 in the UNet's matrix products).
    cond = torch.randn(3, 77, 32, generator=_gen(103))
    alone = sample(den, cond[1:2], [_gen(6)], timesteps=[800, 600, 400, 200, 0], guidance=7.0)
    together = sample(den, cond, per_image(), timesteps=[800, 600, 400, 200, 0], guidance=7.0)
    assert torch.allclose(together[1:2], alone, atol=1e-3)
    assert not torch.allclose(together[:1], alone, atol=1e-2)
    with pytest.raises(ValueError, match="2 generators were given for a batch of 3 images"):
        sample(den, cond, [_gen(1), _gen(2)], timesteps=[800, 0])
    with pytest.raises(ValueError, match="2 generators were given for a batch of 3 images"):
        visual_anagram(den, [cond[:1], cond[1:2]], [_gen(1), _gen(2)], n=3, timesteps=[800, 0])


def test_guidance_below_one_is_refused_before_sampling(pipes):
    den = _backend(pipes["t32-s32"])
    cond = torch.randn(1, 77, 32, generator=_gen(0))
    # What IFPipeline does below 1: guidance off, the conditional estimate alone (as γ = 1).
    at_half = den.pipe(prompt_embeds=cond, negative_prompt_embeds=torch.zeros_like(cond), guidance_scale=0.5,
                       num_inference_steps=3, generator=_gen(2), output_type="pt").images
    assert torch.equal(at_half, sample(den, cond, _gen(2), timesteps=den.pipe.scheduler.timesteps.tolist(),
                                       guidance=1.0))
    generator = _gen(4)
    before = generator.get_state()
    for run in (lambda: sample(den, cond, generator, guidance=0.5, timesteps=[800, 0]),
                lambda: sdedit(den, torch.zeros(1, 3, 32, 32), 0, cond, generator, guidance=0.0, timesteps=[800, 0]),
                lambda: visual_anagram(den, [cond, cond], generator, guidance=0.9, timesteps=[800, 0])):
        with pytest.raises(ValueError, match=r"guidance γ = 0\.\d is below 1.*use γ = 1 for no guidance") as info:
            run()
        assert "\n" not in str(info.value)
    assert torch.equal(generator.get_state(), before)  # refused before a single draw


@pytest.mark.parametrize("batch, strength", [(1, 0.6), (2, 0.8)])
def test_sdedit_matches_ifimg2imgpipeline(pipes, batch, strength):
    den = _backend(pipes["t32-s32"])
    img2img = IFImg2ImgPipeline(**den.pipe.components)
    img2img.set_progress_bar_config(disable=True)
    image = torch.rand(batch, 3, 32, 32, generator=_gen(8)) * 2 - 1
    cond = torch.randn(batch, 77, 32, generator=_gen(9))
    uncond = torch.zeros(1, 77, 32)
    timesteps = [800, 600, 400, 200, 0]
    expected = img2img(image=image, strength=strength, timesteps=timesteps, prompt_embeds=cond,
                       negative_prompt_embeds=uncond.expand(batch, -1, -1), guidance_scale=7.0,
                       generator=_gen(10), output_type="pt").images
    i_start = len(timesteps) - int(len(timesteps) * strength)  # IFImg2ImgPipeline.get_timesteps
    ours = sdedit(den, image, i_start, cond, _gen(10), timesteps=timesteps, guidance=7.0, uncond=uncond)
    assert torch.equal(ours, expected)


REFUSED = {
    "prediction_type is 'v_prediction'": dict(prediction_type="v_prediction"),
    "prediction_type is 'sample'": dict(prediction_type="sample"),
    "variance_type is 'learned'": dict(variance_type="learned"),
    "variance_type is 'fixed_large_log'": dict(variance_type="fixed_large_log"),
}


@pytest.mark.parametrize("setting", REFUSED)
def test_settings_the_loops_do_not_reproduce_are_refused(pipes, setting):
    with pytest.raises(UnsupportedScheduler) as info:
        _backend(pipes["t32-s32"], **REFUSED[setting])
    message = str(info.value)
    assert setting in message and "\n" not in message and message.count(". ") == 0


def test_other_schedulers_and_a_missing_variance_are_refused(pipes):
    pipe = pipes["t32-s32"]
    with pytest.raises(UnsupportedScheduler, match="the pipeline's scheduler is DDIMScheduler"):
        sampler_settings(DDIMScheduler(), pipe.unet.config, 3)
    with pytest.raises(UnsupportedScheduler, match="'learned_range', which needs a UNet with 6 output channels"):
        sampler_settings(DDPMScheduler(**random_if.IF_STAGE1_SCHEDULER), SimpleNamespace(in_channels=3, out_channels=3), 3)


def test_a_refused_setting_fails_the_build_in_one_paragraph(tmp_path):
    import argparse

    import backends
    from builder import BuildError
    from project import PROJECT

    root = random_if.save_tiny_if(tmp_path).parent.parent
    config = root / "DeepFloyd" / "IF-I-XL-v1.0" / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"epsilon"', '"v_prediction"'))
    args = argparse.Namespace(backend="deepfloyd", deepfloyd_dir=root, deepfloyd_model="DeepFloyd/IF-I-XL-v1.0",
                              embeddings=None, upsample=False, allow_download=False, offload=False)
    resource = backends.resource(args, "cpu", PROJECT)
    with pytest.raises(BuildError) as info:
        resource.load(SimpleNamespace(device="cpu"))
    message = str(info.value)
    assert "prediction_type is 'v_prediction'" in message and str(root) in message and "\n" not in message
