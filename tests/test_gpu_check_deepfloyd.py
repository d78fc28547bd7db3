"""scripts/gpu-check-deepfloyd, the DeepFloyd device check, in its CPU dry run: tiny random IF pipelines
of the real structure take every phase the GPU run takes (the full-size shapes need a GPU or, for a few
steps, bench/deepfloyd_full_size.py's minutes on a CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.device_check_run import run_check

pytestmark = pytest.mark.slow  # the quick tier leaves it to CI (conftest.py, --all)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    return run_check("gpu-check-deepfloyd", tmp_path_factory.mktemp("gpu-check-deepfloyd"), "deepfloyd.json",
                     timeout=1800)


def test_every_phase_passes_within_its_budget(dry_run):
    assert dry_run.proc.returncode == 0, dry_run.proc.stdout + dry_run.proc.stderr
    phases = dry_run.result["phases"]
    assert set(phases) == {"loops", "part_a", "offload"} and {p["status"] for p in phases.values()} == {"ok"}
    log = (dry_run.out / "gpu-check-deepfloyd.log").read_text()
    started = [log.index(f"===== {name} (budget") for name in ("loops", "part_a", "offload")]
    assert started == sorted(started), "in order of value: --offload last, in a phase of its own"
    assert all(p["seconds"] <= p["budget_s"] for p in phases.values())
    assert sorted(p.name for p in dry_run.out.iterdir()) == ["deepfloyd.json", "gpu-check-deepfloyd.log"]
    assert "random" in dry_run.result["weights"]


def test_the_loops_equal_the_pipelines_after_a_save_and_load(dry_run):
    loops = dry_run.result["loops"]["phases"]
    assert loops["save"]["stage1"]["parameters"] > 10**6 and loops["save"]["stage1"]["disk_bytes"] > 10**6
    comparisons = [loops["stage1"]["cfg_vs_IFPipeline"], loops["stage1"]["sdedit_vs_IFImg2ImgPipeline"],
                   loops["stage2"]["upsample_vs_IFSuperResolutionPipeline"]]
    assert all(c["bitwise"] and c["max_abs_diff"] == 0 and c["finite"] for c in comparisons)
    assert loops["stage2"]["upsample_vs_IFSuperResolutionPipeline"]["output_size"] == [256, 256]


def test_memory_savers_are_each_measured_and_offload_waits_for_a_gpu(dry_run):
    phases = dry_run.result["loops"]["phases"]
    savers = {name: p for name, p in phases.items() if name.startswith("memory: ")}
    assert len(savers) == 4
    offload = savers["memory: --offload (enable_model_cpu_offload), T5 included"]
    assert offload["status"] == "skipped" and "CUDA" in offload["skipped"]
    assert all(p["status"] == "ok" and p["peak_rss_gb"] > 0 for name, p in savers.items() if p is not offload)


def test_all_of_part_a_ran_on_the_deepfloyd_backend(dry_run):
    sections = dry_run.result["part_a"]["sections"]
    part_a = {"a0_setup", "a1_denoising", "a1_4_iterative", "a1_5_sampling", "a1_7_sdedit", "a1_7_2_inpaint",
              "a1_7_3_text", "a1_8_anagrams", "a1_9_hybrids"}
    assert part_a <= set(sections) and all(sections[s]["seconds"] > 0 for s in part_a)
    fits = dry_run.result["fits_16_gb_card"]
    assert fits["limit_gb"] == 15.0 and fits["part_a_peak_gb"] is None  # no GPU memory to read on a CPU
