"""What the pages of one edition are rendered from: its figures (each file's place in the site, its intrinsic
size, the files derived from it at render time) and the labels the reference pass finds; and a page's
contents."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from ..fingerprint import hash_value
from ..project import Page
from . import memo
from .images import png_size


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
