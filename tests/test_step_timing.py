"""bench/step_timing.py on a CPU at tiny sizes: every variant's path (the graphed ones with the stand-in
capture of tests/test_cuda_graphs.py, the compiled ones with a backend a CPU compiles in seconds), the JSON
rewritten after every variant, a failing or late variant recorded without losing the others, the profile's
table, and the share of the GPU's peak. Their timings are not checked: they belong to the GPU run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import step_timing
from bench.step_timing import Variant

from tests.test_cuda_graphs import record

TINY = {"num_hiddens": 4, "batch_size": 8, "steps": 2}
ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path, variants, **kw):
    kw.setdefault("profile", False)
    return step_timing.run("cpu", size=TINY, autocast_dtype=None, variants=variants, json_path=tmp_path / "st.json",
                           capture=record, **kw)


def _saved(tmp_path):
    return json.loads((tmp_path / "st.json").read_text())


def test_the_peak_comes_from_the_table_and_an_unknown_gpu_gets_no_share():
    assert step_timing.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert step_timing.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert step_timing.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0  # not the SXM part's peak
    assert step_timing.peak_bf16_tflops("NVIDIA GeForce RTX 4090") is None
    assert step_timing.peak_bf16_tflops(None) is None
    known = step_timing.throughput(2 * 10**12, 4.0, 989.0)  # 2 TFLOP in 4 ms: 500 TFLOP/s
    assert known["tflops_per_second"] == pytest.approx(500.0)
    assert known["share_of_peak"] == pytest.approx(500.0 / 989.0)
    unknown = step_timing.throughput(2 * 10**12, 4.0, None)
    assert unknown == {"tflops_per_second": pytest.approx(500.0)}
    assert step_timing.throughput(None, 4.0, 989.0) == {}


def test_every_variant_runs_on_a_cpu_with_a_stand_in_capture_and_compiler(tmp_path, monkeypatch):
    """All of VARIANTS, in their order: the graphed ones are kept (their first replay agrees with the eager
    step), the compiled ones go through torch.compile (Dynamo, with its eager backend), and the profile
    comes after the graph and its eager reference."""
    compiled = []

    def compile_model(model, mode):
        compiled.append(mode)
        return torch.compile(model, backend="eager")

    monkeypatch.setattr(step_timing, "compile_model", compile_model)
    result = _run(tmp_path, step_timing.VARIANTS, profile=True)
    names = [v.name for v in step_timing.VARIANTS]
    assert result["order"] == names and list(result["variants"]) == names
    assert result["failed"] == {} and result["skipped"] == {}
    assert compiled == ["default", "max-autotune-no-cudagraphs", "reduce-overhead"]
    for name, v in result["variants"].items():
        assert v["ms_per_step"] > 0 and v["final_loss_finite"] and v["tflops_per_second"] > 0, name
        assert "share_of_peak" not in v  # a CPU is not in the table
        graphed = next(x for x in step_timing.VARIANTS if x.name == name).graph
        assert (v.get("path") == "cuda-graph") == graphed, (name, v.get("note"))
    assert result["variants"]["CUDA graph"]["ms_per_step"] != round(result["variants"]["CUDA graph"]["ms_per_step"], 3)
    assert result["speedup"] > 0 and result["flops_per_step"] > 0
    assert result["profile"]["top"] and "in_progress" not in result
    assert _saved(tmp_path) == json.loads(json.dumps(result))


def test_the_json_holds_each_variant_as_soon_as_it_is_measured(tmp_path, monkeypatch):
    """A run killed in its second variant leaves the first one's result, and says where it stopped."""
    real, calls = step_timing.time_variant, []

    def killed_in_the_second(variant, *args, **kwargs):
        calls.append(variant.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # not an Exception: the run ends here, as if killed
        return real(variant, *args, **kwargs)

    monkeypatch.setattr(step_timing, "time_variant", killed_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, [Variant("first", graph=False), Variant("second", graph=False)])
    saved = _saved(tmp_path)
    assert saved["variants"]["first"]["ms_per_step"] > 0 and "second" not in saved["variants"]
    assert saved["in_progress"] == "second"


def test_a_failing_variant_records_its_error_and_the_others_still_run(tmp_path, monkeypatch):
    def no_compiler(model, mode):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(step_timing, "compile_model", no_compiler)
    result = _run(tmp_path, [Variant("graph"), Variant("compiled", compile_mode="default"),
                             Variant("eager", graph=False)])
    assert result["failed"] == {"compiled": "RuntimeError: no compiler here"}
    assert list(result["variants"]) == ["graph", "eager"]
    assert _saved(tmp_path)["failed"] == result["failed"]


def test_a_variant_that_would_not_fit_in_the_time_left_is_skipped_saying_so(tmp_path):
    result = _run(tmp_path, [Variant("quick", graph=False, min_seconds=0),
                             Variant("slow", graph=False, min_seconds=10**6)], seconds=3600)
    assert list(result["variants"]) == ["quick"]
    assert "not started" in result["skipped"]["slow"] and "--seconds" in result["skipped"]["slow"]


def test_the_profile_lists_the_steps_ops_by_time():
    profile = step_timing.profile_step(torch.device("cpu"), 4, 8, None, steps=2, rows=5)
    top = profile["top"]
    assert profile["steps"] == 2 and len(top) == 5 and profile["ops_per_step"] >= sum(r["count"] for r in top) / 2
    assert [r["total_us"] for r in top] == sorted((r["total_us"] for r in top), reverse=True)
    assert any("convolution" in r["name"] for r in top)
    assert all(r["count"] >= 2 and r["total_us"] > 0 for r in top)


def test_on_a_cpu_the_command_times_the_eager_step_and_lists_the_rest_as_cuda_only(tmp_path):
    out = tmp_path / "st.json"
    subprocess.run([sys.executable, "-m", "bench.step_timing", "--device", "cpu", "--steps", "1", "--no-profile",
                    "--seconds", "600", "--json", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=120)
    saved = json.loads(out.read_text())
    assert list(saved["variants"]) == ["eager, as before"] and saved["speedup"] is None
    assert set(saved["skipped"]) == {v.name for v in step_timing.VARIANTS if v.cuda_only}
    assert all(reason == "not started: CUDA only" for reason in saved["skipped"].values())
    assert "profile" not in saved and saved["peak_bf16_tflops"] is None


def test_gpu_check_gives_the_phase_its_time_and_keeps_what_an_overrunning_run_measured(tmp_path, monkeypatch):
    """scripts/gpu-check passes step_timing its budget (less a margin) as --seconds, and reads the JSON even when
    the phase overran: the variants measured before it was stopped reach gpu.json and the target."""
    import importlib.machinery
    import importlib.util
    from types import SimpleNamespace

    loader = importlib.machinery.SourceFileLoader("gpu_check", str(ROOT / "scripts" / "gpu-check"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    loader.exec_module(module)
    monkeypatch.setitem(module.BUDGETS, "step_timing", (30, 3))
    fake = tmp_path / "fake-python"  # stands in for `python -m bench.step_timing`: saves one variant, then hangs
    fake.write_text("#!/usr/bin/env python3\nimport json, sys, time\nargv = sys.argv[1:]\n"
                    "open(argv[argv.index('--json') + 1], 'w').write(json.dumps({'argv': argv, 'variants': "
                    "{'CUDA graph': {'ms_per_step': 1.25}}}))\ntime.sleep(60)\n")
    fake.chmod(0o755)
    check = module.Check("cpu", tmp_path, "smoke")
    module.step_timing_phase(check, SimpleNamespace(outdir=tmp_path, device="cpu"), str(fake), {})
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["phases"]["step_timing"]["status"] == "overran"
    argv = saved["step_timing"]["argv"]
    assert argv[argv.index("--seconds") + 1] == "1"  # max(3 s - the margin, 1)
    assert saved["step_timing"]["variants"]["CUDA graph"]["ms_per_step"] == 1.25
    assert module.targets({**saved, "phases": {}})["training step ms (CUDA graph)"]["met"] is True
    assert not (tmp_path / "step_timing.json").exists()
