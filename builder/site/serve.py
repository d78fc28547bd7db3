"""A live preview: serve the built site, rebuild when a watched file changes, reload the open pages.

The files on disk stay exactly the published site: the reload script is added to each HTML page as it
is sent, so it exists only while serving. A rebuild that fails replaces every page with its
one-paragraph error (and the same script, so the page comes back when the error is fixed); the last
good site stays on disk untouched, as any failed build leaves it.
"""
from __future__ import annotations

import html
import http.server
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

EVENTS_PATH = "/__preview/events"
_SCRIPT_MARK = "data-preview-reload"

def reload_script(generation: int) -> str:
    """The script a served page gets: it reloads the page when the build's generation moves on.

    The page knows the generation it was sent in, so a rebuild that ends before the event stream
    connects still reloads it; EventSource reconnects by itself if the server restarts. A reload keeps
    the reader's place: browsers restore the scroll position of a page they reload (the browser test
    checks it)."""
    return (f'<script {_SCRIPT_MARK}>\nnew EventSource("{EVENTS_PATH}").onmessage = (event) => {{\n'
            f'  if (event.data !== "{generation}") location.reload();\n}};\n</script>\n')


@dataclass
class Preview:
    """What the server shows: the build's generation (bumped after every rebuild, so pages reload) and
    the error of the last rebuild, if it failed."""

    generation: int = 0
    error: str | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, error: str | None) -> None:
        with self.changed:
            self.generation += 1
            self.error = error
            self.changed.notify_all()

    def now(self) -> tuple[int, str | None]:
        with self.changed:
            return self.generation, self.error

    def wait(self, after: int, timeout: float) -> int:
        with self.changed:
            self.changed.wait_for(lambda: self.generation != after, timeout=timeout)
            return self.generation


def with_reload_script(page: bytes, generation: int) -> bytes:
    """The page as the preview sends it: the published bytes with the reload script before </body>."""
    text = page.decode("utf-8")
    at = text.rfind("</body>")
    at = len(text) if at < 0 else at
    return (text[:at] + reload_script(generation) + text[at:]).encode("utf-8")


def error_page(error: str, generation: int) -> bytes:
    """The failed rebuild's paragraph, in place of every page until a rebuild succeeds."""
    return with_reload_script(
        ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
         "<title>Build failed</title>\n<style>body{font:1.05rem/1.5 system-ui,sans-serif;max-width:46rem;"
         "margin:3rem auto;padding:0 1rem;color:#1b1b1b;background:#fcfcfa}"
         ".build-error{border-left:4px solid #b3261e;padding:.5rem 1rem;background:#fbeeed;"
         "white-space:pre-wrap;overflow-wrap:anywhere}</style>\n</head>\n<body>\n<main>\n"
         "<h1>The rebuild failed</h1>\n"
         f"<p class=\"build-error\" role=\"alert\">{html.escape(error)}</p>\n"
         "<p>The site on disk is the last one that built. This page reloads by itself once the build "
         "succeeds.</p>\n</main>\n</body>\n</html>\n").encode("utf-8"), generation)


class _Handler(http.server.SimpleHTTPRequestHandler):
    preview: Preview

    def __init__(self, *args, preview: Preview, **kwargs):
        self.preview = preview
        super().__init__(*args, **kwargs)

    def log_message(self, format, *args):  # the terminal shows rebuilds, not every request
        pass

    def do_GET(self):
        if self.path.split("?")[0] == EVENTS_PATH:
            return self._events()
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            return super().do_GET()
        generation, error = self.preview.now()
        body = error_page(error, generation) if error is not None else with_reload_script(path.read_bytes(), generation)
        self.send_response(500 if error is not None else 200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self):
        if self.path.split("?")[0] != EVENTS_PATH:
            self.send_header("Cache-Control", "no-store")  # a reload must fetch the rebuilt figures too
        super().end_headers()

    def _events(self):
        """Server-sent events: the generation now, then each new one (and a comment now and then, so a
        closed tab is noticed and its thread ends)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        generation, _error = self.preview.now()
        try:
            self.wfile.write(f"data: {generation}\n\n".encode())
            self.wfile.flush()
            while True:
                now = self.preview.wait(generation, timeout=15)
                self.wfile.write(f"data: {now}\n\n".encode() if now != generation else b": still here\n\n")
                self.wfile.flush()
                generation = now
        except (BrokenPipeError, ConnectionResetError):
            return


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # open event streams do not keep the process alive


def start_server(site_dir: Path, preview: Preview, port: int = 8000, host: str = "127.0.0.1") -> _Server:
    """Serve ``site_dir`` on ``host:port`` (0: any free port; ``server.server_port`` says which) in a thread."""
    handler = partial(_Handler, directory=str(site_dir), preview=preview)
    server = _Server((host, port), handler)
    threading.Thread(target=server.serve_forever, name="preview-server", daemon=True).start()
    return server


def watch_and_rebuild(preview: Preview, rebuild: Callable[[], str | None], paths: Iterable[Path],
                      on_change: Callable[[set[str]], None] = lambda changed: None,
                      stop: threading.Event | None = None, after: Callable[[], None] = lambda: None) -> None:
    """Each time files under ``paths`` change (watchfiles: editor swap files and ``__pycache__`` are
    ignored), call ``rebuild`` (None on success, else the error's paragraph), publish the result, so that
    the open pages reload, and then call ``after`` (what the rebuild left for later)."""
    from watchfiles import watch

    for changes in watch(*[str(p) for p in paths if p.exists()], stop_event=stop, debounce=800, step=50):
        on_change({path for _change, path in changes})
        preview.publish(rebuild())
        after()
