"""Runs one of the device-check scripts (scripts/gpu-check, scripts/gpu-check-deepfloyd) on this machine's CPU,
as their tests need it: the process, its output folder and the JSON it wrote."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent


def run_check(script: str, out: Path, result_file: str, timeout: int) -> SimpleNamespace:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--device", "cpu", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    return SimpleNamespace(proc=proc, out=out, result=json.loads((out / result_file).read_text()))
