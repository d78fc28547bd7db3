"""The shape of the code: imports flow one way. Every ``import`` of the project's own modules counts, the
ones inside functions too (a lazy import still ties two modules together)."""
import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("builder", "backends", "diffusion", "generators")
SCRIPTS = ("project", "build")


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    found.update({name: root / f"{name}.py" for name in SCRIPTS})
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that ``name`` imports anywhere in its code (its own package excepted: a
    package's ``__init__`` runs before any of its modules, whoever imports what)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found |= {t for t in (target, *(f"{target}.{a.name}" for a in node.names)) if t in known}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return {t for t in found if t != name and not name.startswith(t + ".")}


def import_graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def test_the_import_graph_has_no_circle():
    graph = import_graph(ROOT)
    assert {"builder.graph.engine", "builder.scale.parallel", "builder.scale.ray_executor",
            "generators.a1_9_hybrids"} <= set(graph)
    assert "builder.graph.engine" in graph["builder.scale.parallel"]
    assert "builder.scale.workers" in graph["builder.scale.ray_executor"]
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"an import circle: {' -> '.join(exc.args[1])}") from None



# What each part of builder/ may import of builder/ besides itself ("" is the top level: the API the sections and
# project.py use, the writers and the store they stand on). app, the top level's one module above the others, ties
# them together.
BUILDER_LAYERS = {"": set(), "graph": {""}, "site": {""}, "scale": {"", "graph"}}


def builder_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in BUILDER_LAYERS else ""


def test_builder_s_sub_packages_import_one_way():
    graph = import_graph(ROOT)
    wrong = [f"{name} -> {target}" for name, targets in graph.items() if name.startswith("builder.")
             and name != "builder.app" for target in targets if target.startswith("builder.")
             and builder_part(target) != builder_part(name)
             and builder_part(target) not in BUILDER_LAYERS[builder_part(name)]]
    assert not wrong, wrong

def test_a_circle_through_a_lazy_import_is_found(tmp_path):
    """The check itself: a module that imports its importer inside a function closes a circle."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name in SCRIPTS:
        (tmp_path / f"{name}.py").write_text("")
    (tmp_path / "builder" / "engine.py").write_text("def build():\n    from .parallel import run\n")
    (tmp_path / "builder" / "parallel.py").write_text("from .engine import build\n")
    graph = import_graph(tmp_path)
    assert graph["builder.engine"] == {"builder.parallel"} and graph["builder.parallel"] == {"builder.engine"}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError:
        return
    raise AssertionError("the circle was not found")


def test_the_site_engine_is_in_files_and_functions_a_reader_takes_in_whole():
    """builder/ (the site engine, its sub-packages too), build.py and the backends' plug-ins: no file over 500
    lines, no function over 60. (The science and the generators are held to it as their keys are next carried.)"""
    paths = sorted((ROOT / "builder").rglob("*.py")) + [ROOT / "build.py"] + sorted((ROOT / "backends").glob("*.py"))
    long_files, long_functions = [], []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 500:
            long_files.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_files and not long_functions, long_files + long_functions
