"""The benchmark scripts themselves, on the smoke profile and tiny sizes (their numbers are not
checked here: timing goals belong to the benchmarks, not to tests)."""
import json
from pathlib import Path

import pytest

from bench import build_times, live_sampler, sampling_throughput

pytestmark = pytest.mark.slow  # the quick tier leaves it to CI (conftest.py, --all)


def test_incremental_rebuilds_run_only_the_affected_sections(smoke_build, tmp_path):
    out = tmp_path / "build.json"
    result = build_times.main(["--profile", "smoke", "--from-cache", str(smoke_build["cache"]), "--json", str(out)])
    assert result["warm"]["sections_run"] == []
    assert result["content_edit"]["sections_run"] == [] and result["content_edit"]["files_written"] >= 1
    assert result["generator_edit"]["sections_run"] == [build_times.GENERATOR]
    assert all(result["checks"].values())
    saved = json.loads(out.read_text())
    assert saved["profile"] == "smoke" and saved["machine"]["logical_cores"] >= 1 and "cold" not in saved


def test_sampling_benchmark_measures_both_loops_in_one_run(tmp_path):
    out = tmp_path / "sampling.json"
    result = sampling_throughput.main(["--ddpm-images", "2", "--naive-ddpm-images", "1", "--parta-images", "2",
                                       "--naive-parta-images", "1", "--hidden", "8", "--json", str(out)])
    assert [r["sampler"].split(":")[0] for r in result["rows"]] == ["Part B", "Part A"]
    for row in result["rows"]:
        assert row["ours_images_per_second"] > 0 and row["naive_images_per_second"] > 0
        ratio = row["ours_images_per_second"] / row["naive_images_per_second"]
        assert abs(row["speedup"] - ratio) < 0.01 * ratio + 0.01
    assert json.loads(out.read_text()) == result


@pytest.mark.browser
def test_live_sampler_benchmark_times_every_run_in_chromium(smoke_build, tmp_path):
    if not Path(live_sampler.CHROMIUM).exists():
        pytest.skip(f"{live_sampler.CHROMIUM} is not installed")
    out = tmp_path / "live.json"
    result = live_sampler.main(["--site", str(smoke_build["site"]), "--repeats", "1", "--json", str(out)])
    assert [(r["digits"], r["steps"]) for r in result["runs"]] == [(1, 300), (10, 300), (1, 30), (10, 30)]
    for r in result["runs"]:
        assert r["ms_per_step"] > 0 and abs(r["seconds"] - r["ms_per_step"] * r["steps"] / 1000) < 0.02 * r["seconds"] + 0.01
    assert result["backend"].startswith("WebAssembly") and json.loads(out.read_text()) == result
    # The cheaper graphs, timed beside the published one: the published graph is its own reference, and
    # 8-bit arithmetic moves even the smoke model's estimates past the tolerance.
    variants = {v["file"]: v for v in result["variants"]}
    assert list(variants) == ["published.onnx", "gelu-tanh.onnx", "int8.onnx"]
    assert variants["published.onnx"]["max_abs_error"] == 0 and variants["published.onnx"]["within_tolerance"]
    assert variants["int8.onnx"]["max_abs_error"] > result["tolerance"] and not variants["int8.onnx"]["within_tolerance"]
    assert all(v["ms_per_call"] > 0 for v in variants.values())
