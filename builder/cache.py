"""A content-addressed store of section outputs with verified reads and atomic writes.

Layout under the cache root (git-ignored):
  objects/ab/abcdef...     every output file, named by the sha256 of its bytes
  entries/<section>/<key>.json   the record of one run: key components and outputs
  last/<section>.json      the key components of the section's most recent lookup, for --explain
  scratch/<section>/<key>/ resumable state of an unfinished run (e.g. training checkpoints)
  tmp/                     files being written; anything here when a build starts is garbage from
                           a killed build, and is swept (with stray temporary files) under the lock
  lock                     held (flock) by the build using this cache; holds that process's id

Below the local cache a store can have read-only layers with the same ``objects/`` and
``entries/`` layout: the committed freeze (``frozen/<edition>/``, see ``builder.graph.freeze``). A
lookup tries the local cache first and then each layer; an object is read from wherever it is,
and written only to the local cache.

A record is written only after all its objects are in place, and it is trusted only while
every object it names exists with the recorded hash, so an interrupted or corrupted entry is
simply a miss.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import BuildError
from .atomic import UMASK, atomic_write_text
from .fingerprint import canonical_json, hash_value, sha256_known


@dataclass
class Entry:
    """A verified cache record, and the layer it came from (``None``: the local cache)."""

    key: str
    record: dict[str, Any]
    layer: Path | None = None
    fetched: bool = False  # copied into the local cache from a shared cache by this build
    shared: str | None = None  # only looked at in the shared cache at this (shown) URL: its files are not here

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.record["outputs"]

    @property
    def digest(self) -> str:
        """Hash of what the section produced: downstream keys use it (early cut-off)."""
        return self.record["output_digest"]


def output_digest(outputs: list[dict[str, Any]]) -> str:
    return hash_value(outputs)


class Store:
    def __init__(self, root: Path, layers: Sequence[Path] = ()):
        self.root = Path(root)
        self.layers = [Path(layer) for layer in layers]  # read-only, looked up after the local cache
        self._layer_entries: dict[str, list[Entry]] = {}  # section -> its verified layer records
        self._lock_depth = 0

    def with_layers(self, layers: Sequence[Path]) -> "Store":
        """The same local cache over other read-only layers (another edition's freeze), sharing this
        store's lock: made while the lock is held, it holds it too."""
        other = Store(self.root, layers)
        other._lock_depth = self._lock_depth
        return other

    # -- objects -------------------------------------------------------------------------
    def local_object_path(self, sha: str, root: Path | None = None) -> Path:
        """Where an object is (or would be) stored in the local cache, or in the layer ``root``."""
        return (root or self.root) / "objects" / sha[:2] / sha

    def object_path(self, sha: str) -> Path:
        """Where to read an object: the local cache, else the first layer that holds it."""
        local = self.local_object_path(sha)
        if local.is_file():
            return local
        for layer in self.layers:
            path = self.local_object_path(sha, layer)
            if path.is_file():
                return path
        return local

    def adopt_object(self, path: Path, sha: str) -> None:
        """Move a staged file whose sha256 is ``sha`` into the local cache (replacing one that may have
        failed verification)."""
        target = self.local_object_path(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)

    def verify_object(self, sha: str, root: Path | None = None) -> bool:
        path = self.local_object_path(sha, root)
        return path.is_file() and sha256_known(path) == sha

    # -- records -------------------------------------------------------------------------
    def _entry_path(self, section: str, key: str, root: Path | None = None) -> Path:
        return (root or self.root) / "entries" / section / f"{key}.json"

    def lookup(self, section: str, key: str) -> Entry | None:
        """The record for ``key`` if it exists, in the local cache or else a layer, with every object
        it names intact in that same place (a layer's record never leans on the local cache's files)."""
        return self.lookup_local(section, key) or self.lookup_layers(section, key)

    def lookup_local(self, section: str, key: str) -> Entry | None:
        return self._lookup_in(section, key, None)

    def lookup_layers(self, section: str, key: str) -> Entry | None:
        return next((e for e in self.layer_entries(section) if e.key == key), None)

    def _lookup_in(self, section: str, key: str, root: Path | None) -> Entry | None:
        path = self._entry_path(section, key, root)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if record.get("key") != key:
            return None
        # A freeze may leave out large models (see builder.graph.freeze); it says which, and a section that
        # needs one of them cannot run on top of it (see Engine).
        omitted = set(record.get("omitted", ())) if root is not None else set()
        for sha in referenced_objects(record["outputs"]):
            if sha not in omitted and not self.verify_object(sha, root):
                return None
        return Entry(key, record, root)

    def layer_entries(self, section: str) -> list[Entry]:
        """Every record the read-only layers hold for ``section``, whatever its key, verified: the
        candidates for a lookup, also under the environment they were made in, and for a stale result.
        The layers do not change during a build, so each record's files are hashed once."""
        if section not in self._layer_entries:
            entries = []
            for layer in self.layers:
                folder = layer / "entries" / section
                for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                    entry = self._lookup_in(section, path.stem, layer)
                    if entry is not None:
                        entries.append(entry)
            self._layer_entries[section] = entries
        return self._layer_entries[section]

    def commit(self, section: str, key: str, record: dict[str, Any]) -> Entry:
        """Write the record last: the entry exists only once all its objects do."""
        record = {**record, "key": key, "output_digest": output_digest(record["outputs"])}
        atomic_write_text(self._entry_path(section, key), json.dumps(record, indent=1, sort_keys=True))
        return Entry(key, record)

    # -- explain -------------------------------------------------------------------------
    def remember_components(self, section: str, components: dict[str, Any]) -> None:
        """Keep the key components for --explain; best effort, since nothing else reads them: a full
        disk must fail the section that writes results, not a cache hit."""
        try:
            atomic_write_text(self.root / "last" / f"{section}.json", canonical_json(components))
        except OSError:
            pass

    def last_components(self, section: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / "last" / f"{section}.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def entries_of(self, section: str) -> list[dict[str, Any]]:
        folder = self.root / "entries" / section
        records = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError:
                continue
        return records

    # -- scratch and staging ---------------------------------------------------------------
    def scratch_dir(self, section: str, key: str) -> Path:
        path = self.root / "scratch" / section / key[:16]
        path.mkdir(parents=True, exist_ok=True)
        return path

    def drop_scratch(self, section: str) -> None:
        shutil.rmtree(self.root / "scratch" / section, ignore_errors=True)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A private folder for a run's outputs; removed whatever happens."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=self.root / "tmp"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def clean(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- one build at a time -----------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the cache exclusively for one build, first sweeping away what dead builds left.

        A second build on the same cache fails at once with a BuildError rather than waiting: a
        build can run for many minutes, and a command that silently waits looks hung. The lock is
        an flock, which the kernel drops when its holder exits in any way (SIGKILL included), so a
        lock is never stale and needs no manual removal. Re-entrant within one Store, so the
        engine and the app around it can both hold it.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise BuildError(
                    f"another build (process {holder}) is using the cache at {self.root}, and two builds "
                    f"must not share one cache. Wait for it to finish and run the command again, or pass "
                    f"a different --cache-dir; the lock goes away by itself when that process ends, so "
                    f"there is nothing to delete by hand.") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.sweep()
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
        finally:
            os.close(fd)  # releases the flock

    def sweep(self) -> int:
        """Delete the leftovers of builds that died (staging folders, temporary files); returns how many.

        Only safe while holding ``lock``: then no other build can be writing them.
        """
        garbage: list[Path] = []
        tmp = self.root / "tmp"
        if tmp.is_dir():
            garbage += tmp.iterdir()
        # Temporary files, by the convention atomic_write_bytes sets and sections follow: ".<name>.<...>.tmp".
        garbage += (p for p in self.root.rglob(".*.tmp") if p.is_file())
        for path in garbage:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return len(garbage)


def referenced_objects(outputs: list[dict[str, Any]]) -> list[str]:
    shas: list[str] = []
    for out in outputs:
        shas.extend(f["sha"] for f in out.get("files", []))
    return shas


def diff_components(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two key-component dicts, most specific first."""
    if old is None:
        return ["no earlier build of this section is recorded"]
    lines: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                sub = f"{path}.{k}" if path else k
                if k not in a:
                    lines.append(f"{sub}: added ({_short(b[k])})")
                elif k not in b:
                    lines.append(f"{sub}: removed (was {_short(a[k])})")
                else:
                    walk(a[k], b[k], sub)
        elif a != b:
            lines.append(f"{path}: {_short(a)} -> {_short(b)}")

    walk(old, new, "")
    return lines


def _short(value: Any) -> str:
    text = canonical_json(value)
    return text if len(text) <= 70 else text[:67] + "..."
