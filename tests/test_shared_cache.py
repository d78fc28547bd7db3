"""The shared cache (--cache-url): another machine's results are copied in and checked, half-finished
or damaged uploads are never hits, an unreachable cache never fails a build, and no secret is shown.

The in-process tests use the toy project and a file:// cache; the end-to-end ones run build.py against
a real S3-compatible HTTP server on this machine (moto's server mode, through s3fs).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder import BuildError
from builder.cache import Store
from builder.graph.engine import Engine
from builder.scale.shared_cache import SharedCache, redact
from tests.conftest import ROOT, build, statuses as report_statuses
from tests.test_cache import make_engine, statuses
from tests.test_determinism import assert_same_site

pytestmark = pytest.mark.slow  # the quick tier leaves it to CI (conftest.py, --all)


def machine(root: Path, name: str, url: str) -> Engine:
    """The toy project on a machine of its own: its own local cache, the shared one at ``url``."""
    engine = make_engine(root)
    engine.store = Store(root / name)
    engine.config.shared = SharedCache(url)
    return engine


def cas_files(shared: Path) -> list[Path]:
    return sorted(p for p in (shared / "cas").rglob("*") if p.is_file())


def test_a_second_machine_copies_every_result_checks_it_and_runs_nothing(toy_project, tmp_path):
    url = (tmp_path / "shared").as_uri()
    first = machine(toy_project, "a", url)
    assert statuses(first.build()) == {"up": "miss", "down": "miss", "side": "miss"}
    assert sorted(first.config.shared.published) == ["down", "side", "up"]

    second = machine(toy_project, "b", url)
    result = second.build()
    assert statuses(result) == {"up": "shared", "down": "shared", "side": "shared"} and result.executed == []
    assert result.ok and second.config.shared.summary().endswith("3 results copied in, 0 uploaded")
    for gid in ("up", "down", "side"):
        mine, theirs = second.store.entries_of(gid), first.store.entries_of(gid)
        assert mine == theirs  # the same record, machine and time included: it says where it was computed
        for out in mine[0]["outputs"]:
            for f in out["files"]:
                assert second.store.verify_object(f["sha"])  # in the local cache, whole
    # Now a local hit: nothing is fetched or uploaded again.
    again = machine(toy_project, "b", url)
    assert statuses(again.build()) == {"up": "hit", "down": "hit", "side": "hit"}
    assert again.config.shared.fetched == again.config.shared.published == []


def test_results_from_before_the_shared_cache_are_uploaded_when_a_build_reaches_them(toy_project, tmp_path):
    url = (tmp_path / "shared").as_uri()
    make_engine(toy_project).build()  # no shared cache yet
    late = machine(toy_project, "cache", url)  # the same local cache, now with a shared one
    assert statuses(late.build()) == {"up": "hit", "down": "hit", "side": "hit"}
    assert sorted(late.config.shared.published) == ["down", "side", "up"]
    assert statuses(machine(toy_project, "b", url).build())["down"] == "shared"


def test_an_upload_cut_off_before_its_record_is_never_a_hit(toy_project, tmp_path, monkeypatch):
    url = (tmp_path / "shared").as_uri()
    uploads = []

    def cut_off(self, data, target):
        uploads.append(target)
        raise ConnectionResetError("the connection dropped")

    monkeypatch.setattr(SharedCache, "_upload_bytes", cut_off)  # files go up, the record never does
    first = machine(toy_project, "a", url)
    result = first.build()
    assert result.ok and statuses(result)["up"] == "miss"
    assert len(uploads) == 1, "after the first error the shared cache is left alone"
    assert "could not write to the shared cache" in first.config.shared.failure
    assert cas_files(tmp_path / "shared") and not (tmp_path / "shared" / "ac").exists()
    monkeypatch.undo()
    second = machine(toy_project, "b", url)
    assert statuses(second.build()) == {"up": "miss", "down": "miss", "side": "miss"}


@pytest.mark.parametrize("damage", ["altered", "deleted"])
def test_a_damaged_file_in_the_shared_cache_is_recomputed_and_mended(toy_project, tmp_path, damage):
    shared = tmp_path / "shared"
    machine(toy_project, "a", shared.as_uri()).build()
    record = json.loads(next((shared / "ac" / "up").glob("*.json")).read_text())
    sha = record["outputs"][0]["files"][0]["sha"]
    victim = shared / "cas" / sha[:2] / sha
    if damage == "altered":
        victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    else:
        victim.unlink()
    second = machine(toy_project, "b", shared.as_uri())
    got = statuses(second.build())
    assert got["up"] == "miss" and got["side"] == "shared"
    assert second.config.shared.published == ["up"]  # the same bytes again, under their name
    assert victim.is_file() and victim.read_bytes() == second.store.object_path(sha).read_bytes()
    assert statuses(machine(toy_project, "c", shared.as_uri()).build())["up"] == "shared"


def test_a_record_that_is_not_the_one_asked_for_is_a_miss(toy_project, tmp_path):
    shared = tmp_path / "shared"
    machine(toy_project, "a", shared.as_uri()).build()
    path = next((shared / "ac" / "side").glob("*.json"))
    record = json.loads(path.read_text())
    record["outputs"][0]["caption"] = "edited after the digest was taken"
    path.write_text(json.dumps(record))
    assert statuses(machine(toy_project, "b", shared.as_uri()).build())["side"] == "miss"


def test_the_freeze_comes_before_the_shared_cache(toy_project, tmp_path):
    """The committed freeze wins, so that every checkout renders the committed site."""
    url = (tmp_path / "shared").as_uri()
    first = machine(toy_project, "a", url)
    first.build()
    frozen = machine(toy_project, "b", url)
    frozen.store = Store(toy_project / "b", layers=[toy_project / "a"])  # a's results as a read-only layer
    assert statuses(frozen.build()) == {"up": "frozen", "down": "frozen", "side": "frozen"}
    assert frozen.config.shared.fetched == []


def test_explain_and_list_say_what_the_shared_cache_has_without_copying_it(toy_project, tmp_path):
    url = (tmp_path / "shared").as_uri()
    machine(toy_project, "a", url).build()
    second = machine(toy_project, "b", url)
    lines = second.explain("down")
    assert lines[0].startswith("down: SHARED") and url in lines[0]
    assert not (toy_project / "b" / "entries").exists(), "explaining must not download"


@pytest.mark.parametrize("url, shown", [
    ("s3://bucket/team/cache", "s3://bucket/team/cache"),
    ("ftp://ann:pa55word@host:21/cache", "ftp://ann:***@host:21/cache"),
    ("ftp://ann@host/cache", "ftp://ann@host/cache"),
    ("https://host/c?sig=abc123&exp=9", "https://host/c?sig=***&exp=***"),
])
def test_a_url_is_shown_without_its_password_or_query_values(url, shown):
    assert redact(url) == shown


def test_an_unknown_protocol_is_a_one_paragraph_error():
    with pytest.raises(BuildError, match=r"cannot be opened.*Install the fsspec backend"):
        SharedCache("nosuchprotocol://x/y")


def test_an_unreachable_cache_with_a_password_in_its_url_warns_once_and_never_shows_it(tmp_path):
    secret = "Pa55-n0t-for-logs"
    url = f"ftp://builder:{secret}@127.0.0.1:1/cache"  # nothing listens on port 1
    proc = build("--profile", "smoke", "--only", "b1_2_noising", "--cache-url", url,
                 cache=tmp_path / "cache", site=tmp_path / "site")
    assert report_statuses(proc) == {"b1_2_noising": "miss"} and proc.report["ok"]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: could not")]
    assert len(warnings) == 1 and "ftp://builder:***@127.0.0.1:1/cache" in warnings[0]
    assert proc.report["warnings"] == [warnings[0].removeprefix("warning: ")]
    assert secret not in proc.stdout + proc.stderr + json.dumps(proc.report)
    assert not _files_holding(secret, tmp_path)


def _files_holding(text: str, *folders: Path) -> list[Path]:
    needle = text.encode()
    return [p for folder in folders for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture
def s3_server(monkeypatch):
    """A real S3-compatible HTTP server on this machine, with one empty bucket; credentials only in the
    environment, as s3fs (through botocore) reads them."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "builder", "AWS_SECRET_ACCESS_KEY": "s3-secret-never-logged",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_DEFAULT_REGION": "us-east-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("course-cache")
    yield {**os.environ, **env}
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_two_machines_building_at_once_on_s3_then_a_third_runs_nothing_and_writes_the_same_site(s3_server, tmp_path):
    url = "s3://course-cache/fun-with-diffusion"
    command = [sys.executable, str(ROOT / "build.py"), "--no-progress", "--profile", "smoke", "--cache-url", url]
    running = [subprocess.Popen(command + ["--cache-dir", str(tmp_path / f"cache{i}"), "--site-dir",
                                           str(tmp_path / f"site{i}"), "--report", str(tmp_path / f"report{i}.json")],
                                cwd=ROOT, env=s3_server, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in (1, 2)]
    outputs = [proc.communicate(timeout=900) for proc in running]
    for proc, (out, err) in zip(running, outputs):
        assert proc.returncode == 0, out + err
        assert "warning" not in err, err
    third = build("--profile", "smoke", "--cache-url", url, cache=tmp_path / "cache3", site=tmp_path / "site3",
                  env=s3_server)
    assert third.report["executed"] == [] and set(report_statuses(third).values()) == {"shared"}
    assert "22 results copied in, 0 uploaded" in third.stdout
    for i in (1, 2):
        assert_same_site(tmp_path / f"site{i}", tmp_path / "site3")
    # Whoever uploaded last, the bucket holds whole records only, and no upload was left half-way.
    import s3fs

    fs = s3fs.S3FileSystem()
    assert not fs.exists("course-cache/fun-with-diffusion/tmp") or not fs.ls("course-cache/fun-with-diffusion/tmp")
    secret = s3_server["AWS_SECRET_ACCESS_KEY"]
    logs = "".join(out + err for out, err in outputs) + third.stdout + third.stderr
    assert secret not in logs
    assert not _files_holding(secret, tmp_path)
    assert not any(secret.encode() in fs.cat_file(path) for path in fs.find("course-cache"))



# -- gc and verify ----------------------------------------------------------------------------------

def reached(result) -> dict[str, str]:
    return {r.id: r.entry.key for r in result.results if r.entry is not None and r.entry.layer is None}


def test_gc_keeps_what_each_checkouts_newest_builds_reached_and_nothing_young(toy_project, tmp_path):
    from builder.scale.shared_cache import collect_shared
    from tests.test_cache import edit

    shared = tmp_path / "shared"
    url = shared.as_uri()
    a = machine(toy_project, "a", url)
    v1 = a.build()
    a.config.shared.record_build(toy_project / "a", "cpu", reached(v1), now=100.0)
    old = {gid: key for gid, key in reached(v1).items()}
    edit(toy_project, "up", '"n": 3', '"n": 4')  # a new variant of up, and so of down; side is unchanged
    a2 = machine(toy_project, "a", url)
    v2 = a2.build()
    a2.config.shared.record_build(toy_project / "a", "cpu", reached(v2), now=200.0)
    b = machine(toy_project, "b", url)
    assert statuses(b.build()) == {"up": "shared", "down": "shared", "side": "shared"}
    b.config.shared.record_build(toy_project / "b", "cpu", reached(b.build()), now=300.0)
    before = cas_files(shared)

    young = collect_shared(SharedCache(url), keep_builds=1)
    assert young.deleted_entries == [] and young.deleted_objects == 0  # everything is under an hour old
    assert young.deleted_records == 1  # but a's older build record is superseded by its newer one
    assert cas_files(shared) == before and len(list((shared / "builds").iterdir())) == 2
    dry = collect_shared(SharedCache(url), keep_builds=1, grace=0, dry_run=True)
    assert sorted(dry.deleted_entries) == sorted([f"down/{old['down']}", f"up/{old['up']}"])
    assert cas_files(shared) == before and len(list((shared / "ac" / "up").iterdir())) == 2  # nothing deleted yet
    done = collect_shared(SharedCache(url), keep_builds=1, grace=0)
    assert done.deleted_entries == dry.deleted_entries and done.deleted_objects == dry.deleted_objects > 0
    assert len(cas_files(shared)) == len(before) - done.deleted_objects
    assert len(list((shared / "builds").iterdir())) == 2
    # What the newest builds reached is whole: a new machine on the current code runs nothing.
    assert set(statuses(machine(toy_project, "c", url).build()).values()) == {"shared"}
    edit(toy_project, "up", '"n": 4', '"n": 3')  # the deleted variant is computed again
    assert statuses(machine(toy_project, "d", url).build()) == {"up": "miss", "down": "miss", "side": "shared"}


def test_verify_finds_an_altered_file_and_repair_removes_it_then_a_build_mends_it(toy_project, tmp_path):
    from builder.scale.shared_cache import verify_shared

    shared = tmp_path / "shared"
    machine(toy_project, "a", shared.as_uri()).build()
    assert verify_shared(SharedCache(shared.as_uri())).corrupt == []
    victim = cas_files(shared)[0]
    victim.write_bytes(victim.read_bytes() + b"!")
    found = verify_shared(SharedCache(shared.as_uri()))
    assert found.corrupt == [victim.name] and found.objects == len(cas_files(shared))
    assert verify_shared(SharedCache(shared.as_uri()), repair=True).removed and not victim.exists()
    machine(toy_project, "b", shared.as_uri()).build()  # the result that named it is recomputed and uploaded
    assert victim.is_file() and verify_shared(SharedCache(shared.as_uri())).corrupt == []


def test_the_cache_commands_take_a_shared_cache_and_say_which(tmp_path):
    shared = tmp_path / "shared"
    (shared / "cas" / "ab").mkdir(parents=True)
    (shared / "cas" / "ab" / ("ab" + "0" * 62)).write_bytes(b"not what its name says")
    command = [sys.executable, str(ROOT / "build.py"), "cache"]
    url = f"{shared.as_uri()}?token=tok-3xyz"
    gc = subprocess.run(command + ["gc", "--cache-url", url, "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert gc.returncode == 0 and "cache gc (file://" in gc.stdout and "would delete 0 results" in gc.stdout
    check = subprocess.run(command + ["verify", "--cache-url", shared.as_uri()], capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 1 and "1 of 1 files do not match" in check.stdout
    assert f"--repair --cache-url {shared.as_uri()}" in check.stdout
    bad = subprocess.run(command + ["gc", "--cache-url", "nosuchprotocol://x"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "cannot be opened" in bad.stderr
