"""Finds the section modules of a package and checks their declared dependencies."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from . import BuildError
from .section import Section


@dataclass(frozen=True)
class SectionModule:
    """A module that declares ``SECTION`` and ``run(ctx)``."""

    section: Section
    module: ModuleType
    run: Callable

    @property
    def id(self) -> str:
        return self.section.id


def discover(package: str) -> dict[str, SectionModule]:
    """Import every module of ``package`` that declares ``SECTION`` and ``run``."""
    pkg = importlib.import_module(package)
    found: dict[str, SectionModule] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        section = getattr(module, "SECTION", None)
        if section is None:
            continue
        if section.id in found:
            raise BuildError(f"two modules declare the section id {section.id!r}: "
                             f"{found[section.id].module.__name__} and {module.__name__}; rename one.")
        found[section.id] = SectionModule(section, module, module.run)
    for gen in found.values():
        for dep in gen.section.depends:
            if dep not in found:
                raise BuildError(f"section {gen.id!r} depends on {dep!r}, which no section module declares; "
                                 f"known sections: {', '.join(sorted(found))}.")
    return found
