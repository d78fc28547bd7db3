"""The printed report (``build.py --pdf``): read back with pypdf and rendered to PNG with pdfium."""
import html
import os
import re
import unicodedata
from pathlib import Path

import pytest

from builder import BuildError
from builder.site.pdf import print_report
from project import PROJECT

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site"
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install chromium); printing needs it",
                allow_module_level=True)
pypdf = pytest.importorskip("pypdf")
pdfium = pytest.importorskip("pypdfium2")


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    out = tmp_path_factory.mktemp("pdf") / "report.pdf"
    summary = print_report(SITE, PROJECT.pages, ROOT / "templates", out)
    reader = pypdf.PdfReader(out)
    # NFKC: the fonts' ligatures ("ﬀ") read back as the letters they join.
    texts = [unicodedata.normalize("NFKC", page.extract_text()) for page in reader.pages]
    return out, summary, reader, texts


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_title_page_contents_and_page_numbers(printed):
    out, summary, reader, texts = printed
    assert summary["pages"] == len(reader.pages) > 30 and summary["bytes"] == out.stat().st_size
    assert "Fun with Diffusion Models" in texts[0] and "Source digest" in texts[0]
    for number, text in enumerate(texts, start=1):
        assert f"{number} / {len(texts)}" in text, f"page {number} has no page number in its footer"
    contents = _flat(texts[1])
    assert contents.startswith("Contents")
    # Every section of every page is listed with the page its heading is on, and that page shows it.
    destinations = {name.lstrip("/"): reader.get_destination_page_number(d) + 1
                    for name, d in reader.named_destinations.items()}
    titles = [html.unescape(t) for name in ("part-a.html", "part-b.html", "appendix.html")
              for t in re.findall(r'<h2 id="[^"]+-title"><a class="anchor" href="#[^"]+">([^<]+)</a></h2>',
                                  (SITE / name).read_text())]
    assert len(titles) >= 20
    for title in titles:
        entry = re.search(re.escape(title) + r"[ .]*(\d+)", contents)
        assert entry, f"the contents do not list {title!r}"
        assert title in _flat(texts[int(entry.group(1)) - 1]), f"contents: {title!r} is not on page {entry.group(1)}"
    assert destinations["cfg"] == summary["sections"]["cfg"]
    assert "1.6 Classifier-free guidance" in _flat(texts[destinations["cfg"] - 1])


def test_links_stay_inside_the_pdf_or_go_to_the_web(printed):
    _out, _summary, reader, _texts = printed
    internal = external = 0
    for page in reader.pages:
        for annot in page.get("/Annots") or []:
            annot = annot.get_object()
            if annot.get("/Subtype") != "/Link":
                continue
            action = annot.get("/A")
            uri = action.get_object().get("/URI") if action is not None else None
            if uri is None:
                assert "/Dest" in annot or action.get_object().get("/S") == "/GoTo", annot
                internal += 1
            else:
                assert str(uri).startswith(("https://", "http://")), f"a link leaves the PDF for {uri}"
                external += 1
    assert internal > 60 and external >= 5  # contents, cross-references, figure numbers; the references


def test_provenance_is_an_appendix_and_figures_print_at_print_resolution(printed):
    _out, _summary, reader, texts = printed
    whole = _flat(" ".join(texts))
    assert "How this was made: the appendix “Provenance of the figures”" in whole
    appendix = next(i for i, t in enumerate(texts) if t.lstrip().startswith("Provenance of the figures"))
    notes = _flat(" ".join(texts[appendix:]))
    shown = sum((SITE / page.file).read_text().count('<details class="provenance">') for page in PROJECT.pages)
    assert shown >= 30 and notes.count("Cache key") == shown, "every figure's note, once, in the appendix"
    assert "Part A, Figure 1 " in notes and "Part B, Figure 1 " in notes
    outline = [item.title for item in reader.outline if not isinstance(item, list)]
    assert outline[:2] == ["Fun with Diffusion Models", "Contents"] and "Provenance of the figures" in outline
    # The 28-pixel digits were enlarged by a whole factor before printing: each image in the PDF is large.
    first_figure = next(i for i, t in enumerate(texts) if "Figure 1 The three prompts" in _flat(t))
    sizes = [(image.image.width, image.image.height) for image in reader.pages[first_figure].images]
    assert sizes and min(max(w, h) for w, h in sizes) >= 600, sizes


def test_pages_render_and_look_like_the_report(printed):
    out, _summary, _reader, texts = printed
    document = pdfium.PdfDocument(str(out))
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        first_figure = next(i for i, t in enumerate(texts) if "Figure 1 The three prompts" in _flat(t))
        for index in (0, 1, first_figure):
            image = document[index].render(scale=1.5).to_pil().convert("L")
            image.save(SHOTS / f"pdf-page-{index + 1}.png")
            width, height = image.size
            assert 1.38 < height / width < 1.45, "A4 portrait"
            histogram = image.histogram()
            dark = sum(histogram[:64]) / (width * height)
            if index < 2:
                assert dark < 0.1, f"page {index + 1}: text on white"
            else:  # the digits' black squares
                assert dark > 0.1, f"page {index + 1}: the figure's images are missing ({dark:.3f} dark)"
    finally:
        document.close()


def test_printing_nothing_says_what_to_build(tmp_path):
    with pytest.raises(BuildError, match=r"there is no built site in .* to print \(no manifest\.json\)\. Build "
                                         r"it first: python build\.py, then --pdf\."):
        print_report(tmp_path, PROJECT.pages, ROOT / "templates", tmp_path / "r.pdf")
    assert not (tmp_path / "r.pdf").exists()


def test_pdf_is_refused_beside_options_that_build_no_site():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "build.py", "--pdf", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--pdf prints the site that the build writes; it cannot be combined with --clean, --list" in proc.stderr
