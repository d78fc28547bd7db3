"""The site's search: an index of every section and subsection of every page (of every edition), made
at build time with lunr.py, which writes the index format of lunr.js 2.3 (vendored in the static files).

The index is a script (``search-index.js`` at the site's root) rather than JSON, so that pages opened
from ``file://`` can load it too, where a browser refuses to ``fetch`` a file. Pages load it, and lunr.js,
only when the reader starts a search.
"""
from __future__ import annotations

import html.parser
import json
import re
from typing import Any, Iterable

from ..fingerprint import sha256_bytes
from . import memo

INDEX_FILE = "search-index.js"
_SKIPPED = {"math", "script", "style", "details", "svg"}  # MathML is symbols, provenance is hashes
_H3 = re.compile(r'<h3 id="([^"]+)"[^>]*>(.*?)</h3>', re.S)


class _Text(html.parser.HTMLParser):
    """The words of an HTML fragment as a reader reads them (formulas, scripts and provenance left out)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIPPED:
            self._skipping += 1

    def handle_endtag(self, tag):
        if tag in _SKIPPED and self._skipping:
            self._skipping -= 1

    def handle_data(self, data):
        if not self._skipping:
            self.words.append(data)


def plain_text(fragment: str) -> str:
    parser = _Text()
    parser.feed(fragment)
    parser.close()
    return re.sub(r"\s+", " ", " ".join(parser.words)).strip()


def page_documents(sections: Iterable[dict[str, Any]], href: str, page_title: str, edition: str) -> list[dict]:
    """One document per section of a page and per ``###`` heading within it, each linking to its anchor.
    A process keeps each section's documents under the hash of its HTML (builder.site.memo): a live preview's
    edit parses only the section it changed."""
    docs = []
    for sec in sections:
        fragment = str(sec["html"])
        key = ("search-docs", sha256_bytes(fragment.encode("utf-8")), sec["id"], sec["title"], href, page_title, edition)
        docs += memo.get(key, lambda: _section_documents(sec["id"], sec["title"], fragment, href, page_title, edition))
    return docs


def _section_documents(anchor: str, title: str, fragment: str, href: str, page_title: str, edition: str) -> list[dict]:
    parts = _H3.split(fragment)  # [intro, id, heading, body, id, heading, body, ...]
    pieces = [(anchor, title, parts[0])]
    pieces += [(parts[i], f"{title}: {plain_text(parts[i + 1])}", parts[i + 2]) for i in range(1, len(parts), 3)]
    docs = []
    for piece_anchor, piece_title, body in pieces:
        text = plain_text(body)
        if text:
            docs.append({"id": f"{href}#{piece_anchor}", "title": piece_title.strip(),
                         "page": page_title, "edition": edition, "text": text})
    return docs


def index_script(docs: list[dict]) -> bytes:
    """``search-index.js``: the lunr index of ``docs`` (titles weigh ten times the text) and, by each
    document's link, what a result shows."""
    from lunr import lunr

    # (lunr cannot index nothing; a site without text gets an empty index, and the box finds nothing.)
    index = lunr(ref="id", fields=[{"field_name": "title", "boost": 10}, "text"], documents=docs) if docs else None
    shown = {d["id"]: {k: d[k] for k in ("title", "page", "edition", "text")} for d in docs}
    payload = json.dumps({"index": index.serialize() if index else None, "docs": shown}, ensure_ascii=False,
                         sort_keys=True, separators=(",", ":"))
    return f"window.SITE_SEARCH = {payload};\n".encode("utf-8")
