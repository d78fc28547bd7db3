"""Runs the sections that need running and assembles the build manifest.

A section's cache key hashes everything that decides its outputs (see ``key_components``);
downstream keys use the *output digest* of their upstream sections, so a re-run that
reproduces the same bytes does not invalidate anything after it (early cut-off).
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import BuildError
from ..cache import Entry, Store, diff_components
from ..context import RECORD_FORMAT, Context, Params, derive_seed
from ..faults import crash_point
from ..fingerprint import hash_value
from ..project import Project
from . import diagnose
from .compute import GpuMemory, cores, default_threads, seed_everything, torch_threads
from .freeze import machine
from .registry import SectionModule, build_order_from_graph


@dataclass(frozen=True)
class Resource:
    """A shared object that sections ask for by name (``Section.uses``), e.g. a pretrained model.

    Its ``identity`` joins the key and the record of every section that uses it; ``depends`` names
    sections it needs built first; ``params(section_id, profile)`` gives values of its own that join
    that section's parameters (so a key holds this resource's values and no other's); ``load(ctx)``
    makes it, once per section and only when the section asks.
    """

    name: str
    identity: dict[str, Any]
    depends: tuple[str, ...] = ()
    load: Callable[[Context], Any] | None = None
    params: Callable[[str, str], dict[str, Any]] | None = None
    memory_hints: tuple[str, ...] = ()  # settings that make it smaller on a GPU, as a user would change them


# Key components that say where a result was computed rather than what decided it. A frozen
# result made elsewhere (a GPU, another torch build) is a hit when its key matches with these taken
# from its own record: that is what lets a CPU machine render results it could not compute.
ENVIRONMENT = ("device", "dtype", "versions")


@dataclass
class BuildConfig:
    profile: str
    device: str
    dtype: str
    seed: int
    cache_root: Path
    resources: dict[str, Resource] = field(default_factory=dict)
    force: frozenset[str] = frozenset()
    frozen: tuple[Path, ...] = ()  # read-only layers of the store: this profile's committed freeze
    strict: bool = False  # a stale frozen result fails its section instead of being shown marked
    shared: Any = None  # a builder.scale.shared_cache.SharedCache: results other machines computed (--cache-url)
    threads: int | None = None  # CPU threads of a section that declares none (None: torch's default here)
    jobs: int = 1  # sections run at once (builder.scale.parallel); 1: one after another, in this process
    executor: str = "local"  # where parallel sections run: "local" worker processes or "ray"
    ray_address: str | None = None  # a Ray cluster to join (None: $RAY_ADDRESS, else a local instance)
    # An edition is computed where its freeze was: a section whose frozen result is stale is recomputed
    # only on the same device kind with the same dtype, and another edition's section that its freeze
    # lacks is never computed here; compute_here (--compute-here) asks for both anyway.
    compute_here: bool = False
    other_edition: bool = False  # this engine renders another edition beside the build's own (app)


@dataclass
class SectionResult:
    id: str
    status: str  # hit, frozen (a hit in a frozen layer), shared (from --cache-url), miss, forced, stale,
    # failed, skipped
    seconds: float
    entry: Entry | None = None
    error: str | None = None
    peak_gpu_bytes: int | None = None  # on CUDA: the most GPU memory the section's tensors held
    traceback: str | None = None  # of a failure, for --debug
    stale: list[str] | None = None  # a stale frozen result: what changed since it was computed
    stale_upstream: tuple[str, ...] = ()  # stale results this one was computed from, directly or not


@dataclass
class BuildResult:
    results: list[SectionResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # problems that did not stop the build
    shared: str | None = None  # what the shared cache gave and took, in a line

    @property
    def ok(self) -> bool:
        return all(r.status in ("hit", "frozen", "shared", "miss", "forced", "stale") for r in self.results)

    @property
    def executed(self) -> list[str]:
        return [r.id for r in self.results if r.status in ("miss", "forced", "failed")]


class Engine:
    def __init__(self, project: Project, config: BuildConfig, sections: dict[str, SectionModule],
                 store: Store | None = None):
        self.project = project
        self.config = config
        self.sections = sections
        self.store = store or Store(config.cache_root, config.frozen)

    # -- keys ------------------------------------------------------------------------------
    def resources(self, gid: str) -> dict[str, Resource]:
        """The configured resources that a section uses (one it names but the build lacks is absent,
        and the section fails only if it asks for it)."""
        return {name: self.config.resources[name] for name in self.sections[gid].section.uses
                if name in self.config.resources}

    def depends(self, gid: str) -> tuple[str, ...]:
        extra = tuple(dep for res in self.resources(gid).values() for dep in res.depends)
        return tuple(dict.fromkeys(self.sections[gid].section.depends + extra))

    def params(self, gid: str) -> dict[str, Any]:
        """The section's parameters for this profile, with those of the resources it uses."""
        section = self.sections[gid].section
        params = section.resolve(self.config.profile)
        for res in self.resources(gid).values():
            own = res.params(gid, self.config.profile) if res.params else {}
            clash = sorted(set(own) & set(params))
            if clash:
                raise BuildError(f"section {gid!r} declares {', '.join(clash)}, which the {res.name} resource "
                                 f"also sets; keep each parameter in one place.")
            params.update(own)
        return params

    def order(self, wanted: list[str] | None = None) -> list[str]:
        graph = {gid: self.depends(gid) for gid in self.sections}
        full = build_order_from_graph(graph)
        if not wanted:
            return full
        unknown = [w for w in wanted if w not in self.sections]
        if unknown:
            raise BuildError(f"unknown section(s) {', '.join(unknown)}; valid sections are: "
                             f"{', '.join(sorted(self.sections))}.")
        needed, stack = set(), list(wanted)
        while stack:
            gid = stack.pop()
            if gid not in needed:
                needed.add(gid)
                stack.extend(graph[gid])
        return [gid for gid in full if gid in needed]

    def section_seed(self, gid: str) -> int:
        return derive_seed(self.config.seed, gid)

    def key_components(self, gid: str, upstream: dict[str, Entry | None]) -> dict[str, Any]:
        mod = self.sections[gid]
        return {
            "code": self.project.code_fingerprint(mod.name),
            "params": self.params(gid),
            "seed": self.section_seed(gid),
            "profile": self.config.profile,
            "device": self.config.device.split(":")[0],
            "dtype": self.config.dtype,
            "resources": {name: res.identity for name, res in sorted(self.resources(gid).items())},
            "inputs": {name: self.project.input_checksum(name) for name in mod.section.inputs},
            "upstream": {dep: (e.digest if e else "not built") for dep, e in sorted(upstream.items())},
            "versions": self.project.versions,
            "record_format": RECORD_FORMAT,
        }

    # -- inspection without running ----------------------------------------------------------
    def peek(self, wanted: list[str] | None = None, fetch: bool = True) -> dict[str, tuple[dict[str, Any], Entry | None]]:
        """Key components and cached entry (or None) of each section, running nothing (``fetch``: copying
        what only the shared cache has into the local one)."""
        out: dict[str, tuple[dict[str, Any], Entry | None]] = {}
        for gid in self.order(wanted):
            upstream = {dep: out[dep][1] for dep in self.depends(gid)}
            components = self.key_components(gid, upstream)
            entry = self.find(gid, components, fetch)
            if entry is None:
                frozen = self._stale_candidate(gid)
                if not self._refreshable(gid, frozen):
                    entry = frozen  # what the build would show, marked
            out[gid] = (components, entry)
        return out

    def find(self, gid: str, components: dict[str, Any], fetch: bool = True) -> Entry | None:
        """The valid result for these key components: in the local cache or a frozen layer, or a frozen
        result computed in another environment (see ``ENVIRONMENT``) with everything else equal, or else
        in the shared cache (copied into the local one; with ``fetch`` False, only looked at)."""
        key = hash_value(components)
        entry = self.store.lookup(gid, key)
        if entry is not None:
            return entry
        for frozen in self.store.layer_entries(gid):
            if hash_value(in_environment(components, frozen)) == frozen.key:
                return frozen
        shared = self.config.shared
        if shared is not None:
            return shared.fetch(gid, key, self.store) if fetch else shared.peek(gid, key)
        return None

    def _stale_candidate(self, gid: str) -> Entry | None:
        """The frozen result of an earlier version of the section, if a layer has one."""
        candidates = self.store.layer_entries(gid)
        return candidates[-1] if candidates else None

    def _refreshable(self, gid: str, frozen: Entry | None) -> bool:
        """Whether a section without a valid result is computed here: only where its frozen result was
        computed (the same device kind and dtype), or when asked (``--force`` it, ``--compute-here``).
        With no frozen result at all, the build's own edition computes it and another edition cannot."""
        if gid in self.config.force or self.config.compute_here or self.sections[gid].section.portable:
            return True
        if frozen is None:
            return not self.config.other_edition
        return _where(frozen.record["components"]) == (self.config.device.split(":")[0], self.config.dtype)

    def stale_changes(self, frozen: Entry, components: dict[str, Any]) -> list[str]:
        """What changed since a frozen result was computed, in --explain's words (its environment aside)."""
        return diff_components(frozen.record["components"], in_environment(components, frozen))

    def refresh_command(self, frozen: Entry) -> str:
        device, dtype = _where(frozen.record["components"])
        where = "a CUDA GPU" if device == "cuda" else f"a {device} machine"
        return f"python build.py --profile {self.config.profile} --dtype {dtype} --freeze (on {where})"

    def unfrozen(self, gid: str) -> SectionResult:
        """Another edition's section that its freeze does not hold, which this build does not compute."""
        here = f"{self.config.device.split(':')[0]} ({self.config.dtype})"
        return SectionResult(gid, "failed", 0.0, error=(
            f"the {self.config.profile} edition's freeze has no result for {gid}, and a build renders another "
            f"edition as it was computed, so it does not compute one of its sections on this {here} machine. "
            f"Compute it where that edition is computed (python build.py --profile {self.config.profile} "
            f"--freeze), or pass --compute-here to compute it here, shown as computed on this machine."))

    def explain(self, gid: str) -> list[str]:
        components, _ = self.peek([gid], fetch=False)[gid]
        key = hash_value(components)
        entry = self.find(gid, components, fetch=False)
        if entry is not None and entry.shared:
            return [f"{gid}: SHARED (key {key[:16]}); the shared cache at {entry.shared} has this result, and a "
                    f"build will copy it into the local cache (checking every file) instead of running it."]
        if entry is not None:
            where = "the cached outputs are" if entry.layer is None else f"the frozen outputs in {entry.layer} are"
            return [f"{gid}: HIT (key {key[:16]}); {where} intact and will be reused."]
        frozen = self._stale_candidate(gid)
        if frozen is not None:
            changes = self.stale_changes(frozen, components)
            verdict = "it will be recomputed here" if self._refreshable(gid, frozen) else \
                f"this machine shows it marked as stale; refresh it with {self.refresh_command(frozen)}, or " \
                f"recompute it on this machine with --compute-here"
            return [f"{gid}: STALE frozen result (key {frozen.key[:16]}); {verdict}. Changed since it was computed:"] \
                + [f"  {line}" for line in changes]
        lines = [f"{gid}: MISS (key {key[:16]}) because:"]
        last = self.store.last_components(gid)
        stored = self.store.entries_of(gid)
        if last is not None and hash_value(last) == key and stored:
            lines.append("  the record for this key exists but a file it names is missing or altered")
        else:
            lines += [f"  {line}" for line in diff_components(last, components)]
        return lines

    # -- running -----------------------------------------------------------------------------
    def build(self, wanted: list[str] | None = None, progress=None,
              on_section: Callable[[SectionResult], None] | None = None) -> BuildResult:
        """The sections ``wanted`` needs (None: all), one at a time in this process, the cache locked
        throughout. Several at once (``--jobs``, ``--executor ray``) is ``builder.scale.parallel.build``, which
        uses ``settle``, ``execute`` and ``publish_result`` as this does."""
        if self.config.jobs > 1 or self.config.executor != "local":
            raise BuildError(f"Engine.build runs one section at a time; this engine is set up for "
                             f"--jobs {self.config.jobs} --executor {self.config.executor}, which "
                             f"builder.scale.parallel.build runs (builder.app.run_sections chooses).")
        with self.store.lock():
            return self._build(wanted, progress, on_section)

    def _build(self, wanted, progress, on_section) -> BuildResult:
        ledger = Ledger(self)
        for gid in self.order(wanted):
            if ledger.blocked(gid):
                res = ledger.skip(gid)
            else:
                upstream = ledger.upstream(gid)
                components, key, res = self.settle(gid, upstream)
                if res is None:
                    res = self.execute(gid, components, key, upstream, progress)
                    self.publish_result(res)
                ledger.finish(res)
            if on_section:
                on_section(res)
        return ledger.result

    def settle(self, gid: str, upstream: dict[str, Entry | None]
                ) -> tuple[dict[str, Any], str, SectionResult | None]:
        """The section's key, and its result where no run is needed: a hit (local, frozen or shared) or a
        stale frozen result shown as it is; None where it must run."""
        components = self.key_components(gid, upstream)
        key = hash_value(components)
        if gid in self.config.force:
            return components, key, None
        entry = self.find(gid, components)
        if entry is not None:
            self.store.remember_components(gid, components)
            if entry.fetched:
                return components, key, SectionResult(gid, "shared", 0.0, entry)
            self._publish(gid, entry)  # a result from before the shared cache was used, if it lacks it
            return components, key, SectionResult(gid, "hit" if entry.layer is None else "frozen", 0.0, entry)
        frozen = self._stale_candidate(gid)
        if not self._refreshable(gid, frozen):
            if frozen is None:
                return components, key, self.unfrozen(gid)
            return components, key, self._stale(gid, frozen, components)
        return components, key, None

    def execute(self, gid: str, components: dict[str, Any], key: str, upstream: dict[str, Entry | None],
                 progress=None) -> SectionResult:
        """Run a section and store its outputs; a failure becomes a failed result, whatever it was."""
        mod = self.sections[gid]
        start = time.perf_counter()
        try:
            return self._run(mod, components, key, upstream, progress, start)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one section's failure must not stop the others
            failed = self._missing_model(gid, components, upstream, exc) or \
                self._failure(mod, components, exc, time.perf_counter() - start)
        diagnose.release_gpu_memory()  # the exception and the tensors its traceback held are gone now
        return failed

    def threads_for(self, gid: str) -> int:
        """The CPU threads a section computes with: its declaration, else the build's default; never more
        than this machine's cores. The same in a serial and a parallel build, so their bytes are equal."""
        declared = self.sections[gid].section.needs.threads
        return max(1, min(declared or self.config.threads or default_threads(), cores()))

    def _missing_model(self, gid: str, components: dict[str, Any], upstream: dict[str, Entry],
                       exc: Exception) -> SectionResult | None:
        """A section that needed a model its frozen upstream left out (see builder.graph.freeze): show its own
        frozen result marked as stale where there is one, else fail saying which section to recompute."""
        missing = Path(getattr(exc, "filename", None) or "").name
        owners = sorted(dep for dep, e in upstream.items() if e is not None and missing in e.record.get("omitted", ()))
        if not isinstance(exc, FileNotFoundError) or not owners:
            return None
        reason = (f"it reads an output of {', '.join(owners)} that the freeze leaves out; recompute "
                  f"{'it' if len(owners) == 1 else 'them'} first with python build.py --force {' '.join(owners)}")
        frozen = self._stale_candidate(gid)
        if frozen is not None:
            return self._stale(gid, frozen, components, reason)
        return SectionResult(gid, "failed", 0.0, error=f"section {gid} cannot run here: {reason}.")

    def _stale(self, gid: str, frozen: Entry, components: dict[str, Any], blocked: str | None = None) -> SectionResult:
        changes = self.stale_changes(frozen, components)
        why = blocked or "it was computed on another device kind or dtype than this machine's"
        if self.config.strict:
            return SectionResult(gid, "failed", 0.0, error=(
                f"the frozen result of {gid} was computed by an earlier version of the section, and --strict "
                f"refuses stale results. Changed since: {'; '.join(changes)}. It is not recomputed because {why}; "
                f"refresh the freeze with {self.refresh_command(frozen)}, or build without --strict to "
                f"show the old result marked as stale."))
        return SectionResult(gid, "stale", 0.0, frozen, stale=changes + ([f"not recomputed: {blocked}"] if blocked else []))

    def _run(self, mod: SectionModule, components: dict[str, Any], key: str, upstream: dict[str, Entry],
             progress, start: float) -> SectionResult:
        gid = mod.section.id
        forced = gid in self.config.force
        gpu = GpuMemory(self.config.device)
        with self.store.staging() as staging:
            ctx = Context(
                section_id=gid, params=Params(gid, components["params"]), profile=self.config.profile,
                seed=components["seed"], device=self.config.device, dtype=self.config.dtype, store=self.store,
                staging=staging, scratch=self.store.scratch_dir(gid, key), upstream_entries=upstream,
                resources=self.resources(gid), progress_factory=progress,
            )
            seed_everything(components["seed"])
            try:
                with torch_threads(self.threads_for(gid)):
                    mod.run(ctx)
                ctx.params.check_all_read()
            except Exception as exc:
                exc._staged_bytes = diagnose.bytes_under(staging)  # what it had written, for a full-disk message
                raise
            seconds = time.perf_counter() - start
            peak = gpu.peak()
            crash_point(f"section:{gid}")
            for out in ctx.outputs:
                for f in out["files"]:
                    staged = staging / f["sha"]
                    if staged.is_file():  # two outputs with the same bytes share one staged file
                        self.store.adopt_object(staged, f["sha"])
            entry = self.store.commit(gid, key, {
                "section": gid, "title": mod.section.title, "components": components,
                "outputs": ctx.outputs, "wall_seconds": round(seconds, 2), "machine": machine(self.config.device),
                **({"peak_gpu_bytes": peak} if peak is not None else {}),
            })
        self.store.remember_components(gid, components)
        self.store.drop_scratch(gid)
        return SectionResult(gid, "forced" if forced else "miss", seconds, entry, peak_gpu_bytes=peak)

    def publish_result(self, res: SectionResult) -> None:
        if res.status in ("miss", "forced") and res.entry is not None:
            self._publish(res.id, res.entry)

    def _publish(self, gid: str, entry: Entry) -> None:
        """Offer a local result to the shared cache (frozen ones are every checkout's already)."""
        if self.config.shared is not None and entry.layer is None:
            self.config.shared.publish(gid, entry, self.store)

    def _failure(self, mod: SectionModule, components: dict[str, Any], exc: Exception, seconds: float) -> SectionResult:
        """A failed section's result: a BuildError's own message, one paragraph for a full disk or a
        GPU out of memory, else the exception as it is; the traceback is kept for --debug."""
        gid = mod.section.id
        trace = "".join(traceback.format_exception(exc))
        if isinstance(exc, BuildError):
            return SectionResult(gid, "failed", seconds, error=str(exc), traceback=trace)
        error = f"{type(exc).__name__}: {exc}"
        disk = diagnose.full_disk(exc, self.store.root)
        if disk is not None:
            scratch = self.store.root / "scratch" / gid
            written = getattr(exc, "_staged_bytes", 0) + diagnose.bytes_under(scratch)
            error = diagnose.disk_message(disk[0], disk[1], self.store.root, written=written,
                                          previous=self._stored_bytes(gid),
                                          resumable=any(scratch.rglob("resume.pt")))
        elif diagnose.cuda_out_of_memory(exc):
            error = diagnose.oom_message(self.config.device, diagnose.gpu_memory(self.config.device),
                                         self.memory_hints(mod, components))
        return SectionResult(gid, "failed", seconds, error=error, traceback=trace)

    def memory_hints(self, mod: SectionModule, components: dict[str, Any]) -> list[str]:
        """The settings that lower what a section needs on the GPU, as a user would change them."""
        hints = []
        if self.config.dtype == "float32":
            hints.append("--dtype bfloat16 (half the activation memory)")
        module = mod.name.replace(".", "/") + ".py"
        for name, value in components["params"].items():
            if "batch" in name and isinstance(value, int) and value > 1:
                hints.append(f"a smaller {name} (now {value}) in the {self.config.profile!r} profile of {module}")
        resources = self.resources(mod.section.id)
        for res in resources.values():
            hints += res.memory_hints
        if self.config.profile == "spec" and not resources:
            hints.append("--profile cpu (smaller models and batches than the assignment's)")
        return hints

    def _stored_bytes(self, gid: str) -> int | None:
        """What the section's most recent complete run stored, if the cache still has it."""
        sizes = []
        for record in self.store.entries_of(gid):
            paths = [self.store.object_path(f["sha"]) for o in record.get("outputs", []) for f in o["files"]]
            sizes.append(sum(p.stat().st_size for p in paths if p.is_file()))
        return max(sizes) if sizes else None


class Ledger:
    """What a build has settled so far: each section's result, which failed, and the stale results each
    one rests on, in whatever order the sections finish."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.result = BuildResult()
        self.entries: dict[str, Entry | None] = {}
        self.failed: set[str] = set()
        self.stale_from: dict[str, tuple[str, ...]] = {}  # section -> the stale results it rests on

    def ready(self, gid: str) -> bool:
        return all(dep in self.entries for dep in self.engine.depends(gid))

    def blocked(self, gid: str) -> bool:
        return any(dep in self.failed for dep in self.engine.depends(gid))

    def upstream(self, gid: str) -> dict[str, Entry | None]:
        return {dep: self.entries[dep] for dep in self.engine.depends(gid)}

    def skip(self, gid: str) -> SectionResult:
        res = SectionResult(gid, "skipped", 0.0, error="an upstream section failed")
        self.failed.add(gid)
        self._record(res)
        return res

    def finish(self, res: SectionResult) -> None:
        deps = self.engine.depends(res.id)
        if res.status == "failed":
            self.failed.add(res.id)
        res.stale_upstream = tuple(sorted({s for dep in deps for s in self.stale_from.get(dep, ())}))
        self.stale_from[res.id] = res.stale_upstream + ((res.id,) if res.status == "stale" else ())
        self._record(res)

    def _record(self, res: SectionResult) -> None:
        self.entries[res.id] = res.entry
        self.result.results.append(res)


def _where(components: dict[str, Any]) -> tuple[str, str]:
    """The device kind and dtype a result's key components say it was computed with."""
    return str(components["device"]).split(":")[0], str(components["dtype"])


def in_environment(components: dict[str, Any], entry: Entry) -> dict[str, Any]:
    """These key components as they would read in the environment ``entry`` was computed in."""
    return {**components, **{name: entry.record["components"].get(name) for name in ENVIRONMENT}}
