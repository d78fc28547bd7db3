"""How long the default build takes, cold and incremental, on this machine.

Works on a private copy of the working tree (tracked and untracked-but-not-ignored files), so the
repository, its cache and its site are never touched:

1. **cold**: the default build (``cpu`` profile, local backend) into an empty cache; the
   seconds of every section come from its cache record, the total from the wall clock;
2. **warm**: the same build again, with nothing changed;
3. **content edit**: a sentence appended to one content file;
4. **generator edit**: one statement added to one generator's module.

Each rebuild reports which sections ran; the content edit must run none and the generator edit
exactly the edited section (it has no dependents), otherwise the run fails.

    python -m bench.build_times --json bench/results/build.json    # about 17 minutes on 2 cores
    python -m bench.build_times --from-cache .cache                # skip the cold build
    python -m bench.build_times --keep-cache /tmp/c && rm -rf .cache && mv /tmp/c .cache
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import describe_machine, save_result

ROOT = Path(__file__).resolve().parent.parent
CONTENT_FILE = "content/b12-noising.md"
GENERATOR = "a1_9_hybrids"


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if rel.startswith("site/") or not (ROOT / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def run_build(repo: Path, cache: Path, site: Path, sections: list[str], profile: str | None) -> dict:
    """One `python build.py`; returns its wall time and the sections that executed."""
    from diffusion.data import DEFAULT_ROOT

    env = {**os.environ, "MNIST_ROOT": str(DEFAULT_ROOT)}
    report = cache.parent / "report.json"
    command = [sys.executable, "build.py", "--no-progress", "--cache-dir", str(cache), "--site-dir", str(site),
               "--report", str(report)]
    start = time.perf_counter()
    proc = subprocess.run(command + (["--profile", profile] if profile else []), cwd=repo, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the build failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(report.read_text())
    ran = [s["id"] for s in result["sections"] if s["status"] == "miss" and s["id"] in sections]
    return {"seconds": round(seconds, 1), "sections_run": ran,
            "files_written": result["site"]["changed"] if result["site"] else None}


def section_seconds(cache: Path) -> dict[str, float]:
    """Each section's run time, from the records of a cold build (one per section)."""
    out = {}
    for folder in sorted((cache / "entries").iterdir()):
        records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
        out[folder.name] = max(r["wall_seconds"] for r in records)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-cache", type=Path, help="start from a copy of this cache instead of a cold build")
    ap.add_argument("--profile", choices=["smoke", "cpu", "spec"],
                    help="build profile (default: the build's own default, cpu without a GPU)")
    ap.add_argument("--keep-cache", type=Path, metavar="DIR",
                    help="copy the cache of the cold and warm builds to DIR (which must not exist), e.g. to "
                         "adopt it as the repository's .cache")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.keep_cache and args.keep_cache.exists():
        raise SystemExit(f"--keep-cache {args.keep_cache} already exists; name a folder that does not")
    sys.path.insert(0, str(ROOT))
    from builder.app import Settings, resolve
    from builder.graph.registry import discover
    from project import PROJECT

    sections = sorted(discover(PROJECT.sections))

    profile = args.profile or resolve(Settings(PROJECT)).profile
    result: dict = {"benchmark": "build times", "machine": describe_machine(), "profile": profile}
    with tempfile.TemporaryDirectory(prefix="fwd-bench-") as tmp:
        repo, cache, site = Path(tmp, "repo"), Path(tmp, "cache"), Path(tmp, "site")
        copy_tree(repo)
        if args.from_cache:
            shutil.copytree(args.from_cache, cache)
        else:
            print("cold build (about 17 minutes on 2 cores)...", flush=True)
            cold = run_build(repo, cache, site, sections, args.profile)
            result["cold"] = {**cold, "section_seconds": section_seconds(cache)}
            print(f"  cold: {cold['seconds']} s, {len(cold['sections_run'])} sections", flush=True)

        result["warm"] = run_build(repo, cache, site, sections, args.profile)
        if args.from_cache and result["warm"]["sections_run"]:
            # The copied cache was not for this tree; this "warm" build was partly cold.
            result["warm"] = run_build(repo, cache, site, sections, args.profile)

        if args.keep_cache:
            shutil.copytree(cache, args.keep_cache, ignore=shutil.ignore_patterns("lock"))
        with open(repo / CONTENT_FILE, "a", encoding="utf-8") as f:
            f.write("\nA sentence the benchmark added, to time a content-only rebuild.\n")
        result["content_edit"] = {"edited": CONTENT_FILE, **run_build(repo, cache, site, sections, args.profile)}

        generator = repo / "generators" / f"{GENERATOR}.py"
        generator.write_text(generator.read_text() + "\nBENCHMARK_EDIT = 1  # a real change to the module's code\n")
        result["generator_edit"] = {"edited": f"generators/{GENERATOR}.py", **run_build(repo, cache, site, sections, args.profile)}

    checks = {"warm rebuild runs nothing": result["warm"]["sections_run"] == [],
              "content edit runs nothing": result["content_edit"]["sections_run"] == [],
              f"generator edit runs only {GENERATOR}": result["generator_edit"]["sections_run"] == [GENERATOR]}
    result["checks"] = checks
    for name in ("cold", "warm", "content_edit", "generator_edit"):
        if name in result:
            r = result[name]
            ratio = f" ({result['cold']['seconds'] / r['seconds']:.0f}x faster than cold)" \
                if "cold" in result and name != "cold" else ""
            print(f"{name:15s} {r['seconds']:8.1f} s{ratio}  ran: {', '.join(r['sections_run']) or 'nothing'}")
    for name, ok in checks.items():
        print(f"{'ok ' if ok else 'FAIL'} {name}")
    save_result(args.json, result)
    if not all(checks.values()):
        raise SystemExit("an incremental rebuild ran more (or less) than the edit affects; see above")
    return result


if __name__ == "__main__":
    main()
