"""The cache: hits, the misses that must happen, early cut-off, corruption and interruption."""
import os
import sys
from pathlib import Path

import pytest

from builder.atomic import atomic_write_bytes
from builder.cache import Store
from builder.graph.engine import BuildConfig, Engine, Resource
from builder.project import Project
from builder.graph.registry import discover


def toy_facts(root: Path, inputs="v1") -> Project:
    """The toy project as the engine sees it: its sections are its science, one named input."""
    return Project(root=root, sections="toygens", science=("toygens",), libraries=("numpy",),
                   inputs={"toy-data": lambda: f"toy-data@{inputs}"})


def make_engine(root: Path, seed=1, profile="cpu", force=(), device="cpu", dtype="float32", backend=None,
                inputs="v1"):
    config = BuildConfig(profile=profile, device=device, dtype=dtype, seed=seed, cache_root=root / "cache",
                         force=frozenset(force), resources={"backend": backend} if backend else {})
    return Engine(toy_facts(root, inputs), config, discover("toygens"))


def statuses(result):
    return {r.id: r.status for r in result.results}


def edit(root: Path, module: str, old: str, new: str):
    path = root / "toygens" / f"{module}.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    # A real build is a fresh process; here the edited module must be imported anew.
    for name in [m for m in sys.modules if m.startswith("toygens")]:
        del sys.modules[name]


def test_second_build_is_all_hits(toy_project):
    first = make_engine(toy_project).build()
    assert statuses(first) == {"up": "miss", "down": "miss", "side": "miss"}
    second = make_engine(toy_project).build()
    assert statuses(second) == {"up": "hit", "down": "hit", "side": "hit"}
    assert second.executed == []


def backend(model):
    return Resource("backend", {"name": "toy", "model": model})


def one_change(root: Path, monkeypatch, component: str) -> tuple[Engine, str]:
    """An engine for the toy project with exactly one key component changed, and the section it affects."""
    if component == "code":  # a module the generator imports, not the generator itself
        edit(root, "shade", "return 0.0", "return 0.25")
        return make_engine(root, backend=backend("a")), "side"
    if component == "params":  # the generator's source stays the same
        engine = make_engine(root, backend=backend("a"))
        section = engine.sections["side"].section
        monkeypatch.setattr(type(section), "resolve", lambda self, profile: {"fail": False, "shade": 2})
        return engine, "side"
    if component == "upstream":  # up re-runs to other bytes; down's own code is untouched
        edit(root, "up", ".round(6)", ".round(3)")
        return make_engine(root, backend=backend("a")), "down"
    if component == "versions":
        engine = make_engine(root, backend=backend("a"))
        engine.project.__dict__["versions"] = {**engine.project.versions, "numpy": "99.0"}  # its cached_property
        return engine, "side"
    changed = {"seed": dict(seed=2), "profile": dict(profile="spec"), "device": dict(device="mps"),
               "dtype": dict(dtype="bfloat16"), "resources": dict(backend=backend("b")), "inputs": dict(inputs="v2")}
    return make_engine(root, **{"backend": backend("a"), **changed[component]}), "side"


@pytest.mark.parametrize("component", ["code", "params", "seed", "profile", "device", "dtype", "resources", "inputs",
                                       "upstream", "versions"])
def test_each_key_component_alone_makes_a_miss_that_explain_names(toy_project, monkeypatch, component):
    make_engine(toy_project, backend=backend("a")).build()
    engine, section = one_change(toy_project, monkeypatch, component)
    components, entry = engine.peek([section])[section]
    assert entry is None, f"changing {component} alone did not make {section} miss"
    reasons = [line.strip() for line in engine.explain(section)[1:]]
    assert reasons and all(r.startswith(component) for r in reasons), reasons


def test_the_code_fingerprint_follows_imports_into_the_science():
    from project import PROJECT

    modules = set(PROJECT.code_fingerprint("generators.b2_train_time"))
    assert {"diffusion.ddpm", "diffusion.training", "diffusion.unet", "diffusion.rng", "diffusion.cuda_graphs",
            "generators._partb", "diffusion.data", "builder.figures", "builder.context"} <= modules


def test_a_real_key_holds_the_science_and_the_writers_and_no_other_engine_code():
    from project import PROJECT

    for gid, mod in discover(PROJECT.sections).items():
        engine_modules = {m for m in PROJECT.code_fingerprint(mod.module.__name__) if m.startswith("builder")}
        assert engine_modules == {"builder.figures", "builder.context"}, gid
    # The Part A backends' plug-ins are glue, and their model code joins keys through their identity.
    assert not any(m.startswith("backends") for m in PROJECT.code_fingerprint("generators.a1_8_anagrams"))


ENGINE_SIDE = {"__init__.py": "", "sched.py": "ORDER = 1\n", "writer.py": "SCALE = 1\n"}


def test_keys_follow_the_science_not_the_engine(toy_project):
    """An edit to engine code (scheduling, caching, the command line) changes no key; an edit to a
    module that writes outputs changes every key."""
    (toy_project / "toyengine").mkdir()
    for name, text in ENGINE_SIDE.items():
        (toy_project / "toyengine" / name).write_text(text)
    edit(toy_project, "up", "import numpy as np", "import numpy as np\nimport toyengine.sched\nimport toyengine.writer")

    def engine():
        facts = toy_facts(toy_project)
        facts = type(facts)(**{**facts.__dict__, "writers": ("toyengine.writer",), "engine_root": toy_project})
        config = BuildConfig(profile="cpu", device="cpu", dtype="float32", seed=1, cache_root=toy_project / "cache")
        return Engine(facts, config, discover("toygens"))

    assert statuses(engine().build()) == {"up": "miss", "down": "miss", "side": "miss"}
    (toy_project / "toyengine" / "sched.py").write_text("ORDER = 2\n")
    assert set(statuses(engine().build()).values()) == {"hit"}
    (toy_project / "toyengine" / "writer.py").write_text("SCALE = 2\n")
    assert set(statuses(engine().build()).values()) == {"miss"}


@pytest.mark.parametrize("old, new, expected", [
    ("def run(ctx):", 'def run(ctx):\n    """Now documented."""\n    # and commented', {"up": "hit", "down": "hit", "side": "hit"}),
    (".round(6)", ".round(3)", {"up": "miss", "down": "miss", "side": "hit"}),
    ('{"n": 3}', '{"n": 4}', {"up": "miss", "down": "miss", "side": "hit"}),
], ids=["a comment or docstring changes nothing", "a code change misses and propagates",
        "a parameter change misses and propagates"])
def test_an_edit_of_a_section_misses_exactly_where_it_changes_something(toy_project, old, new, expected):
    make_engine(toy_project).build()
    edit(toy_project, "up", old, new)
    assert statuses(make_engine(toy_project).build()) == expected


def test_profile_override_is_a_parameter_change(toy_project):
    make_engine(toy_project).build()
    assert statuses(make_engine(toy_project, profile="smoke").build())["up"] == "miss"


def test_seed_change_misses_everything(toy_project):
    make_engine(toy_project).build()
    assert set(statuses(make_engine(toy_project, seed=2).build()).values()) == {"miss"}


def test_early_cutoff_when_upstream_reruns_to_the_same_bytes(toy_project):
    make_engine(toy_project).build()
    edit(toy_project, "up", "    ctx.save_json", "    unused = 1  # a real code change\n    ctx.save_json")
    result = statuses(make_engine(toy_project).build())
    assert result["up"] == "miss"
    assert result["down"] == "hit", "downstream is keyed on upstream outputs, which did not change"


def test_explain_names_the_changed_component(toy_project):
    make_engine(toy_project).build()
    edit(toy_project, "up", '{"n": 3}', '{"n": 5}')
    lines = make_engine(toy_project).explain("up")
    assert lines[0].startswith("up: MISS")
    assert any("params.n: 3 -> 5" in line for line in lines)
    assert make_engine(toy_project).explain("side")[0].startswith("side: HIT")


def test_corrupted_object_is_a_miss_and_gets_rebuilt(toy_project):
    engine = make_engine(toy_project)
    entry = {r.id: r.entry for r in engine.build().results}["side"]
    obj = engine.store.object_path(entry.outputs[0]["files"][0]["sha"])
    obj.write_bytes(b"not a png")
    assert statuses(make_engine(toy_project).build())["side"] == "miss"
    assert engine.store.verify_object(entry.outputs[0]["files"][0]["sha"])


def test_missing_object_is_a_miss(toy_project):
    engine = make_engine(toy_project)
    entry = {r.id: r.entry for r in engine.build().results}["down"]
    engine.store.object_path(entry.outputs[0]["files"][0]["sha"]).unlink()
    assert statuses(make_engine(toy_project).build())["down"] == "miss"


def test_force_reruns_only_the_named_section(toy_project):
    make_engine(toy_project).build()
    result = statuses(make_engine(toy_project, force=["side"]).build())
    assert result == {"up": "hit", "down": "hit", "side": "forced"}


def test_failing_generator_keeps_nothing_and_spares_the_others(toy_project):
    make_engine(toy_project).build()
    edit(toy_project, "side", '{"fail": False}', '{"fail": True}')
    engine = make_engine(toy_project)
    result = engine.build()
    res = {r.id: r for r in result.results}
    assert res["side"].status == "failed" and "side failed on purpose" in res["side"].error
    assert res["up"].status == "hit" and res["down"].status == "hit"
    assert not result.ok
    assert not list((toy_project / "cache" / "tmp").iterdir()), "the staging folder was not cleaned up"
    assert len(engine.store.entries_of("side")) == 1, "no record may be written for the failed run"


def test_interrupted_generator_leaves_no_entry_or_temporary_file(toy_project, monkeypatch):
    engine = make_engine(toy_project)
    gen = engine.sections["side"]

    def interrupted(ctx):
        ctx.save_image("side_image", [[0.5]], caption="never finished")
        raise KeyboardInterrupt

    engine.sections["side"] = type(gen)(gen.section, gen.name, gen.module, interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.build(["side"])
    assert engine.store.entries_of("side") == []
    assert not list((toy_project / "cache" / "tmp").iterdir())
    assert not (toy_project / "cache" / "objects").exists()


def test_interrupted_atomic_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "page.html"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_record_without_objects_is_ignored(tmp_path):
    store = Store(tmp_path)
    store.commit("s", "k", {"outputs": [{"id": "x", "files": [{"sha": "0" * 64, "ext": "png", "role": "image"}]}]})
    assert store.lookup("s", "k") is None


def test_upstream_failure_skips_dependents(toy_project):
    edit(toy_project, "up", "    values =", "    raise ValueError('broken')\n    values =")
    result = statuses(make_engine(toy_project).build())
    assert result == {"up": "failed", "down": "skipped", "side": "miss"}


def test_a_full_disk_in_a_section_is_one_paragraph_with_the_file_and_the_space(toy_project):
    make_engine(toy_project, backend=backend("a")).build()
    edit(toy_project, "side", "    if ctx.params.fail:", "    import errno, os\n    raise OSError(errno.ENOSPC, "
         "os.strerror(errno.ENOSPC), str(ctx.scratch / 'big.bin'))\n    if ctx.params.fail:")
    result = {r.id: r for r in make_engine(toy_project, backend=backend("a")).build().results}["side"]
    cache = toy_project / "cache"
    assert result.status == "failed"
    assert result.error.startswith(f"the disk is full: writing {cache}/scratch/side/") and "\n" not in result.error
    assert "/big.bin failed (ENOSPC, No space left on device). The disk holding the cache folder" in result.error
    assert "its last complete run stored" in result.error and "--cache-dir DIR" in result.error
    assert "Traceback" in result.traceback and "OSError" in result.traceback


def test_gpu_out_of_memory_in_a_section_names_the_memory_and_the_remedies(toy_project, monkeypatch):
    from builder.graph import diagnose

    edit(toy_project, "side", "    if ctx.params.fail:", "    class OutOfMemoryError(RuntimeError):\n        pass\n"
         "    raise OutOfMemoryError('CUDA out of memory. Tried to allocate 1.00 GiB')\n    if ctx.params.fail:")
    monkeypatch.setattr(diagnose, "gpu_memory", lambda device: {"allocated": 2 * 10**9, "reserved": 3 * 10**9,
                                                               "free": 10**9, "total": 8 * 10**9, "name": "Tiny GPU"})
    result = {r.id: r for r in make_engine(toy_project, backend=backend("a")).build().results}["side"]
    assert result.error == ("out of GPU memory on cpu (Tiny GPU): when it failed, this build's tensors held 2.0 GB "
                            "and PyTorch's allocator 3.0 GB, with 1.0 GB free of 8.0 GB on the device (about 4.0 GB "
                            "is held by other processes). To lower what the section needs: --dtype bfloat16 (half "
                            "the activation memory). Or stop other jobs on that GPU (nvidia-smi lists them). Then "
                            "run the same command again: finished sections stay cached.")
    monkeypatch.setattr(diagnose, "gpu_memory", lambda device: None)
    again = {r.id: r for r in make_engine(toy_project, dtype="bfloat16").build().results}["side"]
    assert "its memory figures could not be read" in again.error and "a smaller --profile lowers" in again.error


def test_other_exceptions_are_reported_as_they_are(toy_project):
    edit(toy_project, "side", '{"fail": False}', '{"fail": True}')
    result = {r.id: r for r in make_engine(toy_project).build().results}["side"]
    assert result.error == "RuntimeError: side failed on purpose"
