"""The build as a whole: resolve settings, run the engine, write the manifest and the site."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import BuildError, statcache
from .cache import Store
from .graph.compute import cores, deterministic_kernels
from .graph.engine import BuildConfig, BuildResult, Engine, Resource, SectionResult
from .fingerprint import hash_value
from .project import Project
from .graph.registry import discover
from .section import PROFILES


@dataclass
class Settings:
    """One build's choices; folders default to the project's own (``.cache/``, ``site/``, ...)."""

    project: Project
    profile: str | None = None
    device: str | None = None
    dtype: str = "auto"
    seed: int | None = None
    only: list[str] | None = None
    force: list[str] | None = None
    cache_dir: Path | None = None
    site_dir: Path | None = None
    content_dir: Path | None = None
    templates_dir: Path | None = None
    frozen_dir: Path | None = None  # committed freezes, one folder per profile (frozen/<profile>/)
    strict: bool = False  # fail on a stale frozen result instead of showing it marked
    compute_here: bool = False  # compute what an edition lacks on this machine, whatever computed the rest
    freeze: bool = False  # after a complete build, write its results into frozen/<profile>/
    cache_url: str | None = None  # a shared cache (builder.scale.shared_cache); None: $FUN_DIFFUSION_CACHE_URL, if set
    jobs: int | None = None  # sections at once (builder.scale.parallel); None: default_jobs(device)
    executor: str = "local"  # local worker processes, or ray
    ray_address: str | None = None
    resources: dict[str, Resource] = field(default_factory=dict)
    # The live preview: write the pages first and the search index after them (the summary's ``later``).
    defer_index: bool = False

    def __post_init__(self):
        root = self.project.root
        self.seed = self.project.seed if self.seed is None else self.seed
        self.cache_dir = Path(self.cache_dir or root / ".cache")
        self.site_dir = Path(self.site_dir or root / "site")
        self.content_dir = Path(self.content_dir or root / "content")
        self.templates_dir = Path(self.templates_dir or root / "templates")
        self.frozen_dir = Path(self.frozen_dir or root / "frozen")


def default_device() -> str:
    """CUDA if torch sees a GPU. Without an NVIDIA device file there can be none, and torch (seconds to
    import) is not asked."""
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_fast_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX); without them bf16 autocast is
    emulated and slower than fp32."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve(settings: Settings) -> BuildConfig:
    statcache.use(settings.cache_dir)  # digests of unchanged files are not recomputed (builder.statcache)
    device = settings.device or default_device()
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise BuildError(f"unknown device {device!r}; use cpu, cuda (or cuda:N) or mps.")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BuildError("--device cuda was asked for but torch sees no CUDA GPU; drop --device to build "
                             "on the CPU with the 'cpu' profile, or install a CUDA build of torch.")
    profile = settings.profile or ("spec" if device.startswith("cuda") else "cpu")
    if profile not in PROFILES:
        raise BuildError(f"unknown profile {profile!r}; valid profiles are {', '.join(PROFILES)}.")
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") or (device == "cpu" and cpu_has_fast_bf16()) else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise BuildError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16.")
    if settings.seed < 0:
        raise BuildError(f"--seed must be a non-negative integer, got {settings.seed}.")
    jobs = default_jobs(device) if settings.jobs is None else settings.jobs
    if jobs < 1:
        raise BuildError(f"--jobs must be at least 1 (one section at a time), got {jobs}.")
    layer = Path(settings.frozen_dir) / profile
    from .scale.shared_cache import from_settings

    return BuildConfig(profile=profile, device=device, dtype=dtype, seed=settings.seed,
                       cache_root=Path(settings.cache_dir), resources=dict(settings.resources),
                       force=frozenset(settings.force or ()), frozen=(layer,) if layer.is_dir() else (),
                       strict=settings.strict, compute_here=settings.compute_here,
                       shared=from_settings(settings.cache_url), jobs=jobs,
                       executor=settings.executor, ray_address=settings.ray_address)


def default_jobs(device: str) -> int:
    """Sections at once when --jobs is not given: one on a CPU, whose cores one section's threads already
    fill; on CUDA as many as the cores, so that the sections that declare a share of the GPU
    (Section.needs) share it and the card is not left idle; Slots places them by their shares and memory."""
    return cores() if device.startswith("cuda") else 1


def make_engine(settings: Settings) -> Engine:
    config = resolve(settings)
    sections = discover(settings.project.sections, settings.project.codebase.science)
    engine = Engine(settings.project, config, sections)
    for wanted in (settings.force or []):
        if wanted not in sections:
            raise BuildError(f"--force names the unknown section {wanted!r}; valid sections are: "
                             f"{', '.join(sorted(sections))}.")
    return engine


def manifest_of(engine: Engine, entries: dict[str, Any], results: dict[str, SectionResult] | None = None
                ) -> dict[str, Any]:
    config = engine.config
    sections = {}
    for gid, entry in entries.items():
        record = entry.record
        comp = record["components"]
        sections[gid] = {
            "id": gid, "title": record["title"], "key": entry.key, "seed": comp["seed"],
            "profile": comp["profile"], "device": comp["device"], "dtype": comp["dtype"],
            "resources": comp["resources"], "params": comp["params"],
            # No wall time (the cache record and the summary table keep it): the site must be
            # byte-identical whenever the figures are, however busy the machine was.
            "figures": [o for o in record["outputs"] if o.get("publish")],
            "data": {o["id"].removeprefix("data-"): o["files"][0]["sha"] for o in record["outputs"]
                     if o["kind"] == "data"},
        }
        if gid in engine.sections:
            # The same section's parameters in the other profiles, so content can compare with them
            # even where no such build exists (e.g. the assignment's settings, beside a CPU build's).
            section = engine.sections[gid].section
            sections[gid]["params_of"] = {p: section.resolve(p) for p in PROFILES if p != comp["profile"]}
        if "machine" in record:
            sections[gid]["machine"] = {k: record["machine"][k] for k in ("device", "name", "torch", "cuda")}
        if gid in engine.sections and engine.sections[gid].section.portable:
            sections[gid]["portable"] = True
        res = (results or {}).get(gid)
        if res is not None and res.status == "stale":
            sections[gid]["stale"] = {"changes": res.stale, "refresh": engine.refresh_command(entry)}
        if res is not None and res.stale_upstream:
            sections[gid]["stale_upstream"] = list(res.stale_upstream)
    # Where and with what the results were computed, from their own records: a build that takes them
    # from a freeze reports the freeze's device, dtype, versions and resources, so every machine that
    # renders it writes the same site and says how it was made.
    # A portable section (one that lays out committed files) says where it ran, not where the edition computed,
    # so neither its device nor its library versions join the edition's.
    computed_ids = [gid for gid, s in sections.items() if not s.get("portable")] or list(sections)
    computed = [sections[gid] for gid in computed_ids]
    records = [entries[gid].record["components"] for gid in computed_ids]
    devices = sorted({s["device"].split(":")[0] for s in computed}) or [config.device.split(":")[0]]
    dtypes = sorted({str(s["dtype"]) for s in computed}) or [config.dtype]
    build = {
        "stale": sorted(gid for gid, s in sections.items() if "stale" in s),
        "profile": config.profile, "seed": config.seed, "device": " and ".join(devices),
        "dtype": " and ".join(dtypes),
        "versions": _versions_of(records) if records else engine.project.versions,
        "resources": _resources_of(records) if records else
        {name: res.identity for name, res in sorted(config.resources.items())},
        "source_digest": hash_value({gid: s["key"] for gid, s in sorted(sections.items())}),
    }
    build["words"] = engine.project.words(build["resources"]) if engine.project.words else {}
    return {"build": build, "sections": dict(sorted(sections.items()))}


def _versions_of(records: list[dict[str, Any]]) -> dict[str, str]:
    """The library versions the records were computed with: one per library, or each one seen, joined."""
    seen: dict[str, list[str]] = {}
    for comp in records:
        for name, version in comp.get("versions", {}).items():
            seen.setdefault(name, [])
            if version not in seen[name]:
                seen[name].append(version)
    return {name: " and ".join(sorted(values)) for name, values in sorted(seen.items())}


def _resources_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each resource as most of the records that used it knew it (the first such record breaks a tie)."""
    counts: dict[str, dict[str, list]] = {}
    for comp in records:
        for name, identity in comp.get("resources", {}).items():
            tally = counts.setdefault(name, {})
            tally.setdefault(hash_value(identity), [0, identity])[0] += 1
    return {name: max(tally.values(), key=lambda pair: pair[0])[1] for name, tally in sorted(counts.items())}


def build(settings: Settings, progress_bar: bool = True, out=sys.stdout) -> tuple[BuildResult, dict | None]:
    """Run the sections that need it, then render the site if every section is available.

    The cache stays locked from the first lookup to the last page, so that a second build on the
    same cache fails at once (see ``Store.lock``) instead of sweeping or replacing files under this one.
    """
    engine = make_engine(settings)
    deterministic_kernels(engine.config.device)
    with engine.store.lock():
        result, summary = _build(engine, settings, progress_bar, out)
        # What this build used of the local cache, so that `cache gc` keeps it (results in a frozen layer
        # are not the local cache's to delete).
        reached = {r.id: r.entry.key for r in result.results if r.entry is not None and r.entry.layer is None}
        from .graph.cache_gc import record_build

        record_build(engine.store, settings.project.root, engine.config.profile, reached)
        shared = engine.config.shared
        if shared is not None:
            shared.record_build(settings.project.root, engine.config.profile, reached)
            result.shared = shared.summary()
            if shared.failure:
                result.warnings.append(shared.failure)
        statcache.save()
        return result, summary


def run_sections(engine: Engine, wanted: list[str] | None = None, progress=None, on_section=None) -> BuildResult:
    """The sections ``wanted`` needs: one at a time in this process, or with ``--jobs`` / ``--executor ray``
    several at once (``builder.scale.parallel``); the same keys and bytes either way."""
    if engine.config.jobs > 1 or engine.config.executor != "local":
        from .scale import parallel

        return parallel.build(engine, wanted, on_section)
    return engine.build(wanted, progress, on_section)


def _build(engine: Engine, settings: Settings, progress_bar: bool, out) -> tuple[BuildResult, dict | None]:
    result = _run_with_progress(engine, settings.only, progress_bar)
    if not result.ok:
        return result, None
    entries = {r.id: r.entry for r in result.results}
    results = {r.id: r for r in result.results}
    if settings.only:
        missing = _the_rest_from_the_cache(engine, entries, results)
        if missing:
            print(f"site not rendered: {', '.join(missing)} have no cached result for this configuration; "
                  f"run without --only to build them.", file=out)
            return result, None
    manifest = manifest_of(engine, entries, results)
    if settings.freeze:
        try:
            print(freeze_build(engine, settings, entries, manifest), file=out)
        except BuildError as exc:
            return result, {"error": str(exc)}
    editions = _editions(engine, settings, manifest, result)
    if editions is None:
        return result, None
    try:
        summary = _render(engine, settings, editions)
    except BuildError as exc:
        # The figures are safely cached; only the pages could not be written.
        return result, {"error": str(exc)}
    return result, summary


def _run_with_progress(engine: Engine, wanted: list[str] | None, progress_bar: bool) -> BuildResult:
    """``run_sections`` with a progress bar of the sections (and one per section that reports steps)."""
    from tqdm import tqdm

    bar = tqdm(total=len(engine.order(wanted)), desc="sections", unit="section", disable=not progress_bar,
               file=sys.stderr)

    def inner(total, desc):
        return tqdm(total=total, desc=desc, leave=False, disable=not progress_bar, file=sys.stderr)

    def on_section(res):
        bar.set_postfix_str(f"{res.id}: {res.status}")
        bar.update(1)

    try:
        return run_sections(engine, wanted, progress=inner, on_section=on_section)
    finally:
        bar.close()


def _the_rest_from_the_cache(engine: Engine, entries: dict[str, Any], results: dict[str, SectionResult]) -> list[str]:
    """After an --only build, the other sections as the cache has them for this configuration (a stale
    frozen result shown marked, as a build would), added to ``entries``; returns those it lacks."""
    missing = []
    for gid, (components, entry) in engine.peek().items():
        if gid not in entries:
            if entry is None:
                missing.append(gid)
                continue
            entries[gid] = entry
            if engine.find(gid, components) is None:
                results[gid] = SectionResult(gid, "stale", 0.0, entry, stale=engine.stale_changes(entry, components))
    return missing


def _editions(engine: Engine, settings: Settings, manifest: dict[str, Any], result: BuildResult) -> list | None:
    """This build's edition and the others that have a freeze, in the project's order (the first at the
    site's root, the others in folders); the others' results join ``result`` as ``<edition>/<section>``.
    None where another edition could not be assembled."""
    from .graph import freeze
    from .site.edition import Edition

    profile = engine.config.profile
    freezes = {name: freeze.read(Path(settings.frozen_dir) / name) for name in {profile, *settings.project.editions}}
    editions = {profile: Edition(profile, manifest, engine.store.object_path, freeze=freezes[profile])}
    for name in other_editions(engine, settings, freezes):
        other, other_manifest, other_engine = _frozen_edition(engine, settings, name)
        result.results += [replace(r, id=f"{name}/{r.id}") for r in other.results]
        if other_manifest is None:
            return None
        editions[name] = Edition(name, other_manifest, other_engine.store.object_path, freeze=freezes[name])
    ordered = [editions[name] for name in settings.project.editions if name in editions] or list(editions.values())
    for edition in ordered[1:]:
        edition.folder = f"{edition.name}/"
    return ordered


def _render(engine: Engine, settings: Settings, editions: list) -> dict[str, Any]:
    """The site, rendered unless it was rendered from these very inputs and is as that render left it
    (Jinja and the render are imported only when a site is written)."""
    from .site import rendered

    pages, cache_root = settings.project.pages, engine.store.root
    digest = rendered.inputs_digest(editions, pages, settings.content_dir, settings.templates_dir)
    summary = rendered.unchanged(cache_root, settings.site_dir, digest)
    if summary is None:
        from jinja2 import TemplateError

        from .site.render import render_editions, template_failure

        try:
            summary = render_editions(editions, pages, settings.content_dir, settings.templates_dir,
                                      settings.site_dir, defer_index=settings.defer_index)
        except TemplateError as exc:  # render_editions names most template errors itself; this is the fallback
            raise BuildError(template_failure(exc, settings.templates_dir)) from None
        later = summary.pop("later", None)
        if later is None:
            rendered.remember(cache_root, settings.site_dir, digest, summary)
        else:  # the render is whole, and so worth remembering, once the index is written too
            done = dict(summary)
            summary["later"] = lambda: (later(), rendered.remember(cache_root, settings.site_dir, digest, done))
    return summary


def other_editions(engine: Engine, settings: Settings, freezes: dict[str, dict | None]) -> list[str]:
    """The project's other editions that this build renders from their freezes (``freezes``: each
    edition's freeze.json, None where it has none): only a build of one of the editions (not the smoke
    profile of tests) publishes the others beside it."""
    editions = settings.project.editions
    if engine.config.profile not in editions:
        return []
    return [name for name in editions if name != engine.config.profile and freezes[name] is not None]


def _frozen_edition(engine: Engine, settings: Settings, name: str):
    """Build another edition from its freeze, in this machine's environment: its results are frozen hits,
    recomputed where cheap or shown marked as stale (see ``Engine``), like any build's."""
    layer = Path(settings.frozen_dir) / name
    config = replace(engine.config, profile=name, frozen=(layer,), force=frozenset(), other_edition=True, jobs=1,
                     executor="local")  # its results are frozen: nothing to spread over workers
    other = Engine(engine.project, config, engine.sections, store=engine.store.with_layers([layer]))
    result = other.build(None)
    if not result.ok:
        return result, None, other
    entries = {r.id: r.entry for r in result.results}
    return result, manifest_of(other, entries, {r.id: r for r in result.results}), other


def freeze_build(engine: Engine, settings: Settings, entries: dict[str, Any], manifest: dict[str, Any]) -> str:
    """Write this build's results into ``frozen/<profile>/`` (see ``builder.graph.freeze``); returns what was done."""
    from .graph import freeze

    if settings.only:
        raise BuildError("--freeze needs a complete build: drop --only, so that every section the freeze holds "
                         "is checked against the current code.")
    stale = manifest["build"]["stale"]
    if stale:
        raise BuildError(f"--freeze refuses to freeze stale results ({', '.join(stale)}): the freeze would "
                         f"pass off an earlier version's output as current. Recompute them first (on a machine "
                         f"that can: see --explain) and freeze again.")
    config = engine.config
    about = {key: manifest["build"][key] for key in ("profile", "seed", "device", "dtype", "versions", "resources")}
    about["machine"] = freeze.machine(config.device)
    target = Path(settings.frozen_dir) / config.profile
    from .graph.rekey import provenance

    sources = provenance(engine.project, [entry.record for entry in entries.values()])
    summary = freeze.write(engine.store, entries, target, about, sources)
    return (f"froze {len(summary['sections'])} sections ({summary['objects']} files, {summary['bytes'] / 2**20:.1f} MiB) "
            f"into {target}")


def report(result: BuildResult, summary: dict | None) -> dict[str, Any]:
    """The build's result for scripts: what ``summary_table`` shows people, as data."""
    return {"ok": result.ok and not (summary or {}).get("error"), "executed": result.executed,
            "sections": [{"id": r.id, "status": r.status, "seconds": round(r.seconds, 2), "error": r.error,
                          "peak_gpu_bytes": r.peak_gpu_bytes} for r in result.results],
            "warnings": result.warnings, "site": summary}


def write_report(path: Path, result: BuildResult, summary: dict | None) -> None:
    import json

    from .atomic import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(report(result, summary), indent=1, sort_keys=True) + "\n").encode())


def summary_table(result: BuildResult) -> str:
    gpu = any(r.peak_gpu_bytes is not None for r in result.results)
    rows = [("section", "cache", "seconds") + (("GPU peak MB",) if gpu else ())]
    rows += [(r.id, r.status, f"{r.seconds:.1f}")
             + ((f"{r.peak_gpu_bytes / 2**20:.0f}" if r.peak_gpu_bytes is not None else "-",) if gpu else ())
             for r in result.results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    ran = len(result.executed)
    lines.append(f"{ran} of {len(result.results)} sections executed"
                 + (" (everything came from the cache)" if ran == 0 else ""))
    if result.shared:
        lines.append(result.shared)
    return "\n".join(lines)


def list_sections(settings: Settings) -> str:
    engine = make_engine(settings)
    peek = engine.peek(fetch=False)
    statcache.save()
    rows = [("section", "cache", "depends on", "title")]
    for gid, (_, entry) in peek.items():
        state = "to build" if entry is None else "shared" if entry.shared else "cached"
        rows.append((gid, state, ", ".join(engine.depends(gid)) or "-",
                     engine.sections[gid].section.title))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    config = engine.config
    lines.append(f"(profile {config.profile}, device {config.device}, dtype {config.dtype}, seed {config.seed})")
    return "\n".join(lines)


def clean(settings: Settings) -> str:
    store = Store(settings.cache_dir)
    with store.lock():  # never delete the files of a build that is running
        store.clean()
    return f"removed the cache at {settings.cache_dir}; the site in {settings.site_dir} was left as it is."
