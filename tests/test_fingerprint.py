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
