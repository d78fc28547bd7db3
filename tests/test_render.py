"""Rendering: snapshots of the HTML for a fixed manifest, math, links, and bad references."""
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builder import BuildError
from builder.site.images import last_frame_png
from builder.site.render import render_site
from project import PROJECT

PAGES = PROJECT.pages

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def png(value: int, size=(4, 4), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size, value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _png_array(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _png_file(array) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "strip.png"
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def fixture_site(tmp_path):
    blobs = {}

    def file(data: bytes, ext: str, role: str):
        sha = hashlib.sha256(data).hexdigest()
        blobs[sha] = data
        return {"sha": sha, "ext": ext, "role": role}

    (tmp_path / "objects").mkdir()
    gallery = {"id": "toy_gallery", "kind": "gallery", "caption": "Noised at three timesteps.", "alt": "grey squares",
               "files": [file(png(50), "png", "r0c0"), file(png(150), "png", "r0c1")],
               "rows": [{"caption": "t = 250 and 500", "items": [{"file": 0, "label": "t = 250", "alt": "dark"},
                                                                  {"file": 1, "label": "t = 500", "alt": "light"}]}],
               "meta": {"timesteps": [250, 500]}, "publish": True}
    plot = {"id": "toy_plot", "kind": "plot", "caption": "A loss curve.", "alt": "a falling line",
            "files": [file(png(200, (8, 12)), "png", "image")], "meta": {}, "publish": True}
    gif = {"id": "toy_gif", "kind": "gif", "caption": "Sampling, frame by frame.", "alt": "noise turning into a digit",
           "files": [file(png(90, (4, 4), "GIF"), "gif", "animation"), file(png(90, (4, 8)), "png", "strip")],
           "frames": 2, "fps": 5, "frame_size": [4, 4], "frame_labels": ["t = 300", "t = 0"], "meta": {},
           "publish": True}
    table = {"id": "toy_table", "kind": "table", "caption": "Hyperparameters <used>.", "alt": "Hyperparameters",
             "files": [], "table": {"columns": ["name", "value"], "rows": [["lr", "0.001"], ["D", "64"]]},
             "meta": {}, "publish": True}

    anagram = {"id": "toy_anagram", "kind": "gallery", "caption": "A 6 that is a 9 upside down.",
               "alt": "anagram samples", "files": [file(png(v), "png", f"r0c{i}") for i, v in enumerate((10, 20, 30, 40))],
               "rows": [{"caption": "upright: 6; upside down: 9",
                         "items": [{"file": 0, "label": "sample 1: 6", "alt": "sample 1 upright"},
                                   {"file": 1, "label": "sample 1 flipped: 9", "alt": "sample 1 upside down"},
                                   {"file": 2, "label": "sample 2: 6", "alt": "sample 2 upright"},
                                   {"file": 3, "label": "sample 2 flipped: 9", "alt": "sample 2 upside down"}]}],
               "meta": {"display": "anagram", "prompts": ["a handwritten 6", "a handwritten 9"], "model": "ToyUNet",
                        "view": "rotate_180"},
               "publish": True}
    checkerboard = (np.indices((28, 28)).sum(axis=0) % 2 * 255).astype(np.uint8)  # all high frequency
    hybrid_file = file(_png_array(checkerboard), "png", "r0c0")
    hybrid = {"id": "toy_hybrid", "kind": "gallery", "caption": "A 0 from afar, an 8 close up.", "alt": "hybrids",
              "files": [hybrid_file, dict(hybrid_file, role="r0c1")],
              "rows": [{"caption": "low: 0; high: 8",
                        "items": [{"file": 0, "label": "sample 1, close up", "alt": "hybrid seen large", "width": 160},
                                  {"file": 1, "label": "sample 1, from afar", "alt": "hybrid seen small", "width": 32}]}],
              "meta": {"display": "hybrid", "prompts": ["a handwritten 0", "a handwritten 8"]}, "publish": True}

    def section(sid, figures, params, backend=None):
        return {"id": sid, "title": sid.replace("_", " "), "key": "ab" * 32, "seed": 7, "profile": "cpu",
                "device": "cpu", "dtype": "float32", "resources": {"backend": backend} if backend else {},
                "params": params,
                "figures": figures}

    manifest = {
        "build": {"profile": "cpu", "seed": 180, "device": "cpu", "dtype": "float32", "resources": {},
                  "versions": {"torch": "x.y"}, "source_digest": "cd" * 32},
        "sections": {"toy_forward": section("toy_forward", [gallery], {"timesteps": [250, 500]}),
                     "toy_ddpm": section("toy_ddpm", [plot, gif, table], {"epochs": 2}),
                     "toy_edits": section("toy_edits", [anagram, hybrid], {"guidance": 7.0, "seen_small_px": 8},
                                          {"name": "local", "model": "a toy UNet", "dtype": "float32"})},
    }
    out = tmp_path / "site"

    def object_path(sha):
        return _write(tmp_path, sha, blobs[sha])

    def render(content=FIXTURES / "content", out=out, manifest=manifest):
        return render_site(manifest, PAGES, content, TEMPLATES, out, object_path)

    render.manifest, render.object_path = manifest, object_path
    return render, out


def _write(tmp_path: Path, sha: str, data: bytes) -> Path:
    path = tmp_path / "objects" / sha
    path.write_bytes(data)
    return path


def test_pages_match_snapshots(fixture_site, snapshot):
    render, out = fixture_site
    render()
    assert (out / "index.html").read_text() == snapshot(name="index")
    assert (out / "part-a.html").read_text() == snapshot(name="part-a")
    assert (out / "part-b.html").read_text() == snapshot(name="part-b")


def test_math_is_mathml_at_build_time(fixture_site):
    render, out = fixture_site
    render()
    page_a = (out / "part-a.html").read_text()
    page_b = (out / "part-b.html").read_text()
    assert "arithmatex" not in page_a + page_b and "\\sqrt" not in re.sub(r'data-tex="[^"]*"', "", page_a)
    assert page_a.count('<math ') == 2 and 'display="block"' in page_a
    assert "<msqrt>" in page_a and "<mfrac>" in page_b


def test_every_link_resolves_inside_the_site(fixture_site):
    render, out = fixture_site
    render()
    assert_links_resolve(out)


def ids_of(page: Path) -> list[str]:
    return re.findall(r'\sid="([^"]+)"', page.read_text())


def cited_urls(page_text: str) -> set[str]:
    """The links of the list of references: the only ones that may leave the site (a reader follows them;
    the page itself loads nothing from elsewhere)."""
    listed = re.findall(r'<ol class="references">(.*?)</ol>', page_text, re.S)
    return {url for block in listed for url in re.findall(r'<a href="(https://[^"]+)">', block)}


def assert_links_resolve(out: Path):
    for page in out.glob("*.html"):
        text = page.read_text()
        ids = ids_of(page)
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        assert not duplicates, f"{page.name}: duplicate ids {duplicates}"
        cited = cited_urls(text)
        for attr, url in re.findall(r'(src|href)="([^"]*)"', text):
            if attr == "href" and url in cited:
                continue
            assert not re.match(r"^[a-z]+:|^//|^/", url), f"{page.name}: {attr}={url} is not a relative URL"
            path, _, fragment = url.partition("#")
            if path:
                assert (out / path).is_file(), f"{page.name}: {attr}={url} points at a missing file"
            if fragment:
                target = ids_of(out / path) if path.endswith(".html") else ids if not path else None
                assert target is None or fragment in target, f"{page.name}: {url} names no element"
    for name in ("style.css", "site.js"):
        text = (out / "static" / name).read_text()
        assert "url(" not in text and "@import" not in text and "http" not in text.replace("http-equiv", ""), \
            f"static/{name} must not load anything"


def headings(html_text: str) -> list[int]:
    return [int(level) for level in re.findall(r"<h([1-6])[\s>]", html_text)]


def test_headings_in_order_and_landmarks(fixture_site):
    render, out = fixture_site
    render()
    for page in out.glob("*.html"):
        text = page.read_text()
        levels = headings(text)
        assert levels[0] == 1 and levels.count(1) == 1, f"{page.name}: {levels}"
        assert all(b <= a + 1 for a, b in zip(levels, levels[1:])), f"{page.name}: a heading level is skipped: {levels}"
        for landmark in ("<header", "<nav", '<main id="main"', "<footer"):
            assert landmark in text, f"{page.name} has no {landmark}"


def test_toc_is_an_unnumbered_list_of_anchors(fixture_site):
    render, out = fixture_site
    render()
    text = (out / "part-a.html").read_text()
    toc = text[text.index('<nav class="toc"'):text.index("</nav>", text.index('<nav class="toc"'))]
    assert '<a href="#forward">The forward process</a>' in toc and '<a href="#illusions">Illusions</a>' in toc
    css = (TEMPLATES / "static" / "style.css").read_text()
    assert re.search(r"\.toc ol \{[^}]*list-style: none", css), "section titles carry their own numbers"


def test_anagram_each_sample_once_as_a_flip_card_and_once_pre_flipped(fixture_site):
    render, out = fixture_site
    render()
    text = (out / "part-a.html").read_text()
    fig = text[text.index('id="fig-toy_anagram"'):text.index("</figure>\n", text.index('class="provenance"',
                                                                                   text.index('id="fig-toy_anagram"')))]
    assert fig.count('class="cell anagram-card"') == 2 and fig.count('class="cell anagram-flipped"') == 2
    assert '<button type="button" class="flip-btn" aria-pressed="false">turn upside down</button>' in fig
    assert 'data-view="rotate_180" id="fig-toy_anagram"' in text, "the page turns the card as the sampler did"
    assert '<div class="fig-tools" hidden>' in fig, "the button appears only with the script"
    assert 'src="figures/toy_anagram-r0c0.png"' in fig and 'data-alt-flipped="sample 1 upside down"' in fig
    assert '<span class="label-up">sample 1: 6</span><span class="label-down">sample 1 flipped: 9</span>' in fig
    assert "upright: “a handwritten 6”" in fig and "turned upside down: “a handwritten 9”" in fig
    css = (out / "static" / "style.css").read_text()
    assert "rotateX(180deg)" in css and "transition: transform" in css


def test_hybrid_at_several_sizes_with_a_slider(fixture_site):
    render, out = fixture_site
    render()
    text = (out / "part-a.html").read_text()
    fig = text[text.index('id="fig-toy_hybrid"'):]
    fig = fig[:fig.index('class="provenance"')]
    widths = [int(w) for w in re.findall(r'style="width: (\d+)px"', fig)]
    assert widths == [160, 80, 32, 16]
    assert '<input type="range" class="size-slider" min="8" max="320" step="2" value="160">' in fig
    # Every copy is drawn pixel by pixel; the ones from afar are far views, the image area-averaged down to
    # the 8 pixels the section's classifier read it at (a nearest-neighbour copy would keep every edge).
    assert re.findall(r'<img class="(\w+)"', fig) == ["pixelated"] * 4
    assert re.findall(r' src="([^"]+)"', fig) == ["figures/toy_hybrid-r0c0.png"] * 2 + ["figures/toy_hybrid-r0c0-8px.png"] * 2
    assert "32 px (from afar: 8 × 8 pixels)" in fig
    sizes = re.search(r'data-far="([^"]+)" data-far-path="([^"]+)"', fig)
    assert sizes.group(1) == " ".join(map(str, range(8, 28, 2))), "a far view every 2 px from 8 up to 28"
    far = {px: sizes.group(2).replace("{px}", px) for px in sizes.group(1).split()}
    import torch
    import torch.nn.functional as F

    board = torch.tensor(np.indices((28, 28)).sum(axis=0) % 2 * 255, dtype=torch.float64)[None, None]
    for px, path in far.items():
        with Image.open(out / path) as image:
            assert image.size == (int(px), int(px))
            values = np.asarray(image)
        # What the section's classifier reads of an image seen small: torch's area interpolation.
        read = F.interpolate(board, size=(int(px), int(px)), mode="area")[0, 0].numpy()
        assert np.abs(values - read).max() <= 0.5, px
        assert 100 <= values.min() and values.max() <= 155, f"{px} px: an average, not a sample of the squares"


def test_gif_player_has_frame_slider_over_the_strip(fixture_site):
    render, out = fixture_site
    render()
    text = (out / "part-b.html").read_text()
    assert 'data-labels="[&#34;t = 300&#34;,&#34;t = 0&#34;]"' in text
    # The strip loads only when the reader asks (the script makes its <img> from data-src); until then
    # the player shows the last frame, a still cut from the strip at render time.
    assert '<div class="gif-window" hidden data-src="figures/toy_gif-strip.png"' in text
    assert "<img class=\"pixelated gif-strip\"" not in text
    assert '<img class="pixelated gif-poster" src="figures/toy_gif-poster.png"' in text
    assert '<button type="button" class="gif-play" data-size="0 KB">play</button>' in text
    assert '<input type="range" class="gif-slider" min="0" max="1" step="1" value="1">' in text
    assert '<output class="gif-label">t = 0</output>' in text
    assert '<img class="pixelated gif-anim" src="figures/toy_gif.gif"' in text, "the GIF plays without the script"
    poster = Image.open(out / "figures" / "toy_gif-poster.png")
    assert poster.size == (4, 4) and np.asarray(poster).tolist() == [[90] * 4] * 4
    strip = np.zeros((4, 8), np.uint8)
    strip[:, 4:] = 200  # a strip whose frames differ: the poster is the last one
    assert np.asarray(Image.open(io.BytesIO(last_frame_png(_png_file(strip), 2)))).min() == 200


def test_zoom_links_open_the_image_itself(fixture_site):
    render, out = fixture_site
    render()
    text = (out / "part-b.html").read_text()
    assert '<a class="zoom" href="figures/toy_plot.png"><img src="figures/toy_plot.png"' in text
    assert "lightbox" not in text, "the zoom dialog is made by the script, not duplicated per image"
    assert '<script src="static/site.js"></script>' in text


def test_teaser_links_into_the_report_without_reusing_ids(fixture_site):
    render, out = fixture_site
    summary = render()
    index = (out / "index.html").read_text()
    assert '<a href="part-a.html#fig-toy_anagram">' in index and '<a href="part-b.html#fig-toy_gif">' in index
    assert 'src="figures/toy_gif-poster.png"' in index and 'src="figures/toy_anagram-r0c1.png"' in index
    assert "toy_gif.gif" not in index, "an animation's thumbnail is a still"
    assert "Skipped" not in index, "an id this build did not produce is left out"
    assert not [i for i in ids_of(out / "index.html") if i.startswith("fig-")]
    assert 'style="height: 20%"' in index, "the hybrid teaser shows the image close up and from afar"
    assert '<a href="part-a.html#illusions">Illusions</a>' in index, "the landing page lists each part's sections"
    assert not [w for w in summary["warnings"] if "teaser" in w]


def test_teaser_warns_about_a_figure_no_page_shows(fixture_site, tmp_path):
    render, out = fixture_site
    content = tmp_path / "content"
    content.mkdir()
    (content / "index.md").write_text("---\ntitle: Home\npage: index\n---\n{{ teaser(['toy_plot']) }}\n")
    summary = render(content)
    assert any("toy_plot" in w and "teaser" in w for w in summary["warnings"])
    assert "teaser" not in (out / "index.html").read_text()


def test_provenance_names_backend_model_and_key(fixture_site):
    render, out = fixture_site
    render()
    text = (out / "part-a.html").read_text()
    prov = text[text.index('id="fig-toy_anagram"'):]
    prov = prov[prov.index('<details class="provenance">'):prov.index("</details>")]
    for expected in ("<code>toy_edits</code>", "local, <code>a toy UNet</code>", "<dt>Model</dt><dd><code>ToyUNet</code>",
                     "<dt>Profile</dt><dd>cpu</dd>", "<dt>Seed</dt><dd>7</dd>", "abababababababab",
                     '{"guidance":7.0,"seen_small_px":8}'):
        assert expected in prov, expected
    part_b = (out / "part-b.html").read_text()
    assert "none: the project's own models, trained by this build" in part_b


def test_footer_is_deterministic(fixture_site, tmp_path):
    render, out = fixture_site
    render()
    render(out=tmp_path / "again")
    for page in ("index.html", "part-a.html", "part-b.html"):
        assert (out / page).read_bytes() == (tmp_path / "again" / page).read_bytes()
    footer = (out / "index.html").read_text().split('<footer class="site-footer">')[1]
    assert "cdcdcdcdcdcdcdcd" in footer and "torch x.y" in footer and "Figures computed" not in footer
    render.manifest["build"]["date"] = "2025-11-21"
    render()
    assert "Figures computed 2025-11-21." in (out / "index.html").read_text()


def test_summary_reports_the_site_size(fixture_site):
    render, out = fixture_site
    summary = render()
    on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert summary["bytes"] == on_disk == sum(summary["sizes"].values())
    assert summary["sizes"]["figures"] > 0 and summary["sizes"]["pages"] > 0 and summary["sizes"]["static"] > 0


def test_escaping_in_captions(fixture_site):
    render, out = fixture_site
    render()
    assert "Hyperparameters &lt;used&gt;." in (out / "part-b.html").read_text()


def test_warm_render_writes_nothing_and_stale_files_go(fixture_site):
    render, out = fixture_site
    render()
    (out / "figures" / "stale.png").write_bytes(b"old")
    summary = render()
    assert summary["changed"] == 0 and summary["removed"] == 1
    assert not (out / "figures" / "stale.png").exists()


def test_unknown_figure_id_fails_naming_id_and_file(fixture_site, tmp_path):
    render, out = fixture_site
    content = tmp_path / "content"
    content.mkdir()
    (content / "x.md").write_text("---\ntitle: X\npage: part-a\n---\n{{ figure('no_such_figure') }}\n")
    with pytest.raises(BuildError, match=r"x\.md, line 5: the figure 'no_such_figure' is not produced"):
        render(content)
    assert not out.exists(), "nothing may be written when the content is wrong"


def test_bad_latex_is_a_clear_error(fixture_site, tmp_path):
    render, _ = fixture_site
    content = tmp_path / "content"
    content.mkdir()
    (content / "m.md").write_text("---\ntitle: M\npage: part-a\n---\n$$\n\\frac{1}{\n$$\n")
    with pytest.raises(BuildError, match="cannot render the math"):
        render(content)


def _content(tmp_path: Path, body: str) -> Path:
    content = tmp_path / "content"
    content.mkdir(exist_ok=True)
    (content / "x.md").write_text("---\ntitle: X\npage: part-a\n---\n" + body)
    return content


def test_a_failing_expression_in_content_names_its_line_and_the_error(fixture_site, tmp_path):
    render, _ = fixture_site
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "fine\n\n{{ 1 // 0 }}\n"))
    where = tmp_path / "content" / "x.md"
    assert str(err.value) == (f"{where}, line 7: the template failed to render (ZeroDivisionError: integer "
                              f"division or modulo by zero). Fix that line and build again.")
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "{{ param('toy_ddpm', 'lr') }}\n"))
    assert str(err.value) == f"{where}, line 5: section 'toy_ddpm' has no parameter 'lr'. Fix the name; it has: epochs."


def test_a_failure_inside_a_macro_names_the_template_line_and_the_content_line(fixture_site, tmp_path):
    import copy

    render, _ = fixture_site
    manifest = copy.deepcopy(render.manifest)
    manifest["sections"]["toy_ddpm"]["figures"][2]["table"]["rows"] = 5  # the table macro cannot loop over it
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "text\n{{ figure('toy_table') }}\n"), manifest=manifest)
    message = str(err.value)
    assert re.match(rf"{re.escape(str(TEMPLATES))}/macros\.html, line \d+: TypeError: 'int' object is not "
                    rf"iterable, while rendering "
                    rf"{re.escape(str(tmp_path / 'content' / 'x.md'))}, line 6\. Fix the template \(or what the "
                    rf"content passes to it\) and build again\.$", message), message


def test_template_failure_paragraphs(tmp_path):
    from jinja2 import Environment, FileSystemLoader, TemplateSyntaxError

    from builder.site.templating import template_failure

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "bad.html").write_text("one\n{% if %}\n")
    (templates / "boom.html").write_text("one\ntwo\n{{ 1 // zero }}\n")
    env = Environment(loader=FileSystemLoader(templates))
    with pytest.raises(TemplateSyntaxError) as err:
        env.get_template("bad.html")
    assert template_failure(err.value, templates) == (
        f"{templates / 'bad.html'}, line 2: syntax error: Expected an expression, got 'end of statement block'. "
        f"Fix the template and build again; the figures are cached, so only the pages are rendered.")
    err.value.filename = None
    assert template_failure(err.value, templates).startswith("bad.html, line 2: syntax error: ")
    try:
        env.get_template("boom.html").render(zero=0)
    except ZeroDivisionError as exc:
        assert template_failure(exc, templates) == (
            f"{templates / 'boom.html'}, line 3: ZeroDivisionError: integer division or modulo by zero. Fix the "
            f"template and build again; the figures are cached, so only the pages are rendered.")
        assert template_failure(exc, tmp_path / "elsewhere").startswith(
            f"a template in {tmp_path / 'elsewhere'}: ZeroDivisionError: ")


def test_write_failure_paragraphs():
    import errno

    from builder.site.sitefiles import write_failure

    out, target = Path("/srv/site"), Path("/srv/site/figures/a.png")
    tail = ("Then build again: the figures are safely in the cache, so only the pages are written. No half-written "
            "file was left, but the site may mix files of this build with the previous one until a build succeeds.")
    assert write_failure(OSError(errno.ENOSPC, "ignored"), out, target) == (
        f"cannot write the site into {out}: writing {target} failed (ENOSPC, No space left on device). The disk is "
        f"full: free some space, or pass --site-dir with a folder on another disk. {tail}")
    assert "(EACCES, Permission denied). This user may not write there" in write_failure(
        OSError(errno.EACCES, "x"), out, target)
    assert write_failure(OSError("a strange failure"), out, target) == (
        f"cannot write the site into {out}: writing {target} failed (a strange failure). Fix the cause, or pass "
        f"--site-dir with another folder. {tail}")
    assert "failed (EIO, Input/output error). Fix the cause" in write_failure(OSError(errno.EIO, "x"), out, target)
    assert "failed (Unknown error 4000). Fix the cause" in write_failure(OSError(4000, "x"), out, target)


def test_teaser_cards_of_each_kind():
    from builder.site.passes import teaser_card

    shown = {"href": "part-a.html#fig-f", "where": "Part A, Edits"}

    def f(role, sha):  # a file record as the render pass has it: with its path in the site
        return {"sha": sha, "ext": "png", "role": role, "path": f"figures/f-{role}.png"}

    base = {"id": "f", "alt": "the alt", "caption": "Label: then the rest"}
    for kind, role in (("image", "image"), ("grid", "image"), ("plot", "image"), ("gif", "animation")):
        card = teaser_card({**base, "kind": kind, "files": [f("other", "1"), f(role, "2")]}, {}, shown)
        assert card == {"id": "f", "kind": kind, "display": "", "label": "Label", "href": shown["href"],
                        "where": shown["where"], "images": [{"src": f"figures/f-{role}.png", "alt": "the alt",
                                                             "scale": 1.0, "width": None, "height": None}]}
        assert len(card["images"]) == 1
    with_poster = teaser_card({**base, "kind": "gif", "files": [f("animation", "1"), f("poster", "2")]}, {}, shown)
    assert [im["src"] for im in with_poster["images"]] == ["figures/f-poster.png"], "a still, not the GIF"
    assert teaser_card({**base, "kind": "table", "files": [f("image", "1")]}, {}, shown)["images"] == []
    items = [{"file": i, "width": w, **({"alt": f"item {i}"} if i else {})} for i, w in enumerate((10, 40, 20, 0, 5))]
    gallery = {**base, "kind": "gallery", "files": [f(f"r0c{i}", str(i)) for i in range(5)] + [f("r1c0", "9")],
               "rows": [{"items": items}, {"items": [{"file": 5}]}], "meta": {"display": "hybrid"}}
    card = teaser_card(gallery, {"label": "Mine"}, shown)
    assert card["display"] == "hybrid" and card["label"] == "Mine"
    assert [(i["alt"], i["scale"]) for i in card["images"]] == [("the alt", 0.25), ("item 1", 1.0), ("item 2", 0.5),
                                                                ("item 3", 1.0)]  # the first four, by width
    picked = teaser_card(gallery, {"items": [4, 1, 5, 7, -1]}, shown)["images"]
    assert [(i["alt"], i["scale"]) for i in picked] == [("item 4", 0.125), ("item 1", 1.0)]  # out of range: left out
    assert [i["alt"] for i in teaser_card(gallery, {"row": 9}, shown)["images"]] == ["the alt"]  # the last row
    assert teaser_card({**gallery, "rows": []}, {}, shown)["images"] == []
    assert teaser_card(gallery, {"items": [5, 9]}, shown)["images"] == []  # nothing in range
    no_width = {**gallery, "rows": [{"items": [{"file": 0}, {"file": 1}]}]}
    assert [i["scale"] for i in teaser_card(no_width, {}, shown)["images"]] == [1.0, 1.0]


def test_stale_files_and_the_folders_they_leave_empty_go(fixture_site):
    render, out = fixture_site
    render()
    (out / "old" / "deep").mkdir(parents=True)
    (out / "old" / "deep" / "a.png").write_bytes(b"1")
    (out / "old" / "b.png").write_bytes(b"2")
    summary = render()
    assert summary["removed"] == 2 and not (out / "old").exists()


def _front(tmp_path: Path, text: str) -> Path:
    content = tmp_path / "fm"
    content.mkdir(exist_ok=True)
    for old in content.glob("*.md"):
        old.unlink()
    (content / "x.md").write_text(text)
    return content


def test_front_matter_is_read_with_its_line_numbers(tmp_path):
    from builder.site.content import read_content

    where = tmp_path / "fm" / "x.md"
    [cf] = read_content(_front(tmp_path, "---\ntitle: Ratio: a / b\n\npage: part-b\n---\n\nbody\n---\nafter a rule\n"), PAGES)
    assert cf.meta == {"title": "Ratio: a / b", "page": "part-b"} and cf.page == "part-b"
    assert cf.body == "\nbody\n---\nafter a rule\n" and cf.body_line == 6  # the line after the closing '---'
    [cf] = read_content(_front(tmp_path, "---\ntitle: Home\n---\nhello\n"), PAGES)
    assert cf.page == "index" and cf.body_line == 4
    cases = {
        "---\ntitle: X\n\nno colon here\n---\n": f"{where}, line 4: the front matter line 'no colon here' is not "
                                                  f"'key: value'; write it as 'key: value' or end the front matter "
                                                  f"with a '---' line before it.",
        "---\ntitle: X\nbody without an end\n": f"{where}, line 1: the front matter that starts here is never "
                                                 f"closed; add a line '---' after its last 'key: value' line.",
        "---\ntitle: X\n\npage: part-c\n---\n": f"{where}, line 4: unknown page 'part-c'; use one of index, part-a, "
                                                 f"part-b, appendix.",
        "---\npage: part-a\n---\n": f"{where}, line 1: the front matter needs a 'title: ...' line (front matter is "
                                    f"'key: value' lines between two '---' lines at the top of the file).",
        "---\n---\ntext\n": f"{where}, line 1: the front matter needs a 'title: ...' line (front matter is "
                            f"'key: value' lines between two '---' lines at the top of the file).",
        "no front matter\n": f"{where}, line 1: the front matter needs a 'title: ...' line (front matter is "
                             f"'key: value' lines between two '---' lines at the top of the file).",
    }
    for text, message in cases.items():
        with pytest.raises(BuildError) as err:
            read_content(_front(tmp_path, text), PAGES)
        assert str(err.value) == message, text


def test_a_body_line_number_counts_a_blank_first_line(fixture_site, tmp_path):
    render, _ = fixture_site
    with pytest.raises(BuildError, match=r"x\.md, line 6: the figure 'nope' is not produced"):
        render(_content(tmp_path, "\n{{ figure('nope') }}\n"))


def test_math_keeps_its_source_escaped_but_does_not_read_it_out(fixture_site, tmp_path):
    """Screen readers speak MathML; an aria-label of raw LaTeX would make them read backslashes instead."""
    render, out = fixture_site
    render(_content(tmp_path, "The slope $f'(x) < 1$ and\n\n$$\\text{\"}a\\text{\"}$$\n"))
    html_text = (out / "part-a.html").read_text()
    assert 'data-tex="f&#x27;(x) &lt; 1"><math ' in html_text
    assert 'data-tex="\\text{&quot;}a\\text{&quot;}"><math ' in html_text
    assert "<math aria-label" not in html_text and html_text.count("<math ") == html_text.count("data-tex=")


def test_the_landing_page_is_written_even_without_content_of_its_own(fixture_site, tmp_path):
    render, out = fixture_site
    summary = render(_content(tmp_path, "{{ figure('toy_plot') }}\n"))
    assert (out / "index.html").is_file() and (out / "part-a.html").is_file()
    assert not (out / "part-b.html").exists() and not (out / "appendix.html").exists()
    assert "figure 'toy_gif' (section toy_ddpm) is produced but no content file shows it" in summary["warnings"]


def test_templates_refuse_a_missing_field_and_keep_non_ascii_labels(fixture_site, tmp_path):
    import copy

    render, out = fixture_site
    manifest = copy.deepcopy(render.manifest)
    gif = manifest["sections"]["toy_ddpm"]["figures"][1]
    gif["frame_labels"] = ["γ = 3, t = 300", "t = 0"]
    render(_content(tmp_path, "{{ figure('toy_gif') }}\n"), manifest=manifest)
    assert 'data-labels="[&#34;γ = 3, t = 300&#34;,&#34;t = 0&#34;]"' in (out / "part-a.html").read_text()
    del gif["fps"]
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "{{ figure('toy_gif') }}\n"), manifest=manifest)
    assert re.match(rf"{re.escape(str(TEMPLATES))}/macros\.html, line \d+: UndefinedError: 'dict object' has no "
                    rf"attribute 'fps', while rendering ", str(err.value)), str(err.value)


def test_a_broken_macros_file_names_its_line(fixture_site, tmp_path):
    import shutil

    import builder.site.render as render_module

    render, _ = fixture_site
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    macros = templates / "macros.html"
    macros.write_text("{% macro broken( %}\n" + macros.read_text())
    with pytest.raises(BuildError) as err:
        render_module.render_site(render.manifest, PAGES, FIXTURES / "content", templates, tmp_path / "out", render.object_path)
    assert str(err.value).startswith(f"{macros}, line 1: syntax error: ")
    assert str(err.value).endswith("Fix the template and build again; the figures are cached, so only the pages "
                                   "are rendered.")
    macros.write_text("{% set broken = 1 // 0 %}\n" + macros.read_text().split("\n", 1)[1])
    with pytest.raises(BuildError) as err:  # fails while the macros module is set up, not in a macro
        render_module.render_site(render.manifest, PAGES, FIXTURES / "content", templates, tmp_path / "out", render.object_path)
    assert re.match(rf"{re.escape(str(macros))}, line \d+: ZeroDivisionError: integer division or modulo by zero\. ",
                    str(err.value)), str(err.value)


def test_content_helpers_and_their_messages(fixture_site, tmp_path):
    render, out = fixture_site
    render(_content(tmp_path, "{{ section('toy_ddpm').title }}|{{ build.seed }}|{{ has_figure('toy_plot') }}|"
                              "{{ has_figure('nope') }}|{% for i in range(3) %}{{ i }}{% endfor %}|"
                              "{{ param('toy_forward', 'timesteps') }}\n\n{{ figure('toy_plot') }}\n"))
    assert "toy ddpm|180|True|False|012|[250, 500]" in (out / "part-a.html").read_text()
    where = tmp_path / "content" / "x.md"
    cases = {
        "{{ section('toy_nope') }}": f"{where}, line 5: the section 'toy_nope' is not in this build. Fix the id; "
                                     f"sections: toy_ddpm, toy_edits, toy_forward.",
        "\n{{ figure('nope') }}": f"{where}, line 6: the figure 'nope' is not produced by any section in this build. "
                                  f"Fix the id or add the figure to a section; produced ids: toy_anagram, "
                                  f"toy_gallery, toy_gif, toy_hybrid, toy_plot, toy_table.",
        "a\n{{ figure('x' }}": f"{where}, line 6: syntax error: unexpected '}}', expected ')'. Fix that line (Jinja "
                               f"syntax: {{{{ ... }}}} and {{% ... %}}).",
    }
    for body, message in cases.items():
        with pytest.raises(BuildError) as err:
            render(_content(tmp_path, body + "\n"))
        assert str(err.value) == message, body
    with pytest.raises(BuildError) as err:  # figure() takes no options
        render(_content(tmp_path, "{{ figure('toy_plot', cols=2) }}\n"))
    # (\S*: the method's qualified name, which mutation testing's trampolines lengthen)
    assert re.fullmatch(rf"{re.escape(str(where))}, line 5: the template failed to render \(TypeError: \S*figure\S*\(\) "
                        rf"got an unexpected keyword argument 'cols'\)\. Fix that line and build again\.",
                        str(err.value))
    empty = {**render.manifest, "sections": {}}
    with pytest.raises(BuildError, match=r"produced ids: none\.$"):
        render(_content(tmp_path, "{{ figure('toy_plot') }}\n"), manifest=empty)


def test_teaser_leaves_out_what_it_cannot_show_and_keeps_going(fixture_site, tmp_path):
    render, out = fixture_site
    content = tmp_path / "content"
    content.mkdir()
    (content / "a.md").write_text("---\ntitle: A\npage: part-a\n---\n{{ figure('toy_plot') }}\n")
    (content / "index.md").write_text("---\ntitle: Home\npage: index\n---\n[{{ teaser(['nope', 'toy_gif']) }}]"
                                      "[{{ teaser(['nope', 'toy_gif', 'toy_plot']) }}]\n")
    summary = render(content)
    index = (out / "index.html").read_text()
    assert "<p>[]" in index and 'href="part-a.html#fig-toy_plot"' in index
    assert index.count('class="teaser-card') == 1
    assert sum("toy_gif" in w and "teaser" in w for w in summary["warnings"]) == 2


def test_math_errors_name_the_content_file(fixture_site, tmp_path):
    render, _ = fixture_site
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "$\\frac{1}{$\n"))
    assert str(err.value).startswith(f"{tmp_path / 'content' / 'x.md'}: cannot render the math '\\\\frac{{1}}{{' (")
    assert str(err.value).endswith("); fix the LaTeX.")


def test_an_included_template_with_a_syntax_error_names_its_own_line(fixture_site, tmp_path):
    import shutil

    import builder.site.render as render_module

    render, _ = fixture_site
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "part.html").write_text("fine\n{% if %}\n")
    with pytest.raises(BuildError) as err:
        render_module.render_site(render.manifest, PAGES, _content(tmp_path, "{% include 'part.html' %}\n"), templates,
                                  tmp_path / "out", render.object_path)
    assert str(err.value).startswith(f"{templates / 'part.html'}, line 2: syntax error: Expected an expression")
    (templates / "page.html").write_text((templates / "page.html").read_text().replace("<main", "{{ 1 // 0 }}<main", 1))
    with pytest.raises(BuildError) as err:
        render_module.render_site(render.manifest, PAGES, _content(tmp_path, "plain text\n"), templates, tmp_path / "out2",
                                  render.object_path)
    assert re.match(rf"{re.escape(str(templates / 'page.html'))}, line \d+: ZeroDivisionError: integer division or "
                    rf"modulo by zero\. Fix the template", str(err.value)), str(err.value)


def test_the_site_files_beside_the_pages(fixture_site, tmp_path):
    import json as json_module

    render, _ = fixture_site
    out = tmp_path / "deep" / "er" / "site"
    summary = render(out=out)
    assert (out / ".nojekyll").read_bytes() == b""
    manifest_text = (out / "manifest.json").read_text()
    assert manifest_text == json_module.dumps(render.manifest, indent=1, sort_keys=True) + "\n"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert summary["files"] == summary["changed"] == len(files) and summary["removed"] == 0
    sizes = summary["sizes"]
    assert sizes["pages"] == sum(p.stat().st_size for p in files if p.suffix == ".html")
    assert sizes["figures"] == sum(p.stat().st_size for p in (out / "figures").iterdir())
    assert sizes["static"] == sum(p.stat().st_size for p in (out / "static").rglob("*") if p.is_file())
    assert sizes["other"] == (out / "manifest.json").stat().st_size + (out / "search-index.js").stat().st_size
    assert sum(sizes.values()) == summary["bytes"] == sum(p.stat().st_size for p in files)


def test_a_kill_after_the_first_file_leaves_exactly_one_new_file(fixture_site, monkeypatch):
    import builder.site.sitefiles as sitefiles

    class Killed(BaseException):
        pass

    def crash_point(name):  # as FUN_DIFFUSION_CRASH_AT=render would, without signalling the test process
        if name == "render":
            raise Killed

    monkeypatch.setattr(sitefiles, "crash_point", crash_point)
    render, out = fixture_site
    with pytest.raises(Killed):
        render()
    assert len([p for p in out.rglob("*") if p.is_file()]) == 1


def test_a_site_folder_that_cannot_be_written_is_one_paragraph(fixture_site, tmp_path):
    render, _ = fixture_site
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the site folder should be")
    with pytest.raises(BuildError) as err:
        render(out=blocked)
    assert str(err.value).startswith(f"cannot write the site into {blocked}: writing {blocked} failed (EEXIST, "
                                     f"File exists). A file stands where a folder must be")
    out = tmp_path / "site2"
    out.mkdir()
    (out / "figures").write_text("a file where the figures folder should be")
    with pytest.raises(BuildError) as err:
        render(out=out)
    assert str(err.value).startswith(f"cannot write the site into {out}: writing {out}/figures/")


def test_a_build_error_inside_a_figure_keeps_its_own_message(fixture_site, tmp_path):
    import builder.site.render as render_module

    from builder.site import memo

    render, _ = fixture_site
    memo.clear()  # a process that read the object before keeps its size under its hash and never asks again

    def gone(sha):
        raise BuildError("the cached object for this figure is missing; run the build again")

    with pytest.raises(BuildError) as err:  # the hybrid's macro asks for its image size
        render_module.render_site(render.manifest, PAGES, _content(tmp_path, "{{ figure('toy_hybrid') }}\n"), TEMPLATES,
                                  tmp_path / "out", gone)
    assert str(err.value) == "the cached object for this figure is missing; run the build again"


def test_template_errors_name_the_template_not_python_beside_it(tmp_path):
    import importlib.util

    from jinja2 import Environment, FileSystemLoader, TemplateSyntaxError

    from builder.site.templating import template_failure

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "helpers.py").write_text("def boom():\n    raise ValueError('no')\n")
    spec = importlib.util.spec_from_file_location("helpers_under_test", templates / "helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    (templates / "page.html").write_text("one\n{{ boom() }}\n")
    env = Environment(loader=FileSystemLoader(templates))
    env.globals["boom"] = helpers.boom
    with pytest.raises(ValueError) as err:
        env.get_template("page.html").render()
    assert template_failure(err.value, templates).startswith(f"{templates / 'page.html'}, line 2: ValueError: no. ")
    (templates / "open.html").write_text("{% if x %}\nunclosed\n")
    with pytest.raises(TemplateSyntaxError) as err:
        env.get_template("open.html")
    assert err.value.message.endswith(".")
    message = template_failure(err.value, templates)
    assert f": syntax error: {err.value.message[:-1]}. Fix the template" in message and ".. Fix" not in message
    bare = TemplateSyntaxError(None, 2, "open.html", str(templates / "open.html"))  # jinja allows no message
    assert template_failure(bare, templates).startswith(f"{templates / 'open.html'}, line 2: syntax error: . Fix ")


def test_messages_list_every_choice_and_keep_jinjas_sentence(fixture_site, tmp_path):
    import copy

    render, _ = fixture_site
    manifest = copy.deepcopy(render.manifest)
    manifest["sections"]["toy_ddpm"]["params"] = {"epochs": 2, "lr": 0.001}
    where = tmp_path / "content" / "x.md"
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "{{ param('toy_ddpm', 'batch') }}\n"), manifest=manifest)
    assert str(err.value) == (f"{where}, line 5: section 'toy_ddpm' has no parameter 'batch'. Fix the name; it has: "
                              f"epochs, lr.")
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "{% if true %}\nnever closed\n"))
    assert str(err.value) == (f"{where}, line 6: syntax error: Unexpected end of template. Jinja was looking for the "
                              f"following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be "
                              f"closed is 'if'. Fix that line (Jinja syntax: {{{{ ... }}}} and {{% ... %}}).")


def test_a_stale_file_that_cannot_be_removed_is_one_paragraph(fixture_site, monkeypatch):
    import errno

    import builder.site.sitefiles as sitefiles

    render, out = fixture_site

    def refuse(out_dir, keep):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(sitefiles, "_remove_stale", refuse)
    with pytest.raises(BuildError) as err:
        render()
    assert str(err.value).startswith(f"cannot write the site into {out}: writing {out} failed (EACCES, Permission "
                                     f"denied). This user may not write there")


def test_a_stale_result_is_marked_on_its_figures_and_on_every_page(fixture_site):
    render, out = fixture_site
    render()
    assert "stale" not in (out / "part-b.html").read_text().lower(), "nothing is marked while all is current"
    manifest = render.manifest
    manifest["build"]["stale"] = ["toy_ddpm"]
    manifest["sections"]["toy_ddpm"]["stale"] = {"changes": ["code.diffusion.ddpm: 1234 -> 5678"],
                                                 "refresh": "python build.py --profile cpu --freeze (on a CUDA GPU)"}
    manifest["sections"]["toy_edits"]["stale_upstream"] = ["toy_ddpm"]
    render()
    for page in ("index.html", "part-a.html", "part-b.html"):
        assert 'class="stale-banner"' in (out / page).read_text() and "<code>toy_ddpm</code>" in (out / page).read_text()
    part_b = (out / "part-b.html").read_text()
    plot = part_b[part_b.index('id="fig-toy_plot"'):]
    plot = plot[:plot.index("</figure>")]
    assert "Stale result." in plot and "code.diffusion.ddpm: 1234 -&gt; 5678" in plot and "--freeze (on a CUDA GPU)" in plot
    anagram = (out / "part-a.html").read_text()
    anagram = anagram[anagram.index('id="fig-toy_anagram"'):]
    assert "Computed from a stale result" in anagram[:anagram.index('id="fig-toy_hybrid"')]


def test_a_false_claim_fails_the_build_naming_line_claim_and_values(fixture_site, tmp_path):
    render, out = fixture_site
    where = tmp_path / "content" / "x.md"
    body = ("{% set rows = table('toy_table') %}\n"
            "Fine.\n{{ check(rows | length > 5, 'the table has many rows', rows=rows | length, share=0.123456) }}\n")
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, body))
    assert str(err.value) == (f"{where}, line 7: the claim \u201cthe table has many rows\u201d is false for this build "
                              f"(rows = 2, share = 0.1235). Reword it or let the data choose the sentence ({{% if %}}).")
    render(_content(tmp_path, body.replace("> 5", "== 2")))
    assert "Fine." in (out / "part-a.html").read_text()


def test_content_reads_a_tables_numbers_and_a_sections_data(fixture_site, tmp_path):
    render, out = fixture_site
    render(_content(tmp_path, "{% for r in table('toy_table') %}[{{ r.value | num * 2 }}]{% endfor %}\n"))
    assert "[0.002][128.0]" in (out / "part-a.html").read_text()
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "{{ data('toy_ddpm', 'history') }}\n"))
    assert "section 'toy_ddpm' saved no data named 'history'" in str(err.value)
    with pytest.raises(BuildError) as err:
        render(_content(tmp_path, "{{ table('toy_plot') }}\n"))
    assert "the figure 'toy_plot' is a plot, not a table." in str(err.value)


REFERENCES = '''[ddpm]
authors = "J. Ho, A. Jain, P. Abbeel"
title = "Denoising Diffusion Probabilistic Models"
where = "NeurIPS"
year = 2020
url = "https://arxiv.org/abs/2006.11239"

[cfg]
authors = "J. Ho, T. Salimans"
title = "Classifier-Free Diffusion Guidance"
where = "a workshop"
year = 2021
url = "https://arxiv.org/abs/2207.12598"
'''


def test_citations_number_in_list_order_and_link_to_the_list(fixture_site, tmp_path):
    render, out = fixture_site
    content = _content(tmp_path, "Guidance {{ cite('cfg') }}, both {{ cite('ddpm', 'cfg') }}.\n")
    (content / "refs.md").write_text("---\ntitle: References\npage: part-b\n---\n{{ references() }}\n")
    (content / "references.toml").write_text(REFERENCES)
    render(content)
    page_a, page_b = (out / "part-a.html").read_text(), (out / "part-b.html").read_text()
    assert ('Guidance <span class="cite">[<a href="part-b.html#ref-cfg">2</a>]</span>, both <span class="cite">'
            '[<a href="part-b.html#ref-ddpm">1</a>, <a href="part-b.html#ref-cfg">2</a>]</span>.') in page_a
    assert '<li id="ref-ddpm" value="1">J. Ho, A. Jain, P. Abbeel. <a href="https://arxiv.org/abs/2006.11239">' \
           'Denoising Diffusion Probabilistic Models</a>. <em>NeurIPS</em>, 2020.</li>' in page_b
    assert page_b.index('id="ref-ddpm"') < page_b.index('id="ref-cfg"')
    (content / "x.md").write_text("---\ntitle: X\npage: part-a\n---\nSee {{ cite('sdedit') }}.\n")
    with pytest.raises(BuildError, match=r"x\.md, line 5: cite\(\) names 'sdedit', which content/references\.toml "
                                         r"does not list\. Fix the key or add the work there; listed: ddpm, cfg\."):
        render(content)
    (content / "references.toml").write_text(REFERENCES.replace('year = 2021\n', ''))
    with pytest.raises(BuildError, match=r"references\.toml: the reference \[cfg\] lacks year"):
        render(content)


def test_a_table_gets_a_column_to_compare_with(fixture_site, tmp_path):
    render, out = fixture_site
    render(_content(tmp_path, '{{ figure("toy_table", beside={"heading": "assignment", "cells": '
                              '{"lr": "0.0001", "D": "64"}}) }}\n'))
    text = (out / "part-a.html").read_text()
    assert '<th scope="col">assignment</th><th scope="col">compared</th>' in text
    assert '<tr class="differs"><td>lr</td><td>0.001</td><td>0.0001</td><td>differs</td></tr>' in text
    assert '<tr><td>D</td><td>64</td><td>64</td><td>same</td></tr>' in text
    with pytest.raises(BuildError, match="needs a table figure"):
        render(_content(tmp_path, '{{ figure("toy_plot", beside={"heading": "x", "cells": {}}) }}\n'))


def test_contents_nest_a_section_under_the_number_it_extends():
    from builder.site.placement import contents_tree

    sections = [{"id": i, "title": t, "toc": []} for i, t in (("a", "1.6 CFG"), ("b", "1.7 SDEdit"),
                                                             ("c", "1.7.2 Inpainting"), ("d", "1.7.3 Text"),
                                                             ("e", "1.8 Anagrams"), ("f", "About"))]
    tree = contents_tree(sections)
    assert [(e["id"], [c["id"] for c in e["children"]]) for e in tree] == [
        ("a", []), ("b", ["c", "d"]), ("e", []), ("f", [])]


def _write_content(tmp_path: Path, files: dict[str, str]) -> Path:
    content = tmp_path / "content"
    content.mkdir(exist_ok=True)
    for name, text in files.items():
        (content / name).write_text(text)
    return content


XREF_FILES = {
    "a1.md": "---\ntitle: 1.1 Noise\npage: part-a\norder: 1\nid: noise\n---\n"
             "$$\nx_t = x_0\n$$ (eq-first)\n\n$$\ny = 1\n$$\n\n{{ figure('toy_gallery') }}\n\n"
             "$$ z = 2 $$ (eq-second)\n\nSee {{ ref('eq-second') }}, {{ ref('fig-toy_plot') }} and {{ ref('sec-ddpm') }}.\n",
    "a2.md": "---\ntitle: 1.2 Curves\npage: part-a\norder: 2\nid: curves\n---\n{{ figure('toy_plot') }}\n\n"
             "Back to {{ ref('eq-first') }}, {{ ref('fig-toy_gallery') }}, {{ ref('sec-noise') }}.\n",
    "b.md": "---\ntitle: 2 A DDPM\npage: part-b\nid: ddpm\n---\n{{ figure('toy_gif') }}\n\n$$\nq = 3\n$$ (eq-step)\n\n"
            "From {{ ref('eq-first') }}, {{ ref('fig-toy_plot') }}; {{ ref('fig-toy_gif') }}, {{ ref('eq-step') }}; "
            "{{ ref('sec-methods') }} and {{ ref('sec-about') }}.\n",
    "z.md": "---\ntitle: A. Methods\npage: appendix\nid: methods\n---\nText.\n",
    "index.md": "---\ntitle: About\npage: index\nid: about\n---\nHello.\n",
}


def test_references_are_numbered_in_reading_order_and_link_across_pages(fixture_site, tmp_path):
    render, out = fixture_site
    render(_write_content(tmp_path, XREF_FILES))
    page_a, page_b = (out / "part-a.html").read_text(), (out / "part-b.html").read_text()

    def xref(kind, href, text):
        return f'<a class="xref xref-{kind}" href="{href}">{text}</a>'

    # Equations count per page in reading order; an unlabelled one gets no number and takes none.
    assert re.findall(r'id="(eq-[a-z]+)"[^>]*>.*?<span class="eq-number">\((\d)\)</span>', page_a) == \
        [("eq-first", "1"), ("eq-second", "2")]
    assert page_a.count('class="eq-number"') == 2 and page_a.count('class="math math-display"') == 1
    assert f"See {xref('eq', '#eq-second', 'Equation (2)')}, {xref('fig', '#fig-toy_plot', 'Figure 2')} and " \
           f"{xref('sec', 'part-b.html#ddpm', 'Section 2 of Part B')}." in page_a
    assert f"Back to {xref('eq', '#eq-first', 'Equation (1)')}, {xref('fig', '#fig-toy_gallery', 'Figure 1')}, " \
           f"{xref('sec', '#noise', 'Section 1.1')}." in page_a
    # The figure a reference names carries the same number in its caption.
    assert re.search(r'id="fig-toy_plot">.*?class="fig-number" href="#fig-toy_plot">Figure 2</a>', page_a, re.S)
    assert (f"From {xref('eq', 'part-a.html#eq-first', 'Equation (1) of Part A')}, "
            f"{xref('fig', 'part-a.html#fig-toy_plot', 'Figure 2 of Part A')}; {xref('fig', '#fig-toy_gif', 'Figure 1')}, "
            f"{xref('eq', '#eq-step', 'Equation (1)')}; {xref('sec', 'appendix.html#methods', 'Appendix A')} and "
            f"{xref('sec', 'index.html#about', 'About')}.") in page_b


def test_an_unknown_reference_fails_naming_the_line_and_close_labels(fixture_site, tmp_path):
    render, out = fixture_site
    content = _write_content(tmp_path, XREF_FILES)
    cases = {
        "ref('eq-frist')": "ref('eq-frist') names no label of this build; after 'eq-' comes an equation label "
                           "($$ ... $$ (eq-name)). Fix the label; close ones: eq-first, eq-step (this build has 3 'eq-' labels).",
        "ref('fig-toy_pot')": "ref('fig-toy_pot') names no label of this build; after 'fig-' comes a figure id. Fix "
                              "the label; close ones: fig-toy_plot, fig-toy_gif, fig-toy_gallery (this build has 3 'fig-' labels).",
        "ref('figure-toy_plot')": "ref('figure-toy_plot') names no kind of label this report knows. Write 'fig-' and "
                                  "a figure id, 'eq-' and an equation label or 'sec-' and a section id, e.g. "
                                  "ref('sec-iterative').",
    }
    for call, message in cases.items():
        (content / "a2.md").write_text(XREF_FILES["a2.md"] + "\nMore.\n\nAnd {{ " + call + " }}.\n")
        with pytest.raises(BuildError) as err:
            render(content)
        assert str(err.value) == f"{content / 'a2.md'}, line 13: {message}"
    assert not out.exists(), "nothing may be written when a reference is wrong"


def test_a_label_defined_twice_fails_naming_both_places(fixture_site, tmp_path):
    render, _ = fixture_site
    content = _write_content(tmp_path, XREF_FILES)
    a1, a2 = content / "a1.md", content / "a2.md"

    def refusal(a2_text: str) -> str:
        a2.write_text(a2_text)
        with pytest.raises(BuildError) as err:
            render(content)
        return str(err.value)

    assert refusal(XREF_FILES["a2.md"] + "\n$$\nw = 4\n$$ (eq-second)\n") == (
        f"{a2}, line 13: the label 'eq-second' is defined a second time (first at {a1}, line 17). Give each "
        f"equation its own label.")
    assert refusal(XREF_FILES["a2.md"].replace("id: curves", "id: noise")) == (
        f"{a2}, line 5: the label 'sec-noise' is defined a second time (first at {a1}, line 5). Give each section "
        f"its own label.")
    assert refusal(XREF_FILES["a2.md"] + "\nAgain:\n\n{{ figure('toy_gallery') }}\n") == (
        f"{a2}, line 13: the figure 'toy_gallery' is shown a second time (first at {a1}, line 15). Show a figure "
        f"once and link to it elsewhere with {{{{ ref('fig-toy_gallery') }}}}.")
    assert refusal(XREF_FILES["a2.md"] + "\n$$\nw = 4\n$$ (eq-not a label)\n") == (
        f"{a2}, line 13: the equation label (eq-not a label) is not one: a label follows a display equation's "
        f"closing $$ on the same line (\"$$ (eq-name)\"), and its name has only letters, digits, '-' and '_'.")
