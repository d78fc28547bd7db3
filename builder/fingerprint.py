"""Content hashes for cache keys: code, parameters and files.

Code is hashed by its tokens (``code_digest``), without comments, docstrings or layout, so
reformatting a section or editing a comment does not re-run it, while any change to what the
code does does; and the same source gives the same digest on every Python version, so a result
frozen on one machine is recognised on another.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Any

from . import statcache

# The scheme ``code_digest`` implements; freezes record it, so that a later scheme can re-key them
# (``builder.graph.rekey``). Bump it whenever the digest of some source would change.
FINGERPRINT = "tokens-1"
# What freezes written before the scheme was recorded used: sha256 of ``ast.dump`` without docstrings,
# whose text differs between Python versions (3.12 added fields). Kept only to check such a freeze.
LEGACY_FINGERPRINT = "ast-dump"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_known(path: Path) -> str:
    """A file's sha256, through the stat cache (``builder.statcache``): re-read only if the file changed.
    ``sha256_file`` always reads, for the checks whose point is to re-read (``cache verify``, downloads)."""
    return statcache.digest(path, "sha256", sha256_bytes)


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


# -- code ------------------------------------------------------------------------------------
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
_MARKERS = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}  # their text is layout: only the fact counts
# Python 3.12 splits an f-string into pieces (and 3.14 a t-string) where 3.11 gives one STRING token.
_TEMPLATE_START = {"FSTRING_START", "TSTRING_START"}
_TEMPLATE_END = {"FSTRING_END", "TSTRING_END"}


def code_tokens(source: str) -> list[str]:
    """The tokens that decide what ``source`` does, one spelling on every Python version: no comments,
    blank lines, indentation widths or docstrings; a string literal as its value (so quotes and
    prefixes do not count), an f-string as its source text."""
    lines = source.splitlines(keepends=True)
    docstrings = _docstring_spans(source)
    out: list[str] = []
    depth, start, after_docstring = 0, (0, 0), False
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        name = tokenize.tok_name[tok.type]
        if name in _TEMPLATE_START:
            start = tok.start if depth == 0 else start
            depth += 1
            continue
        if name in _TEMPLATE_END:
            depth -= 1
            if depth == 0:
                out.append("STRING " + _text(lines, start, tok.end))
            continue
        if depth or tok.type in _SKIPPED:
            continue
        if after_docstring and (tok.type == tokenize.NEWLINE or tok.string == ";"):
            after_docstring = False  # the statement that held only the docstring goes with it
            continue
        if tok.type == tokenize.STRING and any(a <= tok.start < b for a, b in docstrings):
            after_docstring = True
            continue
        after_docstring = False
        if tok.type in _MARKERS:
            out.append(name)
        elif tok.type == tokenize.STRING:
            out.append("STRING " + _literal(tok.string))
        else:
            out.append(f"{name} {tok.string}")
    return out


def code_digest(source: str) -> str:
    """The digest of a module's code under the ``FINGERPRINT`` scheme (see ``code_tokens``)."""
    return sha256_bytes("\n".join(code_tokens(source)).encode("utf-8"))


def _literal(text: str) -> str:
    try:
        return repr(ast.literal_eval(text))
    except (ValueError, SyntaxError):  # an f-string, which Python 3.11 gives as one STRING token
        return text


def _text(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    (l1, c1), (l2, c2) = start, end
    if l1 == l2:
        return lines[l1 - 1][c1:c2]
    return lines[l1 - 1][c1:] + "".join(lines[l1:l2 - 1]) + lines[l2 - 1][:c2]


def _docstring_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where each docstring is, as (line, column) in characters from start to end (an implicitly
    concatenated docstring is several string tokens within one span)."""
    lines = source.splitlines(keepends=True)

    def chars(line: int, byte_col: int) -> tuple[int, int]:  # ast counts columns in UTF-8 bytes
        return line, len(lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8"))

    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                value = first.value
                spans.append((chars(value.lineno, value.col_offset), chars(value.end_lineno, value.end_col_offset)))
    return spans


def ast_dump_digest(source: str) -> str:
    """The ``LEGACY_FINGERPRINT`` digest: valid only on the Python minor version that made it."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return sha256_bytes(ast.dump(tree).encode())


# -- where source files are read from ----------------------------------------------------------
class FileTree:
    """Source files under a folder, as they are on disk now."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def read(self, rel: str) -> bytes | None:
        path = self.root / rel
        return path.read_bytes() if path.is_file() else None

    def __str__(self) -> str:
        return str(self.root)


class GitTree:
    """Source files under a folder as they were at a commit of the git repository holding it, so that
    code can be fingerprinted as that commit had it (``builder.graph.rekey``)."""

    def __init__(self, root: Path, commit: str):
        self.root = Path(root).resolve()
        self.top = Path(_git(self.root, "rev-parse", "--show-toplevel").strip()).resolve()
        self.prefix = self.root.relative_to(self.top).as_posix()
        self.commit = _git(self.root, "rev-parse", "--verify", f"{commit}^{{commit}}").strip()
        listing = _git(self.root, "ls-tree", "-r", "--name-only", "--full-name", self.commit, "--", ".")
        self._files = {line.removeprefix(self.prefix + "/") if self.prefix != "." else line
                       for line in listing.splitlines()}

    def exists(self, rel: str) -> bool:
        return rel in self._files

    def read(self, rel: str) -> bytes | None:
        if rel not in self._files:
            return None
        name = rel if self.prefix == "." else f"{self.prefix}/{rel}"
        return subprocess.run(["git", "-C", str(self.root), "show", f"{self.commit}:{name}"], check=True,
                              capture_output=True).stdout

    def __str__(self) -> str:
        return f"{self.root} at {self.commit[:12]}"


def _git(where: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(where), *args], check=True, capture_output=True, text=True).stdout


class CodeIndex:
    """Hashes of the project's Python modules, found under ``root`` in the named ``packages``.

    Only modules of those packages are hashed and followed, so a project decides which of its
    code joins a key (its science) by the packages it names; anything else (the standard library,
    torch, the engine itself) is left out. ``tree`` is where the files are read from (the folder as
    it is, by default; a ``GitTree`` for the code of a past commit), ``digest`` the scheme.
    """

    def __init__(self, root: Path, packages: tuple[str, ...], tree=None, digest=None):
        self.root = Path(root)
        self.packages = tuple(packages)
        self.tree = tree or FileTree(self.root)
        self.digest = digest or (lambda source: code_digest(source))
        # Digests of the files on disk are kept in the stat cache under the scheme's name; a digest
        # function of one's own (tests) is computed afresh.
        self._scheme = FINGERPRINT if digest is None else None
        self._parsed: dict[str, tuple[str, tuple[str, ...], str]] = {}

    def module_file(self, name: str) -> str | None:
        """A module's source file relative to ``root`` (posix), or None outside the indexed packages."""
        if name.split(".")[0] not in self.packages:
            return None
        base = "/".join(name.split("."))
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if candidate in self._parsed or self.tree.exists(candidate):
                return candidate
        return None

    def module_path(self, name: str) -> Path | None:
        """The source file of a module of the indexed packages, or None for anything else."""
        rel = self.module_file(name)
        return self.root / rel if rel is not None else None

    def _parse(self, rel: str) -> tuple[str, tuple[str, ...], str]:
        """(digest of the code, indexed modules it imports, sha256 of the file's bytes)."""
        if rel in self._parsed:
            return self._parsed[rel]
        if isinstance(self.tree, FileTree) and self._scheme is not None:
            path = self.root / rel
            if not path.is_file():
                raise FileNotFoundError(f"{rel} is not in {self.tree}")
            digest, candidates, sha = statcache.digest(path, f"code:{self._scheme}", lambda data: self._read(rel, data))
        else:
            data = self.tree.read(rel)
            if data is None:
                raise FileNotFoundError(f"{rel} is not in {self.tree}")
            digest, candidates, sha = self._read(rel, data)
        found = tuple(sorted(i for i in candidates if self.module_file(i) is not None))
        self._parsed[rel] = digest, found, sha
        return self._parsed[rel]

    def _read(self, rel: str, data: bytes) -> tuple[str, list[str], str]:
        """(digest, every module name the file imports or may import, sha256) of one file's bytes."""
        source = data.decode("utf-8")
        tree = ast.parse(source, filename=rel)
        parts = rel.removesuffix(".py").split("/")
        package = ".".join(parts[:-1])  # what relative imports start from: pkg for pkg/mod.py and pkg/__init__.py
        imports: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                imports.add(module)
                # `from pkg import mod` may name a submodule rather than an attribute.
                imports.update(f"{module}.{alias.name}" for alias in node.names)
        return self.digest(source), sorted(imports), sha256_bytes(data)

    def module_hash(self, name: str) -> str:
        """The hash of one module alone (a file outside the indexed packages is hashed too)."""
        rel = self.module_file(name) or "/".join(name.split(".")) + ".py"
        return self._parse(rel)[0]

    def source_sha256(self, name: str) -> str:
        """The sha256 of a module's file, as read: what a freeze records of the code it fingerprinted."""
        rel = self.module_file(name) or "/".join(name.split(".")) + ".py"
        return self._parse(rel)[2]

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
            rel = self.module_file(name)
            if rel is None:
                continue
            digest, imports, _ = self._parse(rel)
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
