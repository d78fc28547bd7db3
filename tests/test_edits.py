"""Edits (SDEdit, inpainting, anagrams, hybrids), views and the Gaussian blur."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffusion.edits import (anagram_estimate, gaussian_blur, gaussian_kernel1d, hybrid, hybrid_blur_params,
                             hybrid_estimate, inpaint, sdedit, visual_anagram)
from diffusion.sampling import cfg_estimate, forward, iterative_denoise_cfg, sample, strided_timesteps
from diffusion.views import VIEWS, FlipVertical, Identity, Rotate90, Rotate180, view_by_name
from tests.test_sampling import PointwiseDenoiser, gen

TS = [900, 600, 300, 100, 0]


@pytest.fixture
def den():
    return PointwiseDenoiser(size=12)


# --- views ---

@pytest.mark.parametrize("name", sorted(VIEWS))
def test_view_inverse_undoes_apply(name):
    view = view_by_name(name)
    x = torch.randn(2, 3, 6, 6, generator=gen(0))
    assert torch.equal(view.inverse(view.apply(x)), x)
    assert torch.equal(view.apply(view.inverse(x)), x)


def test_flip_vertical_is_upside_down():
    x = torch.arange(6.0).view(1, 1, 3, 2)
    assert torch.equal(FlipVertical().apply(x)[0, 0], torch.tensor([[4.0, 5.0], [2.0, 3.0], [0.0, 1.0]]))
    with pytest.raises(ValueError):
        view_by_name("negate")


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
