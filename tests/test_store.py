"""The content-addressed store, in-process: its layout, its records, its sweep and its messages.

(Killed builds and real concurrent builds are in test_faults.py and test_build_cli.py.)
"""
from __future__ import annotations

import json
import os

import pytest

from builder import BuildError
from builder.cache import Entry, Store, diff_components, referenced_objects
from builder.fingerprint import sha256_bytes


def test_layout_of_objects_records_and_scratch(tmp_path):
    store = Store(tmp_path / "c")
    sha = sha256_bytes(b"x")
    assert store.object_path(sha) == tmp_path / "c" / "objects" / sha[:2] / sha
    key = "f" * 64
    scratch = store.scratch_dir("sec", key)
    assert scratch == tmp_path / "c" / "scratch" / "sec" / key[:16] and scratch.is_dir()
    assert store.scratch_dir("sec", key) == scratch  # a resumed run finds its folder again
    (scratch / "resume.pt").write_bytes(b"1")
    store.drop_scratch("sec")
    assert not (tmp_path / "c" / "scratch" / "sec").exists() and (tmp_path / "c" / "scratch").is_dir()
    store.drop_scratch("never-ran")  # nothing to drop is not an error


def test_a_record_is_sorted_indented_json_and_its_entry_carries_the_key(tmp_path):
    store = Store(tmp_path)
    data = b"figure bytes"
    sha = sha256_bytes(data)
    store.object_path(sha).parent.mkdir(parents=True)
    store.object_path(sha).write_bytes(data)
    record = {"section": "s", "outputs": [{"id": "fig", "files": [{"sha": sha}]}], "b": 1, "a": 2}
    entry = store.commit("s", "k1", record)
    assert isinstance(entry, Entry) and entry.key == "k1"
    text = (tmp_path / "entries" / "s" / "k1.json").read_text(encoding="utf-8")
    assert text == json.dumps({**record, "key": "k1", "output_digest": entry.digest}, indent=1, sort_keys=True)
    looked = store.lookup("s", "k1")
    assert looked.key == "k1" and looked.record == entry.record
    store.object_path(sha).write_bytes(b"tampered")
    assert store.lookup("s", "k1") is None


def test_entries_of_skips_a_damaged_record_and_keeps_reading(tmp_path):
    store = Store(tmp_path)
    folder = tmp_path / "entries" / "s"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text("{not json")
    (folder / "b.json").write_text('{"key": "b", "note": "caf\\u00e9"}')
    (folder / "c.txt").write_text("{}")
    assert store.entries_of("s") == [{"key": "b", "note": "café"}]
    assert store.entries_of("other") == []


def test_clean_removes_the_whole_cache(tmp_path):
    store = Store(tmp_path / "c")
    store.scratch_dir("s", "k" * 20)
    store.clean()
    assert not (tmp_path / "c").exists()
    store.clean()  # cleaning twice is fine


def test_sweep_removes_what_dead_builds_left_and_nothing_else(tmp_path):
    root = tmp_path / "c"
    store = Store(root)
    (root / "tmp" / "tmpabc").mkdir(parents=True)
    (root / "tmp" / "tmpabc" / "half.png").write_bytes(b"1")
    (root / "tmp" / "loose").write_bytes(b"1")
    (root / "entries" / "s").mkdir(parents=True)
    (root / "entries" / "s" / ".k.json.x1.tmp").write_bytes(b"1")  # atomic_write_bytes's temporary file
    keep = root / "entries" / "s" / "k.json"
    keep.write_bytes(b"{}")
    scratch = root / "scratch" / "s" / "key"
    scratch.mkdir(parents=True)
    (scratch / ".resume.pt.123.tmp").write_bytes(b"1")  # the trainer's own temporary checkpoint
    (scratch / "resume.pt").write_bytes(b"1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"1")
    os.symlink(outside, root / "tmp" / "link")  # a link is unlinked, never followed
    assert store.sweep() == 5
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "entries/s/k.json", "scratch/s/key/resume.pt"]
    assert (root / "tmp").is_dir() and list((root / "tmp").iterdir()) == []
    assert (outside / "precious").is_file()
    assert store.sweep() == 0


def test_the_lock_is_reentrant_in_one_store_and_refuses_a_second(tmp_path):
    first, second = Store(tmp_path), Store(tmp_path)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "left-over").write_bytes(b"1")
    with first.lock():
        assert not (tmp_path / "tmp" / "left-over").exists()  # taking the lock sweeps
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
        with first.lock():
            pass
        with pytest.raises(BuildError, match=f"another build \\(process {os.getpid()}\\) is using the cache"):
            with second.lock():
                pass
        (tmp_path / "tmp" / "mine").write_bytes(b"1")
        with first.lock():  # a nested hold does not sweep the holder's own files
            assert (tmp_path / "tmp" / "mine").exists()
    with second.lock():
        pass


def test_referenced_objects_of_outputs_with_and_without_files():
    outputs = [{"id": "a", "files": [{"sha": "1"}, {"sha": "2"}]}, {"id": "table"}, {"id": "b", "files": []}]
    assert referenced_objects(outputs) == ["1", "2"]


def test_diff_components_lines():
    assert diff_components(None, {"a": 1}) == ["no earlier build of this section is recorded"]
    old = {"seed": 1, "params": {"n": 3, "gone": True}, "code": {"x.py": "a" * 80}, "same": [1]}
    new = {"seed": 2, "params": {"n": 3, "new": [1, 2]}, "code": {"x.py": "b" * 80}, "same": [1], "extra": "e"}
    assert diff_components(old, new) == [
        'code.x.py: "' + "a" * 66 + '... -> "' + "b" * 66 + "...",
        'extra: added ("e")',
        "params.gone: removed (was true)",
        "params.new: added ([1,2])",
        "seed: 1 -> 2",
    ]
    exactly = "x" * 68  # 70 characters with its quotes: shown whole
    assert diff_components({"k": exactly}, {"k": 1}) == [f'k: "{exactly}" -> 1']
    longer = "x" * 69  # 71: cut to 67 and an ellipsis
    assert diff_components({"k": longer}, {"k": 1}) == ['k: "' + "x" * 66 + "... -> 1"]
    assert diff_components({"k": {"a": 1}}, {"k": 5}) == ['k: {"a":1} -> 5']
    assert diff_components(5, 6) == [": 5 -> 6"]


def test_an_atomic_write_goes_through_a_hidden_temporary_file_beside_its_target(tmp_path, monkeypatch):
    import builder.atomic as atomic

    renames = []
    real = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: renames.append((src, dst)) or real(src, dst))
    target = tmp_path / "deep" / "record.json"
    atomic.atomic_write_bytes(target, b"data")
    [(src, dst)] = renames
    src = os.fspath(src)
    assert dst == target and os.path.dirname(src) == str(target.parent)
    assert os.path.basename(src).startswith(".record.json.") and src.endswith(".tmp")
    assert target.read_bytes() == b"data" and (target.stat().st_mode & 0o777) == (0o666 & ~atomic.UMASK)


def test_an_interrupt_right_after_the_rename_keeps_the_file_and_is_still_an_interrupt(tmp_path, monkeypatch):
    import builder.atomic as atomic

    def crash_point(name):
        if name == "renamed:f.bin":
            raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "crash_point", crash_point)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert (tmp_path / "f.bin").read_bytes() == b"x" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
