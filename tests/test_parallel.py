"""--jobs and --executor ray: independent sections at once, placed by what they declare, with the same
keys and bytes as one at a time; a failure still leaves the others' results cached.

The scheduler's arithmetic is tested on its own (Slots), the worker processes on the toy project, and
both executors end to end on the smoke profile against the serial smoke build.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.scale import parallel as parallel_build
from builder.scale.workers import Claim, Slots
from builder.section import Needs, Section
from tests.conftest import build, statuses as report_statuses
from tests.test_cache import make_engine, statuses
from tests.test_determinism import assert_same_site

TIMED = '''
import json, os, time
from pathlib import Path
import torch
from builder.section import Needs, Section

SECTION = Section(id="{name}", title="Timed", params={{"seconds": 0.0}}, profiles={{"smoke": {{"seconds": 1.5}}}},
                  needs=Needs(threads={threads}){depends})


def run(ctx):
    start, met, seconds = time.time(), [], ctx.params.seconds
    meeting = os.environ.get("TOY_MEETING")  # a folder where sections that run at the same time see each other
    if meeting and SECTION.id.startswith("slow_"):
        here = Path(meeting)
        (here / SECTION.id).touch()
        deadline = start + 120  # however slowly the workers start, the two meet if they overlap at all
        while not met and time.time() < deadline:
            met = sorted(p.name for p in here.iterdir() if p.name != SECTION.id)
            time.sleep(0.02)
    else:
        time.sleep(seconds)
    ctx.save_json("timing", {{"start": start, "end": time.time(), "threads": torch.get_num_threads(), "met": met}})
'''


def add_timed(root: Path, name: str, threads, depends: str = "") -> None:
    text = TIMED.format(name=name, threads=threads, depends=f", depends=({depends!r},)" if depends else "")
    (root / "toygens" / f"{name}.py").write_text(text)


def timing(engine, gid: str) -> dict:
    entry = next(r for r in engine.store.entries_of(gid))
    sha = next(o for o in entry["outputs"] if o["id"] == "data-timing")["files"][0]["sha"]
    return json.loads(engine.store.object_path(sha).read_text())


def fake_engine(**needs: Needs):
    """What Slots reads of an engine: each section's needs, and the threads it computes with."""
    sections = {gid: SimpleNamespace(section=Section(id=gid, title=gid, needs=n)) for gid, n in needs.items()}
    return SimpleNamespace(sections=sections, threads_for=lambda gid: sections[gid].section.needs.threads or 2)


def test_threads_are_split_so_that_the_cores_are_never_oversubscribed():
    engine = fake_engine(a=Needs(threads=1), b=Needs(threads=1), c=Needs(threads=1), whole=Needs())
    slots = Slots(cores=2)
    first, second = slots.claim(engine, "a"), slots.claim(engine, "b")
    assert first and second and slots.claim(engine, "c") is None and slots.claim(engine, "whole") is None
    slots.release(first)
    assert slots.claim(engine, "whole") is None  # needs both cores
    slots.release(second)
    assert slots.claim(engine, "whole").threads == 2


def test_one_section_per_gpu_unless_it_declares_itself_light_and_gpu_memory_is_respected():
    gb = 2**30
    engine = fake_engine(heavy=Needs(threads=1), heavy2=Needs(threads=1), light=Needs(threads=1, gpu=0.5),
                         light2=Needs(threads=1, gpu=0.5), big=Needs(threads=1, gpu=0.5, gpu_memory_gb=30),
                         huge=Needs(threads=1, gpu_memory_gb=200))
    slots = Slots(cores=16, gpu_total=[80 * gb, 40 * gb])
    assert slots.claim(engine, "heavy").gpu == 0 and slots.claim(engine, "heavy2").gpu == 1
    assert slots.claim(engine, "light") is None  # both GPUs are taken whole
    slots = Slots(cores=16, gpu_total=[80 * gb, 40 * gb])
    assert [slots.claim(engine, g).gpu for g in ("light", "light2")] == [0, 0]  # two light ones share a GPU
    assert slots.claim(engine, "big").gpu == 1 and slots.claim(engine, "big") is None  # 40 GB - 30 < 30
    assert "more than the largest GPU here has (80.0 GB)" in slots.never_fits(engine, "huge")
    busy = Slots(cores=4, gpu_total=[80 * gb])
    assert busy.claim(engine, "heavy").gpu == 0 and busy.claim(engine, "heavy2") is None
    plot = fake_engine(plot=Needs(threads=1, gpu=0))
    assert busy.claim(plot, "plot") == Claim(1, None, 0.0, 0)  # uses no GPU: runs beside the one that holds it
    assert Slots(cores=2).never_fits(engine, "huge") is None  # a CPU build has no GPU memory to respect


def test_on_a_gpu_sections_that_share_the_card_share_the_cores_too():
    """A section holding half a GPU holds half its threads' cores, so two such sections run together on a
    machine whose cores one section's threads would fill; each still computes with all its threads."""
    gb = 2**30
    engine = SimpleNamespace(sections={gid: SimpleNamespace(section=Section(id=gid, title=gid, needs=n)) for gid, n in
                                       {"train_a": Needs(gpu=0.5, gpu_memory_gb=4), "train_b": Needs(gpu=0.5),
                                        "sampler": Needs(gpu=0.5), "whole": Needs(), "plot": Needs(gpu=0)}.items()},
                             threads_for=lambda gid: 16)
    slots = Slots(cores=16, gpu_total=[141 * gb])
    a, b = slots.claim(engine, "train_a"), slots.claim(engine, "train_b")
    assert a == Claim(8, 0, 0.5, 4 * gb) and b == Claim(8, 0, 0.5, 0)
    assert slots.claim(engine, "sampler") is None and slots.claim(engine, "plot") is None  # card and cores taken
    slots.release(a)
    assert slots.claim(engine, "whole") is None  # a whole-GPU section waits for the card
    assert slots.claim(engine, "sampler") == Claim(8, 0, 0.5, 0)
    cpu = Slots(cores=16)  # without a GPU nothing changes: a section holds all its threads' cores
    assert cpu.claim(engine, "train_a") == Claim(16, None, 0.0, 0) and cpu.claim(engine, "train_b") is None


def test_the_two_ddpm_trainings_share_one_gpu_by_their_declarations():
    """The report's own declarations: on a one-GPU, 16-core machine (the H200 the spec edition is built on)
    the two DDPM trainings, the longest sections, run at once; the plots run on the CPU beside them."""
    from builder.graph.registry import discover
    from project import PROJECT

    sections = discover(PROJECT.sections)
    engine = SimpleNamespace(sections=sections, threads_for=lambda gid: 16)
    slots = Slots(cores=16, gpu_total=[141 * 2**30])
    assert slots.claim(engine, "b2_train_time") and slots.claim(engine, "b3_train_class")
    for gid in ("b1_unet_diagram", "appendix_benchmarks"):
        assert sections[gid].section.needs.gpu == 0
    part_a = [gid for gid, mod in sections.items() if "backend" in mod.section.uses]
    # Part A's backend may be DeepFloyd IF, which wants the whole card.
    assert len(part_a) == 9 and all(sections[gid].section.needs.gpu == 1.0 for gid in part_a)


def test_a_build_without_jobs_runs_one_section_at_a_time_on_a_cpu_and_shares_a_gpu():
    from builder.app import default_jobs
    from builder.graph.compute import cores

    assert default_jobs("cpu") == 1 and default_jobs("mps") == 1
    assert default_jobs("cuda") == cores() and default_jobs("cuda:1") == cores()


@pytest.mark.parametrize("bad", [dict(threads=0), dict(gpu=-0.5), dict(gpu=1.5)])
def test_impossible_needs_are_refused_where_they_are_declared(bad):
    with pytest.raises(ValueError, match="Needs"):
        Needs(**bad)


def test_parallel_workers_give_the_serial_keys_and_outputs_and_run_at_once(toy_project, monkeypatch):
    add_timed(toy_project, "slow_a", 1)
    add_timed(toy_project, "slow_b", 1)
    add_timed(toy_project, "whole", None, depends="slow_a")
    serial = make_engine(toy_project, profile="smoke")
    serial.config.threads = 2
    serial_result = serial.build()
    records = {gid: serial.store.entries_of(gid) for gid in statuses(serial_result)}

    parallel = make_engine(toy_project, profile="smoke")
    parallel.store.root = toy_project / "cache-parallel"
    parallel.config.threads, parallel.config.jobs = 2, 2
    (toy_project / "meeting").mkdir()
    monkeypatch.setenv("TOY_MEETING", str(toy_project / "meeting"))  # the workers inherit it
    result = parallel_build.build(parallel)
    assert statuses(result) == {gid: "miss" for gid in records}
    assert [r.id for r in result.results] == [r.id for r in serial_result.results]  # the summary's order
    for gid, [record] in records.items():
        [mine] = parallel.store.entries_of(gid)
        if gid in ("slow_a", "slow_b", "whole"):
            continue  # the timed ones hold the clock, and whole's key holds slow_a's digest
        assert mine["key"] == record["key"] and mine["outputs"] == record["outputs"]
    a, b, whole = (timing(parallel, g) for g in ("slow_a", "slow_b", "whole"))
    # Each waited until it saw the other: they ran at the same time, however long the workers took to start.
    assert (a["met"], b["met"]) == (["slow_b"], ["slow_a"]), "the two one-thread sections must overlap"
    assert whole["start"] >= a["end"], "a section starts after its upstream"
    cores = min(2, len(__import__("os").sched_getaffinity(0)))
    for engine in (serial, parallel):  # the declared threads, and the default, in either way of building
        assert timing(engine, "slow_a")["threads"] == 1 and timing(engine, "whole")["threads"] == cores


def test_a_failing_section_in_a_worker_leaves_the_others_cached_and_skips_its_dependents(toy_project, monkeypatch):
    add_timed(toy_project, "after_side", 1, depends="side")
    with monkeypatch.context() as patch:
        patch.setattr(Section, "resolve", lambda self, profile: {"fail": True} if self.id == "side" else
                      ({"n": 3} if self.id == "up" else {"seconds": 0.0} if self.id == "after_side" else {}))
        engine = make_engine(toy_project)
        engine.config.jobs = 2
        result = parallel_build.build(engine)
    by_id = {r.id: r for r in result.results}
    assert by_id["side"].status == "failed" and "side failed on purpose" in by_id["side"].error
    assert by_id["up"].status == by_id["down"].status == "miss"
    assert by_id["after_side"].status == "skipped"
    again = make_engine(toy_project)
    again.config.jobs = 2
    assert statuses(parallel_build.build(again)) == {"up": "hit", "down": "hit", "side": "miss", "after_side": "miss"}


def test_a_worker_that_dies_fails_its_section_and_the_build_goes_on(toy_project):
    (toy_project / "toygens" / "crash.py").write_text(
        "import os\nfrom builder.section import Section\n\nSECTION = Section(id='crash', title='Crash')\n\n\n"
        "def run(ctx):\n    os._exit(3)  # as the kernel's OOM killer would end it\n")
    engine = make_engine(toy_project)
    engine.config.jobs = 2
    result = parallel_build.build(engine)
    by_id = {r.id: r for r in result.results}
    assert by_id["crash"].status == "failed" and "a worker process ended abruptly while crash ran" in by_id["crash"].error
    for gid in ("up", "down", "side"):  # built, taken down beside the crash and said so, or skipped after that
        res = by_id[gid]
        assert res.status == "miss" or "ended abruptly" in res.error or \
            (res.status == "skipped" and gid == "down" and by_id["up"].status == "failed")
    (toy_project / "toygens" / "crash.py").unlink()
    again = make_engine(toy_project)
    again.config.jobs = 2
    assert parallel_build.build(again).ok


@pytest.mark.slow  # a whole smoke build per executor: the quick tier leaves it to CI (conftest.py, --all)
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_parallel_smoke_build_writes_the_serial_site_byte_for_byte(smoke_build, tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray", reason="ray is an optional extra (scripts/env.sh installs it)")
    args = ["--jobs", "2"] + (["--executor", "ray"] if executor == "ray" else [])
    proc = build("--profile", "smoke", *args, cache=tmp_path / "cache", site=tmp_path / "site")
    assert set(report_statuses(proc).values()) == {"miss"} and len(proc.report["executed"]) == 22
    assert_same_site(smoke_build["site"], tmp_path / "site")


@pytest.mark.slow  # starts a Ray instance
def test_a_result_from_a_ray_node_without_this_disk_comes_home_through_the_shared_cache(toy_project, tmp_path):
    pytest.importorskip("ray", reason="ray is an optional extra (scripts/env.sh installs it)")
    from builder.graph.engine import SectionResult
    from builder.scale.ray_executor import RayPool
    from tests.test_shared_cache import machine

    url = (tmp_path / "shared").as_uri()
    node = machine(toy_project, "node", url)  # what a task on another node did: run, then upload
    done = {r.id: r for r in node.build().results}
    driver = machine(toy_project, "driver", url)
    pool = RayPool(driver)  # not started: nothing here needs Ray itself
    home = pool._bring_home(SectionResult("up", "miss", 1.0, done["up"].entry))
    assert home.status == "miss" and home.entry.key == done["up"].entry.key
    assert driver.store.lookup_local("up", home.entry.key) is not None  # its files are in the driver's cache now
    driver.config.shared = None
    lost = pool._bring_home(SectionResult("down", "miss", 1.0, done["down"].entry))
    assert lost.status == "failed" and "give the build a --cache-url" in lost.error


def test_the_engine_builds_one_at_a_time_and_says_who_runs_several(toy_project):
    """The engine knows no executor (no import circle): an engine set up for --jobs is refused by its serial
    build, naming the driver; builder.app.run_sections hands it to builder.scale.parallel."""
    from builder import BuildError, app

    engine = make_engine(toy_project)
    engine.config.jobs = 2
    with pytest.raises(BuildError, match="builder.scale.parallel.build"):
        engine.build()
    assert app.run_sections(engine).ok and statuses(app.run_sections(engine)) == {"up": "hit", "down": "hit", "side": "hit"}
