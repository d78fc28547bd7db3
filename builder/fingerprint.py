"""Content hashes for cache keys: code, parameters and files.

Code is hashed by its syntax tree without docstrings, so reformatting a section or editing a
comment does not re-run it, while any change to what the code does does.
"""
from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, tuples as lists."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot put {type(value).__name__} into a cache key: {value!r}")


def hash_value(value: Any) -> str:
    return sha256_bytes(canonical_json(value).encode())


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


class CodeIndex:
    """Hashes of the project's Python modules, found under ``root`` in the named ``packages``.

    Only modules of those packages are hashed and followed, so a project decides which of its
    code joins a key (its science) by the packages it names; anything else (the standard library,
    torch, the engine itself) is left out.
    """

    def __init__(self, root: Path, packages: tuple[str, ...]):
        self.root = Path(root)
        self.packages = tuple(packages)
        self._parsed: dict[Path, tuple[str, tuple[str, ...]]] = {}

    def module_path(self, name: str) -> Path | None:
        """The source file of a module of the indexed packages, or None for anything else."""
        if name.split(".")[0] not in self.packages:
            return None
        base = self.root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def _parse(self, path: Path) -> tuple[str, tuple[str, ...]]:
        """(hash of the docstring-free syntax tree, indexed modules it imports)."""
        if path in self._parsed:
            return self._parsed[path]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = ".".join(path.relative_to(self.root).with_suffix("").parts)
        if path.name == "__init__.py":
            package = package.rsplit(".", 1)[0] if "." in package else package
        else:
            package = package.rsplit(".", 1)[0] if "." in package else ""
        imports: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".") if package else []
                    base = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                imports.add(module)
                # `from pkg import mod` may name a submodule rather than an attribute.
                imports.update(f"{module}.{alias.name}" for alias in node.names)
        digest = sha256_bytes(ast.dump(_strip_docstrings(tree)).encode())
        self._parsed[path] = digest, tuple(sorted(i for i in imports if self.module_path(i) is not None))
        return self._parsed[path]

    def module_hash(self, name: str) -> str:
        """The hash of one module alone (a file outside the indexed packages is hashed too)."""
        path = self.module_path(name) or self.root.joinpath(*name.split(".")).with_suffix(".py")
        return self._parse(path)[0]

    def fingerprint(self, module_name: str) -> dict[str, str]:
        """Hashes of a module and every indexed module it imports, transitively, by module name.

        Parent packages' ``__init__`` files count too, since importing a submodule runs them.
        """
        seen: dict[str, str] = {}
        stack = [module_name]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            path = self.module_path(name)
            if path is None:
                continue
            digest, imports = self._parse(path)
            seen[name] = digest
            stack.extend(imports)
            parts = name.split(".")
            stack.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        return dict(sorted(seen.items()))


def library_versions(libraries: tuple[str, ...]) -> dict[str, str]:
    """Python's version and those of the named distributions ("absent" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": ".".join(map(str, sys.version_info[:2]))}
    for dist in libraries:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "absent"
    return out
