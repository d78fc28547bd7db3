"""The freeze: committed results as a read-only layer of the store, used by any machine whose keys
match; a stale one recomputed only where it was computed (device kind and dtype) or when asked,
shown marked as stale elsewhere, refused under --strict."""
import json
import shutil

import pytest

from builder.graph import engine as engine_module
from builder import fingerprint
from builder.graph import freeze
from builder.graph.engine import BuildConfig, Engine
from tests.test_cache import backend, edit, statuses, toy_facts
from builder.graph.registry import discover
from project import PROJECT


def engine_for(root, frozen=(), cache="cache", device="cpu", dtype="float32", strict=False, force=(),
               compute_here=False, other_edition=False):
    config = BuildConfig(profile="cpu", device=device, dtype=dtype, seed=1, cache_root=root / cache,
                         resources={"backend": backend("a")}, frozen=tuple(frozen), strict=strict,
                         force=frozenset(force), compute_here=compute_here, other_edition=other_edition)
    return Engine(toy_facts(root), config, discover("toygens"))


def freeze_of(root, **kwargs):
    """Build the toy project and freeze it into root/frozen; returns the freeze's folder."""
    eng = engine_for(root, cache="freezer-cache", **kwargs)
    result = eng.build()
    assert result.ok
    target = root / "frozen"
    freeze.write(eng.store, {r.id: r.entry for r in result.results}, target,
                 {"profile": "cpu", "machine": {"device": kwargs.get("device", "cpu"), "name": "toy"}})
    return target


def outputs(result):
    return {r.id: r.entry.outputs for r in result.results}


def test_a_fresh_cache_takes_every_result_from_the_freeze(toy_project):
    frozen = freeze_of(toy_project)
    made = engine_for(toy_project, cache="freezer-cache").build()
    result = engine_for(toy_project, frozen=[frozen]).build()
    assert statuses(result) == {"up": "frozen", "down": "frozen", "side": "frozen"}
    assert result.executed == [] and outputs(result) == outputs(made)
    assert not (toy_project / "cache" / "objects").exists(), "a frozen hit copies nothing into the cache"
    summary = freeze.read(frozen)
    assert set(summary["sections"]) == {"up", "down", "side"} and summary["objects"] == 3 + 1  # images + json


def test_a_frozen_result_from_another_environment_is_a_hit(toy_project):
    """A CPU machine renders what a GPU froze: device, dtype and library versions say where a result was
    computed, not what decided it."""
    frozen = freeze_of(toy_project, device="mps", dtype="bfloat16")
    result = engine_for(toy_project, frozen=[frozen]).build()
    assert set(statuses(result).values()) == {"frozen"}
    assert {r.entry.record["components"]["device"] for r in result.results} == {"mps"}


def test_a_cheap_stale_section_is_recomputed_and_reads_its_upstream_from_the_freeze(toy_project):
    frozen = freeze_of(toy_project)
    edit(toy_project, "down", "np.array([values])", "np.array([values]) * 0.5")
    result = engine_for(toy_project, frozen=[frozen]).build()
    assert statuses(result) == {"up": "frozen", "down": "miss", "side": "frozen"}
    assert all(r.stale is None and r.stale_upstream == () for r in result.results)


def test_a_stale_section_frozen_on_another_device_is_shown_marked_however_cheap(toy_project):
    """The toy sections take milliseconds, but a result of the mps edition is never recomputed on a cpu."""
    frozen = freeze_of(toy_project, device="mps")
    edit(toy_project, "up", "round(6)", "round(5)")
    result = engine_for(toy_project, frozen=[frozen]).build()
    by_id = {r.id: r for r in result.results}
    assert statuses(result) == {"up": "stale", "down": "frozen", "side": "frozen"}
    assert result.ok and result.executed == []
    assert by_id["up"].stale == [line for line in by_id["up"].stale if line.startswith("code.toygens.up:")] != []
    assert by_id["down"].stale_upstream == ("up",) and by_id["side"].stale_upstream == ()
    explained = engine_for(toy_project, frozen=[frozen]).explain("up")
    assert "STALE" in explained[0] and "--dtype float32 --freeze (on a mps machine)" in explained[0]
    assert "--compute-here" in explained[0] and explained[1].startswith("  code.toygens.up:")


def test_a_stale_section_frozen_in_another_dtype_is_not_recomputed_in_this_one(toy_project):
    frozen = freeze_of(toy_project, dtype="bfloat16")
    edit(toy_project, "up", "round(6)", "round(5)")
    assert statuses(engine_for(toy_project, frozen=[frozen]).build())["up"] == "stale"
    assert statuses(engine_for(toy_project, frozen=[frozen], dtype="bfloat16").build())["up"] == "miss"


def test_compute_here_and_force_recompute_a_stale_section_on_this_machine(toy_project):
    frozen = freeze_of(toy_project, device="mps")
    edit(toy_project, "up", "round(6)", "round(5)")
    here = engine_for(toy_project, frozen=[frozen], compute_here=True).build()
    assert statuses(here) == {"up": "miss", "down": "miss", "side": "frozen"}
    assert {r.id: r.entry.record["components"]["device"] for r in here.results}["up"] == "cpu"
    forced = engine_for(toy_project, frozen=[frozen], cache="other", force=["up"]).build()
    assert statuses(forced)["up"] == "forced"


def test_another_editions_section_that_its_freeze_lacks_is_never_computed_here(toy_project):
    frozen = freeze_of(toy_project, device="mps")
    shutil.rmtree(frozen / "entries" / "side")
    result = engine_for(toy_project, frozen=[frozen], other_edition=True).build()
    side = next(r for r in result.results if r.id == "side")
    assert side.status == "failed" and result.executed == ["side"] and not (toy_project / "cache" / "entries").exists()
    assert "freeze has no result for side" in side.error and "--compute-here" in side.error
    assert statuses(engine_for(toy_project, frozen=[frozen], other_edition=True, compute_here=True).build()) == \
        {"up": "frozen", "down": "frozen", "side": "miss"}
    # The build's own edition computes a section that is new to its freeze.
    assert statuses(engine_for(toy_project, frozen=[frozen], cache="own").build())["side"] == "miss"


def test_a_portable_section_is_computed_here_for_any_edition(toy_project, monkeypatch):
    """A section that lays out committed files gives the same bytes anywhere: a new input is shown by
    whatever machine builds, and it says so; the sections that compute stay as they were computed."""
    from builder.section import Section

    frozen = freeze_of(toy_project, device="mps")
    edit(toy_project, "side", 'params={"fail": False}', 'params={"fail": False}, portable=True')
    edit(toy_project, "up", "round(6)", "round(5)")
    result = engine_for(toy_project, frozen=[frozen], other_edition=True).build()
    assert statuses(result) == {"up": "stale", "down": "frozen", "side": "miss"}
    side = next(r for r in result.results if r.id == "side")
    assert side.entry.record["machine"]["device"] == "cpu"
    assert Section("x", "t").portable is False


def test_strict_turns_a_stale_result_into_an_error(toy_project):
    frozen = freeze_of(toy_project, device="mps")
    edit(toy_project, "up", "round(6)", "round(5)")
    result = engine_for(toy_project, frozen=[frozen], strict=True).build()
    assert statuses(result) == {"up": "failed", "down": "skipped", "side": "frozen"}
    error = next(r.error for r in result.results if r.id == "up")
    assert "--strict" in error and "code.toygens.up" in error and "python build.py --profile cpu --dtype float32 --freeze" in error


def test_on_the_device_that_froze_it_a_stale_section_is_recomputed(toy_project):
    frozen = freeze_of(toy_project)
    edit(toy_project, "up", "round(6)", "round(5)")
    result = engine_for(toy_project, frozen=[frozen]).build()
    assert statuses(result)["up"] == "miss" and statuses(result)["down"] == "miss"


def test_a_tampered_frozen_object_is_not_trusted(toy_project):
    frozen = freeze_of(toy_project)
    record = json.loads(next((frozen / "entries" / "up").glob("*.json")).read_text())
    image = next(o for o in record["outputs"] if o["id"] == "up_image")["files"][0]["sha"]
    (frozen / "objects" / image[:2] / image).write_bytes(b"not the image")
    result = engine_for(toy_project, frozen=[frozen]).build()
    assert statuses(result)["up"] == "miss", "a freeze whose file does not match its hash is no hit"


def test_a_new_freeze_replaces_the_old_one_whole(toy_project):
    frozen = freeze_of(toy_project)
    old_keys = {p.stem for p in (frozen / "entries" / "up").glob("*.json")}
    edit(toy_project, "up", "round(6)", "round(5)")
    shutil.rmtree(toy_project / "freezer-cache")
    eng = engine_for(toy_project, frozen=[frozen])
    result = eng.build()
    freeze.write(eng.store, {r.id: r.entry for r in result.results}, frozen, {"machine": {}})
    new_keys = {p.stem for p in (frozen / "entries" / "up").glob("*.json")}
    assert len(new_keys) == 1 and new_keys != old_keys
    assert not list(frozen.parent.glob(".frozen.*")), "no staging folder is left behind"
    assert set(statuses(engine_for(toy_project, frozen=[frozen], cache="other").build()).values()) == {"frozen"}


@pytest.mark.parametrize("kwargs", [{}, {"device": "mps"}])
def test_freezing_writes_the_machine_into_each_record(toy_project, kwargs):
    frozen = freeze_of(toy_project, **kwargs)
    record = json.loads(next((frozen / "entries" / "side").glob("*.json")).read_text())
    assert record["machine"]["device"] == kwargs.get("device", "cpu")


def site_bytes(site):
    return {p.relative_to(site).as_posix(): p.read_bytes() for p in sorted(site.rglob("*")) if p.is_file()}


def test_a_clone_with_only_the_freeze_writes_the_same_site(smoke_build, tmp_path):
    """What a fresh clone does with the committed freeze: no cache, nothing computed, the same bytes."""
    from tests.conftest import build, statuses as report_statuses

    frozen = tmp_path / "frozen"
    froze = build("--profile", "smoke", "--freeze", "--frozen-dir", str(frozen), cache=smoke_build["cache"],
                  site=tmp_path / "site-a")
    assert f"froze {len(discover(PROJECT.sections))} sections" in froze.stdout and (frozen / "smoke" / "freeze.json").is_file()
    clone = build("--profile", "smoke", "--frozen-dir", str(frozen), cache=tmp_path / "empty-cache",
                  site=tmp_path / "site-b")
    assert set(report_statuses(clone).values()) == {"frozen"} and clone.report["executed"] == []
    assert site_bytes(tmp_path / "site-b") == site_bytes(smoke_build["site"])
    about = freeze.read(frozen / "smoke")
    assert about["profile"] == "smoke" and about["machine"]["device"] == "cpu" and about["versions"]["torch"]


def as_if_made_elsewhere(frozen, **environment):
    """Rewrite a freeze as another machine would have written it: its records' environment (and so their
    keys) and machine are those given, everything that decided the results is the same."""
    for path in list(frozen.glob("entries/*/*.json")):
        record = json.loads(path.read_text())
        comp = record["components"]
        comp.update(device=environment["device"], dtype=environment["dtype"],
                    versions={**comp["versions"], "python": environment["python"], "torch": environment["torch"]})
        record["key"] = fingerprint.hash_value(comp)
        record["machine"] = {"device": environment["device"], "name": environment["name"], "cores": 16,
                             "torch": environment["torch"] + "+cu130", "cuda": "13.0", "python": environment["python"]}
        path.unlink()
        (path.parent / f"{record['key']}.json").write_text(json.dumps(record, indent=1, sort_keys=True))


def test_a_freeze_made_on_another_machine_renders_as_it_was_computed_computing_nothing(smoke_build, tmp_path):
    """Another device, dtype, Python and torch in its records: a build here finds every result, computes no
    section, and the pages say where and with what the results were computed, not what renders them."""
    from tests.conftest import build, statuses as report_statuses

    frozen = tmp_path / "frozen"
    build("--profile", "smoke", "--freeze", "--frozen-dir", str(frozen), cache=smoke_build["cache"],
          site=tmp_path / "site-a")
    as_if_made_elsewhere(frozen / "smoke", device="cuda", dtype="float16", python="3.12", torch="2.11.0",
                         name="NVIDIA Test GPU")
    here = build("--profile", "smoke", "--frozen-dir", str(frozen), cache=tmp_path / "empty-cache",
                 site=tmp_path / "site-b")
    assert set(report_statuses(here).values()) == {"frozen"} and here.report["executed"] == []
    manifest = json.loads((tmp_path / "site-b" / "manifest.json").read_text())
    assert manifest["build"]["device"] == "cuda" and manifest["build"]["dtype"] == "float16"
    assert manifest["build"]["versions"]["python"] == "3.12" and manifest["build"]["versions"]["torch"] == "2.11.0"
    assert {s["machine"]["name"] for s in manifest["sections"].values()} == {"NVIDIA Test GPU"}
    page = (tmp_path / "site-b" / "part-b.html").read_text()
    assert "python 3.12 · torch 2.11.0" in page and "cuda, float16 (NVIDIA Test GPU; torch 2.11.0+cu130, CUDA 13.0)" in page


def test_a_build_read_from_a_freeze_can_be_frozen_again(toy_project, monkeypatch):
    """Re-freezing results that came from the freeze (a new section, or a recomputed one, beside them):
    what the old freeze left out stays left out, and no object has to be recomputed for it."""
    monkeypatch.setattr(freeze, "keeps", lambda output, size: output["id"] != "data-values")
    frozen = freeze_of(toy_project)
    eng = engine_for(toy_project, frozen=[frozen], cache="fresh")
    result = eng.build()
    assert set(statuses(result).values()) == {"frozen"}
    refrozen = toy_project / "refrozen"
    freeze.write(eng.store, {r.id: r.entry for r in result.results}, refrozen, {"machine": {}})
    for gid in ("up", "down"):
        before = json.loads(next((frozen / "entries" / gid).glob("*.json")).read_text())
        after = json.loads(next((refrozen / "entries" / gid).glob("*.json")).read_text())
        assert after["omitted"] == before["omitted"] and after["outputs"] == before["outputs"]
    assert set(statuses(engine_for(toy_project, frozen=[refrozen], cache="other").build()).values()) == {"frozen"}


def test_a_section_that_needs_an_output_the_freeze_left_out_is_shown_stale(toy_project, monkeypatch):
    """Large models stay out of the freeze; a changed section that reads one cannot re-run on top of it."""
    monkeypatch.setattr(freeze, "keeps", lambda output, size: output["id"] != "data-values")
    frozen = freeze_of(toy_project)
    record = json.loads(next((frozen / "entries" / "up").glob("*.json")).read_text())
    assert len(record["omitted"]) == 1 and freeze.read(frozen)["objects"] == 3
    assert statuses(engine_for(toy_project, frozen=[frozen]).build())["up"] == "frozen", "still a hit"
    edit(toy_project, "down", "np.array([values])", "np.array([values]) * 0.5")
    result = engine_for(toy_project, frozen=[frozen]).build()
    down = next(r for r in result.results if r.id == "down")
    assert down.status == "stale" and "python build.py --force up" in down.stale[-1]
    shutil.rmtree(frozen / "entries" / "down")  # no earlier result of down to show: a clear failure
    down = next(r for r in engine_for(toy_project, frozen=[frozen], cache="c2").build().results if r.id == "down")
    assert down.status == "failed" and "leaves out" in down.error and "--force up" in down.error


def test_freezing_refuses_stale_results_and_partial_builds(tmp_path):
    from types import SimpleNamespace

    from builder import BuildError, app

    settings = SimpleNamespace(only=None, frozen_dir=tmp_path)
    with pytest.raises(BuildError, match=r"refuses to freeze stale results \(up\)"):
        app.freeze_build(None, settings, {}, {"build": {"stale": ["up"]}})
    with pytest.raises(BuildError, match="--freeze needs a complete build"):
        app.freeze_build(None, SimpleNamespace(only=["up"], frozen_dir=tmp_path), {}, {"build": {"stale": []}})
    assert not list(tmp_path.iterdir()), "nothing written"
