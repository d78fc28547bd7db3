"""One edition of the report: the pages computed with one profile, and where in the site they go.

A module of its own, with no imports of weight, so that a build that renders nothing (its inputs are
as the last render left them, builder.site.rendered) never imports Jinja or Markdown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class Edition:
    """One edition of the report: the same pages computed with one profile, in ``folder`` of the site
    ("" for the edition readers land on)."""

    name: str
    manifest: dict[str, Any]
    object_path: Callable[[str], Path]
    folder: str = ""
    freeze: dict[str, Any] | None = None  # the freeze.json it was rendered from, if any (times, date)

    def href(self, page_file: str, seen_from: "Edition") -> str:
        """The link to ``page_file`` of this edition from a page of ``seen_from``."""
        return ("../" if seen_from.folder else "") + self.folder + page_file
