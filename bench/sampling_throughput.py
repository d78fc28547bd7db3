"""Sampling throughput of this project's loops against a naive loop, measured in the same run.

Two samplers, each against the way a first notebook would write it: one image at a time, the
conditional and the unconditional noise estimates from two separate network calls.

* **Part B, Algorithm 4** (class-conditioned DDPM, all T = 300 steps, γ = 5):
  ``diffusion.ddpm.sample_class`` draws the whole batch at once and gets both estimates from one
  forward pass of 2N images. Architecture of the ``cpu`` profile (D = 32), in the build's
  autocast dtype.
* **Part A, CFG sampling** (``diffusion.sampling.sample`` on the local backend, the strided
  schedule 990, 960, …, 0, γ = 7): the batched ``[uncond, cond]`` call of ``cfg_estimate``
  against two ``predict`` calls per image and step, both through the same ``StridedSchedule``.

Weights are random: speed does not depend on them, and the benchmark then needs no cache.
Throughput is images per second for a complete sample; the ratio ours / naive comes from the
same run, so it stays comparable on a busy machine.

    python -m bench.sampling_throughput            # about a minute and a half on 2 cores
    python -m bench.sampling_throughput --json bench/results/sampling.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import describe_machine, save_result
from diffusion import ddpm
from diffusion.local_denoiser import LocalBackend
from diffusion.rng import randn
from diffusion.sampling import StridedSchedule, sample, strided_timesteps
from diffusion.unet import ClassConditionalUNet


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ddpm_pair(n_ours: int, n_naive: int, hidden: int, autocast_dtype) -> dict:
    torch.manual_seed(0)
    model = ClassConditionalUNet(1, 10, hidden).eval()
    schedule = ddpm.linear_schedule(300)
    labels = torch.arange(n_ours) % 10

    def ours():
        ddpm.sample_class(model, labels, schedule, torch.Generator().manual_seed(1), guidance=5.0, keep_every=0,
                          autocast_dtype=autocast_dtype)

    @torch.no_grad()
    def naive():
        gen = torch.Generator().manual_seed(1)
        with torch.autocast("cpu", dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            for i in range(n_naive):
                x = torch.randn(1, 1, 28, 28, generator=gen)
                c = F.one_hot(torch.tensor([i % 10]), 10).float()
                for t in range(schedule.T, 0, -1):
                    t_in = torch.full((1,), t / schedule.T)
                    eps_c = model(x, c, t_in).float()
                    eps_u = model(x, torch.zeros_like(c), t_in).float()
                    x = ddpm.step(x, eps_u + 5.0 * (eps_c - eps_u), t, schedule, gen)

    return _pair("Part B: class-conditioned DDPM, Algorithm 4 (T = 300, γ = 5)", ours, n_ours, naive, n_naive,
                 f"D = {hidden}, {str(autocast_dtype).removeprefix('torch.') if autocast_dtype else 'float32'}")


def parta_pair(n_ours: int, n_naive: int, hidden: int) -> dict:
    torch.manual_seed(0)
    den = LocalBackend.from_model(ClassConditionalUNet(1, 10, hidden), {"T": 300, "beta1": 1e-4, "beta2": 0.02},
                                  checkpoint_sha256="random")
    ts = strided_timesteps(den)
    cond = den.encode("a handwritten 7")

    def ours():
        sample(den, cond, torch.Generator().manual_seed(1), n=n_ours, timesteps=ts, guidance=7.0)

    @torch.no_grad()
    def naive():
        gen = torch.Generator().manual_seed(1)
        schedule = StridedSchedule(den.alphas_cumprod, ts, den.thresholding)
        uncond = den.null_cond
        for _ in range(n_naive):
            x = randn((1, *den.shape), gen, device=den.device, dtype=den.dtype)
            for i, t in enumerate(ts):
                eps_c, _ = den.predict(x, t, cond)
                eps_u, _ = den.predict(x, t, uncond)
                x, _ = schedule.step(x, i, eps_u + 7.0 * (eps_c - eps_u), None, gen)

    return _pair(f"Part A: CFG sampling on the local backend ({len(ts)} strided steps, γ = 7)", ours, n_ours,
                 naive, n_naive, f"D = {hidden}, float32")


def _pair(name, ours, n_ours, naive, n_naive, setting) -> dict:
    ours_s, naive_s = _timed(ours), _timed(naive)
    row = {"sampler": name, "setting": setting,
           "ours_images": n_ours, "ours_seconds": round(ours_s, 2), "ours_images_per_second": round(n_ours / ours_s, 2),
           "naive_images": n_naive, "naive_seconds": round(naive_s, 2),
           "naive_images_per_second": round(n_naive / naive_s, 2)}
    row["speedup"] = round(row["ours_images_per_second"] / row["naive_images_per_second"], 2)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ddpm-images", type=int, default=100, help="images in our batched DDPM run")
    ap.add_argument("--naive-ddpm-images", type=int, default=4, help="images in the naive DDPM run")
    ap.add_argument("--parta-images", type=int, default=100)
    ap.add_argument("--naive-parta-images", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=32, help="UNet width D (the cpu profile's)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                    help="autocast dtype of the DDPM pair (the build's on this CPU)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    autocast = None if args.dtype == "float32" else torch.bfloat16
    rows = [ddpm_pair(args.ddpm_images, args.naive_ddpm_images, args.hidden, autocast),
            parta_pair(args.parta_images, args.naive_parta_images, args.hidden)]
    result = {"benchmark": "sampling throughput", "machine": describe_machine(), "rows": rows}
    for r in rows:
        print(f"{r['sampler']} [{r['setting']}]\n  ours  {r['ours_images_per_second']:8.2f} images/s "
              f"({r['ours_images']} in {r['ours_seconds']} s)\n  naive {r['naive_images_per_second']:8.2f} images/s "
              f"({r['naive_images']} in {r['naive_seconds']} s)\n  speedup {r['speedup']:.1f}x")
    return save_result(args.json, result)


if __name__ == "__main__":
    main()
