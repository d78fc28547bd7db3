"""Cache garbage collection and verification (builder.graph.cache_gc, `build.py cache gc|verify`)."""
import hashlib
import json
import subprocess
import sys

import pytest

from builder import BuildError
from builder.cache import Store
from builder.graph.cache_gc import collect, record_build, verify
from tests.conftest import ROOT


def _object(store: Store, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    path = store.local_object_path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def _result(store: Store, section: str, key: str, *payloads: bytes) -> list[str]:
    shas = [_object(store, data) for data in payloads]
    store.commit(section, key, {"outputs": [{"files": [{"sha": sha} for sha in shas]}]})
    return shas


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "cache")
    (s.root / "objects").mkdir(parents=True)
    return s


def _present(store: Store) -> set[str]:
    return {f"{p.parent.name}/{p.stem}" for p in (store.root / "entries").glob("*/*.json")}


def test_gc_keeps_what_the_newest_builds_of_each_checkout_reached(store, tmp_path):
    shared = b"shared by the old and the new result"
    _result(store, "train", "k1", b"weights v1", shared)
    _result(store, "train", "k2", b"weights v2", shared)
    _result(store, "plot", "p1", b"plot v1")
    _result(store, "plot", "p2", b"plot v2")
    _result(store, "plot", "other", b"the other checkout's plot")
    here, there = tmp_path / "here", tmp_path / "there"
    record_build(store, here, "cpu", {"train": "k1", "plot": "p1"}, now=100)
    record_build(store, here, "cpu", {"train": "k2", "plot": "p2"}, now=200)
    record_build(store, there, "cpu", {"plot": "other"}, now=50)  # old, but the newest of its checkout
    before = len(list((store.root / "objects").glob("*/*")))

    dry = collect(store, keep_builds=1, dry_run=True)
    assert sorted(dry.deleted_entries) == ["plot/p1", "train/k1"] and dry.deleted_records == 1
    assert len(list((store.root / "objects").glob("*/*"))) == before, "a dry run deletes nothing"

    done = collect(store, keep_builds=1)
    assert _present(store) == {"train/k2", "plot/p2", "plot/other"}
    assert done.deleted_objects == 2 and done.freed_bytes == len(b"weights v1") + len(b"plot v1")
    for key in ("k2",):
        assert store.lookup("train", key) is not None, "a kept result keeps every file, the shared one too"
    assert store.lookup("plot", "other") is not None
    assert len(list((store.root / "builds").glob("*.json"))) == 2, "the build record beyond the newest goes"


def test_gc_keeps_the_most_recently_used_of_the_rest_within_a_budget(store, tmp_path):
    _result(store, "s", "old", b"o" * 1000)
    _result(store, "s", "mid", b"m" * 1000)
    _result(store, "s", "new", b"n" * 1000)
    _result(store, "s", "now", b"w" * 10)
    for when, key in ((10, "old"), (20, "mid"), (30, "new"), (40, "now")):
        record_build(store, tmp_path, "cpu", {"s": key}, now=when)
    done = collect(store, keep_builds=1, keep_bytes=2000)  # exactly two of the older ones
    assert _present(store) == {"s/now", "s/new", "s/mid"} and done.deleted_entries == ["s/old"]
    assert done.kept_bytes == 2010
    assert len(list((store.root / "builds").glob("*.json"))) == 1, "only the newest build's record stays"


def test_a_result_no_build_recorded_is_kept_only_by_the_budget_and_unreferenced_files_go(store):
    _result(store, "s", "legacy", b"from before builds were recorded")
    stray = _object(store, b"left by a killed build")
    collect(store, keep_builds=3, keep_bytes=10_000)
    assert _present(store) == {"s/legacy"} and not store.local_object_path(stray).exists()
    collect(store, keep_builds=3)
    assert _present(store) == set() and list((store.root / "objects").glob("*/*")) == []


def test_gc_and_verify_never_run_beside_a_build(store):
    with store.lock():
        proc = subprocess.run([sys.executable, "build.py", "cache", "gc", "--cache-dir", str(store.root)], cwd=ROOT,
                              capture_output=True, text=True)
    assert proc.returncode == 2 and "another build (process" in proc.stderr
    with pytest.raises(ValueError):
        collect(store, keep_builds=0)


def test_verify_finds_changed_files_and_repair_removes_them(store):
    shas = _result(store, "s", "k", b"good bytes", b"bytes a disk will flip")
    assert verify(store).summary() == "cache verify: all 2 files (0.0 MB) match their hashes"
    store.local_object_path(shas[1]).write_bytes(b"bytes a disk did flip!")
    report = verify(store)
    assert report.corrupt == [shas[1]] and store.local_object_path(shas[1]).exists()
    assert "1 of 2 files do not match their hashes" in report.summary() and "--repair" in report.summary()
    proc = subprocess.run([sys.executable, "build.py", "cache", "verify", "--cache-dir", str(store.root)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and shas[1][:16] in proc.stdout
    assert verify(store, repair=True).removed and not store.local_object_path(shas[1]).exists()
    assert store.lookup("s", "k") is None, "a result that lost a file is a miss, computed again"


def test_every_build_records_what_it_reached_in_the_local_cache(smoke_build):
    records = [json.loads(p.read_text()) for p in sorted((smoke_build["cache"] / "builds").glob("*.json"))]
    assert len(records) >= 2 and {r["profile"] for r in records} == {"smoke"}
    assert records[0]["checkout"] == str(ROOT)
    warm = smoke_build["warm"].report
    local = {s["id"] for s in warm["sections"] if s["status"] == "hit"}
    assert local and set(records[1]["reached"]) >= local
    for section, key in records[1]["reached"].items():
        assert (smoke_build["cache"] / "entries" / section / f"{key}.json").is_file()
