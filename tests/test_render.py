"""Rendering: snapshots of the HTML for a fixed manifest, math, links, and bad references."""
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builder import BuildError
from builder.render import render_site

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def png(value: int, size=(4, 4)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size, value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


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
           "files": [file(b"GIF89a-fake", "gif", "animation"), file(png(90, (4, 8)), "png", "strip")],
           "frames": 2, "fps": 5, "frame_size": [4, 4], "frame_labels": ["t = 300", "t = 0"], "meta": {},
           "publish": True}
    table = {"id": "toy_table", "kind": "table", "caption": "Hyperparameters <used>.", "alt": "Hyperparameters",
             "files": [], "table": {"columns": ["name", "value"], "rows": [["lr", "0.001"], ["D", "64"]]},
             "meta": {}, "publish": True}

    def section(sid, figures, params):
        return {"id": sid, "title": sid.replace("_", " "), "key": "ab" * 32, "seed": 7, "profile": "cpu",
                "device": "cpu", "dtype": "float32", "backend": None, "params": params, "wall_seconds": 1.25,
                "figures": figures}

    manifest = {
        "build": {"profile": "cpu", "seed": 180, "device": "cpu", "dtype": "float32", "backend": None,
                  "versions": {"torch": "x.y"}, "source_digest": "cd" * 32},
        "sections": {"toy_forward": section("toy_forward", [gallery], {"timesteps": [250, 500]}),
                     "toy_ddpm": section("toy_ddpm", [plot, gif, table], {"epochs": 2})},
    }
    out = tmp_path / "site"

    def render(content=FIXTURES / "content"):
        return render_site(manifest, content, TEMPLATES, out, lambda sha: _write(tmp_path, sha, blobs[sha]))

    return render, out


def _write(tmp_path: Path, sha: str, data: bytes) -> Path:
    path = tmp_path / "objects" / sha
    path.write_bytes(data)
    return path


def test_pages_match_snapshots(fixture_site, snapshot):
    render, out = fixture_site
    render()
    assert (out / "part-a.html").read_text() == snapshot(name="part-a")
    assert (out / "part-b.html").read_text() == snapshot(name="part-b")


def test_math_is_mathml_at_build_time(fixture_site):
    render, out = fixture_site
    render()
    page_a = (out / "part-a.html").read_text()
    page_b = (out / "part-b.html").read_text()
    assert "arithmatex" not in page_a + page_b and "\\sqrt" not in re.sub(r'aria-label="[^"]*"', "", page_a)
    assert page_a.count('<math ') == 2 and 'display="block"' in page_a
    assert "<msqrt>" in page_a and "<mfrac>" in page_b


def test_every_link_resolves_inside_the_site(fixture_site):
    render, out = fixture_site
    render()
    assert_links_resolve(out)


def assert_links_resolve(out: Path):
    for page in out.glob("*.html"):
        text = page.read_text()
        ids = set(re.findall(r'id="([^"]+)"', text))
        for attr, url in re.findall(r'(src|href)="([^"]*)"', text):
            assert not re.match(r"^[a-z]+:|^//|^/", url), f"{page.name}: {attr}={url} is not a relative URL"
            path, _, fragment = url.partition("#")
            if path:
                assert (out / path).is_file(), f"{page.name}: {attr}={url} points at a missing file"
            if fragment and not path:
                assert fragment in ids, f"{page.name}: #{fragment} names no element"
    css = (out / "static" / "style.css").read_text()
    assert "url(" not in css and "@import" not in css, "the stylesheet must not load anything"


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
    with pytest.raises(BuildError, match=r"x\.md shows the figure 'no_such_figure'"):
        render(content)
    assert not out.exists(), "nothing may be written when the content is wrong"


def test_bad_latex_is_a_clear_error(fixture_site, tmp_path):
    render, _ = fixture_site
    content = tmp_path / "content"
    content.mkdir()
    (content / "m.md").write_text("---\ntitle: M\npage: part-a\n---\n$$\n\\frac{1}{\n$$\n")
    with pytest.raises(BuildError, match="cannot render the math"):
        render(content)
