"""Finds the section modules of a package and checks their declared dependencies.

A section's declaration (``SECTION``) is data, and its run is code: listing the sections, computing
their keys and finding their cached results needs only the declarations, so a module is imported
(with torch and everything else it needs) only when its section must run. Without importing it, the
declaration comes from the stat cache's memo (``builder.statcache``), remembered under the digest of
the module's code and of everything it imports from the science packages, which is exactly what
decides it; a module whose code changed is imported again and its declaration remembered anew.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import importlib.util
import pkgutil
from types import ModuleType
from typing import Any, Callable

from .. import BuildError, statcache
from ..fingerprint import canonical_json, hash_value
from ..section import Needs, Section

DECLARATION_FORMAT = 1


class SectionModule:
    """A module that declares ``SECTION`` and ``run(ctx)``, imported on first use of ``module`` or ``run``.
    Its declaration is the same either way (``discover`` remembers only those that data gives back exactly)."""

    def __init__(self, section: Section, name: str, module: ModuleType | None = None, run: Callable | None = None):
        self.declared, self.name, self._module, self._run = section, name, module, run

    @property
    def id(self) -> str:
        return self.declared.id

    @property
    def loaded(self) -> bool:
        return self._module is not None

    @property
    def module(self) -> ModuleType:
        if self._module is None:
            module = importlib.import_module(self.name)
            real = getattr(module, "SECTION", None)
            if real is None or as_data(real) != as_data(self.declared):
                raise BuildError(f"{self.name} declares another SECTION than the one remembered for its code; "
                                 f"delete {statcache.FILE} in the cache folder and build again.")
            self._module = module
        return self._module

    @property
    def section(self) -> Section:
        """The declaration: the module's own once it is imported (a run reads its values as written)."""
        return self._module.SECTION if self._module is not None else self.declared

    @property
    def run(self) -> Callable:
        return self._run or self.module.run

    def __getstate__(self):  # a worker process imports the module itself
        return {**self.__dict__, "_module": None}


def as_data(section: Section) -> dict[str, Any]:
    """A declaration as JSON data (tuples become lists; a key hashes both alike)."""
    return json.loads(canonical_json(dataclasses.asdict(section)))


def from_data(data: dict[str, Any]) -> Section:
    return Section(**{**data, "needs": Needs(**data["needs"])})


def discover(package: str, code=None) -> dict[str, SectionModule]:
    """Every module of ``package`` that declares ``SECTION`` and ``run``. ``code``: the science's
    ``CodeIndex``; with it (and a stat cache in use), declarations remembered for the modules' code
    are used without importing the modules."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise BuildError(f"the section package {package!r} cannot be found; it must be a folder with an "
                         f"__init__.py on the Python path.")
    found: dict[str, SectionModule] = {}
    for info in sorted(pkgutil.iter_modules(spec.submodule_search_locations), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = _declared(f"{package}.{info.name}", code)
        if mod is None:
            continue
        if mod.id in found:
            raise BuildError(f"two modules declare the section id {mod.id!r}: "
                             f"{found[mod.id].name} and {mod.name}; rename one.")
        found[mod.id] = mod
    for gen in found.values():
        for dep in gen.declared.depends:
            if dep not in found:
                raise BuildError(f"section {gen.id!r} depends on {dep!r}, which no section module declares; "
                                 f"known sections: {', '.join(sorted(found))}.")
    return found


def _declared(name: str, code) -> SectionModule | None:
    cache = statcache.current()
    key = None
    if code is not None and cache is not None:
        key = f"declaration:{name}:" + hash_value({"format": DECLARATION_FORMAT, "code": code.fingerprint(name),
                                                   "section": _section_code()})
        remembered = cache.remembered(key)
        if remembered is not None:
            return SectionModule(from_data(remembered["section"]), name) if remembered["section"] else None
    module = importlib.import_module(name)
    section = getattr(module, "SECTION", None)
    # Remembered only where the data gives the declaration back exactly (a tuple in the parameters would
    # come back a list, which a run could tell apart): such a module is imported every time.
    if key is not None and (section is None or from_data(as_data(section)) == section):
        cache.remember(key, {"section": as_data(section) if section is not None else None})
    return SectionModule(section, name, module) if section is not None else None


def _section_code() -> str:
    """The digest of builder/section.py: its defaults are part of every declaration."""
    from pathlib import Path

    from ..fingerprint import code_digest

    path = Path(__file__).parent.parent / "section.py"
    return statcache.digest(path, "code-digest", lambda data: code_digest(data.decode("utf-8")))


def build_order_from_graph(graph: dict[str, tuple[str, ...]]) -> list[str]:
    """The sections in an order where each comes after what it depends on (ties by name), or one
    paragraph naming the circle."""
    from graphlib import CycleError, TopologicalSorter

    sorter = TopologicalSorter({gid: sorted(deps) for gid, deps in sorted(graph.items())})
    try:
        sorter.prepare()
    except CycleError as exc:
        raise BuildError(f"the section dependencies form a cycle: {' -> '.join(exc.args[1])}") from None
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(ready)
        sorter.done(*ready)
    return order
