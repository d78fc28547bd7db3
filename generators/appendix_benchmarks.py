"""Appendix: the benchmark results committed under bench/results/, as tables.

The numbers are measured by the scripts in bench/ (they take minutes to an hour, so the build
does not run them); this section only lays out what they wrote, with the machine they ran on.
A results file that is absent leaves its table out.
"""
import json
import re
from pathlib import Path

from builder.section import Needs, Section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "bench/results"

SECTION = Section(
    id="appendix_benchmarks",
    title="Appendix: benchmark results",
    inputs=(RESULTS,),
    portable=True,  # it lays out committed results, so a new result is shown by whatever machine builds
    needs=Needs(gpu=0),  # a CPU figure: it runs beside the GPU sections
)


def _load(name):
    path = Path(ROOT, RESULTS, f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _machine(m):
    threads = f"{m['logical_cores']} logical cores, {m['torch_threads']} torch threads"
    return f"{m['cpu']} ({threads}){', ' + m['gpu'] if m.get('gpu') else ''}; torch {m['torch']}, {m['date']}"


def run(ctx):
    build, sampling, training, gpu = _load("build"), _load("sampling"), _load("training"), _load("gpu")
    deepfloyd_cpu, deepfloyd_gpu = _load("deepfloyd_full_size"), _load("deepfloyd_gpu")
    live = _load("live_sampler")
    scale = _load("scale_out")
    writer = _load("writer_loop")
    machines = _machines(build, sampling, training, gpu, deepfloyd_cpu, deepfloyd_gpu, live, scale, writer)
    if machines:
        ctx.save_table("bench_machine", ["benchmark", "measured on"], machines,
                       caption="The machine each benchmark ran on, as the benchmark recorded it.")
    if build and "cold" in build:
        build_tables(ctx, build)
    if writer:
        writer_table(ctx, writer)
    if build:
        incremental_table(ctx, build)
    if sampling:
        ctx.save_table("bench_sampling", ["sampler", "setting", "ours (images/s)", "naive (images/s)", "speed-up"],
                       [[r["sampler"], r["setting"], f"{r['ours_images_per_second']:.2f}",
                         f"{r['naive_images_per_second']:.2f}", f"{r['speedup']:.1f}×"] for r in sampling["rows"]],
                       caption="Sampling throughput of the project's batched loops against a naive loop that runs "
                               "the conditional and the unconditional pass separately, one image at a time "
                               "(python -m bench.sampling_throughput; both measured in the same run).")
    if gpu:
        gpu_tables(ctx, gpu)
    if live:
        live_table(ctx, live)
        if live.get("variants"):
            live_variants_table(ctx, live)
    if scale:
        scale_out_table(ctx, scale)
    if deepfloyd_cpu or deepfloyd_gpu:
        deepfloyd_tables(ctx, deepfloyd_cpu, deepfloyd_gpu)
    if training:
        training_table(ctx, training)


def _machines(build, sampling, training, gpu, deepfloyd_cpu, deepfloyd_gpu, live, scale, writer) -> list:
    """(benchmark, machine) for every benchmark that has results, as each recorded its machine."""
    machines = [(what, _machine(r["machine"])) for what, r in
                (("build times", build), ("sampling throughput", sampling), ("training throughput", training)) if r]
    if gpu:
        machines.append(("GPU check (scripts/gpu-check)", _gpu_machine(gpu["environment"])))
    if deepfloyd_cpu:
        machines.append(("DeepFloyd IF at full size, CPU", _machine(deepfloyd_cpu["machine"])))
    if deepfloyd_gpu:
        machines.append(("DeepFloyd IF at full size, GPU (scripts/gpu-check-deepfloyd)",
                         _gpu_machine(deepfloyd_gpu["environment"])))
    if live:
        machines.append(("live sampler (Chromium " + live["chromium"] + ")", _machine(live["machine"])))
    if scale:
        machines.append(("parallel and shared builds", _machine(scale["machine"])))
    if writer:
        machines.append(("the writer's loop", _machine(writer["machine"])))
    return machines


def incremental_table(ctx, build):
    """Rebuilds after no change, a content edit and a generator edit, against the cold build."""
    rows = []
    cold_seconds = build.get("cold", {}).get("seconds")
    for name, label in (("warm", "warm rebuild, nothing changed"),
                        ("content_edit", f"after editing {build['content_edit']['edited']}"),
                        ("generator_edit", f"after editing {build['generator_edit']['edited']}")):
        r = build[name]
        ratio = [f"{cold_seconds / r['seconds']:.0f}×"] if cold_seconds else []
        rows.append([label, f"{r['seconds']:.1f}"] + ratio + [", ".join(r["sections_run"]) or "none"])
    columns = ["rebuild", "seconds"] + (["faster than cold"] if cold_seconds else []) + ["sections that ran"]
    ctx.save_table("bench_incremental", columns, rows,
                   caption="Rebuilds of the default profile after no change, a content edit and a generator edit "
                           "(python -m bench.build_times). Seconds are wall time of the whole command, "
                           "including Python start-up and rendering the pages.")


def live_table(ctx, live):
    """The live sampler's runs in Chromium, as its worker timed them."""
    gflop = live["gflop_per_digit_step"]
    ctx.save_table("bench_live", ["run", "digits", "steps", "ms per step", "seconds", "GFLOP/s"],
                   [[r["run"], r["digits"], r["steps"], f"{r['ms_per_step']:.1f}", f"{r['seconds']:.2f}",
                     f"{r['digits'] * gflop / (r['ms_per_step'] / 1000):.1f}"] for r in live["runs"]],
                   caption=f"The live sampler of Part B 2.5 in headless Chromium ({live['backend']}; the "
                           f"D = {live['model']['num_hiddens']} model, {live['model']['parameters']:,} "
                           f"parameters, {gflop * 1000:.0f} MFLOP per digit and step as torch counts them): "
                           f"the fastest of {live['repeats']} runs each, as the page's worker "
                           f"times them; the first press also loads the runtime and the model "
                           f"({live['first_press_seconds']:.1f} s). python -m bench.live_sampler.")


def training_table(ctx, t):
    """The project's trainer against a naive one, with the FLOP rates the machine's matmul peak bounds."""
    ctx.save_table("bench_training", ["trainer", "images/s", "GFLOP/s", "speed-up"], [
        ["this project (tensor data, channels_last, bf16 autocast)", f"{t['ours_images_per_second']:.0f}",
         f"{t['ours_images_per_second'] * t['gflop_per_image']:.0f}", f"{t['speedup']:.2f}×"],
        ["naive (DataLoader with per-image ToTensor, fp32)", f"{t['naive_images_per_second']:.0f}",
         f"{t['naive_images_per_second'] * t['gflop_per_image']:.0f}", "1×"]],
        caption=f"Training throughput of the time-conditioned UNet (D = {t['hiddens']}, batch {t['batch_size']}, "
                f"{t['gflop_per_image']:.2f} GFLOP per image forward and backward; measured matmul peak "
                f"{t['peak_gflops']['bfloat16']} GFLOP/s in bf16, {t['peak_gflops']['float32']} in fp32; "
                f"python -m bench.train_throughput).")


def live_variants_table(ctx, live):
    """The published graph beside the cheaper ones the benchmark timed, each with its error."""
    import numpy as np

    published = live["variants"][0]["ms_per_call"]
    ctx.save_json("live_variants", {"tolerance": live["tolerance"]})  # for the prose beside the table
    ctx.save_table("bench_live_variants", ["graph", "ms per evaluation", "time vs published", "largest |Δε|",
                                           "within tolerance"],
                   [[v["variant"], f"{v['ms_per_call']:.2f}", f"{v['ms_per_call'] / published:.2f}×",
                     np.format_float_positional(v["max_abs_error"], precision=2, fractional=False, trim="-"),
                     "yes" if v["within_tolerance"] else "no"] for v in live["variants"]],
                   caption=f"The live sampler's graph and two cheaper ones, each timed alone in one page (one "
                           f"evaluation of the guided pair for one digit, the network's work in a step; "
                           f"{live['backend']}; the fastest of {live['variant_rounds']} rounds, the graphs in turns), "
                           f"and the largest "
                           f"difference of their noise estimates from the published graph's on x_t that the "
                           f"sampler visits with another seed (onnxruntime in Python). The tolerance is "
                           f"{live['tolerance']:g}, the one that ties the published file to the torch model. "
                           f"The 8-bit graph was calibrated on the sampler's own x_t. python -m bench.live_sampler.")


def writer_table(ctx, w):
    """bench/results/writer_loop.json: what a writer waits for, against the goals of issue 37."""
    goals = w["goals"]
    rows = [["python build.py --list", w["list"]["median"], goals["list_seconds"]],
            ["python build.py, nothing changed", w["noop"]["median"], goals["noop_seconds"]],
            ["a saved edit to the reloaded page (--serve)", w["edit_to_reload"]["median"], goals["edit_to_reload_seconds"]]]
    if "default_tests" in w:
        rows.append(["the default test tier (python -m pytest)", w["default_tests"]["seconds"],
                     goals["default_tests_seconds"]])
    table = [[what, f"{seconds:.2f}" if seconds < 10 else f"{seconds:.0f}", f"{goal:g}", "yes" if seconds <= goal else "no"]
             for what, seconds, goal in rows]
    no_bytecode = w.get("environment", {}).get("PYTHONDONTWRITEBYTECODE")
    ctx.save_table("bench_writer_loop", ["what the writer does", "seconds", "goal (s)", "within the goal"], table,
                   caption=f"The writer's loop on a copy of the checkout with both editions frozen (python -m "
                           f"bench.writer_loop): the first two are the median of {w['runs']} runs, each a fresh "
                           f"process{' that caches no bytecode (PYTHONDONTWRITEBYTECODE was set)' if no_bytecode else ''}; "
                           f"the third the median of {w['runs']} edits in one warm preview "
                           f"({w['edit_to_reload']['method']}); the test tier one run.")


def gpu_tables(ctx, gpu):
    """bench/results/gpu.json, written by scripts/gpu-check on a CUDA machine."""
    env = gpu["environment"]
    where = _gpu_machine(env)
    steps = gpu.get("step_timing")
    if steps:
        base = steps["variants"]["eager, as before"]["ms_per_step"]
        rows = [[kind, f"{v['ms_per_step']:.2f}", f"{v['images_per_second']:,}", f"{base / v['ms_per_step']:.1f}×"]
                for kind, v in steps["variants"].items()]
        ctx.save_table("bench_gpu_step", ["training step", "ms per step", "images/s", "speed-up"], rows,
                       caption=f"One training step of the {steps['model']} (autocast {steps['autocast']}) on {where}, "
                               f"each way timed in the same run (python -m bench.step_timing, run by scripts/gpu-check).")
    build = gpu.get("builds", {}).get("build_1")
    if build:
        sections = build["sections"]
        rows = [[sid, f"{s['seconds']:.1f}", f"{s['peak_gpu_mb']:,}" if "peak_gpu_mb" in s else "-",
                 s.get("training_step", {}).get("path", "")]
                for sid, s in sorted(sections.items(), key=lambda kv: -(kv[1]["seconds"] or 0))]
        rows.append(["whole command (sections, rendering, start-up)", f"{build['wall_seconds']:.1f}", "", ""])
        same = gpu.get("determinism", {}).get("identical")
        second = ("A second cold build, one section at a time," if gpu["builds"].get("build_2", {}).get("jobs") == 1
                  else "A second cold build")
        verdict = {True: f"{second} wrote byte-identical pages, figures and cache entries.",
                   False: f"{second} did NOT write identical bytes; see gpu.json.",
                   None: "No second build was compared."}[same]
        how = (", with --jobs' default: the sections that declare a share of the GPU share it"
               if build.get("jobs") == "default" else "")
        ctx.save_table("bench_gpu_build", ["section", "seconds", "peak GPU MB", "training step"], rows,
                       caption=f"A cold build of the {gpu['profile']} profile on {where} (scripts/gpu-check{how}): "
                               f"each section's run time and peak GPU memory from its cache record, slowest first. "
                               f"{verdict}")


LOOPS = (("stage1", "cfg_vs_IFPipeline", "stage I, CFG γ = 7", "IFPipeline"),
         ("stage1", "sdedit_vs_IFImg2ImgPipeline", "SDEdit", "IFImg2ImgPipeline"),
         ("stage2", "upsample_vs_IFSuperResolutionPipeline", "stage II upsampling, CFG γ = 4", "IFSuperResolutionPipeline"))


def _seconds(value):
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def _gib(phase):
    peak = phase.get("peak_gpu_gb", phase.get("peak_rss_gb"))
    return "-" if peak is None else f"{peak:.1f} ({'GPU' if 'peak_gpu_gb' in phase else 'resident'})"


def deepfloyd_tables(ctx, cpu, gpu):
    """bench/results/deepfloyd_full_size.json (python -m bench.deepfloyd_full_size, on a CPU) and
    deepfloyd_gpu.json (scripts/gpu-check-deepfloyd): random weights of IF's real shapes."""
    runs = [("CPU", cpu)] if cpu else []
    if gpu and gpu.get("loops"):
        runs.append(("GPU", gpu["loops"]))
    rows = []
    for where, run in runs:
        phases = run["phases"]
        for stage, key, label, pipeline in LOOPS:
            phase = phases.get(stage, {})
            loop = phase.get(key)
            if not loop:
                continue
            size = phases["save"][stage]
            pipeline_s = loop.get("pipeline_seconds_per_step")
            rows.append([label, f"{where}, {run['dtype']}", f"{phase['parameters'] / 1e9:.2f}B",
                         f"{size['disk_bytes'] / 2**30:.1f}", f"{phase['load_seconds']:.0f}",
                         _seconds(loop["seconds_per_step"]) + (f" / {_seconds(pipeline_s)}" if pipeline_s else ""),
                         "yes" if loop["bitwise"] else f"no: {loop['max_abs_diff']:.2g}", pipeline, _gib(phase)])
    if rows:
        ctx.save_table("bench_deepfloyd", ["loop", "run on", "UNet parameters", "on disk (GiB, fp16)", "load (s)",
                                           "seconds per step (ours / pipeline)", "equal to the pipeline bit for bit",
                                           "pipeline", "peak memory (GiB)"], rows,
                       caption="The hand-written DeepFloyd loops at IF's real size, with random weights of the shapes "
                               "of IF-I-XL and IF-II-L: saved in half precision with save_pretrained, loaded by the "
                               "build's own code, a few steps of each loop against the diffusers pipeline on the same "
                               "weights and generator (python -m bench.deepfloyd_full_size). Prompts are random "
                               "embeddings of T5-XXL's shape. A step is one UNet call with both CFG halves; ours ran "
                               "first, so the first loop of a process also pays its warm-up (SDEdit ran second and "
                               "has no pipeline time of its own).")
    if not gpu:
        return
    savers = {name.removeprefix("memory: "): p for name, p in gpu.get("loops", {}).get("phases", {}).items()
              if name.startswith("memory: ")}
    if savers:
        ctx.save_table("bench_deepfloyd_memory", ["setting", "peak GPU memory (GiB)", "seconds"],
                       [[name, f"{p['peak_gpu_gb']:.1f}" if "peak_gpu_gb" in p else p.get("skipped", p["status"]),
                         f"{p['seconds']:.0f}" if "seconds" in p else "-"] for name, p in savers.items()],
                       caption=f"Peak GPU memory of three prompts sampled by stage I with CFG and upsampled by stage II, "
                               f"each setting in a fresh process, on {_gpu_machine(gpu['environment'])} "
                               f"(scripts/gpu-check-deepfloyd; random weights of the real shapes).")
    part_a = (gpu.get("part_a") or {}).get("sections")
    if part_a:
        rows = [[sid, f"{r['seconds']:.1f}", f"{r['peak_gpu_mb'] / 1024:.1f}" if "peak_gpu_mb" in r else "-"]
                for sid, r in sorted(part_a.items()) if re.match(r"a\d", sid)]
        ctx.save_table("bench_deepfloyd_part_a", ["section", "seconds", "peak GPU memory (GiB)"], rows,
                       caption=f"All of Part A ({gpu['profile']} profile, --backend deepfloyd --upsample, fp16) through "
                               f"the full-size random pipelines on {_gpu_machine(gpu['environment'])} "
                               f"(scripts/gpu-check-deepfloyd).")


SCALE_OUT_RUNS = {
    "serial": "one section at a time, torch's own threads",
    "serial-1": "one section at a time, one thread each",
    "jobs": "--jobs {jobs}, one thread each",
    "ray": "--executor ray --jobs {jobs} (a local Ray instance)",
    "shared": "a second machine: empty local cache, --cache-url filled by another build",
}


def scale_out_table(ctx, scale):
    rows = []
    for mode, label in SCALE_OUT_RUNS.items():
        r = scale["runs"].get(mode)
        if r is None:
            continue
        same = r.get("same_site_as_serial_1")
        rows.append([mode, label.format(jobs=scale["jobs"]), f"{r['seconds']:.1f}", r["executed"],
                     "reference" if mode == "serial-1" else "-" if same is None else "yes" if same else "NO"])
    ctx.save_table("bench_scale_out", ["run", "build", "seconds", "sections run", "same site as one at a time"],
                   rows, caption=f"Cold builds of the {scale['profile']} profile, each into an empty cache, the "
                                 f"fastest of {scale['repeats']} (python -m bench.scale_out). The serial build "
                                 f"with torch's own thread count computes with other threads than the others, so "
                                 f"its bytes are not compared.")


def _gpu_machine(env):
    memory = f" ({env['device_memory_gb']} GB)" if env.get("device_memory_gb") else ""
    return f"{env['device_name']}{memory}, {env['cpu_cores']} CPU cores; torch {env['torch']}, CUDA {env['cuda']}, {env['date']}"


def build_tables(ctx, build):
    cold = build["cold"]
    seconds = cold["section_seconds"]
    parts = {part: [s for s in seconds if re.match(prefix + r"\d", s)] for part, prefix in (("Part A", "a"), ("Part B", "b"))}
    rows = [[sid, f"{seconds[sid]:.1f}"] for sid in sorted(seconds, key=lambda s: -seconds[s])]
    rows += [[f"all of {part}", f"{sum(seconds[s] for s in ids):.1f}"] for part, ids in parts.items()]
    rows.append(["whole command (sections, rendering, start-up)", f"{cold['seconds']:.1f}"])
    _cold_plot(ctx, seconds, cold["seconds"])
    ctx.save_table("bench_cold", ["section", "seconds"], rows,
                   caption=f"A cold build of the default profile ({build['profile']}) into an empty cache "
                           f"(python -m bench.build_times): each section's run time from its cache record, "
                           f"slowest first, then the totals.")


def _cold_plot(ctx, seconds, total):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = sorted((s for s in seconds if seconds[s] >= 1), key=lambda s: seconds[s])
    rest = sum(v for s, v in seconds.items() if s not in shown)
    # barh draws the first bar at the bottom: the small remainder goes there, the slowest on top.
    labels = ([f"{len(seconds) - len(shown)} others"] if rest else []) + shown
    values = ([rest] if rest else []) + [seconds[s] for s in shown]
    colours = ["#0b5cad" if re.match(r"b\d", s) else "#c2571a" if re.match(r"a\d", s) else "#777777" for s in labels]
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(labels) + 1.0))
    ax.barh(labels, [v / 60 for v in values], color=colours)
    for y, v in enumerate(values):
        ax.text(v / 60, y, f" {v:.0f} s", va="center", fontsize="small")
    ax.set_xlabel("minutes")
    ax.set_xlim(0, max(values) / 60 * 1.18)
    ax.set_title(f"Cold build: {total / 60:.1f} minutes in all")
    ax.grid(True, axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    ctx.save_plot("bench_cold_plot", fig,
                  caption="Where a cold build's time goes: each section's run time (Part B blue, Part A orange), "
                          "sections under a second grouped.",
                  alt=f"A bar chart of section run times; the longest is {shown[-1]} at {seconds[shown[-1]]:.0f} s.")
