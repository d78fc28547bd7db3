"""What the last render of a site folder read and wrote, so that a render with the same inputs is skipped.

A render reads the editions' manifests (which name every figure by its content hash), the content
files, the templates (with the static files) and the engine's own code, and writes the site. If all
of those hash as they did when the folder was last written, and every file it wrote is still there
with the size and modification time it was left with (and nothing else is), rendering again would
write the same bytes: the build says so and writes nothing. The inputs are hashed through the stat
cache, so an unchanged tree costs one ``stat`` per file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .. import statcache
from ..atomic import atomic_write_text
from ..fingerprint import code_digest, hash_value, sha256_bytes, sha256_known

FORMAT = 1
ENGINE = Path(__file__).resolve().parent.parent  # builder/, its sub-packages too


def inputs_digest(editions: list[Any], pages: tuple, content_dir: Path, templates_dir: Path) -> str:
    """One hash of everything a render reads."""
    return hash_value({
        "format": FORMAT,
        "editions": [{"name": e.name, "folder": e.folder, "manifest": e.manifest, "freeze": e.freeze} for e in editions],
        "pages": [dataclasses.astuple(p) for p in pages],
        "content": _tree(Path(content_dir)),
        "templates": _tree(Path(templates_dir)),
        "engine": {p.relative_to(ENGINE).as_posix(): statcache.digest(
            p, "code-digest", lambda data: code_digest(data.decode("utf-8"))) for p in sorted(ENGINE.rglob("*.py"))},
    })


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_known(p) for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.is_dir() else {}


def _stamp_path(cache_root: Path, out_dir: Path) -> Path:
    return Path(cache_root) / "rendered" / f"{sha256_bytes(str(Path(out_dir).resolve()).encode())[:24]}.json"


def _files(out_dir: Path) -> dict[str, list[int]]:
    found = {}
    for folder, _dirs, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(folder, name)
            st = os.stat(path)
            found[os.path.relpath(path, out_dir)] = [st.st_size, st.st_mtime_ns]
    return found


def unchanged(cache_root: Path, out_dir: Path, digest: str) -> dict[str, Any] | None:
    """The summary of the last render of ``out_dir`` if its inputs hashed to ``digest`` and the folder is as
    it left it; else None."""
    try:
        stamp = json.loads(_stamp_path(cache_root, out_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stamp.get("inputs") != digest or not Path(out_dir).is_dir() or _files(Path(out_dir)) != stamp["files"]:
        return None
    return {**stamp["summary"], "changed": 0, "removed": 0}


def remember(cache_root: Path, out_dir: Path, digest: str, summary: dict[str, Any]) -> None:
    """Note what this render read and left behind (best effort: it only saves a later render)."""
    try:
        atomic_write_text(_stamp_path(cache_root, out_dir), json.dumps(
            {"inputs": digest, "files": _files(Path(out_dir)), "summary": summary}))
    except OSError:
        pass
