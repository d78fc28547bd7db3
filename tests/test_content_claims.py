"""Prose that follows the data: no measured number typed into content/, and every claim about results
either chosen by the data or checked against it, in every edition a build renders."""
import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, build, statuses

CONTENT = ROOT / "content"

# Literal numbers in prose that are facts, not results of a build (the reason is the value).
FACTS = {
    "10%": "the share of each digit in MNIST (appendix A)",
}

_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$", re.S)
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?%?")


_REFERENCE = re.compile(r"\b(?:[Ss]ections?|Part [AB]|Algorithm|appendix) [\d.]+(?:(?:,| and| to) [\d.]+)*")


def prose(text: str) -> str:
    """What a content file says in its own words: front matter, Jinja, math and references to numbered
    sections removed."""
    def blank(match: re.Match) -> str:  # keep the line count, so that lines are the file's own
        return " " + "\n" * match.group().count("\n")

    if text.startswith("---"):
        end = text.index("\n---\n", 3) + 5
        text = "\n" * text[:end].count("\n") + text[end:]
    return _REFERENCE.sub(blank, _MATH.sub(blank, _TEMPLATE.sub(blank, text)))


def literals(text: str) -> list[tuple[int, str]]:
    found = []
    for lineno, line in enumerate(prose(text).splitlines(), 1):
        found += [(lineno, m.group()) for m in _NUMBER.finditer(line)]
    return found


def measured_cells(manifest: dict) -> set[str]:
    """Every table cell a build measured (hyperparameter tables are settings, not measurements)."""
    cells = set()
    for section in manifest["sections"].values():
        for fig in section["figures"]:
            if fig["kind"] == "table" and not fig["id"].endswith("hparams") and not fig["id"].startswith("bench_"):
                for row in fig["table"]["rows"]:
                    cells.update(str(c) for c in row[1:])
    return cells


def suspicious(text: str, measured: set[str]) -> list[str]:
    """Literal numbers that look measured: a table's cell, or a share or decimal no fact explains."""
    out = []
    for lineno, value in literals(text):
        if value in FACTS:
            continue
        looks_measured = value.endswith("%") or re.fullmatch(r"\d+\.\d{2,}", value)
        if value in measured and len(value) > 2 or looks_measured:
            out.append(f"line {lineno}: {value}")
    return out


def test_no_content_file_types_a_measured_number(smoke_build):
    manifest = json.loads((smoke_build["site"] / "manifest.json").read_text())
    measured = measured_cells(manifest)
    for edition in (ROOT / "site" / "manifest.json", ROOT / "site" / "cpu" / "manifest.json"):
        if edition.is_file():
            measured |= measured_cells(json.loads(edition.read_text()))
    found = {path.name: suspicious(path.read_text(), measured) for path in sorted(CONTENT.glob("*.md"))}
    assert {name: hits for name, hits in found.items() if hits} == {}, (
        "insert these from the section's outputs ({{ data(...) }}, {{ table(...) }}) instead of typing them")


def test_the_literal_check_catches_a_typed_result(smoke_build):
    """The check above must fail when a result is typed in: plant one of each kind."""
    manifest = json.loads((smoke_build["site"] / "manifest.json").read_text())
    cell = next(c for c in sorted(measured_cells(manifest)) if re.fullmatch(r"\d+\.\d+", c))
    planted = f"---\ntitle: t\n---\nThe distance falls to {cell} after the last epoch; 37% read as 7s.\n"
    assert suspicious(planted, measured_cells(manifest)) == [f"line 4: {cell}", "line 4: 37%"]
    assert suspicious("---\ntitle: t\n---\n{{ q.floor }} and $0.25$ and 10% of MNIST\n", set()) == []


def test_smoke_pages_read_true(smoke_build):
    """The smoke build renders every content file, so every data-chosen sentence and every check()
    held for its numbers (a false one fails the build)."""
    page = (smoke_build["site"] / "part-b.html").read_text()
    assert "the distance goes from" in page and "classifier agrees with the requested digit" in page


@pytest.mark.skipif(not all((ROOT / "frozen" / e / "freeze.json").is_file() for e in ("cpu", "spec")),
                    reason="no committed freeze of both editions")
def test_a_fresh_clone_writes_the_committed_site_byte_for_byte(tmp_path):
    """The README's build on a CPU with an empty cache: every result of both editions comes from the
    committed freezes (the spec edition's from the GPU's, none computed here), every claim holds for them
    (a false one fails the build), and the site is the committed one."""
    from builder.graph.registry import discover
    from project import PROJECT

    proc = build(cache=tmp_path / "cache", site=tmp_path / "site")
    sections = discover(PROJECT.sections)
    assert set(statuses(proc).values()) == {"frozen"} and proc.report["executed"] == [], proc.stdout
    assert sorted(statuses(proc)) == sorted([*sections, *(f"spec/{s}" for s in sections)])
    ours, committed = tmp_path / "site", ROOT / "site"
    files = {p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file()}
    assert files == {p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file()}
    assert [f for f in sorted(files) if (ours / f).read_bytes() != (committed / f).read_bytes()] == []


def test_prose_helper_sees_only_the_prose():
    text = Path(CONTENT / "b23-time-sampling.md").read_text()
    assert "{{" not in prose(text) and "\\hat x_0" not in prose(text)
