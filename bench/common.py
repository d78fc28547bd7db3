"""What every benchmark does alike: record the machine it ran on and save its results."""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
from pathlib import Path

from builder.atomic import atomic_write_text


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def save_result(path: Path | None, result: dict) -> dict:
    """Write ``result`` as sorted JSON to ``path`` (when one is given) and return it. The file is replaced
    whole (builder.atomic), so a benchmark killed while saving leaves its last save."""
    if path:
        atomic_write_text(Path(path), json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def cuda_sync(device) -> None:
    """Wait for the GPU's queued work before reading a clock (nothing to wait for on a CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def start_preview(repo: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str, list[str]]:
    """``build.py --serve --port 0`` in ``repo``: the process, the address it serves on (once it says so)
    and its output so far, which a thread keeps appending to. Raises RuntimeError, with the output, if
    the preview ends without saying where it serves."""
    proc = subprocess.Popen([sys.executable, "build.py", "--serve", "--port", "0", *args], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    for line in proc.stdout:
        log.append(line)
        if match := re.search(r"on (http://127\.0\.0\.1:\d+/)", line):
            threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
            return proc, match.group(1), log
    proc.wait(timeout=30)
    raise RuntimeError("the preview never said where it serves:\n" + "".join(log))
