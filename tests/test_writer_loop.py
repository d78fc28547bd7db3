"""The writer's loop: what a rebuild with nothing (or one file) changed may skip, and that it never skips
what changed. Digests of unchanged files come from the stat cache, section declarations from its memo
(no section module, and so no torch, imported until a section runs), the render from its stamp, and a
warm process's render from what it kept (builder.site.memo)."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.site import memo, passes, render, rendered
from builder import statcache
from builder.fingerprint import sha256_bytes
from tests.conftest import ROOT


def aged(path: Path, seconds: float = 10.0) -> None:
    """Make a file look modified ``seconds`` ago, past the stat cache's racy window."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_an_unchanged_file_is_not_read_again_and_a_changed_one_always_is(tmp_path):
    cache = statcache.StatCache(tmp_path / statcache.FILE)
    f = tmp_path / "a.txt"
    f.write_bytes(b"one")
    aged(f)
    reads = []

    def digest(data):
        reads.append(data)
        return sha256_bytes(data)

    assert cache.digest(f, "sha256", digest) == sha256_bytes(b"one")
    assert cache.digest(f, "sha256", digest) == sha256_bytes(b"one") and len(reads) == 1
    f.write_bytes(b"two")  # same size, new time: read again
    aged(f, 5)
    assert cache.digest(f, "sha256", digest) == sha256_bytes(b"two") and len(reads) == 2
    cache.save()
    again = statcache.StatCache(tmp_path / statcache.FILE)  # what a later build finds on disk
    assert again.digest(f, "sha256", digest) == sha256_bytes(b"two") and len(reads) == 2


def test_a_file_modified_just_before_it_was_hashed_is_never_trusted(tmp_path):
    """git's racily-clean rule: a second write in the same clock tick keeps size and time, so a file whose
    time is that close to its hash is hashed again until it is older."""
    cache = statcache.StatCache(None)
    f = tmp_path / "a.txt"
    f.write_bytes(b"one")
    reads = []
    cache.digest(f, "sha256", lambda d: reads.append(d) or sha256_bytes(d))
    st = f.stat()
    f.write_bytes(b"six")  # the same size, and (forced here) the same time: indistinguishable by stat
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.digest(f, "sha256", lambda d: reads.append(d) or sha256_bytes(d)) == sha256_bytes(b"six")


def _python(code: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


LIST = """
import sys
sys.path.insert(0, ".")
import build
build.main(["--list", "--cache-dir", sys.argv[1] if len(sys.argv) > 1 else {cache!r}])
print("TORCH", "torch" in sys.modules, "SECTIONS", sorted(m for m in sys.modules if m.startswith("generators.")))
print("HEAVY", sorted(m for m in ("numpy", "PIL", "jinja2", "markdown", "torch") if m in sys.modules))
"""


def test_listing_imports_no_section_module_once_their_declarations_are_remembered(tmp_path):
    code = LIST.format(cache=str(tmp_path / "cache"))
    first = _python(code).splitlines()[-2]
    second, heavy = _python(code).splitlines()[-2:]
    assert "SECTIONS []" not in first, "the first listing imports the modules to read their declarations"
    assert second == "TORCH False SECTIONS []", second
    assert heavy == "HEAVY []", "a listing needs neither numpy, Pillow (figures), Jinja nor Markdown (pages)"


NO_OP = """
import sys
sys.path.insert(0, ".")
import build
code = build.main(["--no-progress", "--cache-dir", sys.argv[1], "--site-dir", sys.argv[2]])
print("HEAVY", code, sorted(m for m in ("numpy", "PIL", "jinja2", "markdown", "torch") if m in sys.modules))
"""


def test_a_build_with_nothing_to_compute_or_render_imports_nothing_heavy(tmp_path):
    """Both editions from their freezes, the pages as the last render left them: the figures' writers, the
    templates' engine and torch are never imported (the render stamp and the stat cache say enough)."""
    args = [str(tmp_path / "cache"), str(tmp_path / "site")]
    done = subprocess.run([sys.executable, "-c", NO_OP, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "'jinja2'" in done.stdout.splitlines()[-1], done.stdout[-2000:] + done.stderr[-2000:]
    again = subprocess.run([sys.executable, "-c", NO_OP, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.stdout.splitlines()[-1] == "HEAVY 0 []", again.stdout[-2000:] + again.stderr[-2000:]


def test_an_edited_section_module_is_imported_again_for_its_declaration(tmp_path):
    """A declaration is remembered under the digest of the module's code: an edit is read from the code."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".cache", "site", "node_modules", ".git",
                                                               "frozen", "data"))
    code = LIST.format(cache=str(tmp_path / "cache"))
    _python(code, copy)
    module = copy / "generators" / "b1_2_noising.py"
    module.write_text(module.read_text().replace('title="Part B 1.2', 'title="Part B 1.2 (edited)', 1))
    out = _python(code, copy)
    assert "Part B 1.2 (edited)" in out and "'generators.b1_2_noising'" in out.splitlines()[-2]


@pytest.fixture
def site_of(smoke_build, tmp_path):
    """A smoke site rendered from copies of the content and the templates, which a test may edit."""
    import io

    import backends
    import build as cli
    from builder import app
    from project import PROJECT

    shutil.copytree(ROOT / "content", tmp_path / "content")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    cache = tmp_path / "cache"
    shutil.copytree(smoke_build["cache"], cache)

    def build(defer_index=False):
        settings = app.Settings(PROJECT, profile="smoke", device="cpu", cache_dir=cache, site_dir=tmp_path / "site",
                                content_dir=tmp_path / "content", templates_dir=tmp_path / "templates",
                                defer_index=defer_index)
        app.resolve(settings)
        settings.resources[backends.RESOURCE] = backends.resource(cli.parse_args(["--profile", "smoke"]), "cpu", PROJECT)
        result, summary = app.build(settings, progress_bar=False, out=io.StringIO())
        assert result.ok and "error" not in summary, summary
        return summary

    build.dir = tmp_path
    return build


def test_a_rebuild_with_nothing_changed_renders_nothing_and_every_kind_of_change_is_rendered(site_of, monkeypatch):
    site = site_of.dir / "site"
    assert site_of()["changed"] > 0
    calls = []
    real = render.render_editions
    monkeypatch.setattr("builder.site.render.render_editions", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert site_of()["changed"] == 0 and calls == [], "nothing changed: the render is skipped"

    blur = site_of.dir / "content" / "a12-blur.md"
    blur.write_text(blur.read_text().replace("in numbers.", "in numbers. AN EDITED SENTENCE."))
    assert site_of()["changed"] > 0 and "AN EDITED SENTENCE" in (site / "part-a.html").read_text()

    page = site_of.dir / "templates" / "page.html"
    page.write_text(page.read_text().replace("</footer>", "<p>AN EDITED TEMPLATE</p></footer>"))
    site_of()
    assert all("AN EDITED TEMPLATE" in (site / p).read_text() for p in ("index.html", "part-b.html"))

    (site / "part-b.html").write_text("damaged")  # a site file changed behind the build's back
    site_of()
    assert "AN EDITED TEMPLATE" in (site / "part-b.html").read_text()
    (site / "appendix.html").unlink()
    site_of()
    assert (site / "appendix.html").is_file()
    (site / "stray.html").write_text("not the build's")
    site_of()
    assert not (site / "stray.html").exists()
    assert len(calls) == 5


def test_the_render_stamp_sees_a_changed_figure_and_engine_code(tmp_path):
    from builder.project import Page
    from builder.site.edition import Edition

    (tmp_path / "content").mkdir()
    (tmp_path / "templates").mkdir()
    manifest = {"build": {}, "sections": {"s": {"figures": [{"id": "f", "files": [{"sha": "a" * 64}]}]}}}
    edition = Edition("smoke", manifest, lambda sha: tmp_path / sha)
    pages = (Page("index", "index.html", "Overview", "Overview"),)
    first = rendered.inputs_digest([edition], pages, tmp_path / "content", tmp_path / "templates")
    other = Edition("smoke", json.loads(json.dumps(manifest).replace("a" * 64, "b" * 64)), edition.object_path)
    assert rendered.inputs_digest([other], pages, tmp_path / "content", tmp_path / "templates") != first
    # The engine's own code is an input too (a change to how pages are written must write them).
    assert {"site/render.py", "context.py"} <= {p.relative_to(rendered.ENGINE).as_posix()
                                                for p in rendered.ENGINE.rglob("*.py")}


def test_a_warm_process_renders_again_only_the_content_file_that_changed(site_of, monkeypatch):
    """What the live preview does between saves: the same bytes as a render from nothing, having rendered
    one content file per edition anew."""
    site = site_of.dir / "site"
    site_of()
    monkeypatch.setattr(rendered, "unchanged", lambda *a: None)  # render every time, as after an edit
    fresh = []
    real = passes._render_content_now
    monkeypatch.setattr(passes, "_render_content_now", lambda cf, *a: fresh.append(cf.path.name) or real(cf, *a))
    blur = site_of.dir / "content" / "a12-blur.md"
    blur.write_text(blur.read_text().replace("in numbers.", "in numbers. WARM."))
    site_of()
    assert fresh == ["a12-blur.md"], fresh
    warm = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    memo.clear()
    shutil.rmtree(site)
    site_of()
    cold = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert warm == cold and len(fresh) > 1


def test_the_preview_writes_an_edit_into_the_page_first_and_the_search_index_after_it(site_of, monkeypatch):
    """--serve renders with defer_index: the page shows the edit at once, beside the last search index, and
    the summary's ``later`` writes the index a render from nothing writes; then the render is remembered."""
    site = site_of.dir / "site"
    site_of()
    before = (site / "search-index.js").read_bytes()
    blur = site_of.dir / "content" / "a12-blur.md"
    blur.write_text(blur.read_text().replace("in numbers.", "in numbers. QUIXOTIC ZEPHYR."))
    summary = site_of(defer_index=True)
    assert "QUIXOTIC ZEPHYR" in (site / "part-a.html").read_text()
    assert (site / "search-index.js").read_bytes() == before, "the index waits for later()"
    summary["later"]()
    index = (site / "search-index.js").read_bytes()
    assert b"QUIXOTIC ZEPHYR" in index
    calls = []
    real = render.render_editions
    monkeypatch.setattr("builder.site.render.render_editions", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert site_of()["changed"] == 0 and calls == [], "the render, index included, was remembered"
    memo.clear()
    shutil.rmtree(site)
    site_of()
    assert (site / "search-index.js").read_bytes() == index
    assert "later" not in site_of(defer_index=True), "nothing to defer when the index is known"
