"""One training step of Part B's DDPM, three ways, timed in the same run.

* ``eager, as before``: the loop as it was written for the CPU (Adam with its default
  implementation, one Python call per kernel); on CUDA this is what fit() did before the fast path;
* ``eager, fused Adam``: the step fit() falls back to on CUDA when a graph cannot be had;
* ``CUDA graph``: the whole step (forward, backward, fused Adam, the noise draws) replayed as one
  graph, what fit() does on CUDA.

The model is the spec profile's time-conditioned UNet (D = 64, batch 128) under bf16 autocast on
CUDA, and a smoke-sized one (D = 8, batch 64) on a CPU, where only the first variant exists.

    python -m bench.step_timing --device cuda --json out.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import describe_machine, save_result
from diffusion import ddpm, rng
from diffusion.training import EagerStep, GraphStep, make_optimizer
from diffusion.unet import TimeConditionalUNet

SIZES = {"cuda": {"num_hiddens": 64, "batch_size": 128, "steps": 300},
         "cpu": {"num_hiddens": 8, "batch_size": 64, "steps": 20}}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(kind: str, device: torch.device, num_hiddens: int, batch_size: int, steps: int,
                 autocast_dtype) -> dict:
    torch.manual_seed(0)
    model = TimeConditionalUNet(1, num_hiddens).to(device=device, memory_format=torch.channels_last)
    schedule = ddpm.linear_schedule(300).to(device)
    optimizer = (torch.optim.Adam(model.parameters(), lr=1e-3) if kind == "eager, as before"
                 else make_optimizer(model, 1e-3, device))
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None,
                              **({"cache_enabled": False} if device.type == "cuda" else {}))
    step = EagerStep(model, optimizer, lambda m, x0, generator: ddpm.time_loss(m, x0, schedule, generator),
                     rng.generator(1, device), autocast)
    if kind == "CUDA graph":
        step = GraphStep(step)
    data = rng.rand((batch_size * 8, 1, 28, 28), rng.generator(2, device))
    data = data.contiguous(memory_format=torch.channels_last)
    batches = [(data[i * batch_size:(i + 1) * batch_size],) for i in range(8)]
    for i in range(5):  # warm-up (and, for the graph, its capture)
        step(batches[i % 8])
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        loss = step(batches[i % 8])
    _sync(device)
    ms = (time.perf_counter() - start) / steps * 1e3
    out = {"ms_per_step": round(ms, 3), "images_per_second": round(batch_size / ms * 1e3),
           "final_loss_finite": bool(torch.isfinite(loss))}
    if isinstance(step, GraphStep):
        out["path"] = "cuda-graph" if step.active else "eager (fallback)"
        out["note"] = step.note
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, help="timed steps per variant (default: 300 on CUDA, 20 on a CPU)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    size = dict(SIZES["cuda" if device.type == "cuda" else "cpu"])
    if args.steps:
        size["steps"] = args.steps
    dtype = torch.bfloat16 if device.type == "cuda" else None
    kinds = ["eager, as before", "eager, fused Adam", "CUDA graph"] if device.type == "cuda" else ["eager, as before"]
    result = {"benchmark": "training step", "machine": describe_machine(), "device": str(device),
              "model": f"time-conditioned UNet, D = {size['num_hiddens']}, batch {size['batch_size']}",
              "autocast": str(dtype), "variants": {}}
    for kind in kinds:
        result["variants"][kind] = time_variant(kind, device, size["num_hiddens"], size["batch_size"], size["steps"],
                                                dtype)
        print(f"{kind:20s} {result['variants'][kind]['ms_per_step']:8.3f} ms/step", flush=True)
    base = result["variants"]["eager, as before"]["ms_per_step"]
    fast = result["variants"].get("CUDA graph")
    result["speedup"] = round(base / fast["ms_per_step"], 2) if fast else None
    if fast:
        print(f"CUDA graph: {result['speedup']}x the eager loop", flush=True)
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
