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

This module runs the passes for every edition and writes the site; the parts are modules of their own:
``content`` (reading, math), ``passes`` (the reference and render passes, the content helpers),
``site`` (an edition's figures and labels, a page's contents), ``images`` (derived images),
``templating`` (the Jinja environment, template errors) and ``sitefiles`` (writing the files).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment

from .. import BuildError
from ..fingerprint import hash_value, sha256_known
from ..project import Page
from . import memo
from .content import ContentFile, read_content, read_references
from .edition import Edition
from .images import area_average_png, last_frame_png
from .passes import reference_pass, render_content
from .placement import VENDOR, Site, contents_tree, numbered_contents
from .search import INDEX_FILE, index_script, page_documents
from .sitefiles import write_files, write_one
from .templating import environment, template_failure


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
    env, macros = environment(templates_dir)  # a broken template fails first
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
        later = lambda: write_one(Path(out_dir), INDEX_FILE, index_bytes())  # noqa: E731
    else:
        written[INDEX_FILE] = memo.get(index_key, lambda: index_script(search_docs))
    if compare:
        try:
            written["compare.html"] = env.get_template("compare.html").render(
                editions=[_edition_view(e, site, editions[0]) for e, site in zip(editions, sites)],
                pages=pages).encode("utf-8")
        except Exception as exc:
            raise BuildError(template_failure(exc, templates_dir)) from None
    changed, removed = write_files(written, Path(out_dir), known)
    summary = {"files": len(written), "changed": changed, "removed": removed,
               "bytes": sum(len(d) for d in written.values()), "sizes": _sizes(written, editions),
               "warnings": warnings}
    return {**summary, "later": later} if later is not None else summary


def _sizes(written: dict[str, bytes], editions: list[Edition]) -> dict[str, int]:
    """The site's bytes by kind: pages, figures, static files and the rest, every edition together."""
    sizes = {"pages": 0, "figures": 0, "static": 0, "other": 0}
    folders = [e.folder for e in editions if e.folder]
    for rel, data in written.items():
        inner = next((rel[len(f):] for f in folders if rel.startswith(f)), rel)
        kind = "pages" if inner.endswith(".html") else Path(inner).parts[0]  # figures/..., static/... or a file
        sizes[kind if kind in sizes else "other"] += len(data)
    return sizes


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
        reference_pass(cf, site, env, templates_dir)
    used: set[str] = set()
    warnings: list[str] = []
    rendered: dict[str, list[dict[str, Any]]] = {name: [] for name in site.pages}
    state = site.state()
    for cf in content:
        rendered[cf.page].append(render_content(cf, site, env, macros, used, warnings, templates_dir, state))
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
