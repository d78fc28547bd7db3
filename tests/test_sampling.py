"""The sampling loops against the report's equations, with a cheap analytic denoiser."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.denoiser import Denoiser, Thresholding
from diffusion.sampling import (StridedSchedule, cfg_estimate, forward, iterative_denoise, iterative_denoise_cfg,
                                one_step_denoise, predict_x0, sample, strided_timesteps)


def cosine_alphas_cumprod(T: int = 1000) -> torch.Tensor:
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float32)
    return torch.cumprod(1 - betas, 0)


class PointwiseDenoiser(Denoiser):
    """A denoiser whose estimate at a pixel depends only on that pixel, t and the condition, so it
    commutes with every pixel permutation (flips, rotations). Counts its calls."""

    def __init__(self, T: int = 1000, size: int = 8, channels: int = 3, variance: bool = True):
        self.alphas_cumprod = cosine_alphas_cumprod(T)
        self.num_train_timesteps = T
        self.image_size, self.channels = size, channels
        self.identity = {"backend": "pointwise"}
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.variance = variance
        self.variance_type = "learned_range" if variance else "fixed_small_log"
        self.calls: list[int] = []  # batch size of every predict call

    def encode(self, prompt):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        return torch.tensor([[len(p) / 10, (sum(map(ord, p)) % 7) / 7] for p in prompts])

    def predict(self, x_t, t, cond):
        self.calls.append(x_t.shape[0])
        a, b = cond[:, 0].view(-1, 1, 1, 1), cond[:, 1].view(-1, 1, 1, 1)
        eps = torch.tanh(x_t * (1 + a) + t / self.num_train_timesteps - b)
        return eps, (torch.tanh(0.5 * x_t - a) if self.variance else None)


def gen(seed=0):
    return torch.Generator("cpu").manual_seed(seed)


@pytest.fixture
def den():
    return PointwiseDenoiser()


def test_forward_is_a2_and_reproducible():
    abar = cosine_alphas_cumprod()
    x0 = torch.rand(2, 3, 8, 8, generator=gen(1)) * 2 - 1
    x_t, eps = forward(x0, 500, abar, gen(7))
    assert torch.allclose(x_t, abar[500].sqrt() * x0 + (1 - abar[500]).sqrt() * eps)
    assert torch.equal(eps, torch.randn(2, 3, 8, 8, generator=gen(7)))
    assert torch.equal(forward(x0, 500, abar, gen(7))[0], x_t)
    per_sample, _ = forward(x0, torch.tensor([250, 750]), abar, noise=eps)
    assert torch.allclose(per_sample[1], forward(x0[1:], 750, abar, noise=eps[1:])[0][0])


def test_one_step_denoise(den):
    x0 = torch.rand(1, 3, 8, 8, generator=gen(1)) * 2 - 1
    x_t, eps = forward(x0, 600, den.alphas_cumprod, gen(2))
    assert torch.allclose(predict_x0(x_t, eps, den.alphas_cumprod[600]), x0, atol=1e-5)  # with the true noise
    cond = den.encode("a high quality photo")
    expected = predict_x0(x_t, den.predict(x_t, 600, cond)[0], den.alphas_cumprod[600])
    assert torch.equal(one_step_denoise(den, x_t, 600, cond), expected)


def test_strided_timesteps_scale_with_T():
    assert strided_timesteps(1000) == list(range(990, -1, -30))
    assert strided_timesteps(300) == list(range(297, -1, -9))  # the same fractions of the range
    assert strided_timesteps(PointwiseDenoiser(T=300)) == strided_timesteps(300)
    for T in (20, 50, 77, 1000, 4000):
        ts = strided_timesteps(T)
        assert ts[-1] == 0 and ts[0] <= T - 1 and all(b < a for a, b in zip(ts, ts[1:]))
    assert strided_timesteps(1000, start=999, stride=100) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99, 0]


def test_schedule_rejects_bad_timesteps(den):
    with pytest.raises(ValueError):
        StridedSchedule(den.alphas_cumprod, [10, 20, 0])
    with pytest.raises(ValueError):
        StridedSchedule(den.alphas_cumprod, [1000, 0])


@pytest.mark.parametrize("learned", [False, True])
def test_loop_is_equation_a3(learned):
    # The loop, written out from the report's equations, draw by draw.
    den = PointwiseDenoiser(variance=learned)
    ts, cond = [900, 500, 120, 0], den.encode("a photo of a dog")
    x = torch.randn(2, 3, 8, 8, generator=gen(3))
    ours = iterative_denoise(den, x, ts, 0, cond, gen(4))
    replay, abar = gen(4), den.alphas_cumprod
    for i, t in enumerate(ts):
        a_t = abar[t]
        a_p = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        alpha, beta = a_t / a_p, 1 - a_t / a_p
        eps, v = den.predict(x, t, cond.expand(2, -1))
        x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
        x = torch.sqrt(a_p) * beta / (1 - a_t) * x0 + torch.sqrt(alpha) * (1 - a_p) / (1 - a_t) * x
        if i + 1 < len(ts):
            small = (1 - a_p) / (1 - a_t) * beta
            var = small if v is None else torch.exp((v + 1) / 2 * torch.log(beta) + (1 - v) / 2 * torch.log(small))
            x = x + torch.sqrt(var) * torch.randn(x.shape, generator=replay)
    assert torch.allclose(ours, x, atol=1e-5)


def test_cfg_estimate_is_a4_with_conditional_variance(den):
    x = torch.randn(2, 3, 8, 8, generator=gen(5))
    cond, null = den.encode(["a dog", "a cat hat"]), den.encode("").expand(2, -1)
    eps, var = cfg_estimate(den, x, 300, cond, 7.0)
    assert den.calls == [4]  # both halves, both images: one call
    eps_u, _ = den.predict(x, 300, null)
    eps_c, var_c = den.predict(x, 300, cond)
    assert torch.allclose(eps, eps_u + 7.0 * (eps_c - eps_u), atol=1e-6)
    assert torch.equal(var, var_c)


def test_guidance_one_is_plain_conditional_sampling(den):
    ts, cond = strided_timesteps(den), den.encode("a photo")
    x = torch.randn(1, 3, 8, 8, generator=gen(0))
    plain = iterative_denoise(den, x, ts, 3, cond, gen(1))
    assert torch.equal(iterative_denoise_cfg(den, x, ts, 3, cond, gen(1), guidance=1.0), plain)


def test_same_seed_same_result(den):
    cond = den.encode(["a dog", "a cat"])
    a = sample(den, cond, gen(11), timesteps=[800, 400, 0])
    b = sample(den, cond, gen(11), timesteps=[800, 400, 0])
    c = sample(den, cond, gen(12), timesteps=[800, 400, 0])
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)


def test_intermediates_every_k(den):
    ts, cond = strided_timesteps(den), den.encode("a photo")
    x = torch.randn(1, 3, 8, 8, generator=gen(0))
    final, frames = iterative_denoise_cfg(den, x, ts, 10, cond, gen(1), every=5)
    assert [t for t, _ in frames] == ts[10::5]
    assert torch.equal(frames[0][1], x)
    assert torch.equal(final, iterative_denoise_cfg(den, x, ts, 10, cond, gen(1)))
    assert len(den.calls) == 2 * (len(ts) - 10) and set(den.calls) == {2}


def test_thresholding_follows_backend_unless_overridden(den):
    cond = den.encode("a dog")
    plain = sample(den, cond, gen(0), timesteps=[999, 500, 0], guidance=20.0)
    den.thresholding = Thresholding(0.95, 1.5)
    auto = sample(den, cond, gen(0), timesteps=[999, 500, 0], guidance=20.0)
    assert not torch.equal(auto, plain)
    assert torch.equal(sample(den, cond, gen(0), timesteps=[999, 500, 0], guidance=20.0, thresholding=None), plain)
    assert auto.abs().max() <= 1.0 + 1e-6  # the last step lands on the thresholded x0


def test_dynamic_threshold_scales_by_the_percentile_of_absolute_values():
    from diffusion.sampling import dynamic_threshold

    x0 = torch.randn(2, 3, 16, 16, generator=gen(0)) * torch.tensor([0.65, 0.3]).view(2, 1, 1, 1)
    x0[1] -= 0.9  # mostly negative: a percentile of the signed values would be far from that of |x0|
    out = dynamic_threshold(x0, Thresholding(0.95, 1.5))
    for i in range(2):
        s = x0[i].abs().flatten().quantile(0.95).clamp(1, 1.5)
        assert 1.05 < s < 1.45, "the percentile must lie inside the clamp range to be observable"
        assert torch.equal(out[i], x0[i].clamp(-s, s) / s)


def test_dynamic_threshold_clamps_the_scale_to_one_and_to_the_maximum():
    from diffusion.sampling import dynamic_threshold

    th = Thresholding(0.95, 1.5)
    small = torch.linspace(-0.8, 0.8, 48).view(1, 3, 4, 4)  # percentile 0.77: s = 1, the image is left alone
    assert torch.equal(dynamic_threshold(small, th), small)
    large = torch.linspace(-4, 4, 48).view(1, 3, 4, 4)  # percentile 3.8: s = max_value
    assert torch.equal(dynamic_threshold(large, th), large.clamp(-1.5, 1.5) / 1.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dynamic_threshold_of_half_precision_computes_in_float32(dtype):
    from diffusion.sampling import dynamic_threshold

    x0 = (torch.randn(2, 3, 8, 8, generator=gen(3)) * 1.2).to(dtype)
    out = dynamic_threshold(x0, Thresholding(0.95, 1.5))
    expected = dynamic_threshold(x0.float(), Thresholding(0.95, 1.5)).to(dtype)
    assert out.dtype == dtype and torch.equal(out, expected)


def test_forward_keeps_the_images_dtype():
    abar = cosine_alphas_cumprod()
    x64 = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=gen(0))
    x_t, eps = forward(x64, 500, abar, gen(1))
    assert x_t.dtype == eps.dtype == torch.float64
    assert torch.equal(eps, torch.randn(x64.shape, generator=gen(1), dtype=torch.float64))
    x16 = x64.to(torch.bfloat16)
    x_t, eps = forward(x16, torch.tensor([100, 900]), abar, gen(1))
    assert x_t.dtype == eps.dtype == torch.bfloat16


def test_iterative_denoise_passes_thresholding_and_every_on(den):
    ts, cond = strided_timesteps(den), den.encode("a photo")
    x = torch.randn(1, 3, 8, 8, generator=gen(0)) * 3
    den.thresholding = Thresholding(0.9, 1.2)
    auto = iterative_denoise(den, x, ts, 30, cond, gen(1))
    off = iterative_denoise(den, x, ts, 30, cond, gen(1), thresholding=None)
    assert not torch.equal(auto, off)
    final, frames = iterative_denoise(den, x, ts, 30, cond, gen(1), every=1)
    assert torch.equal(final, auto) and [t for t, _ in frames] == ts[30:]


def test_sample_defaults_and_what_it_passes_on(den):
    cond = den.encode(["a dog"])
    default = sample(den, cond, gen(5))
    assert torch.equal(default, sample(den, cond, gen(5), timesteps=strided_timesteps(den), guidance=7.0))
    assert not torch.equal(default, sample(den, cond, gen(5), guidance=3.0))
    assert not torch.equal(default, sample(den, cond, gen(5), uncond=den.encode("a cat")))
    final, frames = sample(den, cond, gen(5), every=11)
    assert torch.equal(final, default) and [t for t, _ in frames] == strided_timesteps(den)[::11]
    den.dtype = torch.float64
    assert sample(den, cond.double(), gen(5), timesteps=[500, 0]).dtype == torch.float64


def test_strided_timesteps_edges_and_rounding():
    from fractions import Fraction

    assert strided_timesteps() == list(range(990, -1, -30))
    assert strided_timesteps(1000, start=10, stride=9) == [10, 1, 0]  # a grid ending at 1 still ends at 0
    assert strided_timesteps(1000, start=0) == [0]
    for T in (77, 123, 301):
        expected = []
        for t in list(range(990, -1, -30)):
            v = min(int(Fraction(t * T, 1000) + Fraction(1, 2)), T - 1)  # round half up
            if not expected or v != expected[-1]:
                expected.append(v)
        assert strided_timesteps(T) == expected


def record_draw_dtypes(monkeypatch, *modules) -> list:
    """The dtype of every ``randn`` draw the given modules make, in order."""
    dtypes = []
    for module in modules:
        def draw(shape, generator, *, device=None, dtype=None, real=module.randn):
            dtypes.append(dtype)
            return real(shape, generator, device=device, dtype=dtype)

        monkeypatch.setattr(module, "randn", draw)
    return dtypes


def test_every_draw_is_in_the_denoisers_dtype(den, monkeypatch):
    import diffusion.sampling as sampling

    dtypes = record_draw_dtypes(monkeypatch, sampling)
    den.dtype = torch.float64
    den.alphas_cumprod = den.alphas_cumprod.double()
    out = sample(den, den.encode(["a dog"]).double(), gen(5), timesteps=[900, 500, 100, 0])
    forward(torch.zeros(1, 3, 8, 8, dtype=torch.float64), 10, den.alphas_cumprod, gen(1))
    assert out.dtype == torch.float64 and dtypes == [torch.float64] * 5  # x_T, three steps' noise, forward


def test_timesteps_must_strictly_decrease_inside_the_range(den):
    from diffusion.sampling import _check_timesteps

    assert _check_timesteps([999, 500, 0], 1000) == [999, 500, 0]
    for bad in ([], [500, 500, 0], [500, 600], [1000, 0], [500, -1], [-1]):
        with pytest.raises(ValueError) as err:
            _check_timesteps(bad, 1000)
        assert str(err.value) == f"timesteps must strictly decrease within [0, 999], got {bad}"


def test_thresholding_arguments(den):
    from diffusion.sampling import resolve_thresholding

    den.thresholding = Thresholding(0.9, 2.0)
    assert resolve_thresholding(den, "auto") == Thresholding(0.9, 2.0)
    assert resolve_thresholding(den, True) == Thresholding() == Thresholding(0.95, 1.5)
    assert resolve_thresholding(den, Thresholding(0.5, 3.0)) == Thresholding(0.5, 3.0)
    assert resolve_thresholding(den, None) is None and resolve_thresholding(den, False) is None
    with pytest.raises(ValueError, match=r"^thresholding must be 'auto', a Thresholding, True or None; got 'on'$"):
        resolve_thresholding(den, "on")


# --- the sampler settings IFPipeline honours (tests/test_deepfloyd_settings.py runs them end to end) ---

def test_a_list_of_generators_draws_one_row_from_each():
    from diffusion.sampling import draw_noise

    rows = draw_noise((3, 2, 4, 4), [gen(5), gen(6), gen(7)])
    for i, seed in enumerate((5, 6, 7)):
        assert torch.equal(rows[i], torch.randn(1, 2, 4, 4, generator=gen(seed))[0])
    assert torch.equal(draw_noise((2, 3), [gen(1)]), draw_noise((2, 3), gen(1)))  # a list of one is one
    assert torch.equal(draw_noise((2, 3), (gen(1), gen(2)))[1], torch.randn(1, 3, generator=gen(2))[0])
    with pytest.raises(ValueError, match="^2 generators were given for a batch of 3 images; pass one generator"):
        draw_noise((3, 2), [gen(1), gen(2)])


def test_guidance_below_one_is_refused(den):
    cond = den.encode("a dog")
    x = torch.randn(1, 3, 8, 8, generator=gen(1))
    for guidance in (0.0, 0.5, 0.999):
        with pytest.raises(ValueError, match=rf"^guidance γ = {guidance} is below 1, .* use γ = 1 for no guidance"):
            cfg_estimate(den, x, 500, cond, guidance)
        generator = gen(2)
        with pytest.raises(ValueError, match="is below 1"):
            sample(den, cond, generator, guidance=guidance, timesteps=[500, 0])
        assert torch.equal(generator.get_state(), gen(2).get_state())  # refused before x_T was drawn
    assert cfg_estimate(den, x, 500, cond, 1.0)[0].shape == x.shape
    den.calls.clear()
    cfg_estimate(den, x, 500, cond, 1.0)
    assert den.calls == [1]  # γ = 1 is the conditional estimate alone, one network call


def _scheduler_variance(abar, timesteps, i, variance_type, v=None):
    """DDPMScheduler's standard deviation for step i, from its own _get_variance."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type=variance_type)
    assert torch.equal(scheduler.alphas_cumprod, abar)
    scheduler.set_timesteps(timesteps=timesteps)
    var = scheduler._get_variance(timesteps[i], predicted_variance=v)
    if variance_type == "fixed_small_log":
        return var  # already a standard deviation
    if variance_type == "learned_range":
        return torch.exp(0.5 * var)
    return var ** 0.5


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"])
def test_noise_scale_is_ddpmschedulers_for_each_variance_type(variance_type):
    abar, ts = cosine_alphas_cumprod(), [950, 700, 400, 130]  # ends above 0: the last step has noise too
    schedule = StridedSchedule(abar, ts, variance_type=variance_type)
    v = torch.tanh(torch.randn(1, 3, 4, 4, generator=gen(3))) if variance_type == "learned_range" else None
    scales = [schedule.noise_scale(i, v) for i in range(len(ts))]
    for i in range(len(ts)):
        assert torch.equal(scales[i], _scheduler_variance(abar, ts, i, variance_type, v)), (variance_type, i)
    # The types differ where they should: beta_t is the largest, the posterior variance the smallest.
    if variance_type == "fixed_large":
        small = StridedSchedule(abar, ts, variance_type="fixed_small")
        assert all(scales[i] > small.noise_scale(i) for i in range(len(ts)))


def test_variance_settings_that_cannot_work_are_refused():
    abar = cosine_alphas_cumprod()
    with pytest.raises(ValueError, match="variance_type 'learned' is not one of fixed_small, fixed_small_log"):
        StridedSchedule(abar, [500, 0], variance_type="learned")
    with pytest.raises(ValueError, match="'learned_range' needs the network's variance channels"):
        StridedSchedule(abar, [500, 0], variance_type="learned_range").noise_scale(0)


def test_clip_sample_applies_only_without_thresholding():
    abar, ts = cosine_alphas_cumprod(), [600, 300, 0]
    x = torch.full((2, 1, 3, 3), 4.0)
    eps = torch.zeros_like(x)  # x0 = x / sqrt(abar): far outside [-1, 1]
    _, free = StridedSchedule(abar, ts).step(x, 2, eps, None, gen(0))
    _, clipped = StridedSchedule(abar, ts, clip=0.8).step(x, 2, eps, None, gen(0))
    _, thresholded = StridedSchedule(abar, ts, Thresholding(0.95, 1.5), clip=0.8).step(x, 2, eps, None, gen(0))
    assert free.max() > 4 and clipped.max() == 0.8 and clipped.min() == 0.8
    assert torch.equal(thresholded, torch.ones_like(x))  # thresholding wins: clamp to s = 1.5, divide by s


def test_a_step_adds_noise_exactly_when_it_starts_above_zero():
    abar = cosine_alphas_cumprod()
    x, eps = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    for ts, noisy_last in (([900, 500, 0], False), ([900, 500, 120], True)):
        schedule = StridedSchedule(abar, ts)
        generator = gen(9)
        before = generator.get_state()
        out, _ = schedule.step(x, len(ts) - 1, eps, None, generator)
        assert torch.equal(generator.get_state(), before) != noisy_last
        assert (out.abs().max() > 0) == noisy_last
