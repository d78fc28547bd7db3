"""Training throughput of this project's trainer against an assignment-style loop.

Both train the same TimeConditionalUNet (D=64 by default) on MNIST with the Algorithm 1 loss at
batch 128. The naive loop is what the course notebook does: a torch DataLoader over a Dataset
whose __getitem__ turns each uint8 image into a PIL image and then a float tensor
(torchvision's MNIST + ToTensor path, written out because torchvision is not installed), fp32,
default memory format. Ours is `diffusion.training.fit`: one device tensor indexed by a seeded
permutation, channels_last, bf16 autocast.

It also counts the FLOPs of one step (FlopCounterMode) to report achieved GFLOP/s against a
measured matmul peak in bf16 and fp32.

    python -m bench.train_throughput              # ~1.5 minutes on a 2-core CPU
    python -m bench.train_throughput --steps 20 --naive-steps 10
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from bench.common import describe_machine, save_result
from diffusion import data, ddpm
from diffusion.training import fit
from diffusion.unet import TimeConditionalUNet


class NaiveMNIST(Dataset):
    def __init__(self, split):
        self.images, self.labels = split.images, split.labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).float().div(255).unsqueeze(0)  # ToTensor
        return x, int(self.labels[i])


def naive_images_per_second(split, D, batch_size, steps, warmup, schedule):
    torch.manual_seed(0)
    model = TimeConditionalUNet(1, D).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(NaiveMNIST(split), batch_size=batch_size, shuffle=True)
    T = schedule.T
    seen, start = 0, None
    for i, (x0, _) in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + steps:
            break
        t = torch.randint(1, T + 1, (x0.shape[0],))
        eps = torch.randn_like(x0)
        abar = schedule.alpha_bars[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(model(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t / T), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += x0.shape[0] if i >= warmup else 0
    return seen / (time.perf_counter() - start)


def ours_images_per_second(x, D, batch_size, steps, warmup, schedule, dtype):
    def loss(model, x0, generator):
        return ddpm.time_loss(model, x0, schedule, generator)

    torch.manual_seed(0)
    model = TimeConditionalUNet(1, D)
    fit(model, loss, (x[:warmup * batch_size],), epochs=1, batch_size=batch_size, lr=1e-3, autocast_dtype=dtype)
    history = fit(model, loss, (x[:steps * batch_size],), epochs=1, batch_size=batch_size, lr=1e-3,
                  autocast_dtype=dtype)
    return history.images_per_second


def step_flops(D, batch_size, schedule):
    model = TimeConditionalUNet(1, D)
    x = torch.rand(batch_size, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        ddpm.time_loss(model, x, schedule, torch.Generator().manual_seed(0)).backward()
    return counter.get_total_flops()


def matmul_peak(dtype, n=2048, repeats=10):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hiddens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="timed steps of our trainer")
    p.add_argument("--naive-steps", type=int, default=15, help="timed steps of the naive loop")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    schedule = ddpm.linear_schedule()
    split = data.load("train")
    x, _ = data.as_tensor(split)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; TimeConditionalUNet D={args.hiddens}, "
          f"batch {args.batch_size}", flush=True)

    flops = step_flops(args.hiddens, args.batch_size, schedule) / args.batch_size
    peak16, peak32 = matmul_peak(torch.bfloat16), matmul_peak(torch.float32)
    print(f"FLOPs per image (fwd+bwd): {flops / 1e9:.2f} GF; matmul peak bf16 {peak16 / 1e9:.0f} GFLOP/s, "
          f"fp32 {peak32 / 1e9:.0f} GFLOP/s", flush=True)

    ours = ours_images_per_second(x, args.hiddens, args.batch_size, args.steps, args.warmup, schedule, torch.bfloat16)
    print(f"ours  (tensor data, channels_last, bf16): {ours:7.1f} img/s = {ours * flops / 1e9:.0f} GFLOP/s "
          f"({ours * flops / peak16:.0%} of bf16 matmul peak)", flush=True)
    naive = naive_images_per_second(split, args.hiddens, args.batch_size, args.naive_steps, args.warmup, schedule)
    print(f"naive (DataLoader + ToTensor, fp32):      {naive:7.1f} img/s = {naive * flops / 1e9:.0f} GFLOP/s "
          f"({naive * flops / peak32:.0%} of fp32 matmul peak)", flush=True)
    print(f"speed-up: {ours / naive:.2f}x")
    result = {"benchmark": "training throughput", "machine": describe_machine(), "hiddens": args.hiddens,
              "batch_size": args.batch_size, "gflop_per_image": round(flops / 1e9, 3),
              "peak_gflops": {"bfloat16": round(peak16 / 1e9), "float32": round(peak32 / 1e9)},
              "ours_images_per_second": round(ours, 1), "naive_images_per_second": round(naive, 1),
              "speedup": round(ours / naive, 2)}
    return save_result(args.json, result)


if __name__ == "__main__":
    main()
