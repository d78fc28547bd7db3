"""Cold builds one section at a time against --jobs, a local Ray instance, and a second machine that
shares a cache: wall-clock seconds, and whether every way wrote the same site.

Each run is a cold build (empty cache, fresh site folder) of one profile, the fastest of --repeats:

- ``serial``: one section at a time with torch's own thread count (every core);
- ``serial-1``: one at a time, one thread each (``OMP_NUM_THREADS=1``): the serial build that
  ``jobs`` and ``ray`` must equal byte for byte, since they split the cores by the same count;
- ``jobs``: ``--jobs N``, one thread per section;
- ``ray``: ``--executor ray --jobs N`` on a local Ray instance started by the build;
- ``shared``: a build on an empty local cache with ``--cache-url`` pointing at a cache that one cold
  build filled: what a second machine pays (it runs nothing).

On a CUDA machine the same script times the spec profile (``--profile spec --modes serial,jobs``):
there a section declares its GPU share, and --jobs runs one section per GPU.

    python -m bench.scale_out --json bench/results/scale_out.json     # about 8 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import describe_machine, save_result

ROOT = Path(__file__).resolve().parent.parent
MODES = ("serial", "serial-1", "jobs", "ray", "shared")


def build(tmp: Path, name: str, profile: str, args: list[str], one_thread: bool) -> dict:
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if one_thread else {})}
    if not one_thread:
        env.pop("OMP_NUM_THREADS", None)
    report = tmp / f"{name}.json"
    command = [sys.executable, str(ROOT / "build.py"), "--no-progress", "--profile", profile, "--cache-dir",
               str(tmp / f"cache-{name}"), "--site-dir", str(tmp / f"site-{name}"), "--report", str(report), *args]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"build {name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    data = json.loads(report.read_text())
    return {"seconds": round(seconds, 1), "executed": len(data["executed"]), "site": tmp / f"site-{name}"}


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if files != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke", choices=["smoke", "cpu", "spec"])
    ap.add_argument("--jobs", type=int, default=2, help="workers for jobs and ray (default 2)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"which runs (default all: {','.join(MODES)})")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fwd-scale-") as tmp_name:
        tmp = Path(tmp_name)
        for mode in modes:
            best = None
            for repeat in range(args.repeats):
                name = f"{mode}-{repeat}"
                if mode == "shared":
                    url = (tmp / f"shared-{repeat}").as_uri()
                    build(tmp, f"fill-{repeat}", args.profile, ["--cache-url", url], one_thread=True)
                    got = build(tmp, name, args.profile, ["--cache-url", url], one_thread=True)
                else:
                    extra = {"jobs": ["--jobs", str(args.jobs)],
                             "ray": ["--executor", "ray", "--jobs", str(args.jobs)]}.get(mode, [])
                    got = build(tmp, name, args.profile, extra, one_thread=mode != "serial")
                print(f"{mode:9s} {got['seconds']:7.1f} s  ({got['executed']} sections ran)", flush=True)
                if best is None or got["seconds"] < best["seconds"]:
                    best = got
            runs[mode] = best
        reference = runs.get("serial-1")
        for mode, got in runs.items():
            if reference is not None and mode not in ("serial", "serial-1"):
                got["same_site_as_serial_1"] = same_tree(reference["site"], got["site"])
        for got in runs.values():
            del got["site"]
    result = {"benchmark": "scale-out", "machine": describe_machine(), "profile": args.profile, "jobs": args.jobs,
              "repeats": args.repeats, "runs": runs}
    differing = [m for m, r in runs.items() if r.get("same_site_as_serial_1") is False]
    save_result(args.json, result)
    if differing:
        raise SystemExit(f"{', '.join(differing)} wrote another site than the serial one-thread build")
    return result


if __name__ == "__main__":
    main()
