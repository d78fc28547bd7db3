"""The built site checked by the tools its auditors use: zero errors from the Nu HTML checker.

(axe-core runs in the browser tests, ``tests/test_browser.py``.) The checker comes from npm
(``package.json``; ``scripts/env.sh`` installs it) and needs Java. It runs on the committed site and
on the site this session's smoke build wrote from the current code.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VNU = ROOT / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"

if not VNU.is_file() or shutil.which("java") is None:
    pytest.skip(f"the Nu HTML checker needs {VNU.relative_to(ROOT)} (npm ci) and java", allow_module_level=True)


def nu_errors(pages: list[Path]) -> list[str]:
    out = subprocess.run(["java", "-jar", str(VNU), "--errors-only", "--format", "json", *map(str, pages)],
                         capture_output=True, text=True, timeout=600)
    messages = json.loads(out.stderr or out.stdout or '{"messages": []}')["messages"]
    return [f"{Path(m.get('url', '?')).name}:{m.get('lastLine', '?')}: {m['message']}" for m in messages
            if m.get("type") == "error" or m.get("subType") == "fatal"]


@pytest.mark.parametrize("which", ["committed", "current"])
def test_the_nu_html_checker_finds_no_error(which, request):
    site = ROOT / "site" if which == "committed" else request.getfixturevalue("smoke_build")["site"]
    pages = sorted(Path(site).rglob("*.html"))
    assert len(pages) >= 4, f"no built site at {site}"
    errors = nu_errors(pages)
    assert not errors, f"{len(errors)} errors from the Nu HTML checker in {site}:\n" + "\n".join(errors[:20])


def test_the_checker_reports_a_planted_error(tmp_path):
    """The check can fail: a caption between a figure's content and more content is an error."""
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html lang="en"><head><title>x</title></head><body><figure>'
                    '<p>an image</p><figcaption>a</figcaption><details><summary>b</summary></details></figure></body></html>')
    assert any("not allowed as child" in e for e in nu_errors([page]))
