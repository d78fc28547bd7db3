"""Digests of files, recomputed only when a file's size, modification time or inode changes.

This is what git's index does for ``git status``: a rebuild with nothing changed must not re-read
80 MB of frozen figures and re-tokenize every module to find that out. An entry is trusted only
while the file's ``stat`` is the one it was computed from, and never for a file modified within
``RACY_SECONDS`` of the moment it was hashed (git's "racily clean" rule: a write in the same clock
tick as the hash would keep its size and time). The values are the content hashes the cache uses
everywhere (``sha256``, code digests), so a hit says exactly what re-hashing would.

One cache per process (``use``), kept in the build's cache folder and written back when it changed
(``save``); without one, every digest is computed afresh, as before.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

FILE = "stat-cache.json"
RACY_SECONDS = 2.0
FORMAT = 1

_current: "StatCache | None" = None


class StatCache:
    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list] = {}  # file -> [size, mtime_ns, inode, hashed_at, {kind: value}]
        self.memo: dict[str, Any] = {}  # values keyed by the digests they were computed from
        self.dirty = False
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("format") == FORMAT:
                    self.entries, self.memo = data.get("files", {}), data.get("memo", {})
            except (OSError, ValueError):
                pass

    def digest(self, path: Path, kind: str, compute: Callable[[bytes], Any]) -> Any:
        """``compute(the file's bytes)``, or the value remembered for this file, kind and stat."""
        name = str(path)
        st = os.stat(name)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(name)
        if entry is not None and entry[:3] == stamp and kind in entry[4] \
                and st.st_mtime_ns < entry[3] - RACY_SECONDS * 1e9:
            return entry[4][kind]
        with open(name, "rb") as f:
            value = compute(f.read())
        if entry is None or entry[:3] != stamp:
            entry = self.entries[name] = [*stamp, time.time_ns(), {}]
        else:
            entry[3] = time.time_ns()  # hashed again now: trusted once the file is older than RACY_SECONDS
        entry[4][kind] = value
        self.dirty = True
        return value

    def remembered(self, key: str) -> Any:
        return self.memo.get(key)

    def remember(self, key: str, value: Any) -> None:
        if self.memo.get(key) != value:
            self.memo[key] = value
            self.dirty = True

    def save(self) -> None:
        """Write the cache back if it changed: atomically, and never failing a build (it is only a cache)."""
        if self.path is None or not self.dirty:
            return
        from .atomic import atomic_write_text

        alive = {name: e for name, e in self.entries.items() if os.path.exists(name)}
        try:
            atomic_write_text(self.path, json.dumps({"format": FORMAT, "files": alive, "memo": self.memo},
                                                    separators=(",", ":")))
            self.dirty = False
        except OSError:
            pass


def use(folder: Path | None) -> StatCache:
    """Make the cache kept in ``folder`` (None: one kept nowhere) the one this process uses."""
    global _current
    path = Path(folder) / FILE if folder is not None else None
    if _current is None or _current.path != path:
        _current = StatCache(path)
    return _current


def current() -> StatCache | None:
    return _current


def digest(path: Path, kind: str, compute: Callable[[bytes], Any]) -> Any:
    """A file's digest through the process's cache, or computed now where there is none."""
    if _current is None:
        return compute(Path(path).read_bytes())
    return _current.digest(path, kind, compute)


def save() -> None:
    """Write the process's cache back, if it has one that changed."""
    if _current is not None:
        _current.save()
