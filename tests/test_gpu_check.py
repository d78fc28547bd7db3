"""scripts/gpu-check, the one-call device check, run here with the CPU's smoke profile, and its
results laid out by the report's appendix."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.device_check_run import run_check

pytestmark = pytest.mark.slow  # the quick tier leaves it to CI (conftest.py, --all)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    return run_check("gpu-check", tmp_path_factory.mktemp("gpu-check"), "gpu.json", timeout=1500)


def test_every_phase_runs_and_passes_on_a_cpu(cpu_check):
    assert cpu_check.proc.returncode == 0, cpu_check.proc.stdout + cpu_check.proc.stderr
    phases = cpu_check.result["phases"]
    assert set(phases) == {"tests", "step_timing", "build_1", "freeze", "build_2", "compare"}
    assert {p["status"] for p in phases.values()} == {"ok"}
    log = (cpu_check.out / "gpu-check.log").read_text()
    started = [log.index(f"===== {name} (budget") for name in ("build_1", "freeze", "step_timing", "tests", "build_2")]
    assert started == sorted(started), "in order of value: the cold build and its freeze first"
    assert all(p["seconds"] <= p["budget_s"] for p in phases.values())
    assert cpu_check.result["profile"] == "smoke" and cpu_check.result["environment"]["device_name"] == "cpu"
    assert sorted(p.name for p in cpu_check.out.iterdir()) == ["frozen-smoke.tar.part0", "gpu-check.log", "gpu.json",
                                                               "tests.xml"]


def test_the_frozen_build_comes_back_in_parts_that_a_cpu_build_renders(cpu_check, tmp_path):
    """What the device call returns: the build's freeze, packed in files of at most 16 MiB, which unpack
    into a frozen/ folder that a build with an empty cache renders without computing anything."""
    from tests.conftest import build, statuses

    freeze = cpu_check.result["freeze"]
    parts = [cpu_check.out / name for name in freeze["parts"]]
    assert all(p.stat().st_size <= 16 * 2**20 for p in parts) and freeze["objects"] > 100
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    subprocess.run(["bash", "-c", f"cd {cpu_check.out} && {freeze['unpack'].replace('frozen/', str(frozen))}"],
                   check=True)
    proc = build("--profile", "smoke", "--frozen-dir", str(frozen), cache=tmp_path / "cache", site=tmp_path / "site")
    assert set(statuses(proc).values()) == {"frozen"}


def test_gpu_tests_are_skipped_with_their_reason(cpu_check):
    tests = cpu_check.result["tests"]
    assert tests["passed"] == tests["failed"] == 0 and tests["skipped"] >= 4
    assert all("needs a CUDA GPU" in outcome for outcome in tests["tests"].values())


def test_builds_are_measured_and_compared_byte_for_byte(cpu_check):
    build = cpu_check.result["builds"]["build_1"]
    assert build["wall_seconds"] > 0 and len(build["sections"]) >= 20
    assert build["sections"]["b2_train_time"]["training_step"]["path"] == "eager"
    assert build["graph_fallbacks"] == [] and build["nondeterministic_ops"] == []
    assert cpu_check.result["determinism"]["identical"] is True
    assert cpu_check.result["determinism"]["site_files"] > 100
    # The first build as `python build.py` runs it (on CUDA: sections sharing the GPU), the second one
    # section at a time, so that compare also holds a parallel build to the serial one's bytes.
    assert build["jobs"] == "default" and cpu_check.result["builds"]["build_2"]["jobs"] == 1
    log = (cpu_check.out / "gpu-check.log").read_text()
    assert "--jobs 1" in log[log.index("===== build_2 (budget"):].split("\n")[0]
    timing = cpu_check.result["step_timing"]
    assert timing["variants"]["eager, as before"]["ms_per_step"] > 0 and timing["speedup"] is None


def test_an_overrunning_phase_is_stopped_and_recorded(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("gpu_check", str(ROOT / "scripts" / "gpu-check"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    loader.exec_module(module)
    monkeypatch.setitem(module.BUDGETS, "tests", (1, 1))
    check = module.Check("cpu", tmp_path, "smoke")
    run = check.run("tests", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"])
    assert run["status"] == "overran" and run["seconds"] < 10 and "started" in run["output"]
    saved = json.loads((tmp_path / "gpu.json").read_text())["phases"]["tests"]
    assert saved["status"] == "overran" and saved["budget_s"] == 1


def _gpu_check_module():
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("gpu_check", str(ROOT / "scripts" / "gpu-check"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    loader.exec_module(module)
    return module


def test_one_deadline_bounds_every_phase_and_a_phase_it_leaves_no_time_for_is_skipped(tmp_path):
    """A lent GPU comes for a fixed time: the check's phases share one deadline. A phase gets its budget or
    what is left, whichever is less; one that would start with too little is skipped, saying so, and what
    the phases before it measured stays in gpu.json."""
    module = _gpu_check_module()
    check = module.Check("cpu", tmp_path, "smoke", deadline_s=module.MIN_PHASE_S + 3)
    first = check.run("tests", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert first["status"] == "overran" and first["budget_s"] <= module.MIN_PHASE_S + 3 < module.BUDGETS["tests"][1]
    second = check.run("step_timing", [sys.executable, "-c", "print('never')"])
    assert second["status"] == "skipped" and "never" not in second["output"]
    saved = json.loads((tmp_path / "gpu.json").read_text())["phases"]
    assert saved["tests"]["status"] == "overran" and saved["step_timing"]["status"] == "skipped"
    assert "deadline" in saved["step_timing"]["reason"]


def test_the_targets_are_issue_39s_and_read_what_was_measured():
    module = _gpu_check_module()
    result = {"phases": {"build_1": {"status": "ok"}}, "builds": {"build_1": {"wall_seconds": 58.2}},
              "step_timing": {"variants": {"CUDA graph": {"ms_per_step": 1.7}}}}
    targets = module.targets(result)
    assert targets["cold spec build seconds"] == {"target": 60.0, "measured": 58.2, "met": True}
    assert targets["training step ms (CUDA graph)"] == {"target": 1.5, "measured": 1.7, "met": False}
    assert module.targets({"phases": {}})["cold spec build seconds"]["met"] is False


def test_the_appendix_lays_out_a_gpu_check(cpu_check, monkeypatch, tmp_path):
    import generators.appendix_benchmarks as appendix

    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    (results / "gpu.json").write_text((cpu_check.out / "gpu.json").read_text())
    monkeypatch.setattr(appendix, "ROOT", tmp_path)
    saved = {}

    class Recorder:
        def save_table(self, fig_id, columns, rows, caption, meta=None):
            saved[fig_id] = SimpleNamespace(columns=columns, rows=rows, caption=caption)

        def save_plot(self, fig_id, fig, caption, alt="", meta=None):
            saved[fig_id] = SimpleNamespace(caption=caption)

    appendix.run(Recorder())
    env = cpu_check.result["environment"]
    assert saved["bench_machine"].rows == [("GPU check (scripts/gpu-check)",
                                            f"cpu, {env['cpu_cores']} CPU cores; torch {env['torch']}, CUDA None, "
                                            f"{env['date']}")]
    build = saved["bench_gpu_build"]
    assert build.columns == ["section", "seconds", "peak GPU MB", "training step"]
    assert len(build.rows) == len(cpu_check.result["builds"]["build_1"]["sections"]) + 1
    assert "byte-identical" in build.caption and env["date"] in build.caption
    assert "(scripts/gpu-check, with --jobs' default" in build.caption and "one section at a time" in build.caption
    assert saved["bench_gpu_step"].rows[0][0] == "eager, as before"


def test_when_the_parallel_build_fails_the_serial_one_is_frozen(tmp_path, monkeypatch):
    """The freeze is what a lent GPU is most for: if the first build (sections sharing the GPU) fails, the
    second, one section at a time, is frozen in its place; the phases in between still run."""
    module = _gpu_check_module()
    calls = []

    def cold_build(check, name, folder, profile, args, py, env, jobs=None):
        calls.append((name, jobs))
        return {"name": name, "status": "failed" if name == "build_1" else "ok", "folder": folder}

    def freeze_phase(check, status, folder, profile, args, py, env):
        calls.append(("freeze", status, folder.name))

    monkeypatch.setattr(module, "cold_build", cold_build)
    monkeypatch.setattr(module, "freeze_phase", freeze_phase)
    monkeypatch.setattr(module, "step_timing_phase", lambda *a: calls.append(("step_timing",)))
    monkeypatch.setattr(module, "tests_phase", lambda *a: calls.append(("tests",)))
    assert module.main(["--device", "cpu", str(tmp_path)]) == 1
    assert calls == [("build_1", None), ("freeze", "failed", "build_1"), ("step_timing",), ("tests",),
                     ("build_2", 1), ("freeze", "ok", "build_2")]
