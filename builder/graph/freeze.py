"""The freeze: a build's results, committed, as a read-only layer of the content-addressed store.

Quarto calls this ``_freeze``; here it is the store's own layout (``entries/<section>/<key>.json``
and ``objects/ab/<sha>``) under ``frozen/<profile>/``, plus ``freeze.json``, which says what was
frozen, where and with what. A build looks results up in its local cache and then in the freeze of
its profile (see ``Store.lookup`` and ``Engine.find``), so a machine that cannot compute a profile
(a CPU and the GPU-sized ``spec``) still renders its pages. Git stores a blob once, so a figure
that is also under ``site/`` costs the repository nothing twice.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..cache import Entry, Store, referenced_objects

FREEZE_FILE = "freeze.json"
# A saved model is frozen only when it is a final model this small: enough for the cheap sections that
# read it (Part A reads the final class-conditioned UNet) to re-run on any machine, without committing
# every epoch's snapshot (the spec edition's models come to 136 MiB, over what one device call returns).
MODEL_LIMIT_BYTES = 8 * 2**20


def keeps(output: dict[str, Any], size: int) -> bool:
    """Whether a freeze keeps this output's files: everything but large or intermediate models."""
    return output.get("kind") != "model" or (output["id"] == "model-final" and size <= MODEL_LIMIT_BYTES)


def omitted(record: dict[str, Any], object_path) -> list[str]:
    """The objects of ``record`` that a freeze leaves out (see ``keeps``); ``object_path(sha)`` finds each."""
    kept, every = set(), set()
    left_out = set(record.get("omitted", ()))  # by the freeze this result was read from
    for output in record["outputs"]:
        for f in output["files"]:
            every.add(f["sha"])
            path = object_path(f["sha"])
            if f["sha"] in left_out and not path.exists():
                continue  # still left out: nothing here has computed it since
            if keeps(output, path.stat().st_size):
                kept.add(f["sha"])  # an object two outputs share stays if either keeps it
    return sorted(every - kept)


def machine(device: str) -> dict[str, Any]:
    """The machine a result is computed on, in the words a reader needs: device kind and name, torch
    and CUDA versions, CPU cores."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda":
        try:
            name = torch.cuda.get_device_name(device)
        except (AssertionError, RuntimeError):  # a test's pretend CUDA device on a CPU-only torch
            name = "CUDA GPU"
    else:
        name = _cpu_name()
    return {"device": kind, "name": name, "cores": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def read(folder: Path) -> dict[str, Any] | None:
    """A freeze's ``freeze.json``, or None where there is no freeze."""
    try:
        return json.loads((Path(folder) / FREEZE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write(store: Store, entries: dict[str, Entry], target: Path, about: dict[str, Any],
          sources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replace the freeze at ``target`` with ``entries`` (one record per section) and their objects.

    ``sources`` (``builder.graph.rekey.provenance``): the fingerprint scheme, the commit and the sha256 of each
    source file the keys fingerprint; each record names the scheme and commit, and freeze.json the files,
    so that the freeze can be re-keyed, with the evidence checked, when either changes.

    The new freeze is assembled beside the old one and swapped in by two renames, so an interrupted
    freeze leaves the old one whole; objects are read before the swap, so freezing a build whose
    results came from this very freeze works too.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        files = total = 0
        sections = {}
        for gid, entry in sorted(entries.items()):
            record = dict(entry.record)
            record.setdefault("machine", about["machine"])
            if sources is not None:
                record.update(fingerprint=sources["fingerprint"], commit=sources["commit"])
            record["omitted"] = omitted(record, store.object_path)
            for sha in referenced_objects(record["outputs"]):
                dest = store.local_object_path(sha, staging)
                if sha not in record["omitted"] and not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(store.object_path(sha), dest)
                    files += 1
                    total += dest.stat().st_size
            path = staging / "entries" / gid / f"{entry.key}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            sections[gid] = {"key": entry.key, "wall_seconds": record.get("wall_seconds"),
                             "machine": record["machine"]}
        summary = {**about, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "objects": files,
                   "bytes": total, "sections": sections}
        if sources is not None:
            summary.update(fingerprint=sources["fingerprint"], commit=sources["commit"],
                           sources={sources["commit"] or "uncommitted": sources["files"]})
            if sources["uncommitted"]:
                summary["uncommitted"] = sources["uncommitted"]
        atomic_write_text(staging / FREEZE_FILE, json.dumps(summary, indent=1, sort_keys=True) + "\n")
        old = target.with_name(f".{target.name}.old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
        return summary
    finally:
        shutil.rmtree(staging, ignore_errors=True)
