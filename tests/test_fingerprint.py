"""What goes into a cache key, spelt one way: values, files and the library versions."""
from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from builder import fingerprint
from builder.fingerprint import canonical_json, hash_value, library_versions, sha256_file


def test_sets_and_paths_have_one_spelling_and_other_objects_are_refused():
    assert canonical_json({"b": {3, 1, 2}, "a": frozenset({"y", "x"}), "p": Path("a/b")}) == \
        '{"a":["x","y"],"b":[1,2,3],"p":"a/b"}'
    assert hash_value({"s": {2, 1}}) == hash_value({"s": [1, 2]})

    class Opaque:
        def __repr__(self):
            return "<opaque>"

    with pytest.raises(TypeError) as err:
        hash_value({"x": Opaque()})
    assert str(err.value) == "cannot put Opaque into a cache key: <opaque>"


LIBRARIES = ("torch", "diffusers", "transformers", "numpy", "pillow", "matplotlib")


def test_library_versions_name_python_and_the_numerical_libraries(monkeypatch):
    from project import PROJECT

    assert PROJECT.libraries == LIBRARIES
    versions = library_versions(LIBRARIES)
    assert list(versions) == ["python", *LIBRARIES]
    assert versions["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert versions["torch"] == importlib.metadata.version("torch") and versions["pillow"] == \
        importlib.metadata.version("pillow")

    def only_numpy(dist):
        if dist != "numpy":
            raise importlib.metadata.PackageNotFoundError(dist)
        return "9.9"

    monkeypatch.setattr(importlib.metadata, "version", only_numpy)
    assert library_versions(LIBRARIES) == {"python": versions["python"], "torch": "absent", "diffusers": "absent",
                                  "transformers": "absent", "numpy": "9.9", "pillow": "absent",
                                  "matplotlib": "absent"}


def test_file_hash_is_the_sha256_of_its_bytes(tmp_path):
    import hashlib

    f = tmp_path / "x.bin"
    f.write_bytes(b"fun with diffusion" * 1000)
    assert sha256_file(f) == hashlib.sha256(f.read_bytes()).hexdigest() == fingerprint.sha256_bytes(f.read_bytes())


def test_non_ascii_text_is_hashed_as_itself():
    assert canonical_json({"γ": "é"}) == '{"γ":"é"}'


def test_a_module_is_hashed_with_its_parent_packages_and_its_project_imports(toy_project):
    sub = toy_project / "toygens" / "sub"
    sub.mkdir()
    (sub / "__init__.py").write_text("SCALE = 2\n")
    (sub / "leaf.py").write_text("from toygens.shade import black\nimport numpy\n\nVALUE = black()\n")
    (sub / "plain.py").write_text("WIDTH = 3\n")
    (sub / "rel.py").write_text("from ..shade import black\nfrom . import plain\n")
    index = fingerprint.CodeIndex(toy_project, ("toygens",))
    # Relative imports resolve from the module's package: '..' is toygens, '.' is toygens.sub.
    assert sorted(index.fingerprint("toygens.sub.rel")) == ["toygens", "toygens.shade", "toygens.sub",
                                                             "toygens.sub.plain", "toygens.sub.rel"]
    names = index.fingerprint("toygens.sub.leaf")
    assert sorted(names) == ["toygens", "toygens.shade", "toygens.sub", "toygens.sub.leaf"]
    assert index.module_path("toygens.sub") == sub / "__init__.py"
    assert index.module_path("toygens.nothing") is None and index.module_path("numpy") is None
    (sub / "__init__.py").write_text("SCALE = 3\n")
    assert index.fingerprint("toygens.sub.leaf")["toygens.sub"] == names["toygens.sub"]  # parsed once per index
    fresh = fingerprint.CodeIndex(toy_project, ("toygens",))
    assert fresh.fingerprint("toygens.sub.leaf")["toygens.sub"] != names["toygens.sub"]
    # A package that is not indexed is neither hashed nor followed.
    assert fingerprint.CodeIndex(toy_project, ("other",)).fingerprint("toygens.sub.leaf") == {}


SAMPLE = '''"""A module docstring."""
import math


def area(r, *, label='disc'):
    """Its docstring."""
    # a comment
    total = math.pi * r ** 2
    return f"{label}: {total:.{2}f} {f'{r!r}'}", {"r": r}


class Shape:
    "One line."

    sides = (1,
             2)
'''

# Comments, docstrings, blank lines, indentation width, line breaks inside brackets and quote styles
# are layout; each of these says the same code.
SAME = [
    SAMPLE.replace("# a comment", "# another comment"),
    SAMPLE.replace('"""Its docstring."""', '"""Another docstring,\n    over two lines."""'),
    SAMPLE.replace('    """Its docstring."""\n', ""),
    SAMPLE.replace('"One line."', '"""Another."""; ').replace("; \n", "\n"),
    SAMPLE.replace("\n\n\nclass", "\n\nclass"),
    SAMPLE.replace("    ", "  ").replace("sides = (1,\n  2)", "sides = (1, 2)"),
    SAMPLE.replace("label='disc'", 'label="disc"'),
]
# And each of these changes what it does.
DIFFERENT = [
    SAMPLE.replace("r ** 2", "r ** 3"),
    SAMPLE.replace("'disc'", "'ring'"),
    SAMPLE.replace("{total:.{2}f}", "{total:.{3}f}"),
    SAMPLE.replace("{r!r}", "{r!s}"),
    SAMPLE.replace("    return f", "    total += 1\n    return f"),
    SAMPLE.replace("sides = (1,", "sides = (0,"),
    SAMPLE.replace('"""Its docstring."""', 'x = "Its docstring."'),
]
# Recorded under Python 3.11; the digest of this source must never change, on any Python, unless
# fingerprint.FINGERPRINT changes with it (and the freezes are re-keyed: python build.py freeze rekey).
SAMPLE_DIGEST = "8aad57cb3088a03ae9c060395915522fe297939d8d5510069bac7a31aa47565c"


def test_the_code_digest_ignores_layout_and_sees_every_change_of_code():
    digest = fingerprint.code_digest(SAMPLE)
    assert [fingerprint.code_digest(s) == digest for s in SAME] == [True] * len(SAME)
    assert [fingerprint.code_digest(s) == digest for s in DIFFERENT] == [False] * len(DIFFERENT)


def test_the_code_digest_of_a_recorded_source_never_changes():
    assert fingerprint.FINGERPRINT == "tokens-1"
    assert fingerprint.code_digest(SAMPLE) == SAMPLE_DIGEST


def _other_pythons() -> list[str]:
    import glob
    import subprocess

    found = {}
    for path in sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.*/bin/python3"))) + \
            sorted(glob.glob("/usr/bin/python3.[0-9]*")):
        try:
            version = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2] >= (3, 9), "
                                                  "'%d.%d' % sys.version_info[:2])"],
                                     capture_output=True, text=True, timeout=30).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version and version[0] == "True" and version[1] != f"{sys.version_info[0]}.{sys.version_info[1]}":
            found.setdefault(version[1], path)
    return list(found.values())


def test_the_same_source_gives_the_same_digest_on_every_python_here():
    """Freezes travel between machines: the H200's Python 3.12 and this machine's 3.11 must agree on the
    digest of every module of the project (ast.dump, the scheme before, did not: 3.12 added fields)."""
    import json
    import subprocess

    pythons = _other_pythons()
    if not pythons:
        pytest.skip("no other Python 3.9+ on this machine (pyenv or /usr/bin) to compare with")
    root = Path(__file__).resolve().parent.parent
    files = sorted(str(p.relative_to(root)) for folder in ("builder", "diffusion", "generators", "backends", "tests")
                   for p in (root / folder).rglob("*.py"))
    files.append("build.py")
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); from builder.fingerprint import code_digest; "
              "print(json.dumps({f: code_digest(open(f, encoding='utf-8').read()) for f in sys.argv[2:]} "
              "| {'SAMPLE': code_digest(json.loads(sys.stdin.read()))}))")
    here = {f: fingerprint.code_digest((root / f).read_text(encoding="utf-8")) for f in files}
    here["SAMPLE"] = fingerprint.code_digest(SAMPLE)
    for python in pythons:
        done = subprocess.run([python, "-c", script, str(root), *files], input=json.dumps(SAMPLE), cwd=root,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        there = json.loads(done.stdout)
        assert [f for f in files + ["SAMPLE"] if there[f] != here[f]] == [], python
