"""Faults: a build killed at any point, a corrupted cache, an unwritable site, broken content.

Kills are real SIGKILLs (builder/faults.py), which run no cleanup code at all; each test then
builds again and compares with the uninterrupted smoke build of the shared fixture. Every test
starts from a copy of that build's cache, so only the sections a test invalidates run again.
"""
import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from builder import BuildError, app, faults
from builder.cache import Store
from tests.conftest import ROOT, build, statuses
from tests.test_determinism import assert_same_site, assert_store_intact, record, site_files

def run_build(cache: Path, site: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if crash_at:
        env[faults.ENV] = crash_at
    return build("--profile", "smoke", cache=cache, site=site, check=False, env=env)


def killed(proc: subprocess.CompletedProcess):
    assert proc.returncode == -signal.SIGKILL, \
        f"the build was not killed at the crash point (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


def rebuilt(cache: Path, site: Path) -> dict[str, str]:
    proc = run_build(cache, site)
    assert proc.returncode == 0, f"the rebuild failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return statuses(proc)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and staging folders that an interrupted build could leave behind."""
    found = [p for p in folder.rglob("*") if p.is_file() and re.search(r"\.tmp\d*$", p.name)]
    found += [p for p in (folder / "tmp").glob("*")] if (folder / "tmp").is_dir() else []
    return sorted(str(p.relative_to(folder)) for p in found)


@pytest.fixture
def cache_copy(smoke_build, tmp_path):
    """A private copy of the smoke build's cache, and a fresh site folder."""
    cache = tmp_path / "cache"
    shutil.copytree(smoke_build["cache"], cache)
    return cache, tmp_path / "site"


def forget(cache: Path, section: str):
    """Make ``section`` a miss, as if it had never been built with these settings."""
    shutil.rmtree(cache / "entries" / section)


# -- SIGKILL at each stage, then build again --------------------------------------------------

def killed_rebuilding(smoke_build, cache_copy, sid: str, point_of) -> tuple[Path, Path, dict]:
    """Make ``sid`` a miss in the cache copy and kill the build that recomputes it at ``point_of(clean)``, where
    ``clean`` is its record in the uninterrupted build. Returns (cache, site, clean)."""
    cache, site = cache_copy
    clean = record(smoke_build["cache"], sid)
    forget(cache, sid)
    killed(run_build(cache, site, point_of(clean)))
    return cache, site, clean


def assert_recovered(cache: Path, site: Path, reference_site: Path) -> None:
    """After the rebuild that follows a kill: no temporary file anywhere, every stored object whole, and the
    site byte for byte the one an uninterrupted build wrote."""
    assert leftovers(cache) == [] and leftovers(site) == []
    assert_store_intact(cache)
    assert_same_site(reference_site, site)


@pytest.mark.parametrize("point", ["section:{sid}", "write:{key}.json"],
                         ids=["outputs-staged", "record-being-written"])
def test_killed_section_leaves_nothing_and_rebuild_equals_clean_build(smoke_build, cache_copy, point):
    sid = "a1_9_hybrids"
    cache, site, _ = killed_rebuilding(smoke_build, cache_copy, sid,
                                       lambda clean: point.format(sid=sid, key=clean["key"]))
    assert not list((cache / "entries" / sid).glob("*.json")), "a killed section must leave no record"
    assert leftovers(cache), "the kill came too late to test anything: no temporary file was pending"

    assert rebuilt(cache, site)[sid] == "miss"
    assert_recovered(cache, site, smoke_build["site"])


def test_killed_right_after_a_record_is_renamed_keeps_a_complete_entry(smoke_build, cache_copy):
    sid = "a1_9_hybrids"
    cache, site, clean = killed_rebuilding(smoke_build, cache_copy, sid, lambda clean: f"renamed:{clean['key']}.json")
    key = clean["key"]
    # The section's staging folder is still there (the next build sweeps it); no write's temporary file is.
    assert [p for p in leftovers(cache) if not p.startswith("tmp/")] == [], "the rename left its temporary file"
    assert record(cache, sid)["key"] == key, "the renamed record must be complete"
    assert rebuilt(cache, site)[sid] == "hit"
    assert_recovered(cache, site, smoke_build["site"])


def test_killed_mid_training_resumes_to_the_same_model(smoke_build, cache_copy):
    sid = "b1_train_denoiser"

    def first_step_of_epoch_2(clean):  # epoch 1's resume checkpoint is on disk, the run is half done
        sha = next(o for o in clean["outputs"] if o["id"] == "data-history")["files"][0]["sha"]
        per_epoch = json.loads((smoke_build["cache"] / "objects" / sha[:2] / sha).read_text())["steps_per_epoch"]
        return f"step:{sid}:{per_epoch + 1}"

    cache, site, _ = killed_rebuilding(smoke_build, cache_copy, sid, first_step_of_epoch_2)
    assert list((cache / "scratch" / sid).rglob("resume.pt")), "epoch 1 was not checkpointed before the kill"

    assert rebuilt(cache, site)[sid] == "miss"
    assert leftovers(cache) == [] and leftovers(site) == []
    assert not (cache / "scratch" / sid).exists(), "resume state is removed once the section is cached"
    assert_store_intact(cache)
    checkpoints = lambda r: {o["id"]: o["files"] for o in r["outputs"] if o["id"].startswith("model-")}
    assert checkpoints(record(cache, sid)) == checkpoints(record(smoke_build["cache"], sid)), \
        "the resumed training did not reach the same weights"
    assert_same_site(smoke_build["site"], site)


@pytest.mark.parametrize("point", ["render", "write:part-a.html"])
def test_killed_render_leaves_no_partial_file_and_rebuild_equals_clean_build(smoke_build, cache_copy, point):
    cache, site = cache_copy
    killed(run_build(cache, site, point))
    files = site_files(site)
    assert files, "the kill came before the site was written"
    assert point == "render" or leftovers(site), "the kill came too late: no temporary file was pending"
    reference = site_files(smoke_build["site"])
    for name, data in files.items():
        assert name in reference and data == reference[name] or name.endswith(".tmp"), f"{name} is half-written"

    assert set(rebuilt(cache, site).values()) == {"hit"}
    assert leftovers(cache) == [] and leftovers(site) == []
    assert_same_site(smoke_build["site"], site)


def test_a_build_sweeps_only_what_dead_builds_left(cache_copy):
    cache, _ = cache_copy
    scratch = cache / "scratch" / "b2_train_time" / "0123456789abcdef"
    garbage = [cache / "tmp" / "tmpdead" / ("ab" * 32),  # a staging folder
               cache / "entries" / "a0_setup" / ".x.json.k2j3.tmp",  # atomic_write_bytes
               cache / "last" / ".a0_setup.json.9f8e.tmp",
               scratch / ".resume.pt.4242.tmp"]  # the trainer's own atomic write
    for path in garbage + [scratch / "resume.pt"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    keep = {p for p in cache.rglob("*") if p.is_file()} - set(garbage)
    with Store(cache).lock():
        pass
    assert {p for p in cache.rglob("*") if p.is_file()} == keep
    assert list((cache / "tmp").iterdir()) == [] and (scratch / "resume.pt").is_file()


def test_a_second_build_on_the_same_cache_fails_at_once_with_a_clear_message(cache_copy):
    cache, site = cache_copy
    with Store(cache).lock():
        assert not list(cache.glob("tmp/*"))
        with pytest.raises(BuildError, match="another build"):  # even within one process
            with Store(cache).lock():
                pass
        proc = run_build(cache, site)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert f"another build (process {os.getpid()}) is using the cache at {cache}" in message
    assert "--cache-dir" in message and "\n" not in message
    assert not site.exists()


# -- a corrupted cache ---------------------------------------------------------------------------

def test_corrupted_object_is_detected_and_its_section_rebuilt(smoke_build, cache_copy):
    cache, site = cache_copy
    sid = "a1_9_hybrids"
    sha = record(cache, sid)["outputs"][0]["files"][0]["sha"]
    path = cache / "objects" / sha[:2] / sha
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    result = rebuilt(cache, site)
    assert result[sid] == "miss" and {s for k, s in result.items() if k != sid} == {"hit"}
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, "the object was not restored"
    assert_store_intact(cache)
    assert_same_site(smoke_build["site"], site)


# -- a site that cannot be written ---------------------------------------------------------------

def load_cli():
    spec = importlib.util.spec_from_file_location("build_cli", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_build(cache: Path, site: Path) -> int:
    return load_cli().main(["--profile", "smoke", "--no-progress", "--cache-dir", str(cache), "--site-dir", str(site)])


def fail_writes_after_the_first(monkeypatch, failure):
    """Let the site's first file through, then make every write fail inside the real atomic writer."""
    from builder import cache as cache_module
    from builder.site import sitefiles

    real = sitefiles.atomic_write_bytes
    calls = []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 1:
            return real(path, data)
        with pytest.MonkeyPatch.context() as m:
            failure(m)
            return real(path, data)

    monkeypatch.setattr(sitefiles, "atomic_write_bytes", flaky)
    return cache_module


def disk_full(m):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    m.setattr(os, "fsync", fsync)  # the data went into the temporary file; the disk filled on the flush


def read_only(m):
    def mkstemp(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))

    m.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("failure, expected", [(disk_full, ["ENOSPC", "free some space"]),
                                               (read_only, ["EROFS", "read-only", "writable"])],
                         ids=["full", "read-only"])
def test_unwritable_site_is_a_clear_error_and_keeps_the_cache(smoke_build, cache_copy, monkeypatch, capsys,
                                                             failure, expected):
    cache, site = cache_copy
    fail_writes_after_the_first(monkeypatch, failure)
    assert cli_build(cache, site) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: the site was not written: cannot write the site into {site}: writing {site}/")
    assert all(word in err for word in expected) and "--site-dir" in err and "\n" not in err, err
    reference = site_files(smoke_build["site"])
    written = site_files(site)
    assert len(written) == 1 and all(reference[name] == data for name, data in written.items()), \
        "only the first file may be there, complete"

    monkeypatch.undo()
    assert cli_build(cache, site) == 0
    out = capsys.readouterr().out
    assert "0 of " in out and "everything came from the cache" in out, "the cached figures were lost"
    assert_same_site(smoke_build["site"], site)


def test_site_dir_that_is_a_file_is_a_clear_error(cache_copy, capsys):
    cache, site = cache_copy
    site.write_text("not a folder")
    assert cli_build(cache, site) == 1
    err = capsys.readouterr().err.strip()
    assert f"cannot write the site into {site}" in err and "EEXIST" in err and "--site-dir" in err, err
    assert site.read_text() == "not a folder"


def writes_into_read_only_folders() -> bool:
    """True for root (CAP_DAC_OVERRIDE), for whom chmod cannot make a folder unwritable."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            (Path(folder) / "probe").touch()
            return True
        except PermissionError:
            return False
        finally:
            os.chmod(folder, 0o755)


@pytest.mark.skipif(writes_into_read_only_folders(), reason="this user (root) writes into read-only folders anyway")
def test_read_only_site_dir_is_a_clear_error(smoke_build, cache_copy, capsys):
    cache, site = cache_copy
    shutil.copytree(smoke_build["site"], site)
    (site / "index.html").write_text("old")
    site.chmod(0o555)
    try:
        assert cli_build(cache, site) == 1
    finally:
        site.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert f"writing {site / 'index.html'} failed (EACCES" in err and "chmod" in err, err
    assert (site / "index.html").read_text() == "old" and leftovers(site) == []


# -- broken content and templates name the file and the line ------------------------------------

@pytest.fixture
def broken(smoke_build, tmp_path):
    """Copies of content/ and templates/ to break, built against the smoke cache (no generator runs)."""
    content, templates = tmp_path / "content", tmp_path / "templates"
    shutil.copytree(ROOT / "content", content)
    shutil.copytree(ROOT / "templates", templates)

    def insert(path: Path, after: int, text: str) -> int:
        """Insert ``text`` as a new line after line ``after``; returns its line number."""
        lines = path.read_text().split("\n")
        lines.insert(after, text)
        path.write_text("\n".join(lines))
        return after + 1

    def build_site() -> str:
        cli = load_cli()
        settings = app.Settings(cli.PROJECT, profile="smoke", cache_dir=smoke_build["cache"],
                                site_dir=tmp_path / "site", content_dir=content, templates_dir=templates)
        settings.resources["backend"] = cli.backends.resource(cli.parse_args(["--profile", "smoke"]), "cpu",
                                                              cli.PROJECT)
        try:
            result, summary = app.build(settings, progress_bar=False)
        except BuildError as exc:
            return str(exc)
        assert result.executed == [], "the smoke cache should have served every section"
        assert summary and "error" in summary, "the broken file was not noticed"
        assert not (tmp_path / "site").exists(), "nothing may be written when the content is wrong"
        return summary["error"]

    return content, templates, insert, build_site


def a_content_file(content: Path) -> Path:
    """A content file with a long body and no {% %} blocks, so any line of it is rendered."""
    return next(p for p in sorted(content.glob("*.md"))
                if p.read_text().count("\n") > 12 and "figure(" in p.read_text() and "{%" not in p.read_text())


@pytest.mark.parametrize("body_line, text, says", [
    (None, "this line has no colon", "the front matter line 'this line has no colon' is not 'key: value'"),
    (3, 'Here: {{ figure("no_such_figure") }}', "the figure 'no_such_figure' is not produced by any section"),
    (2, "{% if %}", "syntax error:"),
], ids=["malformed front matter", "unknown figure", "content syntax error"])
def test_a_broken_content_line_is_named_by_file_and_line(broken, body_line, text, says):
    """``body_line``: where in the body the broken line goes (None: into the front matter, after its first line)."""
    content, _, insert, build_site = broken
    path = a_content_file(content)
    body_start = path.read_text().split("\n").index("---", 1) + 2
    line = insert(path, 2 if body_line is None else body_start + body_line, text)
    error = build_site()
    assert f"{path}, line {line}: {says}" in error


def test_page_template_runtime_error_names_file_and_line(broken):
    _, templates, insert, build_site = broken
    line = insert(templates / "page.html", 3, "{{ no_such_variable }}")
    error = build_site()
    assert f"{templates / 'page.html'}, line {line}: UndefinedError: 'no_such_variable' is undefined" in error


def test_macro_syntax_error_names_file_and_line(broken):
    _, templates, insert, build_site = broken
    line = insert(templates / "macros.html", 8, "{% endif %}")
    error = build_site()
    assert f"{templates / 'macros.html'}, line {line}: syntax error:" in error


def test_macro_error_names_the_macro_line_and_the_content_line(broken):
    content, templates, insert, build_site = broken
    macros = templates / "macros.html"
    line = insert(macros, macros.read_text().split("\n").index('  <summary>How this was made</summary>') + 1,
                  "{{ section.no_such_field }}")
    error = build_site()
    assert re.search(rf"^{re.escape(str(macros))}, line {line}: UndefinedError: .*no_such_field.*, while rendering "
                     rf"{re.escape(str(content))}/[\w-]+\.md, line \d+\.", error), error
