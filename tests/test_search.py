"""The site's search index: what it holds, that lunr finds sections in it, and the vendored lunr.js."""
import json
from pathlib import Path

import pytest
from lunr.index import Index

from builder.site.search import index_script, page_documents, plain_text

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "templates" / "static" / "vendor"


def _load(script: bytes) -> dict:
    text = script.decode("utf-8")
    assert text.startswith("window.SITE_SEARCH = ") and text.endswith(";\n")
    return json.loads(text[len("window.SITE_SEARCH = "):-2])


def test_plain_text_keeps_the_words_and_leaves_out_formulas_scripts_and_provenance():
    fragment = ('<p>Noise <span class="math"><math><mi>x</mi></math></span> is <em>added</em>&nbsp;here.</p>'
                '<script>var hidden = 1;</script><details><summary>How this was made</summary>key abc</details>'
                '<figcaption>Figure 2 A caption.</figcaption>')
    assert plain_text(fragment) == "Noise is added here. Figure 2 A caption."


def test_each_section_and_each_of_its_subheadings_is_a_document():
    sections = [{"id": "cfg", "title": "1.6 Guidance", "html": '<p>Intro words.</p>'
                 '<h3 id="cfg-scale"><a class="anchor" href="#cfg-scale">The scale</a></h3><p>Gamma matters.</p>'
                 '<h3 id="cfg-empty">Nothing below</h3>'},
                {"id": "empty", "title": "2 Empty", "html": ""}]
    docs = page_documents(sections, "cpu/part-a.html", "Part A", "cpu")
    assert docs == [
        {"id": "cpu/part-a.html#cfg", "title": "1.6 Guidance", "page": "Part A", "edition": "cpu", "text": "Intro words."},
        {"id": "cpu/part-a.html#cfg-scale", "title": "1.6 Guidance: The scale", "page": "Part A", "edition": "cpu",
         "text": "Gamma matters."}]


def test_the_index_finds_stemmed_words_weighs_titles_and_is_the_same_bytes_every_time():
    docs = [{"id": "a.html#one", "title": "Sampling", "page": "A", "edition": "cpu", "text": "The loop denoises images."},
            {"id": "a.html#two", "title": "Training", "page": "A", "edition": "cpu",
             "text": "Sampling is mentioned here, once, among training words."},
            {"id": "cpu/a.html#one", "title": "Guidance", "page": "A", "edition": "spec", "text": "Guided sampling."}]
    script = index_script(docs)
    assert script == index_script(docs)
    data = _load(script)
    assert data["docs"]["cpu/a.html#one"] == {"title": "Guidance", "page": "A", "edition": "spec", "text": "Guided sampling."}
    index = Index.load(data["index"])
    hits = [hit["ref"] for hit in index.search("sampled")]  # stemmed: sampled ~ sampling
    assert hits[0] == "a.html#one" and set(hits) == {"a.html#one", "a.html#two", "cpu/a.html#one"}
    assert [hit["ref"] for hit in index.search("denoise")] == ["a.html#one"]


def test_the_committed_site_has_an_index_of_every_page():
    data = _load((ROOT / "site" / "search-index.js").read_bytes())
    pages = {ref.split("#")[0] for ref in data["docs"]}
    # One index at the root serves both editions: the spec edition's pages and the cpu edition's folder.
    assert pages == {f"{folder}{page}" for folder in ("", "cpu/")
                     for page in ("index.html", "part-a.html", "part-b.html", "appendix.html")}
    assert data["docs"]["part-a.html#cfg"]["edition"] == "spec" and data["docs"]["cpu/part-a.html#cfg"]["edition"] == "cpu"
    assert "part-a.html#cfg" in data["docs"] and "part-b.html#class-sampling" in data["docs"]
    hits = [hit["ref"] for hit in Index.load(data["index"]).search("classifier-free guidance")]
    assert sorted(hits[:2]) == ["cpu/part-a.html#cfg", "part-a.html#cfg"], "the same section leads in each edition"


def test_the_vendored_lunr_is_npms_lunr_2_3_9_with_its_licence():
    vendored = (VENDOR / "lunr.min.js").read_bytes()
    assert b"lunr - http://lunrjs.com - A bit like Solr, but much smaller and not as bright - 2.3.9" in vendored[:200]
    assert "Permission is hereby granted, free of charge" in (VENDOR / "lunr.LICENSE.txt").read_text()
    npm = ROOT / "node_modules" / "lunr" / "lunr.min.js"
    if not npm.is_file():
        pytest.skip("node_modules/lunr is not installed (npm ci); the copy is checked against it where it is")
    assert vendored == npm.read_bytes(), "templates/static/vendor/lunr.min.js must be npm's lunr@2.3.9 unchanged"


def test_a_site_without_text_gets_an_empty_index():
    assert _load(index_script([])) == {"index": None, "docs": {}}
