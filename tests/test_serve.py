"""The live preview (``build.py --serve``): what it serves, that the published site never has its script,
and, in a browser, that an edit reloads the page where the reader was."""
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.common import start_preview
from builder.site import serve

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / "artifacts" / "screenshots"
PAGE = b"<!doctype html>\n<html lang=\"en\"><head><title>t</title></head><body><p>hello</p></body></html>\n"


@pytest.fixture
def preview(tmp_path):
    site = tmp_path / "site"
    (site / "figures").mkdir(parents=True)
    (site / "index.html").write_bytes(PAGE)
    (site / "figures" / "a.png").write_bytes(b"\x89PNG not really")
    state = serve.Preview()
    server = serve.start_server(site, state, port=0)
    yield site, state, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_pages_get_the_reload_script_as_they_are_sent_and_the_files_stay_as_built(preview):
    site, _state, base = preview
    for url in (base, base + "index.html"):
        status, body = _get(url)
        assert status == 200
        assert body == PAGE.replace(b"</body>", serve.reload_script(0).encode() + b"</body>")
    assert (site / "index.html").read_bytes() == PAGE, "the file on disk must stay the published page"
    assert _get(base + "figures/a.png") == (200, b"\x89PNG not really"), "other files are sent as they are"
    assert _get(base + "missing.html")[0] == 404


def test_a_failed_rebuild_replaces_every_page_with_its_error_until_one_succeeds(preview):
    _site, state, base = preview
    state.publish("content/x.md, line 3: the figure 'nope' is not produced <by any section>.")
    status, body = _get(base + "index.html")
    text = body.decode()
    assert status == 500 and "hello" not in text
    assert ('<p class="build-error" role="alert">content/x.md, line 3: the figure &#x27;nope&#x27; is not produced '
            '&lt;by any section&gt;.</p>') in text
    assert serve.reload_script(1) in text, "the error page must reload by itself once the build is fixed"
    state.publish(None)
    assert _get(base + "index.html")[1].startswith(b"<!doctype html>\n<html lang=\"en\"><head><title>t</title>")


def test_the_event_stream_says_each_new_generation(preview):
    _site, state, base = preview
    state.publish(None)
    seen: list[str] = []

    def listen():
        with urllib.request.urlopen(base + serve.EVENTS_PATH.lstrip("/"), timeout=10) as stream:
            for line in stream:
                if line.startswith(b"data: "):
                    seen.append(line[6:].strip().decode())
                if len(seen) == 3:
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    for _ in range(50):
        if seen:
            break
        time.sleep(0.05)
    state.publish("broken")
    time.sleep(0.2)
    state.publish(None)
    thread.join(timeout=10)
    assert seen == ["1", "2", "3"]


def test_the_published_site_never_carries_the_reload_script():
    pages = sorted((ROOT / "site").rglob("*.html"))
    assert len(pages) >= 4, "the committed site should be here"
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert serve.EVENTS_PATH not in text and "data-preview-reload" not in text, page
    templates = b"".join(p.read_bytes() for p in (ROOT / "templates").rglob("*") if p.is_file())
    assert serve.EVENTS_PATH.encode() not in templates  # the vendored runtime's WASM binary is there too


def test_serve_refuses_the_options_it_cannot_preview_and_a_taken_port():
    proc = subprocess.run([sys.executable, "build.py", "--serve", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--serve previews the site as it is built; it cannot be combined with --clean, --list" in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "build.py", "--serve", "--port", str(port)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: the preview cannot listen on 127.0.0.1:{port} (Address already in use). Choose "
                           f"another port with --port N, or --port 0 for any free one.\n")


def _project_copy(tmp_path: Path) -> Path:
    """The project's tracked files but the site, so that a test may edit its content."""
    copy = tmp_path / "project"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in listed.stdout.split("\0"):
        if name and not name.startswith("site/") and (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


@pytest.mark.browser
def test_an_edit_reloads_the_open_page_where_the_reader_was(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    copy = _project_copy(tmp_path)
    try:
        proc, base, log = start_preview(copy, "--site-dir", str(tmp_path / "site"),
                                        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        blur = copy / "content" / "a12-blur.md"
        original = blur.read_text()
        with sync_api.sync_playwright() as manager:
            browser = manager.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "part-a.html", wait_until="load")
            page.wait_for_function("() => document.querySelector('#blur-title') !== null")
            page.evaluate("() => document.getElementById('blur').scrollIntoView({behavior: 'instant'})")
            page.wait_for_timeout(300)
            y = page.evaluate("() => window.scrollY")
            assert y > 1000

            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "preview-1-before.png"))
            blur.write_text(original.replace("in numbers.", "in numbers. A SENTENCE TYPED JUST NOW."))
            page.wait_for_function("() => document.body !== null && document.body.innerText.includes('A SENTENCE TYPED JUST NOW')", timeout=90_000)
            page.wait_for_load_state("load")
            page.wait_for_timeout(500)
            assert abs(page.evaluate("() => window.scrollY") - y) < 40, "the reload must keep the reader's place"
            page.screenshot(path=str(SHOTS / "preview-2-reloaded.png"))

            blur.write_text(original + "\n{{ figure('no_such_figure') }}\n")
            page.wait_for_selector(".build-error", timeout=90_000)
            page.screenshot(path=str(SHOTS / "preview-3-error.png"))
            error = page.locator(".build-error").text_content()
            assert f"{blur}, line " in error and "the figure 'no_such_figure' is not produced" in error
            assert "A SENTENCE TYPED JUST NOW" in (tmp_path / "site" / "part-a.html").read_text(), \
                "a failed rebuild leaves the last good site on disk"

            blur.write_text(original)
            page.wait_for_selector("#blur-title", timeout=90_000)
            assert "A SENTENCE TYPED JUST NOW" not in page.content()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "preview: changed content/a12-blur.md" in "".join(log)
