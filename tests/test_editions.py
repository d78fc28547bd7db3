"""Two editions in one site: a build of one edition renders the others from their committed freezes.

The spec edition needs a GPU; here the smoke profile stands in for it, beside the committed cpu
freeze (the project's editions become ("smoke", "cpu") for the test, so smoke is the one readers
land on, as spec will be).
"""
import io
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

import backends
import build as cli
from builder import app
from builder.graph.registry import discover
from project import PROJECT
from tests.conftest import ROOT

FROZEN_CPU = ROOT / "frozen" / "cpu" / "freeze.json"
pytestmark = pytest.mark.skipif(not FROZEN_CPU.is_file(), reason="no committed cpu freeze (python build.py --freeze)")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        # The files a script fetches count too: the search index and engine, the live sampler's worker,
        # model, settings and each runtime's bundle and binary.
        for name in ("href", "src", "data-index", "data-engine", "data-worker", "data-model", "data-settings",
                     "data-bundle", "data-binary"):
            if attrs.get(name):
                self.hrefs.append(attrs[name])


def links(path: Path) -> list[str]:
    parser = _Links()
    parser.feed(path.read_text())
    return parser.hrefs


def without_edition_line(text: str) -> str:
    """A page without what says which edition it is: its edition line, and the path up to the one search
    index that serves every edition."""
    text = re.sub(r'<p class="edition-line">.*?</p>', "", text, flags=re.S)
    return text.replace('data-index="../search-index.js"', 'data-index="search-index.js"').replace(
        '"../static/vendor/', '"static/vendor/')


@pytest.fixture(scope="module")
def two_editions(smoke_build, tmp_path_factory):
    site = tmp_path_factory.mktemp("editions") / "site"
    project = replace(PROJECT, editions=("smoke", "cpu"))
    settings = app.Settings(project, profile="smoke", device="cpu", cache_dir=smoke_build["cache"], site_dir=site)
    settings.resources[backends.RESOURCE] = backends.resource(cli.parse_args(["--profile", "smoke"]), "cpu", project)
    result, summary = app.build(settings, progress_bar=False, out=io.StringIO())
    return site, result, summary


def test_the_other_edition_comes_from_its_freeze_without_computing(two_editions):
    _site, result, summary = two_editions
    assert result.ok and "error" not in summary
    cpu = {r.id: r.status for r in result.results if r.id.startswith("cpu/")}
    assert len(cpu) == len(discover(PROJECT.sections)) and set(cpu.values()) == {"frozen"}
    assert not [r.id for r in result.results if r.status in ("miss", "forced")]


def test_the_first_edition_is_at_the_root_and_the_other_in_its_folder(two_editions):
    site, _result, _summary = two_editions
    assert 'The <strong>smoke</strong> edition' in (site / "part-b.html").read_text()
    assert 'The <strong>cpu</strong> edition' in (site / "cpu" / "part-b.html").read_text()
    for page in ("index.html", "part-a.html", "part-b.html", "appendix.html"):
        ours = without_edition_line((site / "cpu" / page).read_text())
        committed = without_edition_line((ROOT / "site" / "cpu" / page).read_text())
        assert ours == committed, f"the cpu edition's {page} differs from the committed one beyond its edition line"


def test_every_page_links_to_the_same_page_of_the_other_edition_and_the_comparison(two_editions):
    site, _result, _summary = two_editions
    for page in ("index.html", "part-a.html", "part-b.html", "appendix.html"):
        root_line = re.search(r'<p class="edition-line">.*?</p>', (site / page).read_text(), re.S).group()
        cpu_line = re.search(r'<p class="edition-line">.*?</p>', (site / "cpu" / page).read_text(), re.S).group()
        assert f'href="cpu/{page}"' in root_line and 'href="compare.html"' in root_line
        assert f'href="../{page}"' in cpu_line and 'href="../compare.html"' in cpu_line


def test_the_vendored_runtimes_are_written_once_at_the_root(two_editions):
    """onnxruntime-web's binaries are tens of MB: the edition in a folder uses the root's static/vendor/."""
    site, _result, _summary = two_editions
    assert (site / "static" / "vendor" / "onnxruntime-web" / "ort-wasm-simd-threaded.wasm").is_file()
    assert not (site / "cpu" / "static" / "vendor").exists() and (site / "cpu" / "static" / "site.js").is_file()
    page = (site / "cpu" / "part-b.html").read_text()
    assert 'data-bundle="../static/vendor/onnxruntime-web/ort.wasm.bundle.min.mjs"' in page
    assert 'data-engine="../static/vendor/lunr.min.js"' in page


def test_no_link_of_either_edition_or_the_comparison_is_broken(two_editions):
    site, _result, _summary = two_editions
    pages = [p for p in site.rglob("*.html")]
    assert site / "compare.html" in pages and site / "cpu" / "part-b.html" in pages
    broken = []
    for page in pages:
        for href in links(page):
            if href.startswith(("http:", "https:", "mailto:", "#")):
                continue
            target = (page.parent / href.split("#")[0]).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(site)} -> {href}")
    assert broken == []


def test_the_comparison_puts_each_editions_numbers_side_by_side(two_editions):
    site, _result, _summary = two_editions
    text = (site / "compare.html").read_text()
    committed = (ROOT / "site" / "cpu" / "manifest.json").read_text()
    import json

    accuracy = next(f for s in json.loads(committed)["sections"].values() for f in s["figures"] if f["id"] == "b3_accuracy")
    cpu_default = next(row for row in accuracy["table"]["rows"] if row[0] == "5")
    section = text[text.index('id="accuracy"'):text.index('id="frechet"')]
    assert f"<td>{cpu_default[2]}</td>" in section, "the cpu edition's accuracy at γ = 5"
    assert text.count('class="pixelated"') == 2, "one final sample grid per edition"
    assert "s</td>" in text[text.index('id="settings"'):text.index('id="accuracy"')], "training times from the freezes"


def test_one_search_index_at_the_root_finds_the_pages_of_both_editions(two_editions):
    import json

    site, _result, _summary = two_editions
    assert 'data-index="../search-index.js"' in (site / "cpu" / "part-a.html").read_text()
    assert 'data-index="search-index.js"' in (site / "part-a.html").read_text()
    assert not (site / "cpu" / "search-index.js").exists()
    text = (site / "search-index.js").read_text()
    docs = json.loads(text[text.index("{"):text.rindex("}") + 1])["docs"]
    assert docs["part-a.html#cfg"]["edition"] == "smoke" and docs["cpu/part-a.html#cfg"]["edition"] == "cpu"
    assert {ref.split("#")[0] for ref in docs} == {f"{folder}{page}" for folder in ("", "cpu/") for page in
                                                 ("index.html", "part-a.html", "part-b.html", "appendix.html")}
