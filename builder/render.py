"""content/*.md + templates/ + the build manifest -> site/, in passes.

1. read: the content files and their front matter, in reading order;
2. references: each content file's Jinja runs once with a ``figure()`` that only records where
   each figure is shown first (page, heading), so the landing page's teaser can link anywhere, and
   the labels that ``ref()`` links to are numbered in reading order: figures, labelled equations
   (``$$ ... $$ (eq-name)``, MyST's syntax) and sections, each per page;
3. render: Jinja (so prose can name the figures and parameters of the build), then
   Python-Markdown with math protected by arithmatex, math to MathML, the page template;
4. write: every file once, atomically, only where its bytes changed.

Figures are placed by id and math is MathML, so the site needs no script or network to show them.
"""
from __future__ import annotations

import errno
import html
import json
import os
import re
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import markdown
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateSyntaxError, select_autoescape
from markupsafe import Markup

from . import BuildError, memo
from .atomic import atomic_write_bytes
from .edition import Edition
from .faults import crash_point
from .fingerprint import canonical_json, hash_value, sha256_bytes, sha256_known
from .project import Page
from .search import INDEX_FILE, index_script, page_documents


_MATH = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
_SLOT = "FIGURESLOT{}X"
_SLOT_RE = re.compile(r"(?:<p>)?FIGURESLOT(\d+)X(?:</p>)?")
# A labelled display equation: $$ ... $$ (eq-name), the label after the closing $$ as in MyST (Quarto's
# {#eq-name} would open a Jinja comment).
_EQUATION = re.compile(r"\$\$((?:(?!\$\$).)+?)\$\$[ \t]*\((eq-[A-Za-z0-9_-]+)\)", re.S)
_STRAY_LABEL = re.compile(r"\$\$[ \t]*\((eq-[^)\n]*)\)")
LABEL_KINDS = {"fig": "a figure id", "eq": "an equation label ($$ ... $$ (eq-name))",
               "sec": "a content file's id (its front matter's id, or its file name after the first '-')"}


@dataclass
class ContentFile:
    path: Path
    meta: dict[str, str]
    body: str
    body_line: int = 1  # the file's line number of the body's first line, for error messages
    meta_lines: dict[str, int] = field(default_factory=dict)  # front matter key -> its line

    @property
    def page(self) -> str:
        return self.meta["page"]

    @property
    def order(self) -> float:
        return float(self.meta.get("order", "0"))

    @property
    def anchor(self) -> str:
        return self.meta.get("id") or self.path.stem.split("-", 1)[-1]


REFERENCE_FIELDS = ("authors", "title", "where", "year", "url")


def read_references(content_dir: Path) -> dict[str, dict[str, Any]]:
    """``content/references.toml``: one table per work, ``[key]`` with authors, title, where, year and
    url, numbered in the file's order; content cites them with ``cite("key")``."""
    import tomllib

    path = Path(content_dir) / "references.toml"
    if not path.is_file():
        return {}
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{path}: not valid TOML ({exc}). Each reference is a table: [key] followed by "
                         f"{' = ..., '.join(REFERENCE_FIELDS)} = ... lines.") from None
    for number, (key, entry) in enumerate(entries.items(), start=1):
        missing = [f for f in REFERENCE_FIELDS if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise BuildError(f"{path}: the reference [{key}] lacks {', '.join(missing)}; give every reference "
                             f"{', '.join(REFERENCE_FIELDS)}.")
        entry["number"], entry["key"] = number, key
    return entries


def read_content(content_dir: Path, pages: tuple[Page, ...]) -> list[ContentFile]:
    """The content files, each with its front matter, in reading order (by page, then ``order``)."""
    names = [page.name for page in pages]
    files = []
    for path in sorted(Path(content_dir).glob("*.md")):
        text = path.read_text(encoding="utf-8")
        meta: dict[str, str] = {}
        lines: dict[str, int] = {}
        body_line = 1
        if text.startswith("---\n"):
            end = text.find("\n---\n", 3)  # from 3: an empty front matter ("---\n---\n") is closed too
            if end < 0:
                raise BuildError(f"{path}, line 1: the front matter that starts here is never closed; add a "
                                 f"line '---' after its last 'key: value' line.")
            for number, line in enumerate(text[4:end].splitlines(), start=2):
                if line.strip():
                    key, sep, value = line.partition(":")
                    if not sep:
                        raise BuildError(f"{path}, line {number}: the front matter line {line!r} is not "
                                         f"'key: value'; write it as 'key: value' or end the front matter "
                                         f"with a '---' line before it.")
                    meta[key.strip()] = value.strip()
                    lines[key.strip()] = number
            body_line = text.count("\n", 0, end + 5) + 1
            text = text[end + 5:]
        meta.setdefault("page", names[0])  # the landing page
        if meta["page"] not in names:
            raise BuildError(f"{path}, line {lines['page']}: unknown page {meta['page']!r}; use one of "
                             f"{', '.join(names)}.")
        if "title" not in meta:
            raise BuildError(f"{path}, line 1: the front matter needs a 'title: ...' line (front matter is "
                             f"'key: value' lines between two '---' lines at the top of the file).")
        files.append(ContentFile(path, meta, text, body_line, lines))
    return sorted(files, key=lambda c: (names.index(c.page), c.order, c.path.name))


def latex_to_mathml(latex: str, display: bool) -> str:
    from latex2mathml.converter import convert

    return convert(latex, display="block" if display else "inline")


def _math_element(tex: str, display: bool, where: str, label: dict[str, Any] | None = None) -> str:
    """LaTeX as MathML in its wrapper; a labelled display equation also carries its id and number."""
    try:
        mathml = latex_to_mathml(tex, display)
    except Exception as exc:  # latex2mathml raises many types for bad input
        raise BuildError(f"{where}: cannot render the math {tex!r} ({exc}); fix the LaTeX.") from None
    # MathML speaks for itself to screen readers; the source stays on the wrapper for authors and tests.
    tag = "div" if display else "span"
    source = html.escape(tex, quote=True)
    if label is None:
        return f'<{tag} class="math math-{"display" if display else "inline"}" data-tex="{source}">{mathml}</{tag}>'
    return (f'<div class="math math-display equation" id="{label["anchor"]}" data-tex="{source}">{mathml}'
            f'<span class="eq-number">({label["number"]})</span></div>')


def _render_math(fragment: str, where: str) -> str:
    def replace(match: re.Match) -> str:
        tex = html.unescape(match.group(2)).strip()
        tex = tex[2:-2].strip() if tex[:2] in ("\\(", "\\[") else tex
        return _math_element(tex, match.group(1) == "div", where)

    return _MATH.sub(replace, fragment)


VENDOR = "static/vendor/"


@dataclass
class Site:
    """What the passes share: the figures by id (each file with the ``path`` it has in the site),
    where each figure is first shown, and the figures numbered so far on each page."""

    manifest: dict[str, Any]
    pages: dict[str, Page]
    object_path: Callable[[str], Path] | None = None  # where a section's data outputs are read from
    figures: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # id -> (section, record)
    shown: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> where the report shows it first
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # "fig-x", "eq-x", "sec-x" -> Label fields
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (page, kind) -> labels numbered so far
    references: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> entry, from references.toml
    references_at: str | None = None  # the page file that lists them, found by the reference pass
    # Where the pages find static/vendor/: third-party runtimes (tens of MB) are written once, at the
    # site's root, and the editions in folders share them.
    vendor: str = VENDOR
    templates: str = ""  # the digest of the templates folder, for the renders kept between builds (memo)

    def __post_init__(self):
        for sid, sec in self.manifest["sections"].items():
            for fig in sec["figures"]:
                files = [{**f, "path": figure_filename(fig, f), **self._size(f)} for f in fig.get("files", [])]
                strip = next((f for f in files if f["role"] == "strip"), None)
                if strip is not None and fig.get("frame_size"):
                    width, height = fig["frame_size"]
                    files.append({"role": "poster", "ext": "png", "path": f"figures/{fig['id']}-poster.png",
                                  "poster_of": strip["sha"], "frames": fig["frames"], "width": width,
                                  "height": height})
                if fig.get("meta", {}).get("display") == "hybrid":
                    files += _far_views(fig, files, sec["params"].get("seen_small_px"))
                self.figures[fig["id"]] = (sid, {**fig, "files": files})
        self.digest = hash_value(self.manifest)  # what the manifest decides, for memo keys

    def state(self) -> str:
        """The digest of what the reference pass has found so far (labels, where figures are shown, where the
        references are listed): with the manifest and a file's text, it decides the file's HTML."""
        return hash_value({"labels": self.labels, "shown": self.shown, "at": self.references_at,
                           "references": self.references, "vendor": self.vendor})

    def _size(self, file: dict[str, Any]) -> dict[str, int]:
        """An image's intrinsic width and height, for its <img> tag: a browser that knows them lays the
        page out before the (lazy) images arrive, so nothing below moves and links land."""
        if self.object_path is None or "sha" not in file:
            return {}
        return memo.get(("size", file["sha"], file["ext"]), lambda: _intrinsic_size(self.object_path(file["sha"]),
                                                                                     file["ext"]))


def _intrinsic_size(path: Path, ext: str) -> dict[str, int]:
    """What ``Site._size`` says of one stored object (its bytes decide it: objects are named by their hash)."""
    if ext not in ("png", "gif"):
        return {"bytes": path.stat().st_size}
    width, height = png_size(path)
    return {"width": width, "height": height, "bytes": path.stat().st_size}


def _far_views(fig: dict[str, Any], files: list[dict[str, Any]], judged_px: int | None) -> list[dict[str, Any]]:
    """A hybrid image's far views: each of its images area-averaged down to fewer pixels (see
    ``area_average_png``), as an eye at a distance resolves it: from the size the section's classifier read
    it at (``judged_px``) up to its own, in steps of two. The page shows them enlarged pixel by pixel (the "from afar" copies, and the size slider
    below the image's own size), never the browser's own downscaling or a nearest-neighbour copy of the
    full image, which keep the high frequencies that distance removes. Derived from the stored bytes at
    render time, like the posters, so they join no key."""
    views, seen = [], set()
    for f in files:
        if f["ext"] != "png" or "width" not in f or f["sha"] in seen:
            continue
        seen.add(f["sha"])
        sizes = range(judged_px or 4, f["width"], 2)  # from what the classifier read up to the image itself
        for px in sizes:
            views.append({"role": f"{f['role']}-{px}px", "ext": "png", "shrunk_of": f["sha"], "px": px,
                          "path": f"figures/{fig['id']}-{f['role']}-{px}px.png", "width": px,
                          "height": max(1, round(f["height"] * px / f["width"])), "judged": px == judged_px})
    return views


def figure_filename(fig: dict[str, Any], file: dict[str, Any]) -> str:
    """The one rule for a figure file's place in the site; templates read it as ``file.path``."""
    role = "" if file["role"] in ("image", "animation") else f"-{file['role']}"
    return f"figures/{fig['id']}{role}.{file['ext']}"


def render_site(manifest: dict[str, Any], pages: tuple[Page, ...], content_dir: Path, templates_dir: Path,
                out_dir: Path, object_path: Callable[[str], Path]) -> dict[str, Any]:
    """Write the whole site, one edition, into ``out_dir``; see ``render_editions``."""
    return render_editions([Edition(manifest["build"]["profile"], manifest, object_path)], pages, content_dir,
                           templates_dir, out_dir)


def render_editions(editions: list[Edition], pages: tuple[Page, ...], content_dir: Path, templates_dir: Path,
                    out_dir: Path, defer_index: bool = False) -> dict[str, Any]:
    """Write the whole site into ``out_dir``: every edition in its folder, each page linking to the same
    page of the others, and a comparison page (``compare.html``, where the templates have one) when there
    are several; returns a summary (pages, files, bytes).

    Every file is written atomically and only when its bytes change, so an interrupted render
    leaves no half-written file and a warm rebuild touches nothing.

    ``defer_index`` (the live preview): where the search index must be made anew (a second of lunr) and
    the folder has one, the pages are written first, beside the last index, and the summary's ``later``
    writes the new index; the reader sees an edit before the search knows it.
    """
    content = read_content(content_dir, pages)
    templates_dir = Path(templates_dir)
    written: dict[str, bytes] = {}
    known: dict[str, str] = {}  # the sha256 of written files copied from content-addressed sources
    warnings: list[str] = []
    compare = len(editions) > 1 and (templates_dir / "compare.html").is_file()
    env, macros = _environment(templates_dir)  # a broken template fails first
    references = read_references(content[0].path.parent) if content else {}
    templates = hash_value({p.relative_to(templates_dir).as_posix(): sha256_known(p)
                            for p in sorted(templates_dir.rglob("*")) if p.is_file()})
    # One Site per edition: its figures, with each image's size read once, serve its pages and the views
    # of it that the other editions' pages and the comparison show.
    sites = [Site(e.manifest, {page.name: page for page in pages}, e.object_path, references=references,
                  vendor=("../" if e.folder else "") + VENDOR, templates=templates) for e in editions]
    search_docs: list[dict[str, Any]] = []
    for edition, site in zip(editions, sites):
        files, hashes, notes, docs = _edition_files(edition, site, editions, sites, content, env, macros,
                                                    templates_dir, compare)
        written.update({edition.folder + rel: data for rel, data in files.items()})
        known.update({edition.folder + rel: sha for rel, sha in hashes.items()})
        warnings += [f"{edition.name} edition: {note}" if len(editions) > 1 else note for note in notes]
        search_docs += docs
    # One index at the root, for every edition's pages.
    index_key, later = ("search", hash_value(search_docs)), None
    last_index = Path(out_dir) / INDEX_FILE
    if defer_index and not memo.kept(index_key) and last_index.is_file():
        written[INDEX_FILE] = last_index.read_bytes()  # kept as it is until ``later`` replaces it
        index_bytes = lambda: memo.get(index_key, lambda: index_script(search_docs))  # noqa: E731
        later = lambda: _write_one(Path(out_dir), INDEX_FILE, index_bytes())  # noqa: E731
    else:
        written[INDEX_FILE] = memo.get(index_key, lambda: index_script(search_docs))
    if compare:
        try:
            written["compare.html"] = env.get_template("compare.html").render(
                editions=[_edition_view(e, site, editions[0]) for e, site in zip(editions, sites)],
                pages=pages).encode("utf-8")
        except Exception as exc:
            raise BuildError(template_failure(exc, templates_dir)) from None
    changed, removed = _write(written, Path(out_dir), known)
    sizes = {"pages": 0, "figures": 0, "static": 0, "other": 0}
    folders = [e.folder for e in editions if e.folder]
    for rel, data in written.items():
        inner = next((rel[len(f):] for f in folders if rel.startswith(f)), rel)
        kind = "pages" if inner.endswith(".html") else Path(inner).parts[0]  # figures/..., static/... or a file
        sizes[kind if kind in sizes else "other"] += len(data)
    summary = {"files": len(written), "changed": changed, "removed": removed,
               "bytes": sum(len(d) for d in written.values()), "sizes": sizes, "warnings": warnings}
    return {**summary, "later": later} if later is not None else summary


def _edition_view(edition: Edition, site: Site, seen_from: Edition) -> dict[str, Any]:
    """What a template needs to show an edition (``site``: its figures) and link to it from ``seen_from``'s
    pages."""
    sections = edition.manifest["sections"]
    figures = {fid: {**fig, "files": [{**f, "path": edition.href(f["path"], seen_from)} for f in fig["files"]]}
               for fid, (_sid, fig) in site.figures.items()}
    machines = sorted({sec["machine"]["name"] for sec in sections.values() if sec.get("machine") and not sec.get("portable")})
    laid_out = sorted({sec["machine"]["name"] for sec in sections.values() if sec.get("machine") and sec.get("portable")}
                      - set(machines))
    return {"name": edition.name, "build": edition.manifest["build"], "sections": sections, "figures": figures,
            "machines": machines, "laid_out": laid_out, "freeze": edition.freeze, "href": lambda page_file: edition.href(page_file, seen_from),
            "current": edition is seen_from}


def _edition_files(edition: Edition, site: Site, editions: list[Edition], sites: list[Site], content: list[ContentFile],
                   env: Environment, macros, templates_dir: Path, compare: bool
                   ) -> tuple[dict[str, bytes], dict[str, str], list[str], list[dict[str, Any]]]:
    """An edition's files (relative to its folder), the known sha256 of some, the warnings of its render and
    its search documents."""
    for cf in content:
        _reference_pass(cf, site, env, templates_dir)
    used: set[str] = set()
    warnings: list[str] = []
    rendered: dict[str, list[dict[str, Any]]] = {name: [] for name in site.pages}
    state = site.state()
    for cf in content:
        rendered[cf.page].append(_render_content(cf, site, env, macros, used, warnings, templates_dir, state))
    unused = sorted(set(site.figures) - used)
    warnings += [f"figure {fid!r} (section {site.figures[fid][0]}) is produced but no content file shows it"
                 for fid in unused]
    views = [_edition_view(e, other, edition) for e, other in zip(editions, sites)]
    root = "../" if edition.folder else ""
    extra = {"edition": views[editions.index(edition)], "editions": views,
             "compare_href": root + "compare.html" if compare else None, "search_index": root + INDEX_FILE,
             "vendor": site.vendor}
    docs = [doc for page in site.pages.values()
            for doc in page_documents(rendered[page.name], edition.folder + page.file, page.title, edition.name)]
    hashes: dict[str, str] = {}
    files = _site_files(site, rendered, used, env, templates_dir, edition.object_path, extra, hashes)
    return files, hashes, warnings, docs


def _environment(templates_dir: Path):
    """The templates' Jinja environment, one per folder in a process: it recompiles a template only when
    its file changes (auto_reload), so a live preview compiles each template once."""
    env = memo.get(("environment", str(Path(templates_dir).resolve())), lambda: _new_environment(templates_dir))
    try:
        macros = env.get_template("macros.html").module
    except Exception as exc:
        raise BuildError(template_failure(exc, templates_dir)) from None
    return env, macros


def _new_environment(templates_dir: Path) -> Environment:
    env = Environment(loader=FileSystemLoader(str(templates_dir)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["tojson_sorted"] = lambda v: Markup(canonical_json(v))
    env.filters["pct"] = lambda v, digits=0: f"{100 * v:.{digits}f}%"
    env.filters["num"] = table_number
    env.filters["tojson_attr"] = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    # What a static file weighs, for a button that says what it will download.
    env.globals["static_bytes"] = lambda name: (templates_dir / "static" / name).stat().st_size
    return env


def _site_files(site: Site, rendered: dict[str, list[dict[str, Any]]], used: set[str], env: Environment,
                templates_dir: Path, object_path: Callable[[str], Path], extra: dict[str, Any],
                hashes: dict[str, str]) -> dict[str, bytes]:
    """Every file of the site, by its path: the figures shown, static files, the pages, the manifest
    (``hashes``: filled with the sha256 of the files copied from content-addressed sources)."""
    written: dict[str, bytes] = {}
    for fid in sorted(used):
        _sid, fig = site.figures[fid]
        for f in fig["files"]:
            if "poster_of" in f:
                written[f["path"]] = memo.get(("poster", f["poster_of"], f["frames"]),
                                              lambda: last_frame_png(object_path(f["poster_of"]), f["frames"]))
            elif "shrunk_of" in f:
                written[f["path"]] = memo.get(("shrunk", f["shrunk_of"], f["width"], f["height"]),
                                              lambda: area_average_png(object_path(f["shrunk_of"]),
                                                                       (f["width"], f["height"])))
            else:  # a content-addressed object: its bytes are its hash's
                written[f["path"]] = memo.get(("object", f["sha"]), lambda: object_path(f["sha"]).read_bytes())
                hashes[f["path"]] = f["sha"]
    static = templates_dir / "static"
    for path in sorted(static.rglob("*")) if static.is_dir() else []:
        name = f"static/{path.relative_to(static).as_posix()}"
        if path.is_file() and (site.vendor == VENDOR or not name.startswith(VENDOR)):  # vendor/: the root's
            hashes[name] = sha256_known(path)
            written[name] = memo.get(("file", hashes[name]), path.read_bytes)

    # A page without content (e.g. the appendix of a toy project) is neither written nor linked.
    pages = list(site.pages.values())
    shown = [p for p in pages if rendered[p.name] or p is pages[0]]
    nav = [{"page": p.name, "href": p.file, "title": p.title, "short": p.short,
            "sections": numbered_contents(rendered[p.name])} for p in shown]
    try:
        page_tpl = env.get_template("page.html")
        for page in shown:
            text = page_tpl.render(page=page.name, page_file=page.file, page_title=page.title,
                                   sections=rendered[page.name], contents=contents_tree(rendered[page.name]),
                                   nav=nav, build=site.manifest["build"], **extra)
            written[page.file] = text.encode("utf-8")
    except Exception as exc:
        raise BuildError(template_failure(exc, templates_dir)) from None
    written["manifest.json"] = (json.dumps(site.manifest, indent=1, sort_keys=True) + "\n").encode()
    written[".nojekyll"] = b""
    return written


_NUMBERED = re.compile(r"(\d+(\.\d+)*|[A-Z]\.)\s")  # "1.7.1 Editing ...", "A. How the numbers ..."


def numbered_contents(sections: list[dict[str, Any]]) -> list[dict[str, str]]:
    """A page's numbered entries in reading order: every section, and each heading of a section that the
    page's contents list (``###``) whose title carries a number ("1.7.1 ..."); what the landing page lists."""
    entries = []
    for sec in sections:
        entries.append({"id": sec["id"], "title": sec["title"]})
        entries += [{"id": t["id"], "title": t["name"]} for t in sec["toc"] if _NUMBERED.match(t["name"])]
    return entries


def contents_tree(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A page's contents: each section with its own headings, and the sections whose number extends its
    number nested under it ("1.7.2 Inpainting" under "1.7 SDEdit"), as the reader counts them."""
    tree: list[dict[str, Any]] = []
    for sec in sections:
        number = sec["title"].split(" ", 1)[0]
        entry = {"id": sec["id"], "title": sec["title"], "toc": sec["toc"], "number": number, "children": []}
        parent = next((e for e in reversed(tree) if number.startswith(e["number"] + ".")), None)
        if parent is not None and any(ch.isdigit() for ch in number):
            parent["children"].append(entry)
        else:
            tree.append(entry)
    return tree


def _write(written: dict[str, bytes], out_dir: Path, hashes: dict[str, str] | None = None) -> tuple[int, int]:
    """Write the files that changed, atomically, and remove the ones no longer in the site. ``hashes``: the
    sha256 of files whose bytes are known by it (figures, static files), so that they are not hashed again."""
    hashes = hashes or {}
    changed = 0
    target = out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for rel, data in sorted(written.items()):
            target = out_dir / rel
            sha = hashes.get(rel) or sha256_bytes(data)
            if _as_written(target, data, sha):
                continue
            atomic_write_bytes(target, data)
            _remember_written(target, sha)
            changed += 1
            if changed == 1:
                crash_point("render")
        target = out_dir
        removed = _remove_stale(out_dir, set(written))
    except OSError as exc:
        raise BuildError(write_failure(exc, out_dir, target)) from None
    return changed, removed


# What this process last wrote, or found, at each path of a site: (size, mtime, inode, sha256 of the bytes).
_ON_DISK: dict[str, tuple[int, int, int, str]] = {}


def _write_one(out_dir: Path, rel: str, data: bytes) -> None:
    """One file of the site, written as ``_write`` writes each (atomically, only if its bytes changed)."""
    target, sha = out_dir / rel, sha256_bytes(data)
    try:
        if not _as_written(target, data, sha):
            atomic_write_bytes(target, data)
            _remember_written(target, sha)
    except OSError as exc:
        raise BuildError(write_failure(exc, out_dir, target)) from None


def _as_written(target: Path, data: bytes, sha: str) -> bool:
    """Whether ``target`` holds ``data`` already: known from its stat where this process saw it last, else read."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return False
    known = _ON_DISK.get(str(target))
    if known is not None and known[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
        return len(data) == st.st_size and known[3] == sha
    same = target.read_bytes() == data
    if same:
        _remember_written(target, sha)
    return same


def _remember_written(target: Path, sha: str) -> None:
    st = target.stat()
    _ON_DISK[str(target)] = (st.st_size, st.st_mtime_ns, st.st_ino, sha)


_WRITE_HINTS = {
    errno.ENOSPC: "The disk is full: free some space, or pass --site-dir with a folder on another disk.",
    errno.EDQUOT: "Your disk quota is used up: free some space, or pass --site-dir with a folder on another disk.",
    errno.EROFS: "That file system is read-only: pass --site-dir with a folder on a writable disk (or remount it "
                 "read-write).",
    errno.EACCES: "This user may not write there: make the folder writable (chmod u+w) or pass --site-dir with a "
                  "folder of your own.",
    errno.EPERM: "This user may not write there: make the folder writable (chmod u+w) or pass --site-dir with a "
                 "folder of your own.",
    errno.EEXIST: "A file stands where a folder must be: move it away or pass another --site-dir.",
    errno.ENOTDIR: "A file stands where a folder must be: move it away or pass another --site-dir.",
}


def write_failure(exc: OSError, out_dir: Path, target: Path) -> str:
    """One paragraph on a failed write into the site: what, where, how to fix, and what is safe."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    code = f"{errno.errorcode[exc.errno]}, " if exc.errno in errno.errorcode else ""
    hint = _WRITE_HINTS.get(exc.errno, "Fix the cause, or pass --site-dir with another folder.")
    return (f"cannot write the site into {out_dir}: writing {target} failed ({code}{reason}). {hint} "
            f"Then build again: the figures are safely in the cache, so only the pages are written. No "
            f"half-written file was left, but the site may mix files of this build with the previous one "
            f"until a build succeeds.")


def template_lines(exc: BaseException, is_template: Callable[[str], bool]) -> list[tuple[str, int]]:
    """(file, line) of every template frame of ``exc``'s traceback, outermost first.

    Jinja rewrites the frames of compiled templates to carry the template's file name and line
    (jinja2.debug.rewrite_traceback_stack), so template frames are told apart by their file name.
    """
    found = []
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if is_template(name):
            found.append((name, tb.tb_lineno))
        tb = tb.tb_next
    return found


def _inside(folder: Path) -> Callable[[str], bool]:
    folder = folder.resolve()
    return lambda name: not name.endswith(".py") and Path(name).resolve().is_relative_to(folder)


def template_failure(exc: BaseException, templates_dir: Path) -> str:
    """One paragraph naming the template file and line of a syntax or rendering error."""
    if isinstance(exc, TemplateSyntaxError):
        where = f"{exc.filename or exc.name}, line {exc.lineno}"
        what = f"syntax error: {(exc.message or '').rstrip('.')}"
    else:
        frames = template_lines(exc, _inside(Path(templates_dir)))
        where = f"{frames[-1][0]}, line {frames[-1][1]}" if frames else f"a template in {templates_dir}"
        what = f"{type(exc).__name__}: {exc}"
    return (f"{where}: {what}. Fix the template and build again; the figures are cached, so only the "
            f"pages are rendered.")


def last_frame_png(strip: Path, frames: int) -> bytes:
    """The last frame of an animation's strip, as the still that a player shows before the reader asks
    for the animation (a few KB instead of the strip's hundreds). Same pixels, deterministic bytes."""
    import io

    from PIL import Image

    with Image.open(strip) as image:
        width = image.width // frames
        buf = io.BytesIO()
        image.crop((image.width - width, 0, image.width, image.height)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def area_average_png(image_file: Path, size: tuple[int, int]) -> bytes:
    """The image shrunk to ``size`` (width, height): each new pixel the mean of the pixels in its bin, with
    the bins of adaptive average pooling (row bin i spans floor(i H / h) to ceil((i + 1) H / h)), which is
    how the sections' classifier reads an image seen small (torch's ``interpolate(mode="area")``). Pillow's
    box filter is not used: between whole factors it drops or keeps pixels instead of averaging them."""
    import io
    import math

    import numpy as np
    from PIL import Image

    with Image.open(image_file) as image:
        pixels = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"), dtype=np.float64)
    (height, width), (new_width, new_height) = pixels.shape[:2], size

    def bins(old: int, new: int) -> list[tuple[int, int]]:
        return [(i * old // new, math.ceil((i + 1) * old / new)) for i in range(new)]

    shrunk = np.array([[pixels[r0:r1, c0:c1].mean(axis=(0, 1)) for c0, c1 in bins(width, new_width)]
                       for r0, r1 in bins(height, new_height)])
    buf = io.BytesIO()
    Image.fromarray(np.round(shrunk).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image; Pillow reads only the header."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _remove_stale(out_dir: Path, keep: set[str]) -> int:
    removed = 0
    for path in sorted(out_dir.rglob("*"), reverse=True):
        rel = path.relative_to(out_dir).as_posix()
        if path.is_file() and rel not in keep:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed


class _Scope(ABC):
    """The functions a content file calls: ``figure``, ``teaser``, ``section``, ``param``, ``has_figure``,
    ``data``, ``table``, ``check``, ``cite``, ``references`` and ``ref``."""

    def __init__(self, cf: ContentFile, site: Site):
        self.cf, self.site, self.where = cf, site, str(cf.path)
        self._data: dict[tuple[str, str], Any] = {}  # (section, name) -> its saved JSON, read once

    def lookup(self, fig_id: str) -> tuple[str, dict[str, Any]]:
        if fig_id not in self.site.figures:
            known = ", ".join(sorted(self.site.figures)) or "none"
            raise _ContentError(self.where, f"the figure {fig_id!r} is not produced by any section in this build. "
                                            f"Fix the id or add the figure to a section; produced ids: {known}.")
        return self.site.figures[fig_id]

    def section(self, sid: str) -> dict[str, Any]:
        sections = self.site.manifest["sections"]
        if sid not in sections:
            raise _ContentError(self.where, f"the section {sid!r} is not in this build. Fix the id; sections: "
                                            f"{', '.join(sorted(sections))}.")
        return sections[sid]

    def cite(self, *keys: str) -> Markup:
        """``[3]`` or ``[3, 5]``: links to the works in the list of references."""
        unknown = [k for k in keys if k not in self.site.references]
        if unknown or not keys:
            listed = ", ".join(self.site.references) or "none (there is no content/references.toml)"
            raise _ContentError(self.where, f"cite() names {', '.join(map(repr, unknown)) or 'no work'}, which "
                                            f"content/references.toml does not list. Fix the key or add the "
                                            f"work there; listed: {listed}.")
        page = self.site.pages[self.cf.page].file
        at = "" if self.site.references_at in (None, page) else self.site.references_at
        links = [f'<a href="{at}#ref-{k}">{self.site.references[k]["number"]}</a>' for k in keys]
        return Markup(f'<span class="cite">[{", ".join(links)}]</span>')

    def param(self, sid: str, name: str):
        params = self.section(sid)["params"]
        if name not in params:
            raise _ContentError(self.where, f"section {sid!r} has no parameter {name!r}. Fix the name; it has: "
                                            f"{', '.join(sorted(params))}.")
        return params[name]

    def has_figure(self, fig_id: str) -> bool:
        return fig_id in self.site.figures

    def data(self, sid: str, name: str):
        """A section's data output (its ``ctx.save_json(name, ...)``): the numbers that prose states."""
        saved = self.section(sid).get("data", {})
        if name not in saved:
            raise _ContentError(self.where, f"section {sid!r} saved no data named {name!r}. Fix the name; it "
                                            f"saved: {', '.join(sorted(saved)) or 'none'}.")
        if (sid, name) not in self._data:
            self._data[sid, name] = json.loads(self.site.object_path(saved[name]).read_text(encoding="utf-8"))
        return self._data[sid, name]

    def table(self, fig_id: str) -> list[dict[str, str]]:
        """A table figure's rows as {column: cell}, the cells as the reader sees them (``| num`` reads one)."""
        _sid, fig = self.lookup(fig_id)
        if fig["kind"] != "table":
            raise _ContentError(self.where, f"the figure {fig_id!r} is a {fig['kind']}, not a table.")
        return [dict(zip(fig["table"]["columns"], row)) for row in fig["table"]["rows"]]

    def check(self, holds: bool, claim: str, **values) -> str:
        """A result the prose states, checked against this build's data: a false one fails the build,
        naming the content line, the claim and the values it was checked with."""
        if not holds:
            shown = ", ".join(f"{k} = {_short_value(v)}" for k, v in values.items())
            raise _ContentError(self.where, f"the claim \u201c{claim}\u201d is false for this build"
                                            f"{f' ({shown})' if shown else ''}. Reword it or let the data choose "
                                            f"the sentence ({{% if %}}).")
        return ""

    @abstractmethod
    def figure(self, fig_id: str, beside: dict[str, Any] | None = None) -> Markup:
        """Place a figure (or, in the reference pass, note where it is shown)."""

    @abstractmethod
    def ref(self, label: str) -> Markup:
        """A link to a labelled figure, equation or section, named by its number (nothing in the reference
        pass, which numbers them)."""

    @abstractmethod
    def references(self) -> Markup:
        """The list of works that ``cite`` links to (in the reference pass: note the page it is on)."""

    @abstractmethod
    def teaser(self, items) -> Markup:
        """Thumbnails of figures shown elsewhere (nothing in the reference pass)."""

    def render(self, env: Environment, templates_dir: Path) -> str:
        """The content file's body through Jinja, with these functions; errors name the file's line."""
        where, offset = self.where, self.cf.body_line - 1
        content_env = env.overlay(undefined=StrictUndefined)
        try:
            # Compiled under the file's own name (from_string would call it "<template>"), so that Jinja's
            # syntax errors and rewritten tracebacks say which line of the body failed.
            code = memo.get(("compile", self.cf.path.name, where, sha256_bytes(self.cf.body.encode("utf-8"))),
                            lambda: content_env.compile(self.cf.body, name=self.cf.path.name, filename=where))
            template = content_env.template_class.from_code(content_env, code, content_env.make_globals(None))
            return template.render(figure=self.figure, param=self.param, section=self.section,
                                   has_figure=self.has_figure, teaser=self.teaser, build=self.site.manifest["build"],
                                   data=self.data, table=self.table, check=self.check, cite=self.cite,
                                   references=self.references, ref=self.ref)
        except TemplateSyntaxError as exc:
            if exc.filename != where:  # an included template: its own line numbers
                raise BuildError(template_failure(exc, templates_dir)) from None
            raise BuildError(f"{where}, line {exc.lineno + offset}: syntax error: "
                             f"{(exc.message or '').rstrip('.')}. Fix that line (Jinja syntax: {{{{ ... }}}} and "
                             f"{{% ... %}}).") from None
        except Exception as exc:
            raise BuildError(_content_failure(exc, where, offset, templates_dir)) from None


class _References(_Scope):
    """The reference pass: notes, in ``effects``, the labels the file defines (its figures, where each is shown)
    and whether it lists the references; ``_reference_pass`` applies them to the site."""

    def __init__(self, cf: ContentFile, site: Site):
        super().__init__(cf, site)
        self.effects: list[tuple] = []

    def figure(self, fig_id: str, beside: dict[str, Any] | None = None) -> Markup:
        self.lookup(fig_id)
        page = self.site.pages[self.cf.page]
        self.effects.append(("label", f"fig-{fig_id}", "fig", _running_line(self.where, self.cf.body_line - 1)))
        self.effects.append(("shown", fig_id, {"href": f"{page.file}#fig-{fig_id}",
                                               "where": f"{page.short}, {self.cf.meta['title']}"}))
        return Markup("")

    def ref(self, label: str) -> Markup:
        return Markup("")

    def teaser(self, items) -> Markup:
        return Markup("")

    def references(self) -> Markup:
        self.effects.append(("at", self.site.pages[self.cf.page].file))
        return Markup("")


def _reference_pass(cf: ContentFile, site: Site, env: Environment, templates_dir: Path) -> None:
    """Render ``cf`` once to learn what it shows and labels: its section, its figures (through ``figure``)
    and its labelled equations, numbered in reading order. What a file defines depends on its text, the
    manifest, the templates and the list of works alone, so a live preview keeps it (``memo``)."""
    key = ("references", _content_key(cf), site.digest, site.templates, hash_value(site.references))
    for effect in memo.get(key, lambda: _references_of(cf, site, env, templates_dir)):
        if effect[0] == "label":
            _define(site, effect[1], effect[2], cf, effect[3])
        elif effect[0] == "shown":
            site.shown.setdefault(effect[1], effect[2])
        else:
            site.references_at = effect[1]


def _references_of(cf: ContentFile, site: Site, env: Environment, templates_dir: Path) -> tuple[tuple, ...]:
    scope = _References(cf, site)
    effects = [("label", f"sec-{cf.anchor}", "sec", cf.meta_lines.get("id", cf.meta_lines.get("title", 1)))]
    text = scope.render(env, templates_dir)
    effects += scope.effects
    searched_from = 0
    for match in _EQUATION.finditer(text):
        label = match.group(2)
        # The label's line in the source (the rendered text's lines differ where Jinja ran).
        at = cf.body.find(f"({label})", searched_from)
        line = cf.body_line + cf.body.count("\n", 0, at) if at >= 0 else None
        searched_from = at + 1 if at >= 0 else searched_from
        effects.append(("label", label, "eq", line))
    return tuple(effects)


def _content_key(cf: ContentFile) -> str:
    """A content file as its renders see it: path, text, front matter and where its body starts."""
    return hash_value({"path": str(cf.path), "body": cf.body, "line": cf.body_line, "meta": cf.meta,
                       "lines": cf.meta_lines})


def _define(site: Site, label: str, kind: str, cf: ContentFile, line: int | None) -> None:
    """Number ``label`` (figures and equations count per page, in reading order; a section has the number
    its title starts with) or fail, naming both places, if it is already taken."""
    where = f"{cf.path}, line {line}" if line else str(cf.path)
    if label in site.labels:
        first = f"first at {site.labels[label]['file']}, line {site.labels[label]['line']}"
        if kind == "fig":
            raise BuildError(f"{where}: the figure {label[4:]!r} is shown a second time ({first}). Show a figure "
                             f"once and link to it elsewhere with {{{{ ref({label!r}) }}}}.")
        raise BuildError(f"{where}: the label {label!r} is defined a second time ({first}). Give each "
                         f"{'section' if kind == 'sec' else 'equation'} its own label.")
    page = cf.page
    if kind == "sec":
        number, text = _section_number(cf.meta["title"])
    else:
        site.counts[page, kind] = count = site.counts.get((page, kind), 0) + 1
        number, text = str(count), f"Figure {count}" if kind == "fig" else f"Equation ({count})"
    site.labels[label] = {"kind": kind, "page": page, "number": number, "text": text, "file": str(cf.path),
                          "line": line, "anchor": cf.anchor if kind == "sec" else label}


def _section_number(title: str) -> tuple[str, str]:
    """A section's number and how a reference names it: "1.4 Iterative" -> Section 1.4, "A. Methods" ->
    Appendix A; a title without a number is named by the title."""
    first = title.split(" ", 1)[0]
    if re.fullmatch(r"\d+(?:\.\d+)*", first):
        return first, f"Section {first}"
    if re.fullmatch(r"[A-Z]\.?", first):
        return first.rstrip("."), f"Appendix {first.rstrip('.')}"
    return "", title


def _unknown_label(label: str, labels: dict[str, dict[str, Any]]) -> str:
    import difflib

    kind = label.split("-", 1)[0]
    if kind not in LABEL_KINDS or "-" not in label:
        return (f"ref({label!r}) names no kind of label this report knows. Write 'fig-' and a figure id, "
                f"'eq-' and an equation label or 'sec-' and a section id, e.g. ref('sec-iterative').")
    same = [name for name in labels if name.startswith(kind + "-")]
    close = difflib.get_close_matches(label, same, n=3, cutoff=0.6)
    return (f"ref({label!r}) names no label of this build; after '{kind}-' comes {LABEL_KINDS[kind]}. Fix the "
            f"label{'; close ones: ' + ', '.join(close) if close else ''} (this build has {len(same)} "
            f"'{kind}-' labels).")


def _running_line(where: str, offset: int) -> int | None:
    """The line of the content file ``where`` that is being rendered now, read from the stack: Jinja's
    compiled template maps its Python lines back to the template's."""
    frame = sys._getframe(1)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None and frame.f_code.co_filename == where:
            return template.get_corresponding_lineno(frame.f_lineno) + offset
        frame = frame.f_back
    return None


class _Placed(_Scope):
    """The render pass: figures and teasers become HTML, kept out of Markdown's way in slots."""

    def __init__(self, cf: ContentFile, site: Site, macros, used: set[str], warnings: list[str]):
        super().__init__(cf, site)
        self.macros, self.used, self.warnings = macros, used, warnings
        self.slots: list[Markup] = []

    def place(self, html_text: Markup) -> Markup:
        self.slots.append(html_text)
        return Markup("\n\n" + _SLOT.format(len(self.slots) - 1) + "\n\n")

    def references(self) -> Markup:
        """The numbered list of every work in content/references.toml, each with its ``ref-<key>`` id."""
        return self.place(self.macros.references(list(self.site.references.values())))

    def figure(self, fig_id: str, beside: dict[str, Any] | None = None) -> Markup:
        """A figure, numbered. ``beside`` adds a column to a table: {"heading": ..., "cells": {first cell of a
        row: value}}, with each row marked "same" or "differs" where it has a value."""
        sid, fig = self.lookup(fig_id)
        if beside is not None and (fig["kind"] != "table" or set(beside) != {"heading", "cells"}):
            raise _ContentError(self.where, f"figure({fig_id!r}, beside=...) needs a table figure and a dict with "
                                            f"'heading' and 'cells' (the new column, by each row's first cell).")
        self.used.add(fig_id)
        number = self.site.labels[f"fig-{fig_id}"]["number"]
        return self.place(self.macros.figure(fig, self.site.manifest["sections"][sid], number, self.site.vendor,
                                             beside))

    def ref(self, label: str) -> Markup:
        """``ref("fig-<figure id>")``, ``ref("eq-<label>")``, ``ref("sec-<content id>")``: "Figure 12",
        "Equation (3)", "Section 1.4", linked; "of Part B" is added when the label is on another page."""
        entry = self.site.labels.get(label)
        if entry is None:
            raise _ContentError(self.where, _unknown_label(label, self.site.labels))
        page = self.site.pages[entry["page"]]
        here = entry["page"] == self.cf.page
        text = entry["text"]
        if not here and not (entry["kind"] == "sec" and not entry["number"][:1].isdigit()):
            text += f" of {page.short}"
        href = ("" if here else page.file) + "#" + entry["anchor"]
        return Markup(f'<a class="xref xref-{entry["kind"]}" href="{html.escape(href)}">{html.escape(text)}</a>')

    def teaser(self, items) -> Markup:
        """Small linked thumbnails of figures shown elsewhere, for the landing page.

        ``items`` holds figure ids or dicts {id, label, row, items}: ``row`` picks a gallery row
        (default 0) and ``items`` the indices within it (default: up to four). An id that this
        build did not produce is left out, so a teaser never fails a smaller build; one that no
        page shows is left out with a warning, since there would be nothing to link to. The
        thumbnails carry no element ids, so they never clash with the figures' own.
        """
        cards = []
        for spec in items:
            spec = {"id": spec} if isinstance(spec, str) else dict(spec)
            fid = spec["id"]
            if fid not in self.site.figures:
                continue
            if fid not in self.site.shown:
                self.warnings.append(f"{self.where}: the teaser names {fid!r}, which no report page shows; left out")
                continue
            _sid, fig = self.site.figures[fid]
            card = _teaser_card(fig, spec, self.site.shown[fid])
            if card["images"]:
                cards.append(card)
        return self.place(self.macros.teaser(cards)) if cards else Markup("")


def _render_content(cf: ContentFile, site: Site, env: Environment, macros, used: set[str],
                    warnings: list[str], templates_dir: Path, state: str) -> dict[str, Any]:
    """A content file's HTML. It depends on the file, the manifest, the templates and what the reference pass
    found (``state``, ``Site.state``) alone, so a live preview keeps it, with the figures it placed and the
    warnings it gave, and renders again only the files an edit changed."""
    key = ("content", _content_key(cf), site.digest, site.templates, state)
    result, placed, said = memo.get(key, lambda: _render_content_now(cf, site, env, macros, templates_dir))
    used.update(placed)
    warnings.extend(said)
    return result


def _render_content_now(cf: ContentFile, site: Site, env: Environment, macros, templates_dir: Path):
    used: set[str] = set()
    warnings: list[str] = []
    scope = _Placed(cf, site, macros, used, warnings)
    text = scope.render(env, templates_dir)
    text = _EQUATION.sub(lambda m: str(scope.place(Markup(_math_element(
        m.group(1).strip(), True, scope.where, site.labels[m.group(2)])))), text)
    stray = _STRAY_LABEL.search(text)
    if stray is not None:
        at = cf.body.find(stray.group(0))
        where = f"{cf.path}, line {cf.body_line + cf.body.count(chr(10), 0, at)}" if at >= 0 else str(cf.path)
        raise BuildError(f"{where}: the equation label ({stray.group(1)}) is not one: a label follows a display "
                         f"equation's closing $$ on the same line (\"$$ (eq-name)\"), and its name has only letters, "
                         f"digits, '-' and '_'.")
    md = markdown.Markdown(extensions=["pymdownx.arithmatex", "toc", "tables", "attr_list", "md_in_html",
                                       "footnotes", "sane_lists"],
                           extension_configs={"pymdownx.arithmatex": {"generic": True},
                                              "toc": {"toc_depth": "3-4", "slugify": _slug_with(cf.anchor),
                                                      "anchorlink": True, "anchorlink_class": "anchor"}})
    body = _render_math(md.convert(text), scope.where)
    body = _SLOT_RE.sub(lambda m: str(scope.slots[int(m.group(1))]), body)
    return ({"id": cf.anchor, "title": cf.meta["title"], "html": Markup(body), "toc": md.toc_tokens,
             "meta": cf.meta}, frozenset(used), tuple(warnings))


class _ContentError(BuildError):
    """A content file's wrong reference; the line is added once the traceback says where it is."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.detail = detail


def _content_failure(exc: BaseException, where: str, offset: int, templates_dir: Path) -> str:
    lines = template_lines(exc, lambda name: name == where)
    at = f"{where}, line {lines[-1][1] + offset}" if lines else where
    if isinstance(exc, _ContentError):
        return f"{at}: {exc.detail}"
    if isinstance(exc, BuildError):
        return str(exc)
    inner = template_lines(exc, _inside(templates_dir))
    if inner:  # it failed inside a macro that the content called, e.g. through figure()
        return (f"{inner[-1][0]}, line {inner[-1][1]}: {type(exc).__name__}: {exc}, while rendering {at}. "
                f"Fix the template (or what the content passes to it) and build again.")
    return f"{at}: the template failed to render ({type(exc).__name__}: {exc}). Fix that line and build again."


def _teaser_card(fig: dict[str, Any], spec: dict[str, Any], shown: dict[str, str]) -> dict[str, Any]:
    images = []
    if fig["kind"] in ("image", "grid", "plot", "gif"):
        # An animation's thumbnail is its last frame: a still, not the whole GIF.
        role = "image" if fig["kind"] != "gif" else "poster" if any(f["role"] == "poster" for f in fig["files"]) \
            else "animation"
        for f in fig["files"]:
            if f["role"] == role:
                images.append({"src": f["path"], "alt": fig["alt"], "scale": 1.0, "width": f.get("width"),
                               "height": f.get("height")})
    elif fig["kind"] == "gallery" and fig.get("rows"):
        row = fig["rows"][min(int(spec.get("row", 0)), len(fig["rows"]) - 1)]
        picked = [row["items"][i] for i in spec.get("items", range(min(4, len(row["items"]))))
                  if 0 <= i < len(row["items"])]
        widest = max((it.get("width", 0) for it in picked), default=0)
        for it in picked:
            file = fig["files"][it["file"]]
            images.append({"src": file["path"], "alt": it.get("alt") or fig["alt"], "width": file.get("width"),
                           "height": file.get("height"),
                           "scale": it["width"] / widest if widest and it.get("width") else 1.0})
    return {"id": fig["id"], "kind": fig["kind"], "display": (fig.get("meta") or {}).get("display", ""),
            "label": spec.get("label") or fig["caption"].split(":")[0], "href": shown["href"],
            "where": shown["where"], "images": images}


def table_number(cell: Any) -> float:
    """The number a table cell shows: "18.25" -> 18.25, "97.5%" -> 0.975, "123 ± 4" -> 123, "∞" -> inf."""
    if isinstance(cell, (int, float)):
        return float(cell)
    text = str(cell).strip().replace(",", "")
    if text.startswith("∞"):
        return float("inf")
    match = re.match(r"[-+]?\d+(?:\.\d+)?", text)
    if match is None:
        raise ValueError(f"the table cell {cell!r} does not start with a number")
    value = float(match.group())
    return value / 100 if text[match.end():].lstrip().startswith("%") else value


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short_value(v) for v in value) + "]"
    return str(value)


def _slug_with(prefix: str):
    from markdown.extensions.toc import slugify

    return lambda value, separator: f"{prefix}-{slugify(value, separator)}"
