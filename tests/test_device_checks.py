"""A device check that is stopped keeps what it measured: bench.deepfloyd_full_size writes its JSON after
every case, so a phase killed at its budget (as the --offload case was on an H200, losing five finished
cases) leaves every case that had finished. Each case is a subprocess; here they are stood in for."""
import json
import subprocess
from types import SimpleNamespace

import pytest

from bench import deepfloyd_full_size as bench


def test_a_run_stopped_mid_way_keeps_every_case_that_finished(tmp_path, monkeypatch):
    out = tmp_path / "loops.json"
    ran = []

    def case(command, **kwargs):
        label = command[command.index("--phase") + 1]
        ran.append(label)
        if label == "stage2":  # the budget runs out here: the checker kills the whole process group
            raise KeyboardInterrupt
        return subprocess.CompletedProcess(command, 0, stdout=json.dumps({"seconds": 1.5, "case": label}), stderr="")

    monkeypatch.setattr(bench.subprocess, "run", case)
    monkeypatch.setattr("bench.common.describe_machine", lambda: {"cpu": "test"})
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--shape", "tiny", "--workdir", str(tmp_path / "weights"), "--json", str(out), "--memory"])
    kept = json.loads(out.read_text())["phases"]
    assert ran == ["save", "stage1", "stage2"] and list(kept) == ["save", "stage1"]
    assert kept["stage1"] == {"status": "ok", "wall_seconds": kept["stage1"]["wall_seconds"], "seconds": 1.5,
                              "case": "stage1"}


def test_offload_runs_alone_or_not_at_all(tmp_path, monkeypatch):
    cases = []
    monkeypatch.setattr(bench.subprocess, "run", lambda command, **kw: cases.append(command) or
                        subprocess.CompletedProcess(command, 0, stdout='{"seconds": 1}', stderr=""))
    monkeypatch.setattr("bench.common.describe_machine", lambda: {"cpu": "test"})
    args = SimpleNamespace(shape="tiny", device="cpu", dtype="float32", workdir=tmp_path, steps=2, stage2_steps=1,
                           memory=True, no_offload=True, offload_only=False)
    labels = list(bench.run_phases(args)["phases"])
    assert labels[:3] == ["save", "stage1", "stage2"] and f"memory: {bench.OFFLOAD}" not in labels and len(labels) == 6
    only = list(bench.run_phases(SimpleNamespace(**{**vars(args), "no_offload": False, "offload_only": True}))["phases"])
    assert only == [f"memory: {bench.OFFLOAD}"]
    with pytest.raises(SystemExit):
        bench.main(["--shape", "tiny", "--offload-only"])  # it needs the pipelines an earlier run saved
