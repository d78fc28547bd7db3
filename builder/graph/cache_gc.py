"""Keeping a local cache in bounds: which builds used what, garbage collection, and verification.

Every build leaves a small record in ``builds/`` of the cache: the checkout it ran in, its profile,
when, and the key of each section result it reached in this cache. ``collect`` (``build.py cache gc``)
keeps everything that the newest builds of each checkout and profile reached, so that a cache shared
by two checkouts never loses what the other one's recent builds use, then, within an optional size
budget, the most recently used of the rest; it deletes the other records and every object no remaining
record names. ``verify`` (``build.py cache verify``) re-hashes every object. Both hold the cache's lock,
so they never run beside a build.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..cache import Store, referenced_objects
from ..fingerprint import sha256_file

BUILDS = "builds"


def build_record(checkout: str, profile: str, reached: dict[str, str], now: float | None = None) -> tuple[str, str]:
    """A build record's file name (in ``builds/``) and text, for the local cache and a shared one alike."""
    now = time.time() if now is None else now
    record = {"checkout": checkout, "profile": profile, "time": now, "reached": dict(sorted(reached.items()))}
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{uuid.uuid4().hex[:12]}.json"
    return name, json.dumps(record, indent=1, sort_keys=True)


def record_build(store: Store, checkout: Path, profile: str, reached: dict[str, str], now: float | None = None) -> None:
    """Note which local results a build reached (best effort: a full disk must not fail a finished build)."""
    name, text = build_record(str(Path(checkout).resolve()), profile, reached, now)
    try:
        atomic_write_text(store.root / BUILDS / name, text)
    except OSError:
        pass


@dataclass
class Collected:
    """What ``collect`` kept and deleted (or, in a dry run, would delete)."""

    kept_entries: int = 0
    deleted_entries: list[str] = field(default_factory=list)  # "section/key"
    deleted_objects: int = 0
    freed_bytes: int = 0
    kept_bytes: int = 0
    deleted_records: int = 0

    def summary(self, dry_run: bool, url: str | None = None) -> str:
        verb = "would delete" if dry_run else "deleted"
        return (f"cache gc{f' ({url})' if url else ''}: kept {self.kept_entries} results ({self.kept_bytes / 1e6:.1f} MB); {verb} "
                f"{len(self.deleted_entries)} results and {self.deleted_objects} files, "
                f"{self.freed_bytes / 1e6:.1f} MB, and {self.deleted_records} old build records")


@dataclass
class Choice:
    """Which results a collection keeps: those recent builds reached, then the most recently used others
    within a size budget."""

    kept: dict[tuple[str, str], dict] = field(default_factory=dict)  # (section, key) -> record
    deleted: list[tuple[str, str]] = field(default_factory=list)
    kept_objects: set[str] = field(default_factory=set)
    old_records: list[Any] = field(default_factory=list)  # build records past the newest keep_builds


def choose(records: list[tuple[Any, dict]], entries: dict[tuple[str, str], dict], size_of, modified_of,
           keep_builds: int, keep_bytes: int | None) -> Choice:
    """The selection that ``collect`` and ``collect_shared`` share: ``records`` are (id, build record) pairs,
    ``entries`` the result records by (section, key); ``size_of(sha)`` and ``modified_of((section, key))``
    read sizes and times from wherever the cache is."""
    if keep_builds < 1:
        raise ValueError("keep_builds must be at least 1: the newest build of each checkout is always kept")
    groups: dict[tuple[str, str], list[tuple[Any, dict]]] = {}
    for ident, record in records:
        groups.setdefault((record["checkout"], record["profile"]), []).append((ident, record))
    protected: set[tuple[str, str]] = set()
    choice = Choice()
    last_used: dict[tuple[str, str], float] = {}
    for members in groups.values():
        members.sort(key=lambda item: item[1]["time"], reverse=True)
        for rank, (ident, record) in enumerate(members):
            for section, key in record["reached"].items():
                if rank < keep_builds:
                    protected.add((section, key))
                last_used[section, key] = max(last_used.get((section, key), 0.0), record["time"])
            if rank >= keep_builds:
                choice.old_records.append(ident)
    choice.kept = {k: rec for k, rec in entries.items() if k in protected}
    choice.kept_objects = {sha for rec in choice.kept.values() for sha in referenced_objects(rec["outputs"])}
    budget = keep_bytes or 0
    others = sorted((k for k in entries if k not in choice.kept),
                    key=lambda k: max(last_used.get(k, 0.0), modified_of(k)), reverse=True)
    for section, key in others:
        record = entries[section, key]
        new = {sha for sha in referenced_objects(record["outputs"]) if sha not in choice.kept_objects}
        cost = sum(size_of(sha) for sha in new)
        if cost <= budget:
            budget -= cost
            choice.kept[section, key] = record
            choice.kept_objects |= new
        else:
            choice.deleted.append((section, key))
    return choice


def collect(store: Store, keep_builds: int = 3, keep_bytes: int | None = None, dry_run: bool = False) -> Collected:
    """Delete what no recent build reached: see the module's docstring. ``keep_bytes`` (default: none)
    is how much of the older results to keep, most recently used first."""
    sizes: dict[str, int] = {}

    def object_size(sha: str) -> int:
        if sha not in sizes:
            path = store.local_object_path(sha)
            sizes[sha] = path.stat().st_size if path.is_file() else 0
        return sizes[sha]

    choice = choose(_records(store), _entries(store), object_size, lambda k: _mtime(store, *k), keep_builds, keep_bytes)
    report = Collected(deleted_entries=[f"{section}/{key}" for section, key in choice.deleted])
    report.kept_entries = len(choice.kept)
    report.kept_bytes = sum(object_size(sha) for sha in choice.kept_objects)
    objects_dir = store.root / "objects"
    garbage = [p for p in objects_dir.glob("*/*") if p.is_file() and p.name not in choice.kept_objects] \
        if objects_dir.is_dir() else []
    report.deleted_objects = len(garbage)
    report.freed_bytes = sum(p.stat().st_size for p in garbage)
    report.deleted_records = len(choice.old_records)
    if dry_run:
        return report
    for section, key in choice.deleted:  # the records first: a result without its files is never visible
        (store.root / "entries" / section / f"{key}.json").unlink(missing_ok=True)
    for path in garbage + choice.old_records:
        path.unlink(missing_ok=True)
    return report


@dataclass
class Verified:
    objects: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)  # objects whose bytes no longer hash to their name
    removed: bool = False

    def summary(self, url: str | None = None) -> str:
        """What was found; ``url``: the shared cache it was found in (None: the local one)."""
        where = f" ({url})" if url else ""
        if not self.corrupt:
            return f"cache verify{where}: all {self.objects} files ({self.bytes / 1e6:.1f} MB) match their hashes"
        shown = ", ".join(sha[:16] for sha in self.corrupt[:5]) + (" ..." if len(self.corrupt) > 5 else "")
        repair = "build.py cache verify --repair" + (f" --cache-url {url}" if url else "")
        then = ("they were removed, so the results that named them will be computed again by the next build"
                if self.removed else f"run `{repair}` to remove them (the results that name "
                                     "them are then computed again by the next build)")
        return (f"cache verify{where}: {len(self.corrupt)} of {self.objects} files do not match their hashes ({shown}); "
                f"{then}")


def verify(store: Store, repair: bool = False) -> Verified:
    """Re-hash every object of the local cache; with ``repair``, remove the ones that changed."""
    report = Verified()
    objects_dir = store.root / "objects"
    for path in sorted(objects_dir.glob("*/*")) if objects_dir.is_dir() else []:
        if not path.is_file():
            continue
        report.objects += 1
        report.bytes += path.stat().st_size
        if sha256_file(path) != path.name:
            report.corrupt.append(path.name)
            if repair:
                path.unlink()
    report.removed = repair and bool(report.corrupt)
    return report


def _records(store: Store) -> list[tuple[Path, dict[str, Any]]]:
    records = []
    folder = store.root / BUILDS
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if {"checkout", "profile", "time", "reached"} <= set(record):
                records.append((path, record))
        except (OSError, json.JSONDecodeError):
            continue  # a damaged record protects nothing; gc leaves the file for a person to look at
    return records


def _entries(store: Store) -> dict[tuple[str, str], dict[str, Any]]:
    entries = {}
    folder = store.root / "entries"
    for path in sorted(folder.glob("*/*.json")) if folder.is_dir() else []:
        try:
            entries[path.parent.name, path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            entries[path.parent.name, path.stem] = {"outputs": []}  # unreadable: a miss anyway, and deletable
    return entries


def _mtime(store: Store, section: str, key: str) -> float:
    try:
        return (store.root / "entries" / section / f"{key}.json").stat().st_mtime
    except OSError:
        return 0.0
