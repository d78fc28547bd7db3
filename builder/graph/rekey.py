"""A freeze's results under new keys, with the evidence that they are still the same results.

A frozen result is found by its key, and the key hashes the code that computed it. Two kinds of
change leave the results standing while the keys move:

- **the fingerprint scheme** (``rekey``): every code digest is computed another way. The new digests
  are computed from the very sources the freeze was built from, read from its commit with git, each
  file checked first against what the freeze recorded of it (its sha256; for a freeze from before
  they were recorded, a listing given with it, or the old digest recomputed on the Python that
  made it);
- **a refactor** (``carry``): code changes and results do not. For each section whose key changed
  in its code alone, the smoke profile is computed at the freeze's commit and at the new one, on
  this machine; a section whose smoke outputs are byte-identical is re-keyed to the new code, any
  other stays stale until the machine its edition is computed on recomputes it.

Both record what they did and why in the freeze's ``freeze.json`` (``rekeys``), and from then on
every record names its commit, and the freeze the sha256 of each file it fingerprinted, so that the
next re-key can be checked the same way. ``provenance`` is what a new freeze records.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .. import BuildError
from ..atomic import atomic_write_text
from ..cache import Entry, Store, diff_components, referenced_objects
from ..fingerprint import FINGERPRINT, LEGACY_FINGERPRINT, ast_dump_digest, hash_value
from ..project import Codebase, Project
from . import freeze
from .engine import in_environment


# -- what a freeze records of its code ---------------------------------------------------------
def provenance(project: Project, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The commit and the sha256 of every source file that the records' keys fingerprint, as they are
    now (a freeze holds only results whose keys match the code as it is). ``commit`` is None outside
    a git checkout; files that differ from the commit are named in ``uncommitted``."""
    code = project.codebase
    modules = sorted({m for record in records for m in code.modules_of(record["components"])})
    files = {m: code.sha256(m) for m in modules}
    commit, dirty = _head(project, code, modules)
    return {"fingerprint": FINGERPRINT, "commit": commit, "uncommitted": dirty, "files": files}


def _head(project: Project, code: Codebase, modules: list[str]) -> tuple[str | None, list[str]]:
    try:
        head = _git(project.root, "rev-parse", "HEAD").strip()
        committed = project.codebase_at(head)
    except (OSError, subprocess.CalledProcessError):
        return None, []
    except BuildError:  # the writers are in another repository: the project's commit does not hold them
        return head, [m for m in modules if m in code.writers]
    dirty = [m for m in modules if committed.path(m) is None or committed.sha256(m) != code.sha256(m)]
    return head, dirty


def _git(where: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(where), *args], check=True, capture_output=True, text=True).stdout


# -- the freeze as records ---------------------------------------------------------------------
def _records(folder: Path) -> dict[str, dict[str, Any]]:
    """The freeze's one record per section (a freeze holds one; anything else is not a freeze)."""
    records = {}
    for path in sorted((folder / "entries").glob("*/*.json")):
        gid = path.parent.name
        if gid in records:
            raise BuildError(f"the freeze at {folder} holds two records for {gid}; a freeze holds one result per "
                             f"section. Freeze it again (python build.py --freeze) before re-keying it.")
        records[gid] = json.loads(path.read_text(encoding="utf-8"))
    if not records:
        raise BuildError(f"there is no freeze at {folder} (no entries/); nothing to re-key.")
    return records


def _write(folder: Path, records: dict[str, dict[str, Any]], about: dict[str, Any],
           new_objects: Callable[[str], Path] | None = None) -> None:
    """Replace the freeze's records and freeze.json, all at once: the new freeze is assembled beside the
    old one (each object a record keeps linked from the old freeze, not copied, or else found by
    ``new_objects(sha)``) and swapped in by two renames, as ``freeze.write`` does."""
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    os.chmod(staging, 0o755)
    try:
        files = total = 0
        for gid, record in sorted(records.items()):
            for sha in sorted(set(referenced_objects(record["outputs"])) - set(record.get("omitted", ()))):
                dest = staging / "objects" / sha[:2] / sha
                if dest.exists():
                    continue
                source = folder / "objects" / sha[:2] / sha
                if not source.is_file() and new_objects is not None:
                    source = new_objects(sha)
                dest.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(str(source), str(dest))
                files, total = files + 1, total + dest.stat().st_size
            path = staging / "entries" / gid / f"{record['key']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        for gid, record in records.items():
            about["sections"][gid]["key"] = record["key"]
        about.update(objects=files, bytes=total)
        atomic_write_text(staging / freeze.FREEZE_FILE, json.dumps(about, indent=1, sort_keys=True) + "\n")
        old = folder.with_name(f".{folder.name}.old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


# -- a new fingerprint scheme ------------------------------------------------------------------
class _Evidence:
    """How each source file read at a commit is checked against the file a frozen result was built from:
    the sha256 the freeze recorded for the record's commit, else a listing given with the freeze, else
    (a freeze from before either) its old digest recomputed on the Python that made it."""

    def __init__(self, about: dict[str, Any], listing: Path | None):
        self.recorded = about.get("sources", {})
        self.listing = _read_listing(listing) if listing is not None else None
        self.listing_name = listing.name if listing is not None else None
        self.scheme = about.get("fingerprint", LEGACY_FINGERPRINT)
        self.checked: dict[str, dict[str, str]] = {}  # commit read -> module -> sha256
        self.ways: set[str] = set()

    def check(self, code: Codebase, module: str, record: dict[str, Any], recorded_digest: str | None) -> None:
        """Check one module's file at ``code``'s commit for ``record``; ``recorded_digest`` None: the caller
        checks the old digest of a group of modules as a whole (a resource's code)."""
        sha, path = code.sha256(module), code.path(module)
        python = record["components"].get("versions", {}).get("python")
        recorded = self.recorded.get(record.get("commit") or "")
        if recorded is not None:
            expected, way = recorded.get(module), "its sha256 equals the one the freeze recorded"
        elif self.listing is not None:
            expected, way = self.listing.get(path), f"its sha256 equals the one listed in {self.listing_name}"
        elif self.scheme == LEGACY_FINGERPRINT and python == _python():
            same = recorded_digest is None or _legacy_module_digest(code, module) == recorded_digest
            expected = sha if same else None
            way = f"it gives the recorded {LEGACY_FINGERPRINT} digest under Python {python}, the Python that froze it"
        else:
            raise BuildError(
                f"the freeze does not record the sha256 of its sources, and its {self.scheme} digests can only be "
                f"recomputed on Python {python} (this is {_python()}), so nothing shows that {path} at the commit "
                f"is the file it was built from. Give a listing of the sources' sha256 with --sources FILE "
                f"(sha256sum's format, paths from the project's root), or re-key it on Python {python}. "
                f"Nothing was changed.")
        if expected != sha:
            raise BuildError(
                f"{path} at {code.science.tree} is not the file the freeze was built from (read {sha[:12]}, "
                f"expected {str(expected)[:12]}: {way} fails); give the commit it was frozen at with --commit. "
                f"Nothing was changed.")
        self.checked.setdefault(code.science.tree.commit, {})[module] = sha
        self.ways.add(way)


def _read_listing(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BuildError(f"cannot read the listing of sources {path}: {exc.strerror or exc}.") from None
    listing = {}
    for line in lines:
        if line.strip():
            sha, name = line.split(maxsplit=1)
            listing[name.lstrip("*").removeprefix("./")] = sha
    return listing


def _python() -> str:
    return ".".join(map(str, sys.version_info[:2]))


def rekey(project: Project, folder: Path, commit: str | None = None, listing: Path | None = None,
          resources: dict[str, Any] | None = None) -> str:
    """Re-key the freeze at ``folder`` under the current fingerprint scheme, each record from the sources of
    the commit it records (or ``commit``, for a freeze that records none or was frozen from files committed
    later); ``listing``: the sources' sha256 for a freeze that records none; ``resources``: the build's
    resources, which name the module of a resource's code where an old freeze recorded only its digest.
    Returns what was done, in a line."""
    folder = Path(folder)
    about = freeze.read(folder)
    if about is None:
        raise BuildError(f"there is no freeze at {folder} (no {freeze.FREEZE_FILE}); nothing to re-key.")
    records = _records(folder)
    evidence = _Evidence(about, listing)
    trees: dict[str, Codebase] = {}
    changed, identities = {}, {}  # identities: a resource identity as recorded -> re-keyed
    for gid, record in records.items():
        wanted = commit or record.get("commit") or about.get("commit")
        if not wanted:
            raise BuildError(f"the freeze at {folder} does not record the commit {gid} was built from; give it with "
                             f"--commit (the commit whose code computed it). Nothing was changed.")
        code = trees.get(wanted) or trees.setdefault(wanted, _codebase_at(project, wanted))
        comp = record["components"]
        new_code = {}
        for module, digest in comp["code"].items():
            evidence.check(code, module, record, digest)
            new_code[module] = (code.engine if module in code.writers else code.science).module_hash(module)
        new_resources = {name: _rekeyed_identity(name, identity, code, evidence, record, resources or {})
                         for name, identity in comp.get("resources", {}).items()}
        for name, identity in comp.get("resources", {}).items():
            identities[hash_value(identity)] = new_resources[name]
        new_comp = {**comp, "code": new_code, "resources": new_resources}
        key = hash_value(new_comp)
        read = code.science.tree.commit
        changed[gid] = {"from": record["key"], "to": key, "commit": read}
        records[gid] = {**record, "components": new_comp, "key": key, "fingerprint": FINGERPRINT, "commit": read}
    files = sum(len(m) for m in evidence.checked.values())
    about["sources"] = {**about.get("sources", {}), **{c: dict(sorted(m.items())) for c, m in evidence.checked.items()}}
    about["rekeys"] = [*about.get("rekeys", []), {
        "date": _today(), "what": f"code digests recomputed from {evidence.scheme} to {FINGERPRINT}",
        "files_checked": files, "evidence": "each source file, read with git at the commit named: "
        + "; or ".join(sorted(evidence.ways)), "sections": changed}]
    commits = sorted({c["commit"] for c in changed.values()})
    about.update(fingerprint=FINGERPRINT, commit=commits[0] if len(commits) == 1 else about.get("commit"))
    if "resources" in about:  # the freeze's summary names the resources as its records do
        about["resources"] = {name: identities.get(hash_value(identity), identity)
                              for name, identity in about["resources"].items()}
    about.pop("uncommitted", None)
    _write(folder, records, about)
    return (f"re-keyed {len(records)} sections of {folder} from {evidence.scheme} to {FINGERPRINT}, from the sources "
            f"of {', '.join(c[:12] for c in commits)} ({files} files checked)")


def _codebase_at(project: Project, commit: str) -> Codebase:
    try:
        return project.codebase_at(commit)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"cannot read the sources of commit {commit!r} with git ({_stderr(exc)}); give a commit of "
                         f"the repository that holds {project.root}. Nothing was changed.") from None


def _rekeyed_identity(name: str, identity: Any, code: Codebase, evidence: _Evidence, record: dict[str, Any],
                      resources: dict[str, Any]) -> Any:
    """A resource identity with its model code re-digested: the module comes from the identity, or for an
    old one that recorded only a digest, from the build's resource of the same name."""
    if not isinstance(identity, dict) or "code" not in identity:
        return identity
    old = identity["code"]
    if isinstance(old, dict):
        module = old["module"]
    else:
        current = getattr(resources.get(name), "identity", {})
        if current.get("name") != identity.get("name") or not isinstance(current.get("code"), dict):
            raise BuildError(f"the {name} resource of the freeze ({identity.get('name')}) records its code only as a "
                             f"digest; re-key it with the same --backend it was built with. Nothing was changed.")
        module = current["code"]["module"]
    modules = code.science.fingerprint(module)
    for m in modules:
        evidence.check(code, m, record, None)
    legacy_only = record.get("commit") not in evidence.recorded and evidence.listing is None
    if isinstance(old, str) and legacy_only and hash_value({m: _legacy_module_digest(code, m) for m in modules}) != old:
        raise BuildError(f"the {name} resource's code at {code.science.tree} does not give the digest the freeze "
                         f"recorded; give the commit it was frozen at with --commit. Nothing was changed.")
    return {**identity, "code": code.resource_code(module)}


def _legacy_module_digest(code: Codebase, module: str) -> str:
    index = code.engine if module in code.writers else code.science
    return ast_dump_digest(index.tree.read(code.path(module)).decode("utf-8"))


def _stderr(exc: Exception) -> str:
    text = getattr(exc, "stderr", None) or str(exc)
    return text.strip().splitlines()[-1] if text.strip() else type(exc).__name__


# -- a refactor that leaves the results as they were -------------------------------------------
OutputsAt = Callable[[str | None, list[str]], dict[str, str]]


def carry(engine, folder: Path, outputs_at: OutputsAt, check_profile: str = "smoke") -> str:
    """Re-key the frozen sections whose keys changed in their code alone, where ``outputs_at`` shows their
    outputs unchanged: ``outputs_at(commit, sections)`` gives each section's output digest in the check
    profile computed with the code of ``commit`` (None: the code as it is now). ``engine`` is configured
    for the freeze's profile. Returns what was carried and what stays stale, in a few lines."""
    folder = Path(folder)
    about = freeze.read(folder)
    if about is None:
        raise BuildError(f"there is no freeze at {folder} (no {freeze.FREEZE_FILE}); nothing to carry.")
    records = _records(folder)
    entries = {gid: Entry(record["key"], record, folder) for gid, record in records.items()}
    candidates, stuck, valid = {}, {}, []
    for gid in engine.order():
        if gid not in records:
            stuck[gid] = "the freeze has no result for it"
            continue
        upstream = {dep: entries.get(dep) for dep in engine.depends(gid)}
        now = in_environment(engine.key_components(gid, upstream), entries[gid])
        old = records[gid]["components"]
        if hash_value(now) == records[gid]["key"]:
            valid.append(gid)
        elif _without_code(now) == _without_code(old):
            candidates[gid] = (now, diff_components(old, now))
        else:
            stuck[gid] = "changed beyond its code: " + "; ".join(
                line for line in diff_components(_without_code(old), _without_code(now)))
    if candidates:
        carried = _check_and_carry(engine.project, folder, about, records, candidates, stuck, outputs_at, check_profile)
    else:
        carried = {}
    lines = [f"carried {len(carried)} of {len(records)} sections of {folder} to the current code"
             + (f" ({', '.join(sorted(carried))})" if carried else "") + f"; {len(valid)} were valid already"]
    lines += [f"  still stale: {gid}: {why}" for gid, why in sorted(stuck.items())]
    return "\n".join(lines)


def _check_and_carry(project: Project, folder: Path, about: dict[str, Any], records: dict[str, dict[str, Any]],
                     candidates: dict[str, tuple[dict[str, Any], list[str]]], stuck: dict[str, str],
                     outputs_at: OutputsAt, check_profile: str) -> dict[str, str]:
    code = project.codebase
    modules = sorted({m for now, _ in candidates.values() for m in code.modules_of(now)})
    head, dirty = _head(project, code, modules)
    if head is None or dirty:
        raise BuildError(f"carrying a freeze records the commit of the code it is carried to, and "
                         f"{', '.join(dirty) or 'the project'} {'are' if len(dirty) > 1 else 'is'} not committed; "
                         f"commit the change, then carry the freeze. Nothing was changed.")
    by_commit: dict[str, list[str]] = {}
    for gid in candidates:
        commit = records[gid].get("commit")
        if not commit:
            raise BuildError(f"the frozen result of {gid} does not record its commit, so its code cannot be run "
                             f"again; re-key the freeze first (python build.py freeze rekey --commit C).")
        by_commit.setdefault(commit, []).append(gid)
    new = outputs_at(None, sorted(candidates))
    carried: dict[str, str] = {}
    for commit, gids in sorted(by_commit.items()):
        old = outputs_at(commit, sorted(gids))
        for gid in sorted(gids):
            if old.get(gid) is not None and old.get(gid) == new.get(gid):
                carried[gid] = commit
            else:
                stuck[gid] = (f"its {check_profile} outputs differ between {commit[:12]} and {head[:12]}, so the change "
                              f"may change its results: recompute it where its edition is computed")
    if not carried:
        return carried
    sections = {}
    for gid, commit in carried.items():
        now, changes = candidates[gid]
        key = hash_value(now)
        sections[gid] = {"from": [commit, records[gid]["key"]], "to": [head, key],
                         f"{check_profile}_output_digest": new[gid], "changed": changes}
        records[gid] = {**records[gid], "components": now, "key": key, "fingerprint": FINGERPRINT, "commit": head}
    files = {m: code.sha256(m) for gid in carried for m in code.modules_of(records[gid]["components"])}
    about["sources"] = {**about.get("sources", {}), head: {**about.get("sources", {}).get(head, {}), **files}}
    about["rekeys"] = [*about.get("rekeys", []), {
        "date": _today(), "what": f"carried to the code of {head[:12]}, whose changes leave these results as they were",
        "commit": head, "machine": f"{freeze._cpu_name()}, Python {platform.python_version()}",
        "evidence": (f"each carried section's {check_profile} profile outputs, computed on this machine with the code "
                     f"of its frozen commit and of {head[:12]}, are byte-identical (equal output digests); code that "
                     f"only another device runs is not exercised by this check"),
        "sections": sections, "not_carried": dict(sorted(stuck.items()))}]
    _write(folder, records, about)
    return carried


def _without_code(components: dict[str, Any]) -> dict[str, Any]:
    """Key components without what says which code computed them."""
    resources = {name: ({k: v for k, v in identity.items() if k != "code"} if isinstance(identity, dict) else identity)
                 for name, identity in components.get("resources", {}).items()}
    return {**{k: v for k, v in components.items() if k != "code"}, "resources": resources}


def build_outputs(root: Path, commit: str | None, sections: list[str], profile: str, args: list[str]) -> dict[str, str]:
    """Each section's output digest from a cold ``build.py --profile PROFILE --only SECTIONS`` of the project
    at ``root``, with the code of ``commit`` (exported with ``git archive``) or as it is (None)."""
    with tempfile.TemporaryDirectory(prefix="carry-") as tmp:
        tmp = Path(tmp)
        source = Path(root)
        if commit is not None:
            source = tmp / "source"
            source.mkdir()
            archive = subprocess.run(["git", "-C", str(root), "archive", commit], check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        (tmp / "no-freeze").mkdir()
        command = [sys.executable, str(source / "build.py"), "--profile", profile, "--only", *sections,
                   "--cache-dir", str(tmp / "cache"), "--site-dir", str(tmp / "site"),
                   "--frozen-dir", str(tmp / "no-freeze"), "--no-progress", *args]
        env = {**os.environ, "MNIST_ROOT": os.environ.get("MNIST_ROOT", str(Path(root) / "data"))}
        done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"the {profile} build at {commit or 'the current code'} failed, so nothing can be carried "
                             f"(nothing was changed): {(done.stderr or done.stdout).strip()[-1500:]}")
        store = Store(tmp / "cache")
        return {gid: record["output_digest"] for gid in sections for record in store.entries_of(gid)}


# -- the sections that compute nothing ---------------------------------------------------------
def lay_out(engine, folder: Path) -> str:
    """Lay the freeze's portable sections (``Section.portable``: they compute nothing on a device and lay
    out committed files, such as the benchmark tables) out anew on this machine, from the current code and
    files, and write their results into the freeze; every computed result stays as it was. ``engine`` is
    configured for the freeze's profile with the freeze as its layer. Returns what was done, in a line or two."""
    folder = Path(folder)
    about = freeze.read(folder)
    if about is None:
        raise BuildError(f"there is no freeze at {folder} (no {freeze.FREEZE_FILE}); nothing to lay out.")
    records = _records(folder)
    portable = [gid for gid in engine.order() if engine.sections[gid].section.portable]
    if not portable:
        raise BuildError("no section of the project is portable (Section(portable=True)), so there is nothing "
                         "a freeze can take from this machine. Nothing was changed.")
    result = engine.build(portable)
    by_id = {r.id: r for r in result.results}
    code = engine.project.codebase
    head, dirty = _head(engine.project, code, sorted({m for gid in portable if by_id[gid].entry is not None
                                                      for m in code.modules_of(by_id[gid].entry.record["components"])}))
    if head is None or dirty:
        raise BuildError(f"a freeze records the commit of the code that laid its results out, and "
                         f"{', '.join(dirty) or 'the project'} {'are' if len(dirty) > 1 else 'is'} not committed; "
                         f"commit the change, then lay the freeze out. Nothing was changed.")
    laid, current = {}, []
    for gid in portable:
        res = by_id[gid]
        if res.status in ("failed", "skipped", "stale") or res.stale_upstream:
            why = res.error or ("its upstream is stale: " + ", ".join(res.stale_upstream) if res.stale_upstream
                                else f"its result is {res.status}")
            raise BuildError(f"{gid} could not be laid out here ({why}). Nothing was changed.")
        old = records.get(gid)
        if old is not None and old["key"] == res.entry.key:
            current.append(gid)
            continue
        record = {**res.entry.record, "fingerprint": FINGERPRINT, "commit": head}
        record["omitted"] = freeze.omitted(record, engine.store.object_path)
        laid[gid] = {"from": [old.get("commit"), old["key"]] if old else None, "to": [head, res.entry.key],
                     "output_digest": record.get("output_digest"), "changed": diff_components(
                         old["components"], record["components"]) if old else ["new in this freeze"]}
        records[gid] = record
        about["sections"][gid] = {"key": res.entry.key, "wall_seconds": record.get("wall_seconds"),
                                  "machine": record["machine"]}
    if not laid:
        return f"the portable sections of {folder} were current already ({', '.join(current)}); nothing was changed"
    files = {m: code.sha256(m) for gid in laid for m in code.modules_of(records[gid]["components"])}
    about["sources"] = {**about.get("sources", {}), head: {**about.get("sources", {}).get(head, {}), **files}}
    about["rekeys"] = [*about.get("rekeys", []), {
        "date": _today(), "what": f"portable sections laid out anew with the code and files of {head[:12]}",
        "commit": head, "machine": f"{freeze._cpu_name()}, Python {platform.python_version()}",
        "evidence": ("a portable section computes nothing on a device: it lays out committed files (its inputs, "
                     "whose checksums join its key), so this machine computed it, and its record names this "
                     "machine; every other section of the freeze is as it was computed"),
        "sections": laid}]
    _write(folder, records, about, engine.store.object_path)
    return f"laid out {len(laid)} portable section(s) of {folder} on this machine: {', '.join(sorted(laid))}"
