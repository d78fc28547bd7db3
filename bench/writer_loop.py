"""The writer's loop, timed: how long a writer waits for the four things they do all day.

On a private copy of the working tree (tracked and untracked-but-not-ignored files: the committed
freezes of both editions, no cache), after one build that fills its cache:

1. ``python build.py --list``: a fresh process, nothing to compute;
2. the warm no-op build, ``python build.py``: a fresh process, nothing changed;
3. edit to reload: ``build.py --serve`` runs, a page is open in headless Chromium, one sentence of a
   content file is changed and saved, and the clock stops when the reloaded page shows it (without
   Chromium: when the served page does);
4. the default test tier, ``python -m pytest`` as a developer runs it (once: it takes minutes).

The first three are the median of ``--runs`` (default 5). The results name the machine.

    python -m bench.writer_loop --json bench/results/writer_loop.json            # about 12 minutes
    python -m bench.writer_loop --no-tests                                      # the first three only
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.build_times import copy_tree
from bench.common import describe_machine, save_result, start_preview

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CONTENT_FILE = "content/a12-blur.md"
ANCHOR = "in numbers."  # the sentence the edits follow
GOALS = {"list_seconds": 0.3, "noop_seconds": 0.5, "edit_to_reload_seconds": 1.0, "default_tests_seconds": 600.0}


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def median_of(runs: list[float]) -> dict:
    return {"runs": [round(r, 4) for r in runs], "median": round(statistics.median(runs), 4)}


def edit_to_reload(repo: Path, runs: int) -> dict:
    """Seconds from saving an edited content file to the open page showing it, ``runs`` times."""
    try:
        proc, base, _log = start_preview(repo, "--no-progress")
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    try:
        path = repo / CONTENT_FILE
        original = path.read_text(encoding="utf-8")
        try:
            if CHROMIUM.exists():
                return _in_chromium(base, path, original, runs)
            return _by_polling(base, path, original, runs)
        finally:
            path.write_text(original, encoding="utf-8")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _edit(path: Path, original: str, i: int) -> str:
    marker = f"EDITED {i} {time.time_ns()}"
    path.write_text(original.replace(ANCHOR, f"{ANCHOR} {marker}.", 1), encoding="utf-8")
    return marker


def _in_chromium(base: str, path: Path, original: str, runs: int) -> dict:
    from playwright.sync_api import sync_playwright

    seconds = []
    with sync_playwright() as manager:
        browser = manager.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(base + "part-a.html", wait_until="load")
        page.wait_for_timeout(1000)  # the event stream connects
        for i in range(runs):
            start = time.perf_counter()
            marker = _edit(path, original, i)
            page.wait_for_function(f"() => document.body !== null && document.body.innerText.includes({json.dumps(marker)})", polling=5,
                                   timeout=60_000)
            seconds.append(time.perf_counter() - start)
            page.wait_for_timeout(1000)
        browser.close()
    return {**median_of(seconds), "method": "headless Chromium: save to the reloaded page showing the edit"}


def _by_polling(base: str, path: Path, original: str, runs: int) -> dict:
    seconds = []
    for i in range(runs):
        start = time.perf_counter()
        marker = _edit(path, original, i)
        while marker not in urllib.request.urlopen(base + "part-a.html").read().decode("utf-8"):
            if time.perf_counter() - start > 60:
                raise SystemExit("the preview did not rebuild within a minute")
            time.sleep(0.005)
        seconds.append(time.perf_counter() - start)
        time.sleep(1)
    return {**median_of(seconds), "method": "no Chromium here: save to the served page showing the edit"}


def default_tests() -> dict:
    """The default test tier on the checkout itself (its tests read the committed site)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"], cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return {"seconds": round(seconds, 1), "summary": last.strip("= "), "ok": done.returncode == 0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--no-tests", action="store_true", help="skip the default test tier (minutes)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="writer-loop-") as tmp:
        repo = Path(tmp) / "repo"
        copy_tree(repo)
        env_ok = timed([sys.executable, "build.py", "--no-progress"], repo)  # fills the cache, renders the site
        print(f"first build of the copy: {env_ok:.1f} s", flush=True)
        listing = median_of([timed([sys.executable, "build.py", "--list"], repo) for _ in range(args.runs)])
        print(f"--list: {listing['median']:.3f} s (median of {args.runs})", flush=True)
        noop = median_of([timed([sys.executable, "build.py", "--no-progress"], repo) for _ in range(args.runs)])
        print(f"no-op build: {noop['median']:.3f} s", flush=True)
        reload = edit_to_reload(repo, args.runs)
        print(f"edit to reload: {reload['median']:.3f} s ({reload['method']})", flush=True)
    result = {"benchmark": "writer loop", "machine": describe_machine(), "runs": args.runs,
              "environment": {"PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "")},
              "list": listing, "noop": noop, "edit_to_reload": reload, "goals": GOALS}
    if not args.no_tests:
        result["default_tests"] = default_tests()
        print(f"default test tier: {result['default_tests']['seconds']:.0f} s ({result['default_tests']['summary']})",
              flush=True)
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
