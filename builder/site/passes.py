"""The two passes over each content file: the reference pass (where each figure is first shown, and the
labels that ref() links to, numbered per page in reading order) and the render pass (Jinja with the
content helpers of _Scope, then Markdown, math and the figures placed), each kept by the process memo."""
from __future__ import annotations

import html
import json
import re
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import markdown
from jinja2 import Environment, StrictUndefined, TemplateSyntaxError
from markupsafe import Markup

from .. import BuildError
from ..fingerprint import hash_value, sha256_bytes
from . import memo
from .content import EQUATION, LABEL_KINDS, SLOT, SLOT_RE, STRAY_LABEL, ContentFile, math_element, render_math
from .placement import Site
from .templating import inside_folder, template_failure, template_lines


class _Scope(ABC):
    """The functions a content file calls: ``figure``, ``teaser``, ``section``, ``param``, ``has_figure``,
    ``data``, ``table``, ``check``, ``cite``, ``references`` and ``ref``."""

    def __init__(self, cf: ContentFile, site: Site):
        self.cf, self.site, self.where = cf, site, str(cf.path)
        self._data: dict[tuple[str, str], Any] = {}  # (section, name) -> its saved JSON, read once

    def lookup(self, fig_id: str) -> tuple[str, dict[str, Any]]:
        if fig_id not in self.site.figures:
            known = ", ".join(sorted(self.site.figures)) or "none"
            raise _ContentError(self.where, f"the figure {fig_id!r} is not produced by any section in this build. "
                                            f"Fix the id or add the figure to a section; produced ids: {known}.")
        return self.site.figures[fig_id]

    def section(self, sid: str) -> dict[str, Any]:
        sections = self.site.manifest["sections"]
        if sid not in sections:
            raise _ContentError(self.where, f"the section {sid!r} is not in this build. Fix the id; sections: "
                                            f"{', '.join(sorted(sections))}.")
        return sections[sid]

    def cite(self, *keys: str) -> Markup:
        """``[3]`` or ``[3, 5]``: links to the works in the list of references."""
        unknown = [k for k in keys if k not in self.site.references]
        if unknown or not keys:
            listed = ", ".join(self.site.references) or "none (there is no content/references.toml)"
            raise _ContentError(self.where, f"cite() names {', '.join(map(repr, unknown)) or 'no work'}, which "
                                            f"content/references.toml does not list. Fix the key or add the "
                                            f"work there; listed: {listed}.")
        page = self.site.pages[self.cf.page].file
        at = "" if self.site.references_at in (None, page) else self.site.references_at
        links = [f'<a href="{at}#ref-{k}">{self.site.references[k]["number"]}</a>' for k in keys]
        return Markup(f'<span class="cite">[{", ".join(links)}]</span>')

    def param(self, sid: str, name: str):
        params = self.section(sid)["params"]
        if name not in params:
            raise _ContentError(self.where, f"section {sid!r} has no parameter {name!r}. Fix the name; it has: "
                                            f"{', '.join(sorted(params))}.")
        return params[name]

    def has_figure(self, fig_id: str) -> bool:
        return fig_id in self.site.figures

    def data(self, sid: str, name: str):
        """A section's data output (its ``ctx.save_json(name, ...)``): the numbers that prose states."""
        saved = self.section(sid).get("data", {})
        if name not in saved:
            raise _ContentError(self.where, f"section {sid!r} saved no data named {name!r}. Fix the name; it "
                                            f"saved: {', '.join(sorted(saved)) or 'none'}.")
        if (sid, name) not in self._data:
            self._data[sid, name] = json.loads(self.site.object_path(saved[name]).read_text(encoding="utf-8"))
        return self._data[sid, name]

    def table(self, fig_id: str) -> list[dict[str, str]]:
        """A table figure's rows as {column: cell}, the cells as the reader sees them (``| num`` reads one)."""
        _sid, fig = self.lookup(fig_id)
        if fig["kind"] != "table":
            raise _ContentError(self.where, f"the figure {fig_id!r} is a {fig['kind']}, not a table.")
        return [dict(zip(fig["table"]["columns"], row)) for row in fig["table"]["rows"]]

    def check(self, holds: bool, claim: str, **values) -> str:
        """A result the prose states, checked against this build's data: a false one fails the build,
        naming the content line, the claim and the values it was checked with."""
        if not holds:
            shown = ", ".join(f"{k} = {_short_value(v)}" for k, v in values.items())
            raise _ContentError(self.where, f"the claim \u201c{claim}\u201d is false for this build"
                                            f"{f' ({shown})' if shown else ''}. Reword it or let the data choose "
                                            f"the sentence ({{% if %}}).")
        return ""

    @abstractmethod
    def figure(self, fig_id: str, beside: dict[str, Any] | None = None) -> Markup:
        """Place a figure (or, in the reference pass, note where it is shown)."""

    @abstractmethod
    def ref(self, label: str) -> Markup:
        """A link to a labelled figure, equation or section, named by its number (nothing in the reference
        pass, which numbers them)."""

    @abstractmethod
    def references(self) -> Markup:
        """The list of works that ``cite`` links to (in the reference pass: note the page it is on)."""

    @abstractmethod
    def teaser(self, items) -> Markup:
        """Thumbnails of figures shown elsewhere (nothing in the reference pass)."""

    def render(self, env: Environment, templates_dir: Path) -> str:
        """The content file's body through Jinja, with these functions; errors name the file's line."""
        where, offset = self.where, self.cf.body_line - 1
        content_env = env.overlay(undefined=StrictUndefined)
        try:
            # Compiled under the file's own name (from_string would call it "<template>"), so that Jinja's
            # syntax errors and rewritten tracebacks say which line of the body failed.
            code = memo.get(("compile", self.cf.path.name, where, sha256_bytes(self.cf.body.encode("utf-8"))),
                            lambda: content_env.compile(self.cf.body, name=self.cf.path.name, filename=where))
            template = content_env.template_class.from_code(content_env, code, content_env.make_globals(None))
            return template.render(figure=self.figure, param=self.param, section=self.section,
                                   has_figure=self.has_figure, teaser=self.teaser, build=self.site.manifest["build"],
                                   data=self.data, table=self.table, check=self.check, cite=self.cite,
                                   references=self.references, ref=self.ref)
        except TemplateSyntaxError as exc:
            if exc.filename != where:  # an included template: its own line numbers
                raise BuildError(template_failure(exc, templates_dir)) from None
            raise BuildError(f"{where}, line {exc.lineno + offset}: syntax error: "
                             f"{(exc.message or '').rstrip('.')}. Fix that line (Jinja syntax: {{{{ ... }}}} and "
                             f"{{% ... %}}).") from None
        except Exception as exc:
            raise BuildError(_content_failure(exc, where, offset, templates_dir)) from None


class _References(_Scope):
    """The reference pass: notes, in ``effects``, the labels the file defines (its figures, where each is shown)
    and whether it lists the references; ``reference_pass`` applies them to the site."""

    def __init__(self, cf: ContentFile, site: Site):
        super().__init__(cf, site)
        self.effects: list[tuple] = []

    def figure(self, fig_id: str, beside: dict[str, Any] | None = None) -> Markup:
        self.lookup(fig_id)
        page = self.site.pages[self.cf.page]
        self.effects.append(("label", f"fig-{fig_id}", "fig", _running_line(self.where, self.cf.body_line - 1)))
        self.effects.append(("shown", fig_id, {"href": f"{page.file}#fig-{fig_id}",
                                               "where": f"{page.short}, {self.cf.meta['title']}"}))
        return Markup("")

    def ref(self, label: str) -> Markup:
        return Markup("")

    def teaser(self, items) -> Markup:
        return Markup("")

    def references(self) -> Markup:
        self.effects.append(("at", self.site.pages[self.cf.page].file))
        return Markup("")


def reference_pass(cf: ContentFile, site: Site, env: Environment, templates_dir: Path) -> None:
    """Render ``cf`` once to learn what it shows and labels: its section, its figures (through ``figure``)
    and its labelled equations, numbered in reading order. What a file defines depends on its text, the
    manifest, the templates and the list of works alone, so a live preview keeps it (``memo``)."""
    key = ("references", _content_key(cf), site.digest, site.templates, hash_value(site.references))
    for effect in memo.get(key, lambda: _references_of(cf, site, env, templates_dir)):
        if effect[0] == "label":
            _define(site, effect[1], effect[2], cf, effect[3])
        elif effect[0] == "shown":
            site.shown.setdefault(effect[1], effect[2])
        else:
            site.references_at = effect[1]


def _references_of(cf: ContentFile, site: Site, env: Environment, templates_dir: Path) -> tuple[tuple, ...]:
    scope = _References(cf, site)
    effects = [("label", f"sec-{cf.anchor}", "sec", cf.meta_lines.get("id", cf.meta_lines.get("title", 1)))]
    text = scope.render(env, templates_dir)
    effects += scope.effects
    searched_from = 0
    for match in EQUATION.finditer(text):
        label = match.group(2)
        # The label's line in the source (the rendered text's lines differ where Jinja ran).
        at = cf.body.find(f"({label})", searched_from)
        line = cf.body_line + cf.body.count("\n", 0, at) if at >= 0 else None
        searched_from = at + 1 if at >= 0 else searched_from
        effects.append(("label", label, "eq", line))
    return tuple(effects)


def _content_key(cf: ContentFile) -> str:
    """A content file as its renders see it: path, text, front matter and where its body starts."""
    return hash_value({"path": str(cf.path), "body": cf.body, "line": cf.body_line, "meta": cf.meta,
                       "lines": cf.meta_lines})


def _define(site: Site, label: str, kind: str, cf: ContentFile, line: int | None) -> None:
    """Number ``label`` (figures and equations count per page, in reading order; a section has the number
    its title starts with) or fail, naming both places, if it is already taken."""
    where = f"{cf.path}, line {line}" if line else str(cf.path)
    if label in site.labels:
        first = f"first at {site.labels[label]['file']}, line {site.labels[label]['line']}"
        if kind == "fig":
            raise BuildError(f"{where}: the figure {label[4:]!r} is shown a second time ({first}). Show a figure "
                             f"once and link to it elsewhere with {{{{ ref({label!r}) }}}}.")
        raise BuildError(f"{where}: the label {label!r} is defined a second time ({first}). Give each "
                         f"{'section' if kind == 'sec' else 'equation'} its own label.")
    page = cf.page
    if kind == "sec":
        number, text = _section_number(cf.meta["title"])
    else:
        site.counts[page, kind] = count = site.counts.get((page, kind), 0) + 1
        number, text = str(count), f"Figure {count}" if kind == "fig" else f"Equation ({count})"
    site.labels[label] = {"kind": kind, "page": page, "number": number, "text": text, "file": str(cf.path),
                          "line": line, "anchor": cf.anchor if kind == "sec" else label}


def _section_number(title: str) -> tuple[str, str]:
    """A section's number and how a reference names it: "1.4 Iterative" -> Section 1.4, "A. Methods" ->
    Appendix A; a title without a number is named by the title."""
    first = title.split(" ", 1)[0]
    if re.fullmatch(r"\d+(?:\.\d+)*", first):
        return first, f"Section {first}"
    if re.fullmatch(r"[A-Z]\.?", first):
        return first.rstrip("."), f"Appendix {first.rstrip('.')}"
    return "", title


def _unknown_label(label: str, labels: dict[str, dict[str, Any]]) -> str:
    import difflib

    kind = label.split("-", 1)[0]
    if kind not in LABEL_KINDS or "-" not in label:
        return (f"ref({label!r}) names no kind of label this report knows. Write 'fig-' and a figure id, "
                f"'eq-' and an equation label or 'sec-' and a section id, e.g. ref('sec-iterative').")
    same = [name for name in labels if name.startswith(kind + "-")]
    close = difflib.get_close_matches(label, same, n=3, cutoff=0.6)
    return (f"ref({label!r}) names no label of this build; after '{kind}-' comes {LABEL_KINDS[kind]}. Fix the "
            f"label{'; close ones: ' + ', '.join(close) if close else ''} (this build has {len(same)} "
            f"'{kind}-' labels).")


def _running_line(where: str, offset: int) -> int | None:
    """The line of the content file ``where`` that is being rendered now, read from the stack: Jinja's
    compiled template maps its Python lines back to the template's."""
    frame = sys._getframe(1)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None and frame.f_code.co_filename == where:
            return template.get_corresponding_lineno(frame.f_lineno) + offset
        frame = frame.f_back
    return None


class _Placed(_Scope):
    """The render pass: figures and teasers become HTML, kept out of Markdown's way in slots."""

    def __init__(self, cf: ContentFile, site: Site, macros, used: set[str], warnings: list[str]):
        super().__init__(cf, site)
        self.macros, self.used, self.warnings = macros, used, warnings
        self.slots: list[Markup] = []

    def place(self, html_text: Markup) -> Markup:
        self.slots.append(html_text)
        return Markup("\n\n" + SLOT.format(len(self.slots) - 1) + "\n\n")

    def references(self) -> Markup:
        """The numbered list of every work in content/references.toml, each with its ``ref-<key>`` id."""
        return self.place(self.macros.references(list(self.site.references.values())))

    def figure(self, fig_id: str, beside: dict[str, Any] | None = None) -> Markup:
        """A figure, numbered. ``beside`` adds a column to a table: {"heading": ..., "cells": {first cell of a
        row: value}}, with each row marked "same" or "differs" where it has a value."""
        sid, fig = self.lookup(fig_id)
        if beside is not None and (fig["kind"] != "table" or set(beside) != {"heading", "cells"}):
            raise _ContentError(self.where, f"figure({fig_id!r}, beside=...) needs a table figure and a dict with "
                                            f"'heading' and 'cells' (the new column, by each row's first cell).")
        self.used.add(fig_id)
        number = self.site.labels[f"fig-{fig_id}"]["number"]
        return self.place(self.macros.figure(fig, self.site.manifest["sections"][sid], number, self.site.vendor,
                                             beside))

    def ref(self, label: str) -> Markup:
        """``ref("fig-<figure id>")``, ``ref("eq-<label>")``, ``ref("sec-<content id>")``: "Figure 12",
        "Equation (3)", "Section 1.4", linked; "of Part B" is added when the label is on another page."""
        entry = self.site.labels.get(label)
        if entry is None:
            raise _ContentError(self.where, _unknown_label(label, self.site.labels))
        page = self.site.pages[entry["page"]]
        here = entry["page"] == self.cf.page
        text = entry["text"]
        if not here and not (entry["kind"] == "sec" and not entry["number"][:1].isdigit()):
            text += f" of {page.short}"
        href = ("" if here else page.file) + "#" + entry["anchor"]
        return Markup(f'<a class="xref xref-{entry["kind"]}" href="{html.escape(href)}">{html.escape(text)}</a>')

    def teaser(self, items) -> Markup:
        """Small linked thumbnails of figures shown elsewhere, for the landing page.

        ``items`` holds figure ids or dicts {id, label, row, items}: ``row`` picks a gallery row
        (default 0) and ``items`` the indices within it (default: up to four). An id that this
        build did not produce is left out, so a teaser never fails a smaller build; one that no
        page shows is left out with a warning, since there would be nothing to link to. The
        thumbnails carry no element ids, so they never clash with the figures' own.
        """
        cards = []
        for spec in items:
            spec = {"id": spec} if isinstance(spec, str) else dict(spec)
            fid = spec["id"]
            if fid not in self.site.figures:
                continue
            if fid not in self.site.shown:
                self.warnings.append(f"{self.where}: the teaser names {fid!r}, which no report page shows; left out")
                continue
            _sid, fig = self.site.figures[fid]
            card = teaser_card(fig, spec, self.site.shown[fid])
            if card["images"]:
                cards.append(card)
        return self.place(self.macros.teaser(cards)) if cards else Markup("")


def render_content(cf: ContentFile, site: Site, env: Environment, macros, used: set[str],
                    warnings: list[str], templates_dir: Path, state: str) -> dict[str, Any]:
    """A content file's HTML. It depends on the file, the manifest, the templates and what the reference pass
    found (``state``, ``Site.state``) alone, so a live preview keeps it, with the figures it placed and the
    warnings it gave, and renders again only the files an edit changed."""
    key = ("content", _content_key(cf), site.digest, site.templates, state)
    result, placed, said = memo.get(key, lambda: _render_content_now(cf, site, env, macros, templates_dir))
    used.update(placed)
    warnings.extend(said)
    return result


def _render_content_now(cf: ContentFile, site: Site, env: Environment, macros, templates_dir: Path):
    used: set[str] = set()
    warnings: list[str] = []
    scope = _Placed(cf, site, macros, used, warnings)
    text = scope.render(env, templates_dir)
    text = EQUATION.sub(lambda m: str(scope.place(Markup(math_element(
        m.group(1).strip(), True, scope.where, site.labels[m.group(2)])))), text)
    stray = STRAY_LABEL.search(text)
    if stray is not None:
        at = cf.body.find(stray.group(0))
        where = f"{cf.path}, line {cf.body_line + cf.body.count(chr(10), 0, at)}" if at >= 0 else str(cf.path)
        raise BuildError(f"{where}: the equation label ({stray.group(1)}) is not one: a label follows a display "
                         f"equation's closing $$ on the same line (\"$$ (eq-name)\"), and its name has only letters, "
                         f"digits, '-' and '_'.")
    md = markdown.Markdown(extensions=["pymdownx.arithmatex", "toc", "tables", "attr_list", "md_in_html",
                                       "footnotes", "sane_lists"],
                           extension_configs={"pymdownx.arithmatex": {"generic": True},
                                              "toc": {"toc_depth": "3-4", "slugify": _slug_with(cf.anchor),
                                                      "anchorlink": True, "anchorlink_class": "anchor"}})
    body = render_math(md.convert(text), scope.where)
    body = SLOT_RE.sub(lambda m: str(scope.slots[int(m.group(1))]), body)
    return ({"id": cf.anchor, "title": cf.meta["title"], "html": Markup(body), "toc": md.toc_tokens,
             "meta": cf.meta}, frozenset(used), tuple(warnings))


class _ContentError(BuildError):
    """A content file's wrong reference; the line is added once the traceback says where it is."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.detail = detail


def _content_failure(exc: BaseException, where: str, offset: int, templates_dir: Path) -> str:
    lines = template_lines(exc, lambda name: name == where)
    at = f"{where}, line {lines[-1][1] + offset}" if lines else where
    if isinstance(exc, _ContentError):
        return f"{at}: {exc.detail}"
    if isinstance(exc, BuildError):
        return str(exc)
    inner = template_lines(exc, inside_folder(templates_dir))
    if inner:  # it failed inside a macro that the content called, e.g. through figure()
        return (f"{inner[-1][0]}, line {inner[-1][1]}: {type(exc).__name__}: {exc}, while rendering {at}. "
                f"Fix the template (or what the content passes to it) and build again.")
    return f"{at}: the template failed to render ({type(exc).__name__}: {exc}). Fix that line and build again."


def teaser_card(fig: dict[str, Any], spec: dict[str, Any], shown: dict[str, str]) -> dict[str, Any]:
    images = []
    if fig["kind"] in ("image", "grid", "plot", "gif"):
        # An animation's thumbnail is its last frame: a still, not the whole GIF.
        role = "image" if fig["kind"] != "gif" else "poster" if any(f["role"] == "poster" for f in fig["files"]) \
            else "animation"
        for f in fig["files"]:
            if f["role"] == role:
                images.append({"src": f["path"], "alt": fig["alt"], "scale": 1.0, "width": f.get("width"),
                               "height": f.get("height")})
    elif fig["kind"] == "gallery" and fig.get("rows"):
        row = fig["rows"][min(int(spec.get("row", 0)), len(fig["rows"]) - 1)]
        picked = [row["items"][i] for i in spec.get("items", range(min(4, len(row["items"]))))
                  if 0 <= i < len(row["items"])]
        widest = max((it.get("width", 0) for it in picked), default=0)
        for it in picked:
            file = fig["files"][it["file"]]
            images.append({"src": file["path"], "alt": it.get("alt") or fig["alt"], "width": file.get("width"),
                           "height": file.get("height"),
                           "scale": it["width"] / widest if widest and it.get("width") else 1.0})
    return {"id": fig["id"], "kind": fig["kind"], "display": (fig.get("meta") or {}).get("display", ""),
            "label": spec.get("label") or fig["caption"].split(":")[0], "href": shown["href"],
            "where": shown["where"], "images": images}


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short_value(v) for v in value) + "]"
    return str(value)


def _slug_with(prefix: str):
    from markdown.extensions.toc import slugify

    return lambda value, separator: f"{prefix}-{slugify(value, separator)}"
