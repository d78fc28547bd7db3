"""The content files: their front matter and reading order, the works they cite (content/references.toml),
and their math, turned into MathML at build time."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from .. import BuildError
from ..project import Page


_MATH = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)


SLOT = "FIGURESLOT{}X"


SLOT_RE = re.compile(r"(?:<p>)?FIGURESLOT(\d+)X(?:</p>)?")


# A labelled display equation: $$ ... $$ (eq-name), the label after the closing $$ as in MyST (Quarto's
# {#eq-name} would open a Jinja comment).
EQUATION = re.compile(r"\$\$((?:(?!\$\$).)+?)\$\$[ \t]*\((eq-[A-Za-z0-9_-]+)\)", re.S)


STRAY_LABEL = re.compile(r"\$\$[ \t]*\((eq-[^)\n]*)\)")


LABEL_KINDS = {"fig": "a figure id", "eq": "an equation label ($$ ... $$ (eq-name))",
               "sec": "a content file's id (its front matter's id, or its file name after the first '-')"}


@dataclass
class ContentFile:
    path: Path
    meta: dict[str, str]
    body: str
    body_line: int = 1  # the file's line number of the body's first line, for error messages
    meta_lines: dict[str, int] = field(default_factory=dict)  # front matter key -> its line

    @property
    def page(self) -> str:
        return self.meta["page"]

    @property
    def order(self) -> float:
        return float(self.meta.get("order", "0"))

    @property
    def anchor(self) -> str:
        return self.meta.get("id") or self.path.stem.split("-", 1)[-1]


REFERENCE_FIELDS = ("authors", "title", "where", "year", "url")


def read_references(content_dir: Path) -> dict[str, dict[str, Any]]:
    """``content/references.toml``: one table per work, ``[key]`` with authors, title, where, year and
    url, numbered in the file's order; content cites them with ``cite("key")``."""
    import tomllib

    path = Path(content_dir) / "references.toml"
    if not path.is_file():
        return {}
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{path}: not valid TOML ({exc}). Each reference is a table: [key] followed by "
                         f"{' = ..., '.join(REFERENCE_FIELDS)} = ... lines.") from None
    for number, (key, entry) in enumerate(entries.items(), start=1):
        missing = [f for f in REFERENCE_FIELDS if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise BuildError(f"{path}: the reference [{key}] lacks {', '.join(missing)}; give every reference "
                             f"{', '.join(REFERENCE_FIELDS)}.")
        entry["number"], entry["key"] = number, key
    return entries


def read_content(content_dir: Path, pages: tuple[Page, ...]) -> list[ContentFile]:
    """The content files, each with its front matter, in reading order (by page, then ``order``)."""
    names = [page.name for page in pages]
    files = []
    for path in sorted(Path(content_dir).glob("*.md")):
        text = path.read_text(encoding="utf-8")
        meta: dict[str, str] = {}
        lines: dict[str, int] = {}
        body_line = 1
        if text.startswith("---\n"):
            end = text.find("\n---\n", 3)  # from 3: an empty front matter ("---\n---\n") is closed too
            if end < 0:
                raise BuildError(f"{path}, line 1: the front matter that starts here is never closed; add a "
                                 f"line '---' after its last 'key: value' line.")
            for number, line in enumerate(text[4:end].splitlines(), start=2):
                if line.strip():
                    key, sep, value = line.partition(":")
                    if not sep:
                        raise BuildError(f"{path}, line {number}: the front matter line {line!r} is not "
                                         f"'key: value'; write it as 'key: value' or end the front matter "
                                         f"with a '---' line before it.")
                    meta[key.strip()] = value.strip()
                    lines[key.strip()] = number
            body_line = text.count("\n", 0, end + 5) + 1
            text = text[end + 5:]
        meta.setdefault("page", names[0])  # the landing page
        if meta["page"] not in names:
            raise BuildError(f"{path}, line {lines['page']}: unknown page {meta['page']!r}; use one of "
                             f"{', '.join(names)}.")
        if "title" not in meta:
            raise BuildError(f"{path}, line 1: the front matter needs a 'title: ...' line (front matter is "
                             f"'key: value' lines between two '---' lines at the top of the file).")
        files.append(ContentFile(path, meta, text, body_line, lines))
    return sorted(files, key=lambda c: (names.index(c.page), c.order, c.path.name))


def latex_to_mathml(latex: str, display: bool) -> str:
    from latex2mathml.converter import convert

    return convert(latex, display="block" if display else "inline")


def math_element(tex: str, display: bool, where: str, label: dict[str, Any] | None = None) -> str:
    """LaTeX as MathML in its wrapper; a labelled display equation also carries its id and number."""
    try:
        mathml = latex_to_mathml(tex, display)
    except Exception as exc:  # latex2mathml raises many types for bad input
        raise BuildError(f"{where}: cannot render the math {tex!r} ({exc}); fix the LaTeX.") from None
    # MathML speaks for itself to screen readers; the source stays on the wrapper for authors and tests.
    tag = "div" if display else "span"
    source = html.escape(tex, quote=True)
    if label is None:
        return f'<{tag} class="math math-{"display" if display else "inline"}" data-tex="{source}">{mathml}</{tag}>'
    return (f'<div class="math math-display equation" id="{label["anchor"]}" data-tex="{source}">{mathml}'
            f'<span class="eq-number">({label["number"]})</span></div>')


def render_math(fragment: str, where: str) -> str:
    def replace(match: re.Match) -> str:
        tex = html.unescape(match.group(2)).strip()
        tex = tex[2:-2].strip() if tex[:2] in ("\\(", "\\[") else tex
        return math_element(tex, match.group(1) == "div", where)

    return _MATH.sub(replace, fragment)
