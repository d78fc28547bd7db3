"""A cache shared by machines and checkouts, at any fsspec URL (``file://``, ``s3://``, ``gs://``, ...).

It is one more place a result can come from: the engine looks in the local cache, then the committed
freeze, then here (the freeze before the shared cache, so that every checkout renders the committed
site whatever a colleague's machine computed). A hit is copied into the local cache, which stays the
fast path. Layout under the URL, as Bazel splits a remote cache:

  cas/ab/abcdef...              every output file, named by the sha256 of its bytes
  ac/<section>/<key>.json       the record of one result (the action cache), uploaded last
  builds/<time>-<random>.json   which results each build reached, for ``cache gc --cache-url``
  tmp/                          uploads in progress, moved into place when complete

A record is uploaded only after every file it names, and every download is re-hashed, so a
half-finished or damaged upload is never a hit; two builds that upload the same result at once
write the same bytes under the same names. Credentials come from the backend's own configuration
(``AWS_*`` variables, ``~/.aws``, gcloud's, fsspec's config): a URL is only ever shown with its
password and query replaced by ``***``, and no URL enters a record, the manifest or the site.
A shared cache that cannot be reached never fails a build: the first error is reported once, and
the build goes on with what it has.

``collect_shared`` and ``verify_shared`` are ``builder.graph.cache_gc``'s gc and verify for it: the same choice
of what to keep (what the newest builds of each checkout and profile reached, then the most recently
used), with no lock to take, since machines share the cache while they build. So nothing younger than
a grace period is deleted (it may be an upload whose record is not there yet), and records go before
their files: a build that read a record just before gc deleted it finds a file missing, which is a
miss, and uploads the result again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import BuildError
from ..cache import Entry, Store, output_digest, referenced_objects
from ..fingerprint import sha256_file
from ..graph.cache_gc import BUILDS, Collected, Verified, build_record, choose

ENV = "FUN_DIFFUSION_CACHE_URL"


def redact(url: str) -> str:
    """The URL as it may be shown: a password and every query value replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = re.sub(r"=([^&]*)", "=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class SharedCache:
    def __init__(self, url: str):
        import fsspec

        self.url = redact(url)
        self._secrets = _secrets_of(url)
        self._address = url  # with its secrets: given to fsspec, never shown
        self.failure: str | None = None  # the first error; after it the shared cache is not used again
        self._problem: tuple[str, str] | None = None  # that error as (what was tried, what went wrong)
        self.fetched: list[str] = []  # sections whose results this build copied in
        self.published: list[str] = []  # and uploaded
        self._damaged: set[tuple[str, str]] = set()  # records whose files were missing or altered here
        self._fs, self._root = None, ""
        try:  # an unknown protocol or a backend that is not installed is the user's to fix, at once
            for part in url.split("::"):
                fsspec.get_filesystem_class(fsspec.core.split_protocol(part)[0] or "file")
        except (ImportError, ValueError) as exc:
            raise BuildError(
                f"--cache-url {self.url} cannot be opened: {self._scrub(str(exc))}. Install the fsspec "
                f"backend for its protocol (s3fs for s3://, gcsfs for gs://, adlfs for az://), or check the "
                f"URL's spelling.") from None

    @property
    def fs(self):
        """The file system, connected on first use (some backends connect when made, to a server that may
        be down: that is a failure of the first read or write, reported as such)."""
        if self._fs is None:
            import fsspec

            fs, root = fsspec.core.url_to_fs(self._address)
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs

    @property
    def root(self) -> str:
        self.fs
        return self._root

    def summary(self) -> str:
        return (f"shared cache {self.url}: {len(self.fetched)} results copied in, "
                f"{len(self.published)} uploaded" + (" (then it failed: see the warning)" if self.failure else ""))

    def _ready(self):
        """The file system and root, for commands that cannot go on without them (gc, verify)."""
        if not self.failure:
            try:
                return self.fs, self.root
            except Exception as exc:  # noqa: BLE001
                self._failed("connect to", exc)
        verb, detail = self._problem
        raise BuildError(f"could not {verb} the shared cache at {self.url} ({detail}). Check the URL and the "
                         f"backend's credentials, then run the command again.")

    # -- paths -----------------------------------------------------------------------------
    def _record(self, section: str, key: str) -> str:
        return f"{self.root}/ac/{section}/{key}.json"

    def _object(self, sha: str) -> str:
        return f"{self.root}/cas/{sha[:2]}/{sha}"

    # -- reading -----------------------------------------------------------------------------
    def peek(self, section: str, key: str) -> Entry | None:
        """The shared record for ``key``, read but not copied (its files are not checked): for --explain
        and --list, which must not download."""
        if self.failure:
            return None
        try:
            record = self._read_record(section, key)
        except Exception as exc:  # noqa: BLE001
            self._failed("read from", exc)
            return None
        return Entry(key, record, shared=self.url) if record else None

    def _read_record(self, section: str, key: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self.fs.cat_file(self._record(section, key)))
        except FileNotFoundError:
            return None
        return record if _consistent(record, key) else None

    def fetch(self, section: str, key: str, store: Store) -> Entry | None:
        """The shared result for ``key``, copied into ``store``'s local cache with every file re-hashed;
        None on a miss, on a record or file that does not verify, or once the cache has failed."""
        if self.failure:
            return None
        try:
            record = self._read_record(section, key)
            if record is None:
                return None
            with store.staging() as staging:
                for sha in dict.fromkeys(referenced_objects(record["outputs"])):
                    if store.verify_object(sha):
                        continue
                    downloaded = staging / sha
                    try:
                        self.fs.get_file(self._object(sha), str(downloaded))
                    except FileNotFoundError:
                        self._damaged.add((section, key))
                        return None
                    if sha256_file(downloaded) != sha:
                        self._damaged.add((section, key))  # this build re-uploads the file once it has it
                        return None
                    store.adopt_object(downloaded, sha)
            entry = store.commit(section, key, record)
            self.fetched.append(section)
            return Entry(entry.key, entry.record, fetched=True)
        except Exception as exc:  # noqa: BLE001 - any backend error: report once, build on
            self._failed("read from", exc)
            return None

    # -- writing -----------------------------------------------------------------------------
    def publish(self, section: str, entry: Entry, store: Store) -> bool:
        """Upload a local result unless the shared cache has it: its files, then its record. Returns
        whether anything was uploaded."""
        if self.failure or entry.layer is not None:
            return False
        try:
            damaged = (section, entry.key) in self._damaged
            if not damaged and self.fs.exists(self._record(section, entry.key)):
                return False
            for sha in dict.fromkeys(referenced_objects(entry.outputs)):
                if damaged or not self.fs.exists(self._object(sha)):
                    self._upload(store.object_path(sha), self._object(sha))
            record = json.dumps(entry.record, indent=1, sort_keys=True).encode("utf-8")
            self._upload_bytes(record, self._record(section, entry.key))
            self.published.append(section)
            return True
        except Exception as exc:  # noqa: BLE001
            self._failed("write to", exc)
            return False

    def _upload(self, local: Path, target: str) -> None:
        tmp = self._tmp_name()
        self.fs.put_file(str(local), tmp)
        self._move(tmp, target)

    def _upload_bytes(self, data: bytes, target: str) -> None:
        tmp = self._tmp_name()
        self.fs.pipe_file(tmp, data)
        self._move(tmp, target)

    def _tmp_name(self) -> str:
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)  # a file system needs the folder; a bucket does not
        return f"{self.root}/tmp/{uuid.uuid4().hex}"

    def _move(self, tmp: str, target: str) -> None:
        # A rename on a file system, a server-side copy on an object store: either way the final name
        # appears with all its bytes at once.
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        self.fs.mv(tmp, target)

    def record_build(self, checkout: Path, profile: str, reached: dict[str, str], now: float | None = None) -> None:
        """Note which results a build reached, so that ``collect_shared`` keeps them (best effort)."""
        if self.failure or not reached:
            return
        # The host joins the checkout's path: two machines' /work/main are two checkouts.
        name, text = build_record(f"{socket.gethostname()}:{Path(checkout).resolve()}", profile, reached, now)
        try:
            self._upload_bytes(text.encode(), f"{self.root}/{BUILDS}/{name}")
        except Exception as exc:  # noqa: BLE001
            self._failed("write to", exc)

    # -- errors ------------------------------------------------------------------------------
    def _failed(self, verb: str, exc: Exception) -> None:
        if self.failure is None:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")[:400]
            self._problem = (verb, detail)
            self.failure = (f"could not {verb} the shared cache at {self.url} ({detail}); this build went on "
                            f"without it, so its new results are only in the local cache. Check the URL and the "
                            f"backend's credentials, then build again to fill the shared cache.")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _secrets_of(url: str) -> list[str]:
    parts = urlsplit(url)
    secrets = []
    if parts.password:
        secrets.append(parts.password)
    secrets += [value for _, _, value in (pair.partition("=") for pair in parts.query.split("&")) if value]
    return [s for s in secrets if len(s) >= 3]


def _consistent(record: dict[str, Any], key: str) -> bool:
    """Whether a downloaded record is whole and is the one asked for."""
    try:
        return record.get("key") == key and record.get("output_digest") == output_digest(record["outputs"])
    except (KeyError, TypeError):
        return False


def from_settings(url: str | None) -> SharedCache | None:
    """The shared cache that ``--cache-url`` or the environment names, if any."""
    url = url or os.environ.get(ENV) or None
    return SharedCache(url) if url else None


# -- gc and verify ----------------------------------------------------------------------------------

GRACE_SECONDS = 3600.0


def collect_shared(shared: SharedCache, keep_builds: int = 3, keep_bytes: int | None = None, dry_run: bool = False,
                   grace: float = GRACE_SECONDS, now: float | None = None) -> Collected:
    """``cache gc`` for a shared cache: see the module's docstring."""
    fs, root = shared._ready()
    now = time.time() if now is None else now
    records = []
    for path in sorted(fs.glob(f"{root}/{BUILDS}/*.json")):
        try:
            record = json.loads(fs.cat_file(path))
        except (OSError, ValueError):
            continue  # a damaged record protects nothing; it is left for a person to look at
        if {"checkout", "profile", "time", "reached"} <= set(record):
            records.append((path, record))
    entries, entry_times = {}, {}
    for path, info in fs.find(f"{root}/ac", detail=True).items():
        section, name = path.rsplit("/", 2)[-2:]
        key = name.removesuffix(".json")
        try:
            entries[section, key] = json.loads(fs.cat_file(path))
        except (OSError, ValueError):
            entries[section, key] = {"outputs": []}  # unreadable: a miss anyway, and deletable
        entry_times[section, key] = _modified(info)
    objects = {path.rsplit("/", 1)[-1]: (path, info) for path, info in fs.find(f"{root}/cas", detail=True).items()}
    choice = choose(records, entries, lambda sha: objects[sha][1]["size"] if sha in objects else 0,
                    lambda k: entry_times.get(k, 0.0), keep_builds, keep_bytes)
    young = {k for k, t in entry_times.items() if now - t < grace}
    deleted = [k for k in choice.deleted if k not in young]
    kept_objects = choice.kept_objects | {sha for k in young if k in choice.deleted
                                           for sha in referenced_objects(entries[k]["outputs"])}
    garbage = [(path, info) for sha, (path, info) in objects.items()
               if sha not in kept_objects and now - _modified(info) >= grace]
    leftovers = [path for path, info in fs.find(f"{root}/tmp", detail=True).items() if now - _modified(info) >= grace]
    report = Collected(deleted_entries=[f"{s}/{k}" for s, k in deleted], deleted_objects=len(garbage),
                       freed_bytes=sum(info["size"] for _, info in garbage), deleted_records=len(choice.old_records))
    report.kept_entries = len(entries) - len(deleted)
    report.kept_bytes = sum(info["size"] for sha, (_, info) in objects.items() if sha in kept_objects)
    if dry_run:
        return report
    for section, key in deleted:  # the records first: a result without its files is never a hit
        fs.rm_file(shared._record(section, key))
    for path in [p for p, _ in garbage] + list(choice.old_records) + leftovers:
        fs.rm_file(path)
    return report


def verify_shared(shared: SharedCache, repair: bool = False) -> Verified:
    """Re-hash every file of a shared cache (each is downloaded); with ``repair``, delete the ones that changed."""
    fs, root = shared._ready()
    report = Verified()
    for path, info in sorted(fs.find(f"{root}/cas", detail=True).items()):
        report.objects += 1
        report.bytes += info["size"]
        with fs.open(path, "rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        if actual != path.rsplit("/", 1)[-1]:
            report.corrupt.append(path.rsplit("/", 1)[-1])
            if repair:
                fs.rm_file(path)
    report.removed = repair and bool(report.corrupt)
    return report


def _modified(info: dict[str, Any]) -> float:
    """When a file was last written, from what the backend's listing says (mtime, or an object's LastModified)."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return value.timestamp()
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0
