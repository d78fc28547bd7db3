"""Edits (SDEdit, inpainting, anagrams, hybrids), views and the Gaussian blur."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffusion.blur import best_blur, gaussian_blur, gaussian_kernel1d
from diffusion.edits import (anagram_estimate, hybrid, hybrid_blur_params, hybrid_estimate, inpaint, sdedit,
                             visual_anagram)
from diffusion.denoiser import Thresholding
from diffusion.sampling import (cfg_estimate, denoise_loop, forward, iterative_denoise_cfg, sample,
                                strided_timesteps)
from diffusion.views import FlipVertical, Identity, Rotate180, View
from tests.test_sampling import PointwiseDenoiser, gen, record_draw_dtypes

TS = [900, 600, 300, 100, 0]


@pytest.fixture
def den():
    return PointwiseDenoiser(size=12)


# --- views ---

class Rotate90(View):
    """A quarter turn: a view that is not its own inverse, to test the anagram loop with any view."""

    name = "rotate_90"

    def apply(self, x):
        return torch.rot90(x, 1, dims=(-2, -1))

    def inverse(self, x):
        return torch.rot90(x, -1, dims=(-2, -1))


VIEWS = (Identity(), FlipVertical(), Rotate90(), Rotate180())


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_view_inverse_undoes_apply(view):
    x = torch.randn(2, 3, 6, 6, generator=gen(0))
    assert torch.equal(view.inverse(view.apply(x)), x)
    assert torch.equal(view.apply(view.inverse(x)), x)


def test_flip_vertical_is_upside_down():
    x = torch.arange(6.0).view(1, 1, 3, 2)
    assert torch.equal(FlipVertical().apply(x)[0, 0], torch.tensor([[4.0, 5.0], [2.0, 3.0], [0.0, 1.0]]))


def test_rotate_180_turns_the_image_rather_than_mirroring_it():
    x = torch.arange(6.0).view(1, 1, 3, 2)
    assert torch.equal(Rotate180().apply(x)[0, 0], torch.tensor([[5.0, 4.0], [3.0, 2.0], [1.0, 0.0]]))


# --- anagrams ---

@pytest.mark.parametrize("views", [(Identity(), FlipVertical()), (Identity(), Rotate90()),
                                   (Identity(), Rotate90(), Rotate180())], ids=["flip", "rot90", "three"])
def test_anagram_with_one_prompt_is_plain_sampling(den, views):
    cond = den.encode("an oil painting of an old man")
    plain = sample(den, cond, gen(5), n=2, timesteps=TS)
    den.calls.clear()
    anagram = visual_anagram(den, [cond] * len(views), gen(5), views=views, n=2, timesteps=TS)
    # The mean of two equal terms is exact; of three it may round by an ulp, which this toy
    # denoiser's large x0 estimates amplify to ~1e-5.
    tol = 0.0 if len(views) == 2 else 1e-4
    torch.testing.assert_close(anagram, plain, rtol=tol, atol=tol)
    assert den.calls == [2 * len(views) * 2] * len(TS)  # every view and both CFG halves in one call


def test_anagram_estimate_unviews_noise_and_variance(den):
    x = torch.randn(1, 3, 12, 12, generator=gen(1))
    c1, c2 = den.encode("an old man"), den.encode("people around a campfire")
    eps, var = anagram_estimate(den, x, 500, [c1, c2], [Identity(), FlipVertical()], 7.0)
    flip = FlipVertical()
    e1, v1 = cfg_estimate(den, x, 500, c1, 7.0)
    e2, v2 = cfg_estimate(den, flip.apply(x), 500, c2, 7.0)
    assert torch.allclose(eps, (e1 + flip.inverse(e2)) / 2, atol=1e-6)
    assert torch.allclose(var, (v1 + flip.inverse(v2)) / 2, atol=1e-6)


# --- hybrids ---

def test_hybrid_of_one_prompt_is_its_estimate(den):
    x = torch.randn(2, 3, 12, 12, generator=gen(2))
    cond = den.encode("a skull")
    eps, var = hybrid_estimate(den, x, 400, cond, cond, 7.0, 5, 1.0)
    eps_ref, var_ref = cfg_estimate(den, x, 400, cond, 7.0)
    assert torch.allclose(eps, eps_ref, atol=1e-6) and torch.allclose(var, var_ref, atol=1e-6)
    plain = sample(den, cond, gen(3), n=2, timesteps=TS)
    assert torch.allclose(hybrid(den, cond, cond, gen(3), n=2, timesteps=TS), plain, atol=1e-5)


def test_hybrid_splits_frequencies(den):
    x = torch.randn(1, 3, 12, 12, generator=gen(4))
    low, high = den.encode("a skull"), den.encode("a waterfall")
    den.calls.clear()
    eps, var = hybrid_estimate(den, x, 400, low, high, 7.0, 5, 1.0)
    assert den.calls == [4]
    e_low, v_low = cfg_estimate(den, x, 400, low, 7.0)
    e_high, v_high = cfg_estimate(den, x, 400, high, 7.0)
    expected = gaussian_blur(e_low, 5, 1.0) + e_high - gaussian_blur(e_high, 5, 1.0)
    assert torch.allclose(eps, expected, atol=1e-6) and torch.allclose(var, (v_low + v_high) / 2, atol=1e-6)


def test_hybrid_blur_scales_with_resolution():
    assert hybrid_blur_params(64) == (33, 2.0)  # the course's setting
    assert hybrid_blur_params(28) == (15, 0.875)
    assert hybrid_blur_params(256) == (129, 8.0)
    assert all(hybrid_blur_params(s)[0] % 2 == 1 for s in range(4, 300))


def test_gaussian_blur():
    x = torch.randn(2, 3, 20, 20, generator=gen(6))
    k = gaussian_kernel1d(9, 1.5)
    assert abs(k.sum().item() - 1) < 1e-6 and torch.equal(k, k.flip(0))
    direct = F.conv2d(F.pad(x.view(6, 1, 20, 20), (4, 4, 4, 4), mode="reflect"), torch.outer(k, k)[None, None])
    assert torch.allclose(gaussian_blur(x, 9, 1.5), direct.view(2, 3, 20, 20), atol=1e-6)
    assert torch.allclose(gaussian_blur(torch.full((1, 1, 8, 8), 0.3), 33, 2.0), torch.full((1, 1, 8, 8), 0.3))
    assert gaussian_blur(x.half(), 5, 1.0).dtype == torch.float16
    with pytest.raises(ValueError):
        gaussian_blur(x, 4, 1.0)


# --- SDEdit and inpainting ---

def test_sdedit_is_forward_then_guided_denoising(den):
    x_orig = torch.rand(1, 3, 12, 12, generator=gen(7)) * 2 - 1
    cond, ts = den.encode("a rocket ship"), strided_timesteps(den)
    g = gen(8)
    x_t, _ = forward(x_orig, ts[20], den.alphas_cumprod, g)
    expected = iterative_denoise_cfg(den, x_t, ts, 20, cond, g)
    assert torch.equal(sdedit(den, x_orig, 20, cond, gen(8)), expected)
    assert torch.equal(sdedit(den, x_orig, 20, cond, gen(8)), expected)  # same seed, same edit


def test_inpainting_keeps_the_known_region_at_every_step(den):
    x_orig = torch.rand(2, 3, 12, 12, generator=gen(9)) * 2 - 1
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., 2:7, 3:9] = 1  # new content here
    cond = den.encode("a hat")
    out, frames = inpaint(den, x_orig, mask, cond, gen(10), timesteps=TS, every=1)
    # Replay the documented draw order: x, its forward noise, then per step z (not after the last) and
    # the forward noise of the new state.
    replay = gen(10)
    torch.randn(x_orig.shape, generator=replay)
    noises = [torch.randn(x_orig.shape, generator=replay)]
    for _ in TS[:-1]:
        torch.randn(x_orig.shape, generator=replay)
        noises.append(torch.randn(x_orig.shape, generator=replay))
    keep = 1 - mask
    for (t, frame), noise in zip(frames, noises):
        expected = forward(x_orig, t, den.alphas_cumprod, noise=noise)[0]
        assert torch.allclose(keep * frame, keep * expected, atol=1e-6), t
    assert torch.equal(keep * out, keep * x_orig)
    assert not torch.allclose(mask * out, mask * x_orig)
    assert torch.equal(inpaint(den, x_orig, mask, cond, gen(10), timesteps=TS), out)


# --- the contracts in detail (each test kills a class of one-line bugs) ---

@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 2, 3, 5)], ids=["CHW", "NCHW"])
def test_views_act_on_the_last_two_dimensions_of_any_tensor(shape):
    import numpy as np

    x = torch.arange(float(np.prod(shape))).view(shape)
    a, h = x.numpy(), x.ndim - 2
    expected = {"identity": a, "flip_vertical": np.flip(a, h)}
    for view in (Identity(), FlipVertical()):
        assert torch.equal(view.apply(x), torch.from_numpy(expected[view.name].copy())), view.name
        assert torch.equal(view.inverse(view.apply(x)), x), view.name
        assert repr(view) == f"{type(view).__name__}()"


@pytest.mark.parametrize("size, sigma", [(1, 1.0), (5, 0.7), (9, 1.5), (33, 2.0)])
def test_gaussian_kernel_is_the_sampled_normal_density(size, sigma):
    import math

    offsets = [i - size // 2 for i in range(size)]
    weights = [math.exp(-0.5 * (o / sigma) ** 2) for o in offsets]
    expected = torch.tensor([w / sum(weights) for w in weights], dtype=torch.float64)
    got = gaussian_kernel1d(size, sigma, dtype=torch.float64)
    assert got.dtype == torch.float64 and torch.allclose(got, expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("size, sigma, message", [(0, 1.0, "kernel_size must be odd and positive, got 0"),
                                                  (4, 1.0, "kernel_size must be odd and positive, got 4"),
                                                  (3, 0.0, "sigma must be positive, got 0.0"),
                                                  (3, -1.0, "sigma must be positive, got -1.0")])
def test_gaussian_kernel_refuses_bad_settings(size, sigma, message):
    with pytest.raises(ValueError, match="^" + message + "$"):
        gaussian_kernel1d(size, sigma)


def _blur_by_hand(x2d: torch.Tensor, k: torch.Tensor, mode: str) -> torch.Tensor:
    pad = len(k) // 2
    padded = F.pad(x2d[None, None], (pad, pad, pad, pad), mode=mode)
    return F.conv2d(padded, torch.outer(k, k)[None, None])[0, 0]


def test_blur_of_one_non_square_image_reflects_or_replicates_its_borders():
    x = torch.randn(3, 6, 10, generator=gen(11))  # (C, H, W): no batch dimension
    k = gaussian_kernel1d(5, 1.0)
    want = torch.stack([_blur_by_hand(c, k, "reflect") for c in x])
    assert torch.allclose(gaussian_blur(x, 5, 1.0), want, atol=1e-6)
    # A kernel whose half-width reaches the short side cannot reflect: the borders are replicated.
    k = gaussian_kernel1d(13, 2.0)
    want = torch.stack([_blur_by_hand(c, k, "replicate") for c in x])
    assert torch.allclose(gaussian_blur(x, 13, 2.0), want, atol=1e-6)


def test_half_precision_blur_is_computed_in_float32():
    x = torch.randn(2, 3, 9, 9, generator=gen(12))
    half = gaussian_blur(x.half(), 5, 1.0)
    assert half.dtype == torch.float16
    assert torch.equal(half, gaussian_blur(x.half().float(), 5, 1.0).half())


def test_best_blur_picks_the_sigma_with_the_least_squared_error():

    clean = gaussian_blur(torch.rand(4, 1, 16, 16, generator=gen(13)), 7, 1.0)
    noisy = clean + 0.2 * torch.randn(4, 1, 16, 16, generator=gen(14))
    sigmas = [0.5, 1.0, 2.0, 4.0]
    errors = {s: (gaussian_blur(noisy, 2 * round(3 * s) + 1, s) - clean).pow(2).mean().item() for s in sigmas}
    err, sigma, kernel, out = best_blur(noisy, clean, sigmas)
    assert sigma == min(errors, key=errors.get) and err == errors[sigma] and kernel == 2 * round(3 * sigma) + 1
    assert torch.equal(out, gaussian_blur(noisy, kernel, sigma))
    flat = torch.full((1, 1, 8, 8), 0.5)  # every blur of a constant image is the same image: a tie
    assert best_blur(flat, flat * 0.9, [2.0, 0.5, 1.0])[1:3] == (2.0, 13)  # a tie keeps the first sigma


def test_hybrid_blur_for_tiny_images_keeps_a_three_pixel_kernel():
    assert hybrid_blur_params(4) == (3, 0.125)


def test_hybrid_takes_an_explicit_blur_and_any_number_of_images(den):
    low, high = den.encode("a skull"), den.encode("a waterfall")
    x = torch.randn(3, 3, 12, 12, generator=gen(15))
    eps, var = hybrid_estimate(den, x, 400, low, high, 7.0, 3, 0.6)
    e_low, v_low = cfg_estimate(den, x, 400, low, 7.0)
    e_high, v_high = cfg_estimate(den, x, 400, high, 7.0)
    assert torch.allclose(eps, gaussian_blur(e_low, 3, 0.6) + e_high - gaussian_blur(e_high, 3, 0.6), atol=1e-6)
    assert torch.allclose(var, (v_low + v_high) / 2, atol=1e-6)
    default = hybrid(den, low, high, gen(16), n=3, timesteps=TS)
    explicit = hybrid(den, low, high, gen(16), n=3, timesteps=TS, kernel_size=3, sigma=0.6)
    want = denoise_loop(den, torch.randn(3, 3, 12, 12, generator=(g := gen(16))), TS, 0,
                        lambda x_t, t: hybrid_estimate(den, x_t, t, low, high, 7.0, 3, 0.6), g)
    assert torch.equal(explicit, want) and not torch.equal(default, explicit)
    only_k = hybrid(den, low, high, gen(16), n=3, timesteps=TS, kernel_size=3)
    only_sigma = hybrid(den, low, high, gen(16), n=3, timesteps=TS, sigma=0.6)
    assert not torch.equal(only_k, default) and not torch.equal(only_sigma, default)
    assert not torch.equal(only_k, explicit) and not torch.equal(only_sigma, explicit)


class ThresholdedDenoiser(PointwiseDenoiser):
    """The pointwise denoiser in float64, with DeepFloyd's dynamic thresholding switched on."""

    def __init__(self):
        super().__init__(size=12)
        self.dtype = torch.float64
        self.alphas_cumprod = self.alphas_cumprod.double()
        self.thresholding = Thresholding(0.95, 1.5)

    def encode(self, prompt):
        return super().encode(prompt).double()


def _settings_reach_the_loop(edit, den, **kwargs):
    """Run ``edit`` with non-default settings and check each one changed the result, and that the
    result is in the denoiser's dtype."""
    out = edit(den, gen(20), **kwargs)
    assert out.dtype == den.dtype
    for name, default in (("thresholding", "auto"), ("uncond", None), ("guidance", 7.0)):
        other = edit(den, gen(20), **{**kwargs, name: default})
        assert not torch.equal(out, other), f"{name} does not reach the sampling loop"
    frames_out, frames = edit(den, gen(20), **kwargs, every=1)
    assert torch.equal(frames_out, out) and len(frames) >= 2
    return out


@pytest.fixture
def thresholded():
    return ThresholdedDenoiser()


def test_sdedit_passes_every_setting_to_the_loop(thresholded):
    den = thresholded
    x_orig = torch.rand(1, 3, 12, 12, generator=gen(21)) * 2 - 1  # float32, as images arrive
    settings = dict(timesteps=TS, guidance=30.0, uncond=den.encode("a dog"), thresholding=None)

    def edit(den, g, **kw):
        return sdedit(den, x_orig, 1, den.encode("a rocket ship"), g, **kw)

    out = _settings_reach_the_loop(edit, den, **settings)
    g = gen(20)
    x_t, _ = forward(x_orig.double(), TS[1], den.alphas_cumprod, g)
    assert torch.equal(out, iterative_denoise_cfg(den, x_t, TS, 1, den.encode("a rocket ship"), g, guidance=30.0,
                                                  uncond=den.encode("a dog"), thresholding=None))


def test_inpaint_passes_every_setting_to_the_loop(thresholded):
    den = thresholded
    x_orig = torch.rand(1, 3, 12, 12, generator=gen(22)) * 2 - 1
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., 3:9, 3:9] = 1

    def edit(den, g, **kw):
        return inpaint(den, x_orig, mask, den.encode("a hat"), g, **kw)

    _settings_reach_the_loop(edit, den, timesteps=TS, guidance=30.0, uncond=den.encode("a dog"), thresholding=None)
    later = edit(den, gen(20), timesteps=TS, i_start=1)
    assert not torch.equal(later, edit(den, gen(20), timesteps=TS))  # i_start reaches the loop too


def test_inpaint_mixes_new_and_known_content_by_the_mask(den, monkeypatch):
    import diffusion.edits as edits

    captured = {}

    def spy(den, x, ts, i_start, estimator, generator, *, thresholding, every, after_step):
        captured.update(x=x, after_step=after_step, generator=generator)
        return x

    monkeypatch.setattr(edits, "denoise_loop", spy)
    x_orig = torch.rand(1, 3, 12, 12, generator=gen(23)) * 2 - 1
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., :, 6:] = 1
    inpaint(den, x_orig, mask, den.encode("a hat"), gen(24), timesteps=TS)
    keep = captured["after_step"]
    x = torch.rand(1, 3, 12, 12, generator=gen(25)) + 0.5
    state = captured["generator"].get_state()
    noise = torch.randn(x.shape, generator=captured["generator"])
    captured["generator"].set_state(state)
    mixed = keep(x, 2)
    known = forward(x_orig, TS[2], den.alphas_cumprod, noise=noise)[0]
    assert torch.allclose(mixed, mask * x + (1 - mask) * known, atol=1e-6)
    assert torch.equal(keep(x, len(TS))[..., :6], x_orig[..., :6])  # after the last step: the original itself
    assert torch.equal(keep(x, len(TS))[..., 6:], x[..., 6:])


def test_anagram_and_hybrid_pass_every_setting_to_the_loop(thresholded):
    den = thresholded
    c1, c2 = den.encode("an old man"), den.encode("a campfire")
    settings = dict(timesteps=TS, guidance=30.0, uncond=den.encode("a dog"), thresholding=None)
    _settings_reach_the_loop(lambda den, g, **kw: visual_anagram(den, [c1, c2], g, **kw), den, **settings)
    _settings_reach_the_loop(lambda den, g, **kw: hybrid(den, c1, c2, g, **kw), den, **settings)
    with pytest.raises(ValueError, match=r"^2 views need 2 conditions, got 1$"):
        anagram_estimate(den, torch.zeros(1, 3, 12, 12, dtype=torch.float64), 500, [c1],
                         [Identity(), FlipVertical()], 7.0)


def test_edits_use_the_course_schedule_and_guidance_by_default(den):
    cond, x_orig = den.encode("a dog"), torch.rand(1, 3, 12, 12, generator=gen(26)) * 2 - 1
    ts = strided_timesteps(den)
    mask = torch.ones(1, 1, 12, 12)
    assert torch.equal(sdedit(den, x_orig, 30, cond, gen(1)),
                       sdedit(den, x_orig, 30, cond, gen(1), timesteps=ts, guidance=7.0))
    assert torch.equal(inpaint(den, x_orig, mask, cond, gen(1)),
                       inpaint(den, x_orig, mask, cond, gen(1), timesteps=ts, guidance=7.0, i_start=0))
    assert torch.equal(visual_anagram(den, [cond, cond], gen(1)),
                       visual_anagram(den, [cond, cond], gen(1), timesteps=ts, guidance=7.0, n=1))
    assert torch.equal(hybrid(den, cond, cond, gen(1)), hybrid(den, cond, cond, gen(1), timesteps=ts, guidance=7.0,
                                                               n=1, kernel_size=5, sigma=0.375))


def test_blur_in_float64_stays_in_float64():
    x = torch.randn(2, 7, 9, generator=gen(12), dtype=torch.float64)
    k = gaussian_kernel1d(5, 1.0, dtype=torch.float64)
    out = gaussian_blur(x, 5, 1.0)
    assert out.dtype == torch.float64
    assert torch.allclose(out, torch.stack([_blur_by_hand(c, k, "reflect") for c in x]), rtol=0, atol=1e-13)


def test_a_tall_narrow_image_is_replicated_when_its_width_is_too_small_to_reflect():
    x = torch.randn(1, 10, 6, generator=gen(15))  # H = 10, W = 6: a half-width of 6 cannot reflect sideways
    k = gaussian_kernel1d(13, 2.0)
    assert torch.allclose(gaussian_blur(x, 13, 2.0), _blur_by_hand(x[0], k, "replicate")[None], atol=1e-6)


def test_every_draw_of_the_edits_is_in_the_denoisers_dtype(monkeypatch):
    import diffusion.sampling as sampling

    dtypes = record_draw_dtypes(monkeypatch, sampling)  # the edits draw through sampling.draw_noise
    den = ThresholdedDenoiser()
    a, b = den.encode("a dog"), den.encode("a cat")
    ts = [900, 500, 0]
    x_orig = torch.rand(1, 3, 12, 12, generator=gen(1)) * 2 - 1  # float32, as an image file loads
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., 3:9, 3:9] = 1
    outs = [hybrid(den, a, b, gen(2), timesteps=ts), visual_anagram(den, [a, b], gen(3), timesteps=ts),
            inpaint(den, x_orig, mask, a, gen(4), timesteps=ts)]
    assert all(o.dtype == torch.float64 for o in outs)
    assert dtypes and set(dtypes) == {torch.float64}, dtypes


class HalfDenoiser(PointwiseDenoiser):
    """The pointwise denoiser in bfloat16, conditions included, as a half-precision backend is."""

    def __init__(self):
        super().__init__(size=8)
        self.dtype = torch.bfloat16

    def encode(self, prompt):
        return super().encode(prompt).bfloat16()


def test_inpainting_keeps_a_half_precision_denoisers_dtype():
    den = HalfDenoiser()
    x_orig = torch.rand(1, 3, 8, 8, generator=gen(1))  # float32 image and mask, as loaded
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    out = inpaint(den, x_orig, mask, den.encode("a dog"), gen(4), timesteps=[900, 500, 0])
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("edit", ["sdedit", "inpaint", "visual_anagram", "hybrid"])
def test_every_edit_refuses_guidance_below_one_before_drawing(den, edit):
    a, b = den.encode("a dog"), den.encode("a cat")
    image, mask = torch.zeros(1, 3, 12, 12), torch.ones(1, 1, 12, 12)
    run = {"sdedit": lambda g: sdedit(den, image, 1, a, g, timesteps=TS, guidance=0.5),
           "inpaint": lambda g: inpaint(den, image, mask, a, g, timesteps=TS, guidance=0.5),
           "visual_anagram": lambda g: visual_anagram(den, [a, b], g, timesteps=TS, guidance=0.5),
           "hybrid": lambda g: hybrid(den, a, b, g, kernel_size=3, sigma=1.0, timesteps=TS, guidance=0.5)}[edit]
    generator = gen(4)
    with pytest.raises(ValueError, match="guidance γ = 0.5 is below 1"):
        run(generator)
    assert torch.equal(generator.get_state(), gen(4).get_state())
    assert den.calls == []
