#!/usr/bin/env python
"""Regenerate the "Fun with Diffusion Models" report website.

Every figure is produced by a generator module under generators/, cached by a content hash of its code,
parameters, seed, inputs and upstream results, and placed into the pages written from content/
and templates/. A rebuild with nothing changed runs no section.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends  # noqa: E402
from builder import BuildError  # noqa: E402
from builder import app, statcache  # noqa: E402
from project import PROJECT  # noqa: E402

DEBUG_ENV = "FUN_DIFFUSION_DEBUG"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="build.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  python build.py                      build everything (cpu profile without a GPU)\n"
               "  python build.py --only b1_2_noising  build one section and what it needs\n"
               "  python build.py --explain a1_1_forward   say why a section would re-run\n"
               "  python build.py --profile smoke --site-dir /tmp/site   a quick end-to-end check\n"
               "  python build.py --serve              a live preview on http://127.0.0.1:8000/\n"
               "  python build.py cache gc             delete what no recent build used (also: cache verify)\n"
               "  python build.py freeze carry --profile spec   carry a freeze across a change that keeps its results\n"
               "  python build.py freeze layout --profile spec  write the benchmark tables, laid out here, into a freeze")
    _what_to_build(p.add_argument_group("what to build"))
    backends.add_options(p)
    _instead_of_building(p.add_argument_group("instead of building"))
    _where_things_are(p.add_argument_group("where results are kept"))
    _several_at_once(p.add_argument_group("several sections at once"))
    _stale_results(p.add_argument_group("results computed elsewhere"))
    _what_comes_out(p.add_argument_group("what the build writes and says"))
    args = p.parse_args(argv)
    if args.serve and (args.clean or args.list or args.explain or args.freeze or args.pdf):
        p.error("--serve previews the site as it is built; it cannot be combined with --clean, --list, --explain, "
                "--freeze or --pdf. Run those on their own, then --serve.")
    if args.pdf and (args.clean or args.list or args.explain):
        p.error("--pdf prints the site that the build writes; it cannot be combined with --clean, --list or --explain.")
    return args




def _what_to_build(g) -> None:
    g.add_argument("--only", nargs="+", metavar="SECTION",
                   help="build only these sections (and the sections they depend on); the site is rendered "
                        "if every other section is in the cache")
    g.add_argument("--force", nargs="+", metavar="SECTION", default=[],
                   help="re-run these sections even if their cache entry is valid")
    g.add_argument("--profile", choices=["smoke", "cpu", "spec"],
                   help="size of the computation: spec = the assignment's exact settings (default on CUDA), "
                        "cpu = a smaller budget with the same algorithms (default without a GPU), "
                        "smoke = seconds, for tests")
    g.add_argument("--device", help="torch device: cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="autocast dtype for training and sampling (auto: bfloat16 on CUDA and on CPUs with "
                        "bf16 instructions, else float32)")
    g.add_argument("--seed", type=int, default=PROJECT.seed,
                   help=f"the project seed; each section derives its own from it (default {PROJECT.seed})")


def _instead_of_building(g) -> None:
    g.add_argument("--list", action="store_true", help="list the sections and whether each is cached, then exit")
    g.add_argument("--explain", metavar="SECTION",
                   help="say why SECTION's cache entry hits or misses (which key component changed), then exit")
    g.add_argument("--clean", action="store_true", help="delete the cache (not the site), then exit")


def _where_things_are(g) -> None:
    g.add_argument("--cache-dir", type=Path, default=PROJECT.root / ".cache",
                   help="where cached outputs live (default: .cache/)")
    g.add_argument("--site-dir", type=Path, default=PROJECT.root / "site",
                   help="where the website is written (default: site/)")
    g.add_argument("--frozen-dir", type=Path, default=PROJECT.root / "frozen",
                   help="the committed freezes, one folder per profile, looked up after the cache "
                        "(default: frozen/)")
    g.add_argument("--freeze", action="store_true",
                   help="after a complete build, write its results into FROZEN_DIR/<profile>/ (replacing what "
                        "was there), so that any machine renders them without recomputing")
    g.add_argument("--cache-url", metavar="URL",
                   help="a cache shared with other machines, at any fsspec URL (file://, s3://, gs://, ...; also "
                        "$FUN_DIFFUSION_CACHE_URL): results are looked up there after the local cache and the "
                        "freeze, and what this build computes is uploaded. Credentials come from the backend's "
                        "own configuration (for s3://, AWS_* variables or ~/.aws); the URL is only ever shown "
                        "with its password and query values as ***")


def _several_at_once(g) -> None:
    g.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                   help="run up to N independent sections at once, each in a worker process with the CPU threads "
                        "and GPU share its module declares (Section.needs); the outputs are the same bytes as "
                        "one at a time (default: 1 on a CPU; on CUDA the number of cores, so that sections that "
                        "declare a share of the GPU share it)")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where parallel sections run: local worker processes (default), or Ray tasks with their "
                        "declared resources on the cluster at --ray-address or $RAY_ADDRESS (else a local Ray "
                        "instance); a remote cluster needs --cache-url for the outputs to come back")
    g.add_argument("--ray-address", metavar="ADDRESS", help="the Ray cluster for --executor ray")


def _stale_results(g) -> None:
    g.add_argument("--strict", action="store_true",
                   help="fail instead of showing a stale frozen result (one an earlier version of its section "
                        "computed, on another device kind or dtype than this machine's); for publishing")
    g.add_argument("--compute-here", action="store_true",
                   help="compute on this machine what an edition lacks (a stale frozen result, or another edition's "
                        "section its freeze does not hold) even where the edition was computed on another device "
                        "kind or dtype; such results are shown as computed here")


def _what_comes_out(g) -> None:
    g.add_argument("--report", type=Path, metavar="FILE",
                   help="also write the build's result as JSON (each section's status, seconds and error; the "
                        "site's summary), for scripts and benchmarks")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (also when not on a terminal)")
    g.add_argument("--debug", action="store_true", default=bool(os.environ.get(DEBUG_ENV)),
                   help=f"print the full traceback of a failed section under its one-paragraph error "
                        f"(also ${DEBUG_ENV}=1)")
    g.add_argument("--serve", action="store_true",
                   help="build, serve the site on 127.0.0.1 and rebuild whenever a file under content/, templates/, "
                        "generators/, diffusion/, backends/ or builder/ changes; open pages reload where they were "
                        "(a live preview; the published files never contain its reload script)")
    g.add_argument("--port", type=int, default=8000, help="the preview's port (default 8000; 0: any free port)")
    g.add_argument("--pdf", nargs="?", const=Path("report.pdf"), type=Path, metavar="FILE",
                   help="after the build, print the report (the site's first edition) with headless Chromium into "
                        "one PDF, FILE or report.pdf: a title page, the contents with page numbers, every page, and "
                        "the figures' provenance as an appendix")


WATCHED = ("content", "templates", PROJECT.sections, *PROJECT.science, "backends", "builder", "project.py",
           "build.py")


def preview(args, argv: list[str]) -> int:
    """``--serve``: one warm process builds, serves and rebuilds. A change of content or templates is rebuilt
    in this process, which keeps its compiled templates and every page's HTML that the change does not touch
    (builder.site.memo), so the page reloads within a second; a change of Python code restarts the process, so
    that the sections run the code as it is now (a long-lived process would compute with the code it
    started with)."""
    from builder.site import serve

    settings = _settings(args)
    settings.resources[backends.RESOURCE] = backends.resource(args, app.resolve(settings).device, PROJECT)
    settings.defer_index = True  # an edit reaches the page first; the search index follows (see _rebuilder)
    later: list = []
    rebuild = _rebuilder(settings, later)
    state = serve.Preview()
    try:  # the port first: a taken one is said before a build is waited for
        server = serve.start_server(args.site_dir, state, port=args.port)
    except OSError as exc:
        print(f"error: the preview cannot listen on 127.0.0.1:{args.port} ({exc.strerror or exc}). Choose another "
              f"port with --port N, or --port 0 for any free one.", file=sys.stderr)
        return 2

    def after_publish() -> None:
        while later:
            try:
                later.pop()()
            except BuildError as exc:
                print(f"preview: the search index was not written: {exc}", flush=True)

    state.publish(rebuild())
    after_publish()
    watched = [PROJECT.root / name for name in dict.fromkeys(WATCHED)]
    print(f"preview: serving {args.site_dir} on http://127.0.0.1:{server.server_port}/ ; watching "
          f"{', '.join(p.name for p in watched if p.exists())}; Ctrl-C stops", flush=True)

    def on_change(changed: set[str]) -> None:
        names = sorted(Path(c).relative_to(PROJECT.root).as_posix() for c in changed)
        print(f"preview: changed {', '.join(names)}", flush=True)
        if any(name.endswith(".py") for name in names):
            print("preview: Python code changed; restarting the preview with it", flush=True)
            server.shutdown()
            server.server_close()
            port = ["--port", str(server.server_port)]  # the same port, so the open pages reconnect
            os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *_without_serve(argv),
                                      "--serve", *port])

    try:
        serve.watch_and_rebuild(state, rebuild, watched, on_change=on_change, after=after_publish)
    except KeyboardInterrupt:
        pass
    server.shutdown()
    print("preview: stopped", flush=True)
    return 0


def _rebuilder(settings: app.Settings, later: list) -> Callable[[], str | None]:
    """The preview's rebuild: the build in this process; None when it succeeded, else the paragraph the pages
    show instead. What the render left for after the reload (the search index) is appended to ``later``."""
    def rebuild() -> str | None:
        start = time.perf_counter()
        try:
            result, summary = app.build(settings, progress_bar=False, out=sys.stdout)
            if summary and summary.get("later"):
                later.append(summary.pop("later"))
        except BuildError as exc:
            errors = [str(exc)]
        else:
            errors = [f"section {r.id} failed: {r.error}" for r in result.results if r.status == "failed"]
            errors += [f"the site was not written: {summary['error']}"] if summary and "error" in summary else []
        if errors:
            print("preview: the rebuild failed; the pages show its error until a rebuild succeeds", flush=True)
            return "\n\n".join(errors)
        print(f"preview: rebuilt in {time.perf_counter() - start:.2f} s", flush=True)
        return None

    return rebuild


def _without_serve(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--port":
            skip = True
        elif arg != "--serve" and not arg.startswith("--port="):
            kept.append(arg)
    return kept


def cache_command(argv: list[str]) -> int:
    """``build.py cache gc|verify``: keep the local cache, or a shared one, in bounds, or check it
    (builder.graph.cache_gc, builder.scale.shared_cache)."""
    from builder.cache import Store
    from builder.graph.cache_gc import collect, verify

    p = argparse.ArgumentParser(prog="build.py cache", description=cache_command.__doc__)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--cache-dir", type=Path, default=PROJECT.root / ".cache", help="the cache (default .cache/)")
    where.add_argument("--cache-url", metavar="URL",
                       help="work on the shared cache at this fsspec URL instead of the local one (files younger "
                            "than an hour are never deleted there: they may belong to a build that is uploading)")
    commands = p.add_subparsers(dest="command", required=True)
    gc = commands.add_parser("gc", parents=[where],
                             help="delete the results no recent build reached, and the files only they used")
    gc.add_argument("--keep-builds", type=int, default=3, metavar="N",
                    help="keep what the newest N builds of each checkout and profile reached (default 3)")
    gc.add_argument("--keep-mb", type=float, default=0.0, metavar="MB",
                    help="also keep this much of the other results, most recently used first (default 0)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    check = commands.add_parser("verify", parents=[where], help="re-hash every file of the cache")
    check.add_argument("--repair", action="store_true", help="remove the files whose bytes changed")
    args = p.parse_args(argv)
    if args.command == "gc" and args.keep_builds < 1:
        p.error("--keep-builds must be at least 1: the newest build of each checkout is always kept")
    if args.cache_url:
        return shared_cache_command(args)
    store = Store(args.cache_dir)
    if not (args.cache_dir / "objects").is_dir() and not (args.cache_dir / "entries").is_dir():
        print(f"cache {args.command}: there is no cache at {args.cache_dir} (nothing to do)")
        return 0
    try:
        with store.lock():
            if args.command == "gc":
                done = collect(store, args.keep_builds, int(args.keep_mb * 1e6), dry_run=args.dry_run)
                print(done.summary(args.dry_run))
                return 0
            checked = verify(store, repair=args.repair)
            print(checked.summary())
            return 1 if checked.corrupt and not args.repair else 0
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def shared_cache_command(args) -> int:
    from builder.scale.shared_cache import SharedCache, collect_shared, verify_shared

    try:
        shared = SharedCache(args.cache_url)
        if args.command == "gc":
            done = collect_shared(shared, args.keep_builds, int(args.keep_mb * 1e6), dry_run=args.dry_run)
            print(done.summary(args.dry_run, shared.url))
            return 0
        checked = verify_shared(shared, repair=args.repair)
        print(checked.summary(shared.url))
        return 1 if checked.corrupt and not args.repair else 0
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the backend's own errors, shown without the URL's secrets
        print(f"error: cache {args.command} on the shared cache at {shared.url} stopped: "
              f"{shared._scrub(f'{type(exc).__name__}: {exc}')[:400]}. What it deleted stays deleted (records "
              f"before their files, so nothing half-deleted is a hit); run it again.", file=sys.stderr)
        return 2


def freeze_command(argv: list[str]) -> int:
    """``build.py freeze rekey|carry``: keep a committed freeze valid when its keys move but its results
    do not (builder.graph.rekey): a new fingerprint scheme, or a refactor whose outputs are byte-identical."""
    from builder.graph import rekey

    p = argparse.ArgumentParser(prog="build.py freeze", description=freeze_command.__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", required=True, choices=["smoke", "cpu", "spec"], help="the freeze's profile")
    common.add_argument("--frozen-dir", type=Path, default=PROJECT.root / "frozen",
                        help="where the freezes are (default: frozen/)")
    backends.add_options(common)
    commands = p.add_subparsers(dest="command", required=True)
    again = commands.add_parser("rekey", parents=[common], help=(
        "recompute every code digest of the freeze under the current fingerprint scheme, from the sources of the "
        "commit it was built from (read with git, each file checked against what the freeze recorded)"))
    again.add_argument("--commit", help="the commit whose code computed the freeze (default: the one it records)")
    again.add_argument("--sources", type=Path, metavar="FILE",
                       help="for a freeze that records no sha256 of its sources: a listing of them (sha256sum's format, "
                            "paths from the project's root) to check the files read at the commit against")
    move = commands.add_parser("carry", parents=[common], help=(
        "re-key the sections whose keys changed in their code alone, where their outputs in the check profile are "
        "byte-identical computed with the freeze's commit and with the current (committed) code"))
    move.add_argument("--check-profile", default="smoke", choices=["smoke", "cpu", "spec"],
                      help="the profile computed at both commits to compare outputs (default smoke: seconds)")
    commands.add_parser("layout", parents=[common], help=(
        "lay the freeze's portable sections (those that compute nothing on a device, such as the benchmark "
        "tables) out anew on this machine and write them into the freeze; every computed result stays as it was"))
    args = p.parse_args(argv)
    folder = args.frozen_dir / args.profile
    try:
        resource = backends.resource(args, "cpu", PROJECT)
        if args.command == "rekey":
            print(rekey.rekey(PROJECT, folder, args.commit, args.sources, {backends.RESOURCE: resource}))
            return 0
        settings = app.Settings(PROJECT, profile=args.profile, device="cpu", frozen_dir=args.frozen_dir)
        settings.resources[backends.RESOURCE] = resource
        engine = app.make_engine(settings)
        if args.command == "layout":
            print(rekey.lay_out(engine, folder))
            return 0
        backend = ["--backend", resource.identity["name"]]
        print(rekey.carry(engine, folder, lambda commit, sections: rekey.build_outputs(
            PROJECT.root, commit, sections, args.check_profile, backend), args.check_profile))
        return 0
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _settings(args) -> app.Settings:
    return app.Settings(PROJECT, profile=args.profile, device=args.device, dtype=args.dtype, seed=args.seed,
                        only=args.only, force=args.force, cache_dir=args.cache_dir, site_dir=args.site_dir,
                        frozen_dir=args.frozen_dir, strict=args.strict, compute_here=args.compute_here,
                        freeze=args.freeze, cache_url=args.cache_url, jobs=args.jobs, executor=args.executor,
                        ray_address=args.ray_address)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cache"]:
        return cache_command(argv[1:])
    if argv[:1] == ["freeze"]:
        return freeze_command(argv[1:])
    args = parse_args(argv)
    if args.serve:
        return preview(args, argv)
    if args.executor == "ray":  # Ray's tasks run from a copy of the source without data/: point them at it
        os.environ.setdefault("MNIST_ROOT", str(PROJECT.root / "data"))
    settings = _settings(args)
    try:
        if not args.clean:
            config = app.resolve(settings)  # a bad --device, --profile or --dtype is reported before anything uses it
            settings.resources[backends.RESOURCE] = backends.resource(args, config.device, PROJECT)
        if args.clean:
            print(app.clean(settings))
            return 0
        if args.list:
            print(app.list_sections(settings))
            return 0
        if args.explain:
            engine = app.make_engine(settings)
            print("\n".join(engine.explain(args.explain)))
            statcache.save()
            return 0
        start = time.perf_counter()
        progress = not args.no_progress and sys.stderr.isatty()
        result, summary = app.build(settings, progress_bar=progress)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: nothing half-written was kept; run the same command again to resume.",
              file=sys.stderr)
        return 130
    print(app.summary_table(result))
    if args.report:
        app.write_report(args.report, result, summary)
    _say_what_happened(result, args.debug)
    if summary and "error" in summary:
        print(f"error: the site was not written: {summary['error']}", file=sys.stderr)
        return 1
    if summary:
        _say_where_the_site_is(summary, settings.site_dir, time.perf_counter() - start)
    if args.pdf:
        return _print_pdf(args.pdf, settings, printable=bool(summary and result.ok)) or (0 if result.ok else 1)
    return 0 if result.ok else 1


def _say_what_happened(result, debug: bool) -> None:
    """The build's warnings, and each section that failed, was skipped or is shown stale, on stderr."""
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for res in result.results:
        if res.status == "failed":
            print(f"error: section {res.id} failed: {res.error}", file=sys.stderr)
            if debug and res.traceback:
                print(res.traceback, file=sys.stderr)
        elif res.status == "skipped":
            print(f"skipped: section {res.id}, because {res.error}", file=sys.stderr)
        elif res.status == "stale":
            print(f"stale: section {res.id} shows a frozen result computed by an earlier version of it "
                  f"({'; '.join(res.stale)}); the pages mark it. --explain {res.id} says how to refresh it.",
                  file=sys.stderr)


def _say_where_the_site_is(summary: dict, site_dir: Path, seconds: float) -> None:
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    sizes = ", ".join(f"{kind} {size / 1e6:.2f}" for kind, size in summary.get("sizes", {}).items())
    print(f"site: {site_dir} ({summary['files']} files, {summary['bytes'] / 1e6:.2f} MB: {sizes}; "
          f"{summary['changed']} written, {summary['removed']} removed) in {seconds:.1f} s")


def _print_pdf(out: Path, settings: app.Settings, printable: bool) -> int:
    """--pdf: the site printed into ``out``; 1 (after saying why) where it cannot be, else 0."""
    if not printable:
        print("error: the PDF was not written, because the build did not finish; fix what it says above and "
              "build again with --pdf.", file=sys.stderr)
        return 1
    from builder.site.pdf import print_report

    start = time.perf_counter()
    try:
        printed = print_report(settings.site_dir, PROJECT.pages, settings.templates_dir, out)
    except BuildError as exc:
        print(f"error: the PDF was not written: {exc}", file=sys.stderr)
        return 1
    print(f"pdf: {out} ({printed['pages']} pages, {printed['bytes'] / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.0f} s")
    return 0

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Deterministic cuBLAS needs a fixed workspace, chosen before CUDA starts (see compute.deterministic_kernels).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    sys.exit(main())
