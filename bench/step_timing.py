"""One training step of Part B's DDPM, several ways, timed in the same run, with a profile of the step.

The model is the spec profile's time-conditioned UNet (D = 64, batch 128) under bf16 autocast on
CUDA, and a smoke-sized one (D = 8, batch 64) on a CPU. Every variant trains the same model with the
same loss, noise draws and Adam (``diffusion/`` is not touched: each variant only changes how the step
is run), in this order, the cheap and most wanted first:

* ``CUDA graph``: the whole step (forward, backward, fused Adam, the noise draws) replayed as one
  graph, what fit() does on CUDA (channels_last, cuDNN's default algorithms); gpu-check's target;
* ``eager, as before``: the loop as it was written for the CPU (Adam with its default implementation,
  one Python call per kernel); the reference of the speed-up;
* ``CUDA graph, contiguous (NCHW)``: the same graph with the model and batches in the default
  memory format instead of channels_last;
* ``CUDA graph, cuDNN benchmark``: the same graph with ``torch.backends.cudnn.benchmark`` on (cuDNN
  times its algorithms and keeps the fastest; the build leaves it off, for determinism);
* ``eager, fused Adam``: the step fit() falls back to on CUDA when a graph cannot be had;
* ``CUDA graph, torch.compile``: the model compiled by Inductor (``mode="default"``: BatchNorm,
  GELU and the additions fused into Triton kernels) and the whole step, compiled forward and
  backward included, captured by the project's own ``GraphStep``. Only the model is compiled: the
  noise draws stay eager on the step's registered generator, so the graph replays them exactly as
  fit() does, and Inductor's own CUDA graphs stay off (they cannot nest inside a capture);
* ``CUDA graph, torch.compile max-autotune``: as above with ``mode="max-autotune-no-cudagraphs"``
  (Inductor also times Triton templates for the convolutions and matmuls; minutes of compiling);
* ``torch.compile reduce-overhead``: the model compiled with Inductor's own CUDA graphs (forward and
  backward each one graph) and the step otherwise eager (Adam, the noise draws): compile's answer
  to the project's ``GraphStep``, for comparison.

Measured variants go to ``variants`` (what scripts/gpu-check's target and the report's appendix read;
``CUDA graph`` is the target's), failed ones to ``failed`` with their error, ones not started to
``skipped`` with the reason; ``order`` lists them all as they were tried. A graphed variant's ``note``
says how its first replay compared with the eager step (GraphStep keeps a graph only if its first step
agrees; ``path`` says whether it did). On a CPU only ``eager, as before``
runs; the others are listed as skipped. A variant that fails records its error and the run goes on;
``--seconds`` bounds the run, and a variant that would start with less time left than it needs is
skipped, saying so. The JSON is rewritten before and after every variant, so a run that is killed
keeps what it measured (``in_progress`` names the variant it was in).

Each result has ``ms_per_step`` unrounded and the achieved TFLOP/s: the FLOPs of one step's forward and
backward (``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls; the elementwise
work, BatchNorm, GELU and Adam are not counted) over its time; on a GPU in PEAK_BF16_TFLOPS, also its
share of that GPU's dense bf16 peak (an unknown GPU gets no share rather than a guessed one).

``profile`` is torch.profiler over a few graph-less eager steps (fused Adam, what the graph replays):
the top kernels by CUDA time (name, count, total us) and the kernels per step, or on a CPU the top
CPU ops, so the next optimisation is chosen from what the step spends its time on.

    python -m bench.step_timing --device cuda --seconds 110 --json out.json
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from bench.common import cuda_sync, describe_machine, save_result
from diffusion import ddpm, rng
from diffusion.training import EagerStep, GraphStep, make_optimizer, step_autocast
from diffusion.unet import TimeConditionalUNet

SIZES = {"cuda": {"num_hiddens": 64, "batch_size": 128, "steps": 300},
         "cpu": {"num_hiddens": 8, "batch_size": 64, "steps": 20}}
PROFILE_STEPS = 10
PROFILE_ROWS = 15

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets, which print the
# sparse figure (twice these): H100 SXM 1,979, H100 PCIe 1,513, H100 NVL 1,671; H200 (the same GH100
# silicon as the H100 SXM) 1,979, H200 NVL 1,671; A100 312 dense (SXM and PCIe alike). The first key
# that occurs in torch.cuda.get_device_name() wins, so the more specific names come first.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H200 NVL": 835.0, "H100": 989.0, "H200": 989.0,
                    "A100": 312.0}


@dataclass(frozen=True)
class Variant:
    name: str
    graph: bool = True  # the step as one CUDA graph (GraphStep)
    channels_last: bool = True
    fused_adam: bool = True  # make_optimizer (fused, capturable on CUDA); False: torch.optim.Adam as before
    compile_mode: str | None = None  # torch.compile the model with this mode; None: not compiled
    cudnn_benchmark: bool = False
    cuda_only: bool = True
    min_seconds: float = 10.0  # what it needs on an H200 (compiling, capturing, timing); less left: skipped


VARIANTS = [
    Variant("CUDA graph"),
    Variant("eager, as before", graph=False, fused_adam=False, cuda_only=False),
    Variant("CUDA graph, contiguous (NCHW)", channels_last=False),
    Variant("CUDA graph, cuDNN benchmark", cudnn_benchmark=True),
    Variant("eager, fused Adam", graph=False),
    Variant("CUDA graph, torch.compile", compile_mode="default", min_seconds=60.0),
    Variant("CUDA graph, torch.compile max-autotune", compile_mode="max-autotune-no-cudagraphs", min_seconds=150.0),
    Variant("torch.compile reduce-overhead", graph=False, compile_mode="reduce-overhead", min_seconds=60.0),
]
PROFILE_MIN_SECONDS = 10.0


def compile_model(model, mode: str):
    """torch.compile; tests replace it with a backend a CPU runs in seconds."""
    return torch.compile(model, mode=mode)


def _batches(device, batch_size, channels_last):
    data = rng.rand((batch_size * 8, 1, 28, 28), rng.generator(2, device))
    data = data.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return [(data[i * batch_size:(i + 1) * batch_size],) for i in range(8)]


def make_step(variant: Variant, device, num_hiddens, autocast_dtype, capture=None):
    """The model and the step a variant times (``capture`` stands in for the CUDA capture in tests)."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = TimeConditionalUNet(1, num_hiddens).to(device=device, memory_format=memory_format)
    schedule = ddpm.linear_schedule(300).to(device)
    optimizer = (make_optimizer(model, 1e-3, device) if variant.fused_adam
                 else torch.optim.Adam(model.parameters(), lr=1e-3))
    net = compile_model(model, variant.compile_mode) if variant.compile_mode else model
    step = EagerStep(net, optimizer, lambda m, x0, generator: ddpm.time_loss(m, x0, schedule, generator),
                     rng.generator(1, device), step_autocast(device, autocast_dtype))
    if variant.graph:
        return GraphStep(step, capture=capture)
    if variant.compile_mode == "reduce-overhead":
        eager = step

        def step(batch):  # each step a new iteration of Inductor's graphs (their outputs may be overwritten)
            torch.compiler.cudagraph_mark_step_begin()
            return eager(batch)
    return step


def time_variant(variant: Variant, device, num_hiddens, batch_size, steps, autocast_dtype, capture=None) -> dict:
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    try:
        step = make_step(variant, device, num_hiddens, autocast_dtype, capture)
        batches = _batches(device, batch_size, variant.channels_last)
        start = time.perf_counter()
        for i in range(5):  # warm-up (and compiling, and the graph's capture)
            step(batches[i % 8])
        cuda_sync(device)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(steps):
            loss = step(batches[i % 8])
        cuda_sync(device)
        ms = (time.perf_counter() - start) / steps * 1e3
    finally:
        torch.backends.cudnn.benchmark = benchmark
        if variant.compile_mode:
            torch._dynamo.reset()  # the next variant compiles its own model from scratch
    out = {"ms_per_step": ms, "images_per_second": round(batch_size / ms * 1e3), "steps": steps,
           "warmup_seconds": warmup, "final_loss_finite": bool(torch.isfinite(loss))}
    if isinstance(step, GraphStep):
        out["path"] = "cuda-graph" if step.active else "eager (fallback)"
        out["note"] = step.note
    return out


# ---------------------------------------------------------------------------------------------
# FLOPs and the share of the peak


def step_flops(device, num_hiddens, batch_size, autocast_dtype) -> int:
    """FLOPs of one step's forward and backward, as FlopCounterMode counts them (convolutions, matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    step = make_step(Variant("flops", graph=False), device, num_hiddens, autocast_dtype)
    batch = _batches(device, batch_size, True)[0]
    with FlopCounterMode(display=False) as counter:
        with step.autocast:
            loss = step.loss_fn(step.model, *batch, generator=step.generator)
        loss.backward()
    return int(counter.get_total_flops())


def peak_bf16_tflops(device_name: str | None) -> float | None:
    """The dense bf16 peak of a GPU named like torch.cuda.get_device_name(), or None if it is not in the table."""
    for key, peak in PEAK_BF16_TFLOPS.items():
        if device_name and key in device_name:
            return peak
    return None


def throughput(flops_per_step: int | None, ms_per_step: float, peak_tflops: float | None) -> dict:
    """Achieved TFLOP/s and, when the peak is known, the share of it (0.25 = a quarter of the peak)."""
    if not flops_per_step:
        return {}
    tflops = flops_per_step / (ms_per_step * 1e-3) / 1e12
    out = {"tflops_per_second": tflops}
    if peak_tflops:
        out["share_of_peak"] = tflops / peak_tflops
    return out


# ---------------------------------------------------------------------------------------------
# the profile


def profile_step(device, num_hiddens, batch_size, autocast_dtype, steps: int = PROFILE_STEPS,
                 rows: int = PROFILE_ROWS) -> dict:
    """torch.profiler over ``steps`` graph-less eager steps: on CUDA the kernels (and memcpy/memset) the
    GPU ran, on a CPU the ops; the top ``rows`` by time, and how many per step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    step = make_step(Variant("profile", graph=False), device, num_hiddens, autocast_dtype)
    batches = _batches(device, batch_size, True)
    for i in range(3):
        step(batches[i % 8])
    cuda_sync(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            step(batches[i % 8])
        cuda_sync(device)
    wanted = DeviceType.CUDA if cuda else DeviceType.CPU
    table: dict[str, list] = {}
    for event in prof.events():
        if event.device_type != wanted:
            continue
        us = event.time_range.elapsed_us() if cuda else event.self_cpu_time_total
        row = table.setdefault(event.name, [0, 0.0])
        row[0] += 1
        row[1] += us
    count = sum(c for c, _ in table.values())
    total_us = sum(us for _, us in table.values())
    top = sorted(table.items(), key=lambda kv: -kv[1][1])[:rows]
    what = "kernels" if cuda else "ops"
    return {"step": "eager, fused Adam, channels_last (what the graph replays)", "steps": steps,
            "what": "CUDA kernels, memcpy and memset, GPU time" if cuda else "CPU ops (nested ones too), self CPU time",
            f"{what}_per_step": count / steps, "us_per_step": total_us / steps, "distinct": len(table),
            "top": [{"name": name[:300], "count": c, "total_us": us} for name, (c, us) in top]}


# ---------------------------------------------------------------------------------------------
# the run


def run(device, *, size: dict, autocast_dtype, variants=None, seconds: float | None = None,
        json_path: Path | None = None, profile: bool = True, capture: Callable | None = None) -> dict:
    """Time ``variants`` (default VARIANTS) in order, within ``seconds``; save after every one.

    ``capture`` (tests) stands in for the CUDA capture and lets the graph variants run on a CPU."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    deadline = time.monotonic() + seconds if seconds is not None else None
    variants = VARIANTS if variants is None else variants
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = peak_bf16_tflops(device_name) if cuda and autocast_dtype == torch.bfloat16 else None
    result = {"benchmark": "training step", "machine": describe_machine(), "device": str(device),
              "device_name": device_name,
              "model": f"time-conditioned UNet, D = {size['num_hiddens']}, batch {size['batch_size']}",
              "autocast": str(autocast_dtype), "order": [v.name for v in variants], "variants": {}, "failed": {},
              "skipped": {}, "speedup": None, "peak_bf16_tflops": peak}
    save = lambda: save_result(json_path, result)  # noqa: E731

    def left():
        return None if deadline is None else deadline - time.monotonic()

    try:
        result["flops_per_step"] = step_flops(device, size["num_hiddens"], size["batch_size"], autocast_dtype)
    except Exception as exc:  # noqa: BLE001 - a benchmark records what failed and goes on
        result["flops_per_step"] = None
        result["flops_error"] = f"{type(exc).__name__}: {exc}"
    save()

    def attempt(name, min_seconds, work) -> tuple[str, dict | str]:
        """("measured", what work() returned), ("failed", its error) or ("skipped", why it did not start)."""
        remaining = left()
        if remaining is not None and remaining < min_seconds:
            return "skipped", (f"not started: {max(remaining, 0):.0f} s of --seconds left, it needs about "
                               f"{min_seconds:.0f} s")
        result["in_progress"] = name  # saved: a run killed in this variant says so
        save()
        try:
            return "measured", work()
        except Exception as exc:  # noqa: BLE001 - one variant's failure must not lose the others
            return "failed", f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            result.pop("in_progress", None)

    for index, variant in enumerate(variants):
        if variant.cuda_only and not cuda and capture is None:
            outcome, out = "skipped", "not started: CUDA only"
        else:
            outcome, out = attempt(variant.name, variant.min_seconds,
                                   lambda: time_variant(variant, device, size["num_hiddens"], size["batch_size"],
                                                        size["steps"], autocast_dtype, capture))
        if outcome == "measured":
            out.update(throughput(result["flops_per_step"], out["ms_per_step"], peak))
            result["variants"][variant.name] = out
            print(f"{variant.name:40s} {out['ms_per_step']:9.4f} ms/step", flush=True)
        else:
            result[outcome][variant.name] = out
            print(f"{variant.name:40s} {outcome}: {out}", flush=True)
        base, graph = result["variants"].get("eager, as before"), result["variants"].get("CUDA graph")
        if base and graph:
            result["speedup"] = round(base["ms_per_step"] / graph["ms_per_step"], 2)
        save()
        if index == 1 and profile:  # after the graph and its reference: cheap, and what decides the next step
            outcome, out = attempt("profile", PROFILE_MIN_SECONDS,
                                   lambda: profile_step(device, size["num_hiddens"], size["batch_size"],
                                                        autocast_dtype))
            result["profile"] = out if outcome == "measured" else {"failed" if outcome == "failed" else "skipped": out}
            save()
    if result["speedup"]:
        print(f"CUDA graph: {result['speedup']}x the eager loop", flush=True)
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, help="timed steps per variant (default: 300 on CUDA, 20 on a CPU)")
    ap.add_argument("--seconds", type=float, help="time for the whole run: a variant that would start with less "
                                                  "left than it needs is skipped (default: no limit)")
    ap.add_argument("--no-profile", action="store_true", help="leave out the torch.profiler section")
    ap.add_argument("--json", type=Path, help="also write the results here (rewritten after every variant)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    size = dict(SIZES["cuda" if device.type == "cuda" else "cpu"])
    if args.steps:
        size["steps"] = args.steps
    dtype = torch.bfloat16 if device.type == "cuda" else None
    return run(device, size=size, autocast_dtype=dtype, seconds=args.seconds, json_path=args.json,
               profile=not args.no_profile)


if __name__ == "__main__":
    main()
