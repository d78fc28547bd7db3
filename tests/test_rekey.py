"""Keeping a freeze valid when its keys move and its results do not: a new fingerprint scheme
(``rekey``, checked against the sources the freeze was built from) and a refactor (``carry``, checked
by computing the outputs at both commits). The toy project lives in a git repository of its own."""
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from builder import BuildError, fingerprint
from builder.graph import freeze, rekey
from builder.graph.engine import BuildConfig, Engine
from builder.graph.registry import discover
from tests.conftest import ROOT
from tests.test_cache import backend, edit, statuses, toy_facts


def facts(root):
    return replace(toy_facts(root), writers=())  # the writers live in this repository, not the toy's


def engine_for(root, frozen=(), cache="cache", device="cpu"):
    config = BuildConfig(profile="cpu", device=device, dtype="float32", seed=1, cache_root=root / cache,
                         resources={"backend": backend("a")}, frozen=tuple(frozen))
    return Engine(facts(root), config, discover("toygens"))


def git(root, *args):
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def commit(root, message="change"):
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def repo(toy_project):
    (toy_project / ".gitignore").write_text("cache*/\nfrozen/\n")
    git(toy_project, "init", "-q")
    commit(toy_project, "toy")
    return toy_project


def freeze_toy(root, device="mps", cache="freezer-cache"):
    """Build the toy and freeze it as ``build.py --freeze`` does, recording commit and sources."""
    eng = engine_for(root, cache=cache, device=device)
    result = eng.build()
    assert result.ok
    entries = {r.id: r.entry for r in result.results}
    sources = rekey.provenance(eng.project, [e.record for e in entries.values()])
    target = root / "frozen"
    freeze.write(eng.store, entries, target, {"profile": "cpu", "machine": {"device": device, "name": "toy"}},
                 sources)
    return target


def tree_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rendered(root, frozen):
    return engine_for(root, frozen=[frozen], cache="render-cache").build()


def test_a_freeze_records_its_commit_and_the_sha256_of_each_file_it_fingerprinted(repo):
    frozen = freeze_toy(repo)
    about = freeze.read(frozen)
    head = git(repo, "rev-parse", "HEAD")
    assert about["fingerprint"] == fingerprint.FINGERPRINT and about["commit"] == head and "uncommitted" not in about
    files = about["sources"][head]
    assert set(files) == {"toygens", "toygens.up", "toygens.down", "toygens.side", "toygens.shade"}
    assert files["toygens.shade"] == hashlib.sha256((repo / "toygens" / "shade.py").read_bytes()).hexdigest()
    for path in (frozen / "entries").glob("*/*.json"):
        record = json.loads(path.read_text())
        assert record["commit"] == head and record["fingerprint"] == fingerprint.FINGERPRINT
    edit(repo, "shade", "return 0.0", "return 0.0  # not committed")
    again = freeze.read(freeze_toy(repo, cache="second"))
    assert again["uncommitted"] == ["toygens.shade"], "a file that differs from the commit is named"


def test_a_new_fingerprint_scheme_is_re_keyed_from_the_recorded_sources(repo, monkeypatch):
    monkeypatch.setattr(fingerprint, "code_digest", lambda source: "old:" + hashlib.sha256(source.encode()).hexdigest())
    monkeypatch.setattr(fingerprint, "FINGERPRINT", "old-scheme")
    monkeypatch.setattr(rekey, "FINGERPRINT", "old-scheme")
    frozen = freeze_toy(repo)
    monkeypatch.undo()
    assert set(statuses(rendered(repo, frozen)).values()) == {"stale"}, "the new scheme's keys miss"
    said = rekey.rekey(facts(repo), frozen)
    assert "from old-scheme to tokens-1" in said and "5 files checked" in said
    result = rendered(repo, frozen)
    assert set(statuses(result).values()) == {"frozen"} and result.executed == []
    log = freeze.read(frozen)["rekeys"][-1]
    assert "equals the one the freeze recorded" in log["evidence"] and set(log["sections"]) == {"up", "down", "side"}


def legacy_freeze(root, python=None):
    """A freeze as they were written before this scheme: ast.dump digests, no commit, no sources."""
    frozen = root / "frozen"
    eng = engine_for(root, cache="legacy-cache", device="mps")
    eng.project.codebase.science.digest = fingerprint.ast_dump_digest
    result = eng.build()
    freeze.write(eng.store, {r.id: r.entry for r in result.results}, frozen, {"profile": "cpu", "machine": {}})
    if python:  # frozen on another Python: its keys say so
        for path in list((frozen / "entries").glob("*/*.json")):
            record = json.loads(path.read_text())
            record["components"]["versions"]["python"] = python
            record["key"] = fingerprint.hash_value(record["components"])
            path.unlink()
            (path.parent / f"{record['key']}.json").write_text(json.dumps(record))
    return frozen


def test_a_freeze_from_before_the_scheme_is_checked_by_its_old_digests_on_the_same_python(repo):
    frozen = legacy_freeze(repo)
    first = git(repo, "rev-parse", "HEAD")
    edit(repo, "shade", "return 0.0", "return 0.5")
    later = commit(repo)
    before = tree_bytes(frozen)
    with pytest.raises(BuildError, match=r"toygens/shade.py at .* is not the file the freeze was built from"):
        rekey.rekey(facts(repo), frozen, commit=later)
    assert tree_bytes(frozen) == before, "nothing changed"
    with pytest.raises(BuildError, match="does not record the commit"):
        rekey.rekey(facts(repo), frozen)
    rekey.rekey(facts(repo), frozen, commit=first)
    git(repo, "checkout", "-q", first)
    assert set(statuses(rendered(repo, frozen)).values()) == {"frozen"}
    assert "ast-dump digest under Python" in freeze.read(frozen)["rekeys"][-1]["evidence"]


def test_a_freeze_from_another_python_needs_a_listing_of_its_sources(repo, tmp_path):
    frozen = legacy_freeze(repo, python="3.99")
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(BuildError, match=r"only be recomputed on Python 3.99 .* --sources FILE"):
        rekey.rekey(facts(repo), frozen, commit=head)
    files = git(repo, "ls-files", "*.py").split()
    listing = tmp_path / "SOURCES.sha256"
    lines = [f"{hashlib.sha256((repo / f).read_bytes()).hexdigest()}  {f}" for f in files]
    listing.write_text("\n".join([lines[0].replace(lines[0][:4], "0000")] + lines[1:]) + "\n")
    with pytest.raises(BuildError, match="is not the file the freeze was built from"):
        rekey.rekey(facts(repo), frozen, commit=head, listing=listing)
    listing.write_text("\n".join(lines) + "\n")
    said = rekey.rekey(facts(repo), frozen, commit=head, listing=listing)
    assert "from ast-dump to tokens-1" in said
    assert set(statuses(rendered(repo, frozen)).values()) == {"frozen"}
    assert "listed in SOURCES.sha256" in freeze.read(frozen)["rekeys"][-1]["evidence"]


TOY_BUILD = '''
import json, sys
from pathlib import Path
sys.dont_write_bytecode = True
sys.path[:0] = [sys.argv[1], sys.argv[3]]
from builder.graph.engine import BuildConfig, Engine, Resource
from builder.project import Project
from builder.graph.registry import discover
project = Project(root=Path(sys.argv[1]), sections="toygens", science=("toygens",), libraries=("numpy",),
                  writers=(), inputs={"toy-data": lambda: "toy-data@v1"})
config = BuildConfig(profile="smoke", device="cpu", dtype="float32", seed=1, cache_root=Path(sys.argv[2]),
                     resources={"backend": Resource("backend", {"name": "toy", "model": "a"})})
result = Engine(project, config, discover("toygens")).build(sys.argv[4:])
print(json.dumps({r.id: r.entry.digest for r in result.results}))
'''


def toy_outputs(root, tmp_path):
    """``carry``'s check for the toy: its smoke outputs built in a fresh process from the code of a commit."""
    runs = []

    def outputs_at(at, sections):
        source = root
        if at is not None:
            source = tmp_path / f"at-{at[:8]}"
            source.mkdir(exist_ok=True)
            archive = subprocess.run(["git", "-C", str(root), "archive", at], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
        cache = tmp_path / f"cache-{len(runs)}"
        done = subprocess.run([sys.executable, "-c", TOY_BUILD, str(source), str(cache), str(ROOT), *sections],
                              capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        runs.append((at, sections))
        return {gid: d for gid, d in json.loads(done.stdout).items() if gid in sections}

    outputs_at.runs = runs
    return outputs_at


def test_a_refactor_with_the_same_outputs_is_carried_and_a_change_of_results_is_not(repo, tmp_path):
    frozen = freeze_toy(repo)
    first = git(repo, "rev-parse", "HEAD")
    edit(repo, "up", "values = np.random.rand(ctx.params.n).round(6).tolist()\n    ctx.save_json(\"values\", values)",
         "drawn = np.random.rand(ctx.params.n)\n    ctx.save_json(\"values\", drawn.round(6).tolist())")
    edit(repo, "shade", "return 0.0", "return 0.0 * 2")
    second = commit(repo, "refactor")
    assert statuses(rendered(repo, frozen)) == {"up": "stale", "down": "frozen", "side": "stale"}
    check = toy_outputs(repo, tmp_path)
    said = rekey.carry(engine_for(repo, frozen=[frozen]), frozen, check)
    assert said.startswith("carried 2 of 3 sections") and "(side, up); 1 were valid already" in said
    assert sorted(check.runs, key=str) == sorted([(None, ["side", "up"]), (first, ["side", "up"])], key=str)
    result = engine_for(repo, frozen=[frozen], cache="after").build()
    assert set(statuses(result).values()) == {"frozen"} and result.executed == []
    log = freeze.read(frozen)["rekeys"][-1]
    assert log["commit"] == second and set(log["sections"]) == {"up", "side"} and "byte-identical" in log["evidence"]
    assert log["sections"]["side"]["changed"][0].startswith("code.toygens.shade:")
    assert freeze.read(frozen)["sources"][second]["toygens.shade"] == \
        hashlib.sha256((repo / "toygens" / "shade.py").read_bytes()).hexdigest()

    edit(repo, "up", "round(6)", "round(5)")  # a change of results
    with pytest.raises(BuildError, match="toygens.up is not committed"):
        rekey.carry(engine_for(repo, frozen=[frozen]), frozen, check)
    commit(repo, "results change")
    before = tree_bytes(frozen)
    said = rekey.carry(engine_for(repo, frozen=[frozen]), frozen, check)
    assert said.startswith("carried 0 of 3") and "still stale: up: its smoke outputs differ" in said
    assert statuses(rendered(repo, frozen))["up"] == "stale" and tree_bytes(frozen) == before


def test_a_change_beyond_code_is_never_carried(repo, tmp_path, monkeypatch):
    frozen = freeze_toy(repo)
    eng = engine_for(repo, frozen=[frozen])
    section = eng.sections["up"].section
    monkeypatch.setattr(type(section), "resolve", lambda self, profile: {"n": 4} if self.id == "up" else {})
    said = rekey.carry(eng, frozen, toy_outputs(repo, tmp_path))
    assert "still stale: up: changed beyond its code: params.n: 3 -> 4" in said


def test_portable_sections_are_laid_out_into_the_freeze_and_the_computed_ones_stay_as_they_were(repo):
    frozen = freeze_toy(repo)  # computed on another device (mps)
    with pytest.raises(BuildError, match="no section of the project is portable"):
        rekey.lay_out(engine_for(repo, frozen=[frozen]), frozen)
    edit(repo, "side", 'params={"fail": False}', 'params={"fail": False}, portable=True')
    edit(repo, "shade", "return 0.0", "return 0.25")  # the portable section's bytes change
    second = commit(repo, "side lays out committed files")
    computed = {gid: tree_bytes(frozen / "entries" / gid) for gid in ("up", "down")}
    result = rendered(repo, frozen)
    assert statuses(result) == {"up": "frozen", "down": "frozen", "side": "miss"}, "laid out here, each render"

    edit(repo, "side", "Two by two", "2 x 2")  # not committed: refused, nothing changed
    before = tree_bytes(frozen)
    with pytest.raises(BuildError, match="toygens.side is not committed"):
        rekey.lay_out(engine_for(repo, frozen=[frozen]), frozen)
    assert tree_bytes(frozen) == before
    git(repo, "checkout", "-q", "--", "toygens/side.py")

    said = rekey.lay_out(engine_for(repo, frozen=[frozen]), frozen)
    assert said.endswith("on this machine: side")
    result = engine_for(repo, frozen=[frozen], cache="after").build()
    assert set(statuses(result).values()) == {"frozen"} and result.executed == []
    assert {gid: tree_bytes(frozen / "entries" / gid) for gid in ("up", "down")} == computed
    about = freeze.read(frozen)
    assert about["sections"]["side"]["machine"]["device"] == "cpu" and about["sections"]["up"]["machine"]["device"] == "mps"
    log = about["rekeys"][-1]
    assert log["commit"] == second and set(log["sections"]) == {"side"} and "computes nothing" in log["evidence"]
    assert about["sources"][second]["toygens.shade"] == hashlib.sha256((repo / "toygens" / "shade.py").read_bytes()).hexdigest()
    side = next(r for r in result.results if r.id == "side")
    assert side.entry.record["commit"] == second
    assert sorted(p.name for p in (frozen / "objects").rglob("*") if p.is_file()) == \
        sorted({f["sha"] for r in result.results for o in r.entry.outputs for f in o["files"]}), \
        "the freeze holds exactly the objects its records keep: the old side image is gone"
    assert about["objects"] == sum(1 for p in (frozen / "objects").rglob("*") if p.is_file())
    assert rekey.lay_out(engine_for(repo, frozen=[frozen]), frozen).startswith("the portable sections of")
