"""The templates' Jinja environment (one per folder in a process) and what a template's error says: the
template file and line, never the Python beside it."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateSyntaxError, pass_context, select_autoescape
from markupsafe import Markup

from .. import BuildError
from ..fingerprint import canonical_json
from . import memo


def environment(templates_dir: Path):
    """The templates' Jinja environment, one per folder in a process: it recompiles a template only when
    its file changes (auto_reload), so a live preview compiles each template once."""
    env = memo.get(("environment", str(Path(templates_dir).resolve())), lambda: _new_environment(templates_dir))
    try:
        macros = env.get_template("macros.html").module
    except Exception as exc:
        raise BuildError(template_failure(exc, templates_dir)) from None
    return env, macros


def _new_environment(templates_dir: Path) -> Environment:
    env = Environment(loader=FileSystemLoader(str(templates_dir)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["tojson_sorted"] = lambda v: Markup(canonical_json(v))
    env.filters["pct"] = lambda v, digits=0: f"{100 * v:.{digits}f}%"
    env.filters["num"] = table_number
    env.filters["tojson_attr"] = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    env.filters["expand"] = _expand
    # What a static file weighs, for a button that says what it will download.
    env.globals["static_bytes"] = lambda name: (templates_dir / "static" / name).stat().st_size
    return env


@pass_context
def _expand(context, text: str) -> Markup:
    """A string that is itself a template (a project's words for its pages), rendered with the names the
    caller sees: its figures, parameters and references. Empty text stays empty."""
    if not text:
        return Markup("")
    template = context.environment.overlay(autoescape=False).from_string(text)
    return Markup(template.render(context.get_all()))


def template_lines(exc: BaseException, is_template: Callable[[str], bool]) -> list[tuple[str, int]]:
    """(file, line) of every template frame of ``exc``'s traceback, outermost first.

    Jinja rewrites the frames of compiled templates to carry the template's file name and line
    (jinja2.debug.rewrite_traceback_stack), so template frames are told apart by their file name.
    """
    found = []
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if is_template(name):
            found.append((name, tb.tb_lineno))
        tb = tb.tb_next
    return found


def inside_folder(folder: Path) -> Callable[[str], bool]:
    folder = folder.resolve()
    return lambda name: not name.endswith(".py") and Path(name).resolve().is_relative_to(folder)


def template_failure(exc: BaseException, templates_dir: Path) -> str:
    """One paragraph naming the template file and line of a syntax or rendering error."""
    if isinstance(exc, TemplateSyntaxError):
        where = f"{exc.filename or exc.name}, line {exc.lineno}"
        what = f"syntax error: {(exc.message or '').rstrip('.')}"
    else:
        frames = template_lines(exc, inside_folder(Path(templates_dir)))
        where = f"{frames[-1][0]}, line {frames[-1][1]}" if frames else f"a template in {templates_dir}"
        what = f"{type(exc).__name__}: {exc}"
    return (f"{where}: {what}. Fix the template and build again; the figures are cached, so only the "
            f"pages are rendered.")


def table_number(cell: Any) -> float:
    """The number a table cell shows: "18.25" -> 18.25, "97.5%" -> 0.975, "123 ± 4" -> 123, "∞" -> inf."""
    if isinstance(cell, (int, float)):
        return float(cell)
    text = str(cell).strip().replace(",", "")
    if text.startswith("∞"):
        return float("inf")
    match = re.match(r"[-+]?\d+(?:\.\d+)?", text)
    if match is None:
        raise ValueError(f"the table cell {cell!r} does not start with a number")
    value = float(match.group())
    return value / 100 if text[match.end():].lstrip().startswith("%") else value
