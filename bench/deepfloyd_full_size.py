"""DeepFloyd IF at its real size, with random weights: the hand-written loops against diffusers' pipelines.

    python -m bench.deepfloyd_full_size --json bench/results/deepfloyd_full_size.json     (minutes, ~20 GB)
    python -m bench.deepfloyd_full_size --shape tiny                                        (seconds: the dry run)

IF-I-XL- and IF-II-L-shaped pipelines (tests/random_if.py: 4.30B and 1.20B parameters) are built with
random weights, saved with ``save_pretrained`` in half precision (the hub's ``fp16`` variant, T5
replaced by random prompt embeddings of the real shape [1, 77, 4096]), loaded back through the build's
own loading code (``DeepFloydBackend.load``, i.e. ``--backend deepfloyd --deepfloyd-dir``), and run
for a few steps of each loop against the diffusers pipeline on the same weights and generator:

* stage I: ``sample`` (CFG, γ = 7) against ``IFPipeline``;
* one edit: ``sdedit`` against ``IFImg2ImgPipeline``;
* stage II: ``upsample`` (CFG, γ = 4, noise level 250) against ``IFSuperResolutionPipeline``.

Each phase runs in a process of its own, so its peak resident memory (or peak GPU memory) is its own,
and only one stage is ever in memory. Recorded: parameters, size on disk, seconds to build and save,
to load, per UNet call of each loop, the largest difference from the pipeline and whether it is 0.

With ``--memory`` (scripts/gpu-check-deepfloyd uses it on the GPU) it also measures the memory savers
a student with a 16 GB card would reach for, one process each, on the same few steps of stage I (three
prompts with CFG) followed by stage II: everything resident with a T5-XXL-shaped encoder, precomputed
embeddings instead of T5, embeddings with stage I freed before stage II loads, and ``--offload``
(diffusers' ``enable_model_cpu_offload``, T5 included).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import cuda_sync, save_result

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "an oil painting of a snowy mountain village"


def _peak_memory(device) -> dict:
    import torch

    out = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if device.type == "cuda":
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def _timed(device, fn):
    cuda_sync(device)
    start = time.perf_counter()
    out = fn()
    cuda_sync(device)
    return out, time.perf_counter() - start


def _compare(ours, theirs) -> dict:
    import torch

    return {"max_abs_diff": float((ours.float() - theirs.float()).abs().max()), "bitwise": bool(torch.equal(ours, theirs)),
            "finite": bool(ours.isfinite().all())}


def _leading(n: int) -> list[int]:
    """IFPipeline's timesteps for ``n`` steps (diffusers' leading spacing, as section 0 uses them)."""
    from generators._parta import leading_timesteps

    return leading_timesteps(1000, n)


def phase_save(args) -> dict:
    import torch

    from tests import random_if

    shapes = random_if.FULL_SIZE if args.shape == "full" else random_if.TINY
    saved = random_if.save_random_if(args.workdir, shapes, device=args.device, dtype=torch.float16)
    dim = shapes[1][1]["encoder_hid_dim"]
    torch.save(random_if.random_embeddings(["", PROMPT], dim=dim), Path(args.workdir) / "embeddings.pt")
    return {f"stage{k}": {key: v[key] for key in ("parameters", "disk_bytes", "seconds")} for k, v in saved.items()}


def phase_stage1(args) -> dict:
    import torch
    from diffusers import IFImg2ImgPipeline

    from diffusion.deepfloyd_denoiser import DeepFloydBackend
    from diffusion.edits import sdedit
    from diffusion.sampling import sample

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    den, load_s = _timed(device, lambda: DeepFloydBackend.load(
        device=device, dtype=dtype, deepfloyd_dir=args.workdir, embeddings_path=Path(args.workdir) / "embeddings.pt"))
    cond, uncond = den.encode(PROMPT), den.null_cond
    gen = lambda: torch.Generator("cpu").manual_seed(0)  # noqa: E731
    ts = _leading(args.steps)
    ours, ours_s = _timed(device, lambda: sample(den, cond, gen(), timesteps=ts, guidance=7.0))
    theirs, theirs_s = _timed(device, lambda: den.pipe(
        prompt_embeds=cond, negative_prompt_embeds=uncond, timesteps=ts, guidance_scale=7.0, generator=gen(),
        output_type="pt").images)
    cfg = {"timesteps": ts, "seconds_per_step": round(ours_s / len(ts), 2),
           "pipeline_seconds_per_step": round(theirs_s / len(ts), 2), **_compare(ours, theirs)}

    img2img = IFImg2ImgPipeline(**den.pipe.components)
    img2img.set_progress_bar_config(disable=True)
    strength = (len(ts) - 0.5) / len(ts)  # IFImg2ImgPipeline then starts at the second timestep
    edited, edit_s = _timed(device, lambda: sdedit(den, ours, 1, cond, gen(), timesteps=ts, guidance=7.0))
    theirs = img2img(image=ours, strength=strength, timesteps=ts, prompt_embeds=cond, negative_prompt_embeds=uncond,
                     guidance_scale=7.0, generator=gen(), output_type="pt").images
    edit = {"timesteps": ts[1:], "seconds_per_step": round(edit_s / (len(ts) - 1), 2), **_compare(edited, theirs)}
    torch.save(ours.cpu(), Path(args.workdir) / "stage1.pt")
    return {"load_seconds": round(load_s, 1), "parameters": sum(p.numel() for p in den.unet.parameters()),
            "cfg_vs_IFPipeline": cfg, "sdedit_vs_IFImg2ImgPipeline": edit, **_peak_memory(device)}


def phase_stage2(args) -> dict:
    import torch

    from diffusion.deepfloyd_denoiser import DEFAULT_STAGE2
    from diffusion.deepfloyd_denoiser import SuperResolution, load_embeddings, load_pipeline, upsample

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    def load():
        pipe, _ = load_pipeline(DEFAULT_STAGE2, stage=2, deepfloyd_dir=args.workdir, dtype=dtype, text_encoder=False)
        return SuperResolution(pipe, device=device, dtype=dtype)

    den, load_s = _timed(device, load)
    table, _ = load_embeddings(Path(args.workdir) / "embeddings.pt")
    cond, uncond = (table[p].to(device, dtype) for p in (PROMPT, ""))
    images = torch.load(Path(args.workdir) / "stage1.pt").to(device, dtype)
    gen = lambda: torch.Generator("cpu").manual_seed(1)  # noqa: E731
    ts = den.pipeline_timesteps(args.stage2_steps)
    ours, ours_s = _timed(device, lambda: upsample(den, images, cond, gen(), uncond=uncond, guidance=4.0, timesteps=ts,
                                                   noise_level=250))
    theirs, theirs_s = _timed(device, lambda: den.pipe(
        image=images, prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=4.0,
        num_inference_steps=args.stage2_steps, noise_level=250, generator=gen(), output_type="pt").images)
    up = {"timesteps": ts, "seconds_per_step": round(ours_s / len(ts), 2),
          "pipeline_seconds_per_step": round(theirs_s / len(ts), 2), "output_size": list(ours.shape[-2:]),
          **_compare(ours, theirs)}
    return {"load_seconds": round(load_s, 1), "parameters": sum(p.numel() for p in den.unet.parameters()),
            "upsample_vs_IFSuperResolutionPipeline": up, **_peak_memory(device)}


# Memory savers: (T5 on the GPU, stage I freed before stage II, offload).
SAVERS = {
    "everything resident (T5-XXL, stage I, stage II)": (True, False, False),
    "precomputed embeddings (no T5)": (False, False, False),
    "embeddings, stage II after freeing stage I": (False, True, False),
    "--offload (enable_model_cpu_offload), T5 included": (True, False, True),  # OFFLOAD
}


def phase_memory(args) -> dict:
    """One memory saver: encode a prompt (when T5 is in play), sample three prompts with CFG for a few
    stage I steps, upsample them; the peak memory of this process alone."""
    import torch

    from diffusion.deepfloyd_denoiser import DeepFloydBackend
    from diffusion.sampling import sample
    from tests import random_if

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    with_t5, free_stage1, offload = SAVERS[args.saver]
    if offload and device.type != "cuda":
        return {"skipped": "offloading needs a CUDA device"}
    start = time.perf_counter()
    if with_t5:
        t5 = random_if.build_t5_xxl(tiny=args.shape == "tiny", device="cpu" if offload else device, dtype=dtype)
        ids = torch.randint(0, t5.config.vocab_size, (3, random_if.TEXT_TOKENS), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            t5.to(device)(ids.to(device)).last_hidden_state.sum().item()
        if offload:
            t5.to("cpu")
    den = DeepFloydBackend.load(device=device, dtype=dtype, deepfloyd_dir=args.workdir, offload=offload,
                                embeddings_path=Path(args.workdir) / "embeddings.pt")
    cond = den.encode([PROMPT] * 3)
    images = sample(den, cond, torch.Generator("cpu").manual_seed(0), timesteps=_leading(args.steps), guidance=7.0)
    if free_stage1:
        den.unet.to("meta")  # frees its memory; this process needs stage I no more
        if device.type == "cuda":
            torch.cuda.empty_cache()
    den.upsample(images, cond, torch.Generator("cpu").manual_seed(1), num_inference_steps=args.stage2_steps)
    cuda_sync(device)
    return {"seconds": round(time.perf_counter() - start, 1), **_peak_memory(device)}


PHASES = {"save": phase_save, "stage1": phase_stage1, "stage2": phase_stage2, "memory": phase_memory}


OFFLOAD = "--offload (enable_model_cpu_offload), T5 included"


def run_phases(args, on_phase=lambda result: None) -> dict:
    """Each phase in a fresh process; a failing phase is recorded with the end of its output. ``on_phase``
    gets the result after every phase (main writes it to --json then), so a run stopped from outside
    keeps every phase that finished. --no-offload leaves the --offload saver out, --offload-only runs it
    alone on pipelines an earlier run saved into --workdir (scripts/gpu-check-deepfloyd gives it a phase
    of its own: on an H200 it outran the budget the other cases shared)."""
    from bench.common import describe_machine

    result = {"machine": describe_machine(), "shape": args.shape, "device": args.device, "dtype": args.dtype,
              "saved_dtype": "float16", "prompt_embeddings": "random, [1, 77, 4096] (T5-XXL's shape)"
              if args.shape == "full" else "random, [1, 77, 32]", "phases": {}}
    common = ["--shape", args.shape, "--device", args.device, "--dtype", args.dtype, "--workdir", str(args.workdir),
              "--steps", str(args.steps), "--stage2-steps", str(args.stage2_steps)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    runs = [] if args.offload_only else [(name, name, []) for name in ("save", "stage1", "stage2")]
    if args.memory or args.offload_only:
        savers = [OFFLOAD] if args.offload_only else [s for s in SAVERS if not (args.no_offload and s == OFFLOAD)]
        runs += [(f"memory: {saver}", "memory", ["--saver", saver]) for saver in savers]
    for label, name, extra in runs:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.deepfloyd_full_size", "--phase", name, *common, *extra],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = round(time.perf_counter() - start, 1)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode == 0 and lines:
            measured = json.loads(lines[-1])
            status = "skipped" if "skipped" in measured else "ok"
            result["phases"][label] = {"status": status, "wall_seconds": seconds, **measured}
        else:
            result["phases"][label] = {"status": "failed", "wall_seconds": seconds, "exit_code": proc.returncode,
                                       "output_tail": (proc.stdout + proc.stderr)[-2000:]}
        print(f"{label:12s} {result['phases'][label]['status']:6s} {seconds:8.1f} s", flush=True)
        on_phase(result)
        if proc.returncode != 0 and name != "memory":
            break
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("full", "tiny"), default="full")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="what the loops run in (default: the build's choice, float32 on "
                                                  "a CPU and float16 on CUDA)")
    ap.add_argument("--steps", type=int, default=3, help="stage I steps (default 3)")
    ap.add_argument("--stage2-steps", type=int, default=2, help="stage II steps (default 2)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the pipelines are saved (default: a temporary "
                                                                "folder, deleted afterwards); needs about 11 GB")
    ap.add_argument("--memory", action="store_true", help="also measure the memory savers (meant for a GPU)")
    ap.add_argument("--no-offload", action="store_true", help="with --memory: leave the --offload saver out")
    ap.add_argument("--offload-only", action="store_true",
                    help="measure only the --offload saver, on the pipelines an earlier run saved into --workdir")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--phase", choices=tuple(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--saver", choices=tuple(SAVERS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.dtype is None:
        from backends.deepfloyd import dtype_for

        args.dtype = dtype_for(args.device)
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)), flush=True)
        return 0
    if args.offload_only and args.workdir is None:
        ap.error("--offload-only measures pipelines an earlier run saved: give their --workdir")
    temporary = args.workdir is None
    if temporary:
        args.workdir = Path(tempfile.mkdtemp(prefix="if-full-size-"))
    try:
        result = run_phases(args, on_phase=lambda partial: save_result(args.json, partial))
    finally:
        if temporary:
            shutil.rmtree(args.workdir, ignore_errors=True)
    save_result(args.json, result)
    print(json.dumps(result, indent=1))
    return 0 if all(p["status"] in ("ok", "skipped") for p in result["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
