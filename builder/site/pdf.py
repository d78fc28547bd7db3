"""The report as one PDF, printed by headless Chromium from the built site.

The pages' main content is gathered, in the site's page order, into one print document (the
``print.html`` template: a title page, the contents, the pages, and an appendix that the figures'
provenance notes are folded into), so that links between pages become links inside the PDF. Digit
images are enlarged with nearest-neighbour sampling first, so that they print as sharp squares at print
resolution rather than as whatever a PDF viewer interpolates from 28 pixels. Chromium adds the page
numbers and the outline; a second pass writes each section's page number into the contents.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .. import BuildError
from ..atomic import atomic_write_bytes
from ..project import Page

PRINT_DPI_PIXELS = 1200  # an enlarged image's longest side: a full-width figure prints at about 200 dpi
MAX_ENLARGEMENT = 32
FOOTER = ('<div style="width:100%;font-size:8pt;color:#444;text-align:center;font-family:sans-serif">'
          '{title} · <span class="pageNumber"></span> / <span class="totalPages"></span></div>')

_MAIN = re.compile(r'<main id="main">(.*?)</main>', re.S)
_EDITION_LINE = re.compile(r'<p class="edition-line">(.*?)</p>', re.S)
_PARTS = re.compile(r'<section class="parts".*?</section>', re.S)
_SECTION_HEADING = re.compile(r'<h2 id="([^"]+)-title"[^>]*><a class="anchor" href="#\1">(.*?)</a></h2>', re.S)
_FIGURE_ID = re.compile(r'<figure [^>]*id="fig-([^"]+)">')
_PROVENANCE = re.compile(r'<details class="provenance">\s*<summary>.*?</summary>(.*?)</details>', re.S)
_ZOOM = re.compile(r'<a class="zoom" href="[^"]*">(.*?)</a>', re.S)
_PIXELATED = re.compile(r'<img class="pixelated" src="([^"]+)"')


def print_report(site_dir: Path, pages: Sequence[Page], templates_dir: Path, out: Path,
                 chromium: Path | None = None) -> dict[str, Any]:
    """Print the site in ``site_dir`` (its first edition) to ``out``; returns pages, bytes and sections."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    site_dir, out = Path(site_dir), Path(out)
    manifest_path = site_dir / "manifest.json"
    if not manifest_path.is_file():
        raise BuildError(f"there is no built site in {site_dir} to print (no manifest.json). Build it first: "
                         f"python build.py, then --pdf.")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    env = Environment(loader=FileSystemLoader(str(templates_dir)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    with tempfile.TemporaryDirectory(prefix="print-") as tmp:
        work = Path(tmp)
        for name in ("figures", "static"):
            if (site_dir / name).is_dir():
                os.symlink((site_dir / name).resolve(), work / name, target_is_directory=True)
        parts, notes, edition = _gather(site_dir, pages, work)
        document = work / "report.html"
        numbers: dict[str, int] = {}
        for _pass in range(2):  # the second pass knows on which page each section starts
            document.write_text(env.get_template("print.html").render(
                parts=parts, notes=notes, edition=edition, build=manifest["build"], page_numbers=numbers),
                encoding="utf-8")
            pdf = _chromium_pdf(document, chromium, title="Fun with Diffusion Models")
            numbers = _section_pages(pdf)
        atomic_write_bytes(out, pdf)
    import io

    from pypdf import PdfReader

    count = len(PdfReader(io.BytesIO(pdf)).pages)
    return {"path": out, "pages": count, "bytes": len(pdf), "sections": numbers}


def _gather(site_dir: Path, pages: Sequence[Page], work: Path) -> tuple[list[dict], list[dict], str]:
    """Each page's main content, made to work inside one document, and the provenance notes it held."""
    files = {page.file for page in pages}
    parts, notes, edition = [], [], ""
    for page in pages:
        path = site_dir / page.file
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        main = _MAIN.search(text)
        if main is None:
            raise BuildError(f"{path} has no <main id=\"main\"> element, so it cannot be printed; the templates "
                             f"must keep one.")
        body = main.group(1)
        line = _EDITION_LINE.search(body)
        if line and not edition:
            edition = re.sub(r"<a [^>]*>.*?</a>\s*·?\s*", "", line.group(1)).strip()
        body = _PARTS.sub("", _EDITION_LINE.sub("", body))
        body = re.sub(r"<h1[^>]*>.*?</h1>", "", body, count=1, flags=re.S)
        body = _links_inside(body, files, pages)
        body = _ZOOM.sub(r"\1", body).replace(' loading="lazy"', "")
        body = _PIXELATED.sub(lambda m: f'<img class="pixelated" src="{_enlarged(site_dir, work, m.group(1))}"', body)
        body = _fold_provenance(body, page, notes)
        # (a heading only screen readers get, like the landing page's lead, is not a contents entry)
        sections = [{"id": m.group(1), "title": html.unescape(re.sub(r"<[^>]+>", "", m.group(2)))}
                    for m in _SECTION_HEADING.finditer(body) if "visually-hidden" not in m.group(0)]
        parts.append({"name": page.name, "title": page.title, "short": page.short, "html": body,
                      "sections": sections})
    return parts, notes, edition


def _links_inside(body: str, files: set[str], pages: Sequence[Page]) -> str:
    """``part-b.html#x`` -> ``#x`` (ids are unique across the pages), ``part-b.html`` -> its part."""
    by_file = {page.file: page.name for page in pages}

    def link(match: re.Match) -> str:
        target, fragment = match.group(1), match.group(2)
        if target not in files:
            return match.group(0)
        return f'href="#{fragment[1:]}"' if fragment else f'href="#part-{by_file[target]}"'

    return re.sub(r'href="([a-z0-9-]+\.html)(#[^"]*)?"', link, body)


def _fold_provenance(body: str, page: Page, notes: list[dict]) -> str:
    """Move each figure's provenance note (in its caption) to the appendix, leaving a link to it."""
    def fold(match: re.Match) -> str:
        opened = list(_FIGURE_ID.finditer(body, 0, match.start()))
        if not opened:
            return match.group(0)
        fig_id = opened[-1].group(1)  # the outer figure whose caption holds the note
        number = re.search(rf'class="fig-number" href="#fig-{re.escape(fig_id)}">([^<]+)</a>', body)
        notes.append({"id": f"provenance-{fig_id}", "figure": f"fig-{fig_id}",
                      "label": f"{page.short}, {number.group(1) if number else fig_id}", "details": match.group(1)})
        return (f'<a class="print-provenance" href="#provenance-{fig_id}">How this was made: the appendix '
                f'“Provenance of the figures”</a>')

    return _PROVENANCE.sub(fold, body)


def _enlarged(site_dir: Path, work: Path, src: str) -> str:
    """A copy of a small image enlarged by a whole factor with nearest-neighbour sampling (print only)."""
    from PIL import Image

    source = site_dir / src
    if not source.is_file() or source.suffix != ".png":
        return src
    with Image.open(source) as image:
        factor = min(MAX_ENLARGEMENT, math.ceil(PRINT_DPI_PIXELS / max(image.size)))
        if factor <= 1:
            return src
        target = work / "print" / src
        target.parent.mkdir(parents=True, exist_ok=True)
        image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST).save(target)
    return f"print/{src}"


def _chromium_pdf(document: Path, chromium: Path | None, title: str) -> bytes:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        raise BuildError("--pdf prints with Chromium through playwright, which is not installed; install the "
                         "test dependencies (scripts/test sets them up) and try again.") from None
    chromium = Path(chromium or os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
    if not chromium.exists():
        raise BuildError(f"--pdf prints with Chromium, and there is none at {chromium}. Install it (Debian: "
                         f"apt-get install chromium) or name it with the CHROMIUM environment variable.")
    try:
        with sync_playwright() as manager:
            browser = manager.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(document.as_uri(), wait_until="load")
            page.evaluate("() => document.fonts.ready")
            pdf = page.pdf(prefer_css_page_size=True, print_background=True, outline=True, tagged=True,
                           display_header_footer=True, header_template="<span></span>",
                           footer_template=FOOTER.format(title=html.escape(title)))
            browser.close()
    except Error as exc:
        raise BuildError(f"Chromium ({chromium}) could not print the report: {exc.message.splitlines()[0]}. "
                         f"Check that it starts (chromium --headless --version) and try again.") from None
    return pdf


def _section_pages(pdf: bytes) -> dict[str, int]:
    """The page (1-based) of every element that a link of the document points to, by its id: Chromium
    writes each link target as a named destination."""
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    return {name.lstrip("/"): reader.get_destination_page_number(dest) + 1
            for name, dest in reader.named_destinations.items()}
