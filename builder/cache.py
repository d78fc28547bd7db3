"""A content-addressed store of generator outputs with verified reads and atomic writes.

Layout under the cache root (git-ignored):
  objects/ab/abcdef...     every output file, named by the sha256 of its bytes
  entries/<section>/<key>.json   the record of one run: key components and outputs
  last/<section>.json      the key components of the section's most recent lookup, for --explain
  scratch/<section>/<key>/ resumable state of an unfinished run (e.g. training checkpoints)
  tmp/                     files being written; anything here is garbage from an interruption

A record is written only after all its objects are in place, and it is trusted only while
every object it names exists with the recorded hash, so an interrupted or corrupted entry is
simply a miss.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .fingerprint import canonical_json, hash_value, sha256_bytes, sha256_file


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace``: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; published files must be readable
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass
class Entry:
    """A verified cache record."""

    key: str
    record: dict[str, Any]

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
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- objects -------------------------------------------------------------------------
    def object_path(self, sha: str) -> Path:
        return self.root / "objects" / sha[:2] / sha

    def verify_object(self, sha: str) -> bool:
        path = self.object_path(sha)
        return path.is_file() and sha256_file(path) == sha

    # -- records -------------------------------------------------------------------------
    def _entry_path(self, section: str, key: str) -> Path:
        return self.root / "entries" / section / f"{key}.json"

    def lookup(self, section: str, key: str) -> Entry | None:
        """The record for ``key`` if it exists and every object it names is intact."""
        path = self._entry_path(section, key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if record.get("key") != key:
            return None
        for sha in referenced_objects(record["outputs"]):
            if not self.verify_object(sha):
                return None
        return Entry(key, record)

    def commit(self, section: str, key: str, record: dict[str, Any]) -> Entry:
        """Write the record last: the entry exists only once all its objects do."""
        record = {**record, "key": key, "output_digest": output_digest(record["outputs"])}
        atomic_write_text(self._entry_path(section, key), json.dumps(record, indent=1, sort_keys=True))
        return Entry(key, record)

    # -- explain -------------------------------------------------------------------------
    def remember_components(self, section: str, components: dict[str, Any]) -> None:
        atomic_write_text(self.root / "last" / f"{section}.json", canonical_json(components))

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
