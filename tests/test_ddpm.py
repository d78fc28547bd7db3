import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion import ddpm
from diffusion.unet import ClassConditionalUNet, TimeConditionalUNet


def test_linear_schedule_values():
    s = ddpm.linear_schedule(300, 1e-4, 0.02)
    assert s.T == 300 and s.betas.shape == (301,)
    assert s.betas[0] == 0 and s.alpha_bars[0] == 1
    assert s.betas[1].item() == pytest.approx(1e-4) and s.betas[300].item() == pytest.approx(0.02)
    assert torch.all(s.alpha_bars[1:] < s.alpha_bars[:-1])
    assert torch.allclose(s.alphas, 1 - s.betas)
    assert s.alpha_bars[2].item() == pytest.approx((1 - 1e-4) * (1 - 1e-4 - (0.02 - 1e-4) / 299), rel=1e-6)
    # the course schedule stops short of pure noise: abar_T ~ 0.048, so sqrt(abar_T) ~ 0.22 of x0 remains
    assert s.alpha_bars[-1].item() == pytest.approx(0.0480, abs=5e-4)


def test_a_schedule_on_another_device_than_the_images_is_refused_never_copied():
    """Copying the schedule inside a step is what broke the H200's CUDA-graph capture; "meta" stands in for
    the GPU here. Placed before the loop, it works."""
    schedule = ddpm.linear_schedule(10)
    x0, t = torch.zeros(2, 1, 4, 4, device="meta"), torch.tensor([1, 9], device="meta")
    for call in (lambda s: ddpm.q_sample(x0, t, x0, s), lambda s: ddpm.predict_x0(x0, x0, ddpm._at(s.alpha_bars, t)),
                 lambda s: ddpm.posterior_mean(x0, x0, t, s)):
        with pytest.raises(ValueError, match=r"the schedule is on cpu and t on meta.*schedule.to\('meta'\)"):
            call(schedule)
        assert call(schedule.to("meta")).device.type == "meta"


def test_q_sample_and_predict_x0_invert_each_other():
    s = ddpm.linear_schedule(50)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    t = torch.tensor([1, 10, 30, 50])
    x_t = ddpm.q_sample(x0, t, eps, s)
    abar = s.alpha_bars[t].view(-1, 1, 1, 1)
    assert torch.allclose(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    assert torch.allclose(ddpm.predict_x0(x_t[1:2], eps[1:2], s.alpha_bars[10]), x0[1:2], atol=1e-5)


class FixedEps(nn.Module):
    """A stand-in network with a known answer: eps(x, t) = 0.3 x + t."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, *more):
        t = more[0] if more else t  # (x, t) or (x, c, t)
        return 0.3 * x + t.view(-1, 1, 1, 1) + self.p


def test_sampler_matches_the_algorithm_written_out_by_hand():
    T = 4
    s = ddpm.linear_schedule(T)
    out = ddpm.sample_time(FixedEps(), 2, s, torch.Generator().manual_seed(3), keep_every=1)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 28, 28, generator=g)
    assert torch.equal(out.trajectory[0], x)
    for t in range(T, 0, -1):
        beta, alpha, abar = s.betas[t].item(), s.alphas[t].item(), s.alpha_bars[t].item()
        abar_prev = s.alpha_bars[t - 1].item()
        eps = 0.3 * x + t / T
        x0_hat = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        z = torch.randn(x.shape, generator=g) if t > 1 else torch.zeros_like(x)
        x = (math.sqrt(abar_prev) * beta / (1 - abar)) * x0_hat + (math.sqrt(alpha) * (1 - abar_prev) / (1 - abar)) * x \
            + math.sqrt(beta) * z
        assert torch.allclose(out.trajectory[T - t + 1], x, atol=1e-5)
    assert torch.allclose(out.images, x, atol=1e-5)


def test_last_step_is_the_noise_free_posterior_mean():
    s = ddpm.linear_schedule(10)
    g = torch.Generator().manual_seed(0)
    x1, eps = torch.randn(2, 1, 28, 28, generator=g), torch.randn(2, 1, 28, 28, generator=g)
    x0_hat = ddpm.predict_x0(x1, eps, s.alpha_bars[1])
    by_hand = (s.betas[1] / (1 - s.alpha_bars[1])) * x0_hat  # abar_0 = 1 kills the x_t term
    assert torch.allclose(ddpm.posterior_mean(x1, x0_hat, 1, s), by_hand)
    assert torch.equal(ddpm.step(x1, eps, 1, s, g), ddpm.posterior_mean(x1, x0_hat, 1, s))
    # beta_1 = 1 - abar_1, up to float32 rounding of 1 - 0.9999
    assert torch.allclose(by_hand, x0_hat, rtol=1e-3, atol=1e-4)


def test_trajectory_keeps_x_T_every_k_steps_and_the_final_image():
    s = ddpm.linear_schedule(12)
    out = ddpm.sample_time(FixedEps(), 3, s, torch.Generator().manual_seed(0), keep_every=5)
    assert ddpm.kept_timesteps(12, 5) == [12, 7, 2, 0]
    assert out.trajectory.shape == (4, 3, 1, 28, 28)
    assert torch.equal(out.trajectory[-1], out.images)


def test_sampling_is_reproducible_from_the_generator():
    s = ddpm.linear_schedule(5)
    torch.manual_seed(0)
    model = TimeConditionalUNet(1, 4)
    a = ddpm.sample_time(model, 2, s, torch.Generator().manual_seed(11))
    torch.manual_seed(999)  # the global RNG must not matter
    b = ddpm.sample_time(model, 2, s, torch.Generator().manual_seed(11))
    c = ddpm.sample_time(model, 2, s, torch.Generator().manual_seed(12))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert model.training  # restored after sampling in eval mode


def test_cfg_with_gamma_one_is_the_conditional_estimate():
    s = ddpm.linear_schedule(5)
    torch.manual_seed(0)
    model = ClassConditionalUNet(1, 10, 4).eval()
    labels = torch.tensor([1, 7])
    guided = ddpm.sample_class(model, labels, s, torch.Generator().manual_seed(5), guidance=1.0)

    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 28, 28, generator=g)
    c = F.one_hot(labels, 10).float()
    with torch.no_grad():
        for t in range(s.T, 0, -1):
            x = ddpm.step(x, model(x, c, torch.full((2,), t / s.T)), t, s, g)
    assert torch.allclose(guided.images, x, atol=1e-4)


def test_cfg_extrapolates_away_from_the_unconditional_estimate():
    s = ddpm.linear_schedule(3)
    torch.manual_seed(0)
    model = ClassConditionalUNet(1, 10, 4).eval()
    outs = [ddpm.sample_class(model, torch.tensor([2]), s, torch.Generator().manual_seed(1), guidance=w).images
            for w in (0.0, 1.0, 2.0)]
    # the update is affine in gamma for one step, and T=3 steps stay close to it
    assert not torch.allclose(outs[0], outs[1])
    assert torch.allclose(outs[2] - outs[1], outs[1] - outs[0], rtol=0.2, atol=0.2)


class ClassShiftedEps(nn.Module):
    """A stand-in whose class moves the estimate by a known amount: eps(x, c, t) = 0.3 x + t + c . w,
    so the conditional and unconditional estimates differ by c . w (0.1 to 1.0), far above rounding."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.1, 1.0, 10))

    def forward(self, x, c, t):
        return 0.3 * x + t.view(-1, 1, 1, 1) + (c @ self.w).view(-1, 1, 1, 1)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 5.0])
def test_class_sampler_is_algorithm_4_with_the_guided_estimate(gamma):
    T = 4
    s = ddpm.linear_schedule(T)
    labels = torch.tensor([0, 3, 9])
    model = ClassShiftedEps()
    with torch.no_grad():
        out = ddpm.sample_class(model, labels, s, torch.Generator().manual_seed(2), guidance=gamma, keep_every=1)
        g = torch.Generator().manual_seed(2)
        x = torch.randn(3, 1, 28, 28, generator=g)
        c, null = F.one_hot(labels, 10).float(), torch.zeros(3, 10)
        for t in range(T, 0, -1):
            tt = torch.full((3,), t / T)
            eps_c, eps_u = model(x, c, tt), model(x, null, tt)
            eps = eps_u + gamma * (eps_c - eps_u)
            x0 = (x - (1 - s.alpha_bars[t]).sqrt() * eps) / s.alpha_bars[t].sqrt()
            mean = (s.alpha_bars[t - 1].sqrt() * s.betas[t] / (1 - s.alpha_bars[t]) * x0
                    + s.alphas[t].sqrt() * (1 - s.alpha_bars[t - 1]) / (1 - s.alpha_bars[t]) * x)
            x = mean + (s.betas[t].sqrt() * torch.randn(x.shape, generator=g) if t > 1 else 0)
    assert torch.allclose(out.images, x, atol=1e-5)


def test_class_loss_drops_the_label_at_rate_p_uncond():
    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))
            self.conds = []

        def forward(self, x, c, t):
            self.conds.append(c.detach().clone())
            return x * self.p

    n = 20000
    labels = torch.arange(n) % 10
    for p_uncond in (0.1, 0.3):
        spy = Spy()
        ddpm.class_loss(spy, torch.rand(n, 1, 2, 2), labels, ddpm.linear_schedule(10), torch.Generator().manual_seed(0),
                        p_uncond=p_uncond)
        c = spy.conds[0]
        dropped = c.sum(1) == 0
        assert abs(dropped.float().mean().item() - p_uncond) < 0.01
        assert torch.equal(c[~dropped], F.one_hot(labels[~dropped], 10).float())


def test_drop_class_zeroes_rows_at_rate_p():
    onehot = F.one_hot(torch.arange(10000) % 10, 10).float()
    dropped = ddpm.drop_class(onehot, 0.1, torch.Generator().manual_seed(0))
    zero_rows = (dropped.sum(1) == 0).float().mean().item()
    assert abs(zero_rows - 0.1) < 0.01
    kept = dropped.sum(1) == 1
    assert torch.equal(dropped[kept], onehot[kept])
    assert (ddpm.drop_class(onehot, 0.0, torch.Generator()).sum(1) == 1).all()


def test_losses_are_scalar_and_use_only_the_generator():
    s = ddpm.linear_schedule(20)
    torch.manual_seed(0)
    tm, cm = TimeConditionalUNet(1, 4), ClassConditionalUNet(1, 10, 4)
    x0, labels = torch.rand(8, 1, 28, 28), torch.arange(8)
    a = ddpm.time_loss(tm, x0, s, torch.Generator().manual_seed(0))
    b = ddpm.time_loss(tm, x0, s, torch.Generator().manual_seed(0))
    assert a.ndim == 0 and torch.equal(a, b)
    c = ddpm.class_loss(cm, x0, labels, s, torch.Generator().manual_seed(0))
    assert c.ndim == 0 and torch.isfinite(c)



def test_schedule_defaults_and_the_checks_on_T():
    s = ddpm.linear_schedule()
    assert s.T == 300 and s.betas[1].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    # computed in float64 (a cumulative product of 300 terms), stored as float32
    betas = np.concatenate([[0.0], np.linspace(1e-4, 0.02, 300)])
    assert s.betas.dtype == s.alpha_bars.dtype == torch.float32
    assert torch.equal(s.betas, torch.from_numpy(betas).float())
    assert torch.equal(s.alpha_bars, torch.from_numpy(np.cumprod(1 - betas)).float())
    one = ddpm.linear_schedule(1)
    assert one.T == 1 and one.betas.tolist() == [0.0, pytest.approx(1e-4)]  # T=1: one step, beta_1 = beta1
    for bad in (0, -3, 2.0, "10"):
        with pytest.raises(ValueError, match=f"^T must be a positive integer, got {bad!r}$"):
            ddpm.linear_schedule(bad)


def test_time_loss_is_algorithm_1_written_out():
    s = ddpm.linear_schedule(10)
    x0 = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    model = FixedEps()
    loss = ddpm.time_loss(model, x0, s, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    t = torch.randint(1, 11, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    abar = s.alpha_bars[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    expected = ((0.3 * x_t + (t / 10).view(-1, 1, 1, 1) - eps) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert len(set(t.tolist())) > 1, "one t per image, so the draw must be of the batch's size"


def test_sampler_defaults_keep_every_tenth_step_and_guide_with_gamma_five():
    s = ddpm.linear_schedule(20)
    model = ClassShiftedEps()
    default = ddpm.sample_class(model, [3], s, torch.Generator().manual_seed(4))
    explicit = ddpm.sample_class(model, [3], s, torch.Generator().manual_seed(4), guidance=5.0, keep_every=10)
    assert torch.equal(default.images, explicit.images) and default.trajectory.shape[0] == 3  # x_20, x_10, x_0
    assert torch.equal(default.trajectory, explicit.trajectory)
    assert not torch.equal(default.images, ddpm.sample_class(model, [3], s, torch.Generator().manual_seed(4),
                                                             guidance=4.0).images)
    plain = ddpm.sample_time(FixedEps(), 1, s, torch.Generator().manual_seed(4))
    tenth = ddpm.sample_time(FixedEps(), 1, s, torch.Generator().manual_seed(4), keep_every=10)
    assert plain.trajectory.shape[0] == 3 and torch.equal(plain.trajectory, tenth.trajectory)


def test_samplers_run_the_network_under_the_autocast_they_are_given():
    s = ddpm.linear_schedule(3)
    torch.manual_seed(0)
    tm, cm = TimeConditionalUNet(1, 4).eval(), ClassConditionalUNet(1, 10, 4).eval()
    for run in (lambda **kw: ddpm.sample_time(tm, 2, s, torch.Generator().manual_seed(1), **kw),
                lambda **kw: ddpm.sample_class(cm, [1, 2], s, torch.Generator().manual_seed(1), **kw)):
        full, low = run().images, run(autocast_dtype=torch.bfloat16).images
        assert full.dtype == low.dtype == torch.float32  # the estimate is cast back before the update
        assert not torch.equal(full, low) and torch.allclose(full, low, atol=0.2)


def test_kept_timesteps_and_its_check():
    assert ddpm.kept_timesteps(10, 4) == [10, 6, 2, 0] and ddpm.kept_timesteps(10, 0) == [10, 0]
    for bad in (-1, 2.0):
        with pytest.raises(ValueError, match=rf"^keep_every must be a non-negative integer \(0 keeps only x_T and "
                                             rf"x_0\), got {bad!r}$"):
            ddpm.kept_timesteps(10, bad)


def test_a_step_draws_its_noise_in_the_images_dtype():
    s = ddpm.linear_schedule(5)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = ddpm.step(x, eps, 3, s, torch.Generator().manual_seed(2))
    z = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mean = ddpm.posterior_mean(x, ddpm.predict_x0(x, eps, s.alpha_bars[3]), 3, s)
    assert out.dtype == torch.float64
    assert torch.allclose(out, mean + s.betas[3].double().sqrt() * z, atol=1e-6)


def test_class_loss_is_algorithm_3_written_out_with_p_uncond_one_tenth():
    s = ddpm.linear_schedule(10)
    g = torch.Generator().manual_seed(1)
    x0, labels = torch.rand(50, 1, 4, 4, generator=g), torch.arange(50) % 10
    model = ClassShiftedEps()
    with torch.no_grad():
        loss = ddpm.class_loss(model, x0, labels, s, torch.Generator().manual_seed(2))
        g = torch.Generator().manual_seed(2)
        keep = torch.rand(50, generator=g) >= 0.1
        c = F.one_hot(labels, 10).float() * keep[:, None].float()
        t = torch.randint(1, 11, (50,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        abar = s.alpha_bars[t].view(-1, 1, 1, 1)
        expected = F.mse_loss(model(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, c, t / 10), eps)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_one_schedule_object_serves_training_and_the_part_a_loops():
    """Part A's loops index diffusers' way (t = 0 .. T-1, the t + 1 of training's schedule): the Denoiser's
    alphas_cumprod is a view of the same ddpm.Schedule, and a diffusers alphas_cumprod becomes one exactly."""
    s = ddpm.linear_schedule(50)
    assert torch.equal(s.alphas_cumprod, s.alpha_bars[1:]) and s.alphas_cumprod[0] == s.alpha_bars[1]
    back = ddpm.Schedule.from_alphas_cumprod(s.alphas_cumprod)
    assert torch.equal(back.alpha_bars, s.alpha_bars) and back.T == s.T
    assert torch.allclose(back.betas, s.betas, atol=1e-6) and back.betas[0] == 0
    doubled = ddpm.Schedule.from_alphas_cumprod(s.alphas_cumprod.double())
    assert doubled.alpha_bars.dtype == torch.float64  # the scheduler's dtype is kept

    from diffusion.local_denoiser import LocalBackend
    from diffusion.unet import ClassConditionalUNet

    den = LocalBackend.from_model(ClassConditionalUNet(1, 10, 4), {"T": 50, "beta1": 1e-4, "beta2": 0.02},
                                  checkpoint_sha256="toy")
    assert isinstance(den.schedule, ddpm.Schedule) and torch.equal(den.alphas_cumprod, s.alphas_cumprod)
