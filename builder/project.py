"""What the engine is told about the project it builds.

The engine is generic: which package holds the sections, which code is science (and so joins a
section's key), which engine modules turn a section's arrays into bytes, which libraries' versions
matter, what a named input's checksum is, and which pages the report has all come from one
``Project`` that the project's own module (``project.py`` at the repository root) hands over.
Tests build small projects of their own instead of patching module globals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from . import BuildError
from .fingerprint import CodeIndex, GitTree, hash_value, library_versions, sha256_known


@dataclass(frozen=True)
class Page:
    """One page of the site: ``name`` is what content front matter says (``page: part-a``)."""

    name: str
    file: str
    title: str
    short: str


@dataclass(frozen=True)
class Project:
    """A project's facts, as the engine needs them.

    ``science`` are the packages whose code decides a section's outputs: a section's key hashes its
    module and every module of these packages that it imports, transitively. ``writers`` are engine
    modules that turn a section's values into stored bytes (a change there changes outputs, so they
    join every key); the rest of the engine (scheduling, caching, the command line) never does.
    ``inputs`` maps an input name to a function returning its checksum; any other declared input is
    a file or folder under ``root``.
    """

    root: Path
    sections: str = "generators"
    science: tuple[str, ...] = ("generators",)
    writers: tuple[str, ...] = ("builder.figures", "builder.context")
    libraries: tuple[str, ...] = ()
    inputs: dict[str, Callable[[], Any]] = field(default_factory=dict)
    pages: tuple[Page, ...] = (Page("index", "index.html", "Overview", "Overview"),)
    seed: int = 0
    # Profiles published side by side, the one readers land on first; a build of one of them also
    # renders the others that have a committed freeze (frozen/<profile>/).
    editions: tuple[str, ...] = ()
    # The words a page says about the resources an edition was computed with (their identities, as the
    # manifest gives them): the pages read them as ``build.words``, so no content file names a resource.
    words: Callable[[dict[str, Any]], dict[str, str]] | None = None
    engine_root: Path = Path(__file__).resolve().parent.parent  # where the writers' package lives

    @cached_property
    def codebase(self) -> "Codebase":
        """The project's code as a build fingerprints it, read from the files as they are."""
        return Codebase(CodeIndex(self.root, self.science), CodeIndex(self.engine_root, self._writer_packages),
                        self.writers)

    def codebase_at(self, commit: str) -> "Codebase":
        """The same, as the code was at a commit of the git repository that holds the project (and the
        writers, which must be in that repository too unless the project names none)."""
        science = GitTree(self.root, commit)
        engine = GitTree(self.engine_root, commit) if self.writers else science
        if engine.top != science.top:
            raise BuildError(f"the writers ({', '.join(self.writers)}) live in {engine.top}, outside the repository "
                             f"of {self.root}, so their code at a commit of the project cannot be read.")
        return Codebase(CodeIndex(self.root, self.science, tree=science),
                        CodeIndex(self.engine_root, self._writer_packages, tree=engine), self.writers)

    @property
    def _writer_packages(self) -> tuple[str, ...]:
        return tuple(sorted({w.split(".")[0] for w in self.writers}))

    @cached_property
    def versions(self) -> dict[str, str]:
        return library_versions(self.libraries)

    def code_fingerprint(self, module: str) -> dict[str, str]:
        """A section module's code as its key sees it: its science, transitively, and the writers."""
        return self.codebase.fingerprint(module)

    def resource_code(self, module: str) -> dict[str, str]:
        """The code of a resource (a backend's model) for its identity: the module, and one digest of it
        and the science it imports."""
        return self.codebase.resource_code(module)

    def input_checksum(self, name: str) -> str:
        if name in self.inputs:
            return self.inputs[name]()
        path = self.root / name
        if path.is_file():
            return sha256_known(path)
        if path.is_dir():
            return hash_value({p.relative_to(path).as_posix(): sha256_known(p)
                               for p in sorted(path.rglob("*")) if p.is_file()})
        named = "".join(f"{n!r} or " for n in sorted(self.inputs))
        raise BuildError(f"a section declares the input {name!r}, which is neither {named}a file or folder "
                         f"under {self.root}.")


@dataclass(frozen=True)
class Codebase:
    """The code that joins keys, from one source tree: the science (followed through its imports) and
    the writers (engine modules, hashed one by one)."""

    science: CodeIndex
    engine: CodeIndex
    writers: tuple[str, ...]

    def fingerprint(self, module: str) -> dict[str, str]:
        code = self.science.fingerprint(module)
        code.update({writer: self.engine.module_hash(writer) for writer in self.writers})
        return dict(sorted(code.items()))

    def resource_code(self, module: str) -> dict[str, str]:
        return {"module": module, "digest": hash_value(self.science.fingerprint(module))}

    def modules_of(self, components: dict[str, Any]) -> list[str]:
        """Every module a record's key fingerprints: its code and its resources' code."""
        names = set(components.get("code", {}))
        for identity in components.get("resources", {}).values():
            code = identity.get("code") if isinstance(identity, dict) else None
            if isinstance(code, dict) and "module" in code:
                names.update(self.science.fingerprint(code["module"]))
        return sorted(names)

    def sha256(self, module: str) -> str:
        """The sha256 of a fingerprinted module's file, as this tree has it."""
        index = self.engine if module in self.writers else self.science
        return index.source_sha256(module)

    def path(self, module: str) -> str | None:
        index = self.engine if module in self.writers else self.science
        return index.module_file(module)
