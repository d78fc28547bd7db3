"""The engine's contract with a section, in-process on the toy project: what a section is handed,
what its record says, how failures and skips are reported, and the messages a user reads.

(The same paths run end to end, through build.py in a subprocess, in test_section_faults.py and
test_cli_claims.py; these tests are the fast ones that mutation testing can afford.)
"""
from __future__ import annotations

import errno
import os
import random
import sys

import numpy as np
import pytest
import torch

from builder import BuildError
from builder.graph import diagnose, engine as engine_module
from builder.context import derive_seed
from builder.graph.compute import GpuMemory
from builder.graph.engine import Resource
from builder.graph.registry import build_order_from_graph
from builder.project import Project
from tests.test_cache import backend, edit, make_engine

SPY = '''    import toygens.shade as spy
    spy.SEEN = dict(id=ctx.section_id, profile=ctx.profile, seed=ctx.seed, device=ctx.device, dtype=ctx.dtype,
                    scratch=ctx.scratch, backend_identity=ctx.resource_identity("backend"), backend=ctx.resource("backend"),
                    progress=ctx.progress_factory, n=getattr(ctx.params, "fail", None))
'''


def seen():
    return sys.modules["toygens.shade"].SEEN


def by_id(result):
    return {r.id: r for r in result.results}


def test_a_section_is_handed_its_settings_and_a_lazy_backend(toy_project):
    loaded = []
    spec = Resource("backend", {"name": "toy", "model": "m"},
                    load=lambda ctx: loaded.append(ctx.section_id) or f"backend for {ctx.section_id}")
    edit(toy_project, "side", "    if ctx.params.fail:", SPY + "    if ctx.params.fail:")

    def progress(**kw):
        raise AssertionError("not called by this section")

    engine = make_engine(toy_project, seed=7, profile="smoke", device="cpu", dtype="bfloat16", backend=spec)
    engine.build(["side"], progress=progress)
    got = seen()
    assert got["id"] == "side" and got["profile"] == "smoke" and got["n"] is False
    assert got["seed"] == derive_seed(7, "side") == engine.section_seed("side")
    assert got["device"] == "cpu" and got["dtype"] == "bfloat16"
    assert got["scratch"].is_relative_to(toy_project / "cache" / "scratch" / "side")
    assert got["backend_identity"] == {"name": "toy", "model": "m"}
    assert got["backend"] == "backend for side" and loaded == ["side"]
    assert got["progress"] is progress


def test_the_record_names_the_section_its_key_components_and_its_time(toy_project, monkeypatch):
    clock = iter([100.0, 101.23456, 200.0, 200.5])
    monkeypatch.setattr(engine_module.time, "perf_counter", lambda: next(clock))
    result = by_id(make_engine(toy_project, backend=backend("a")).build(["side"]))["side"]
    record = result.entry.record
    assert record["section"] == "side" and record["title"] == "Independent"
    assert record["components"] == make_engine(toy_project, backend=backend("a")).key_components("side", {})
    assert record["wall_seconds"] == 1.23 and result.seconds == pytest.approx(1.23456)
    assert "peak_gpu_bytes" not in record and result.peak_gpu_bytes is None  # off CUDA there is none
    assert [o["id"] for o in record["outputs"]] == ["side_image"]
    assert result.status == "miss" and result.error is None
    assert by_id(make_engine(toy_project, backend=backend("a"), force=["side"]).build(["side"]))["side"].status \
        == "forced"


def test_the_peak_gpu_memory_is_recorded_on_cuda(toy_project, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: calls.append(("peak", device)) or 12345)
    result = by_id(make_engine(toy_project, device="cuda:1").build(["up"]))["up"]
    assert result.peak_gpu_bytes == 12345 and result.entry.record["peak_gpu_bytes"] == 12345
    assert calls == [("reset", "cuda:1"), ("peak", "cuda:1")]
    assert make_engine(toy_project, device="cuda:1").key_components("up", {})["device"] == "cuda"
    assert GpuMemory("cpu").peak() is None


def test_hits_take_no_time_and_every_section_is_reported_as_it_ends(toy_project):
    make_engine(toy_project).build()
    seen_results = []
    result = make_engine(toy_project).build(on_section=seen_results.append)
    assert [r.id for r in seen_results] == ["side", "up", "down"] == [r.id for r in result.results]
    assert all(r.status == "hit" and r.seconds == 0.0 and r.entry is not None for r in seen_results)


def test_a_failure_skips_its_dependents_and_says_why(toy_project):
    edit(toy_project, "up", "    values =", "    raise ValueError('broken')\n    values =")
    reported = []
    result = by_id(make_engine(toy_project).build(on_section=reported.append))
    assert [r.id for r in reported] == ["side", "up", "down"]
    up, down = result["up"], result["down"]
    assert up.status == "failed" and up.error == "ValueError: broken" and up.seconds >= 0
    assert up.traceback.startswith("Traceback (most recent call last):\n  File ") and up.traceback.endswith(
        "ValueError: broken\n") and "raise ValueError('broken')" in up.traceback
    assert (down.status, down.seconds, down.error, down.entry) == ("skipped", 0.0, "an upstream section failed", None)
    assert by_id(make_engine(toy_project).build(["down"]))["down"].status == "skipped"  # also when asked alone


def test_a_build_error_keeps_its_own_message(toy_project):
    edit(toy_project, "side", "    if ctx.params.fail:",
         "    from builder import BuildError\n    raise BuildError('the toy input is missing; run make toy')\n"
         "    if ctx.params.fail:")
    side = by_id(make_engine(toy_project).build(["side"]))["side"]
    assert (side.status, side.error) == ("failed", "the toy input is missing; run make toy")
    assert "BuildError" in side.traceback


def test_a_full_disk_message_counts_what_was_written_and_what_a_complete_run_stored(toy_project, monkeypatch):
    make_engine(toy_project).build(["side"])
    stored = sum(p.stat().st_size for p in (toy_project / "cache" / "objects").rglob("*") if p.is_file())
    edit(toy_project, "side", "    if ctx.params.fail:",
         "    (ctx.scratch / 'resume.pt').write_bytes(b'x' * 1000)\n"
         "    (ctx.staging / 'partial').write_bytes(b'y' * 500)\n"
         "    import errno, os\n"
         "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.scratch / 'big.bin'))\n"
         "    if ctx.params.fail:")
    calls = _disk_spy(monkeypatch)
    side = by_id(make_engine(toy_project).build(["side"]))["side"]
    cache = toy_project / "cache"
    assert calls["what"] == "ENOSPC, No space left on device" and calls["file"].name == "big.bin"
    assert calls["cache_root"] == cache and calls["resumable"] is True
    # what the failed run staged (its image, the same bytes as the stored run's, and 500 bytes) and
    # what it left in its scratch folder (1000 bytes)
    assert calls["previous"] == stored > 0
    assert calls["written"] == stored + 500 + 1000
    assert side.error == _REAL_DISK_MESSAGE(**calls)


def test_the_size_of_a_sections_last_complete_run(toy_project):
    engine = make_engine(toy_project)
    assert engine._stored_bytes("up") is None  # nothing stored yet
    first = by_id(engine.build(["up"]))["up"].entry

    def size(entry):
        return sum(engine.store.object_path(f["sha"]).stat().st_size for o in entry.outputs for f in o["files"])

    assert engine._stored_bytes("up") == size(first) > 0
    edit(toy_project, "up", "ctx.params.n / 10", "ctx.params.n / 10 + np.arange(16).reshape(4, 4) / 40")
    second = by_id(make_engine(toy_project).build(["up"]))["up"].entry
    assert size(second) != size(first)
    assert make_engine(toy_project)._stored_bytes("up") == max(size(first), size(second))  # the largest record
    assert make_engine(toy_project)._stored_bytes("down") is None


def test_memory_hints_name_the_settings_a_user_can_change(toy_project):
    engine = make_engine(toy_project, profile="spec", dtype="float32")
    gen = engine.sections["up"]
    hints = engine.memory_hints(gen, {"params": {"batch_size": 256, "eval_batch": 1, "n": 3, "batch": True}})
    assert engine.memory_hints(gen, {"params": {"batch_size": 2}})[1] == \
        "a smaller batch_size (now 2) in the 'spec' profile of toygens/up.py"
    assert hints == ["--dtype bfloat16 (half the activation memory)",
                     "a smaller batch_size (now 256) in the 'spec' profile of toygens/up.py",
                     "--profile cpu (smaller models and batches than the assignment's)"]
    # A section that uses a resource gets the resource's own hints, and not --profile cpu.
    big = Resource("backend", {"name": "big"}, memory_hints=("a smaller model", "no text encoder"))
    engine = make_engine(toy_project, profile="spec", dtype="bfloat16", backend=big)
    assert engine.memory_hints(engine.sections["side"], {"params": {}}) == ["a smaller model", "no text encoder"]
    assert engine.memory_hints(gen, {"params": {}}) == ["--profile cpu (smaller models and batches than the "
                                                        "assignment's)"]
    small = make_engine(toy_project, profile="spec", dtype="bfloat16", backend=Resource("backend", {"name": "s"}))
    assert small.memory_hints(small.sections["side"], {"params": {}}) == []
    assert make_engine(toy_project, profile="cpu", dtype="bfloat16").memory_hints(gen, {"params": {}}) == []


def test_an_out_of_memory_error_gets_the_hints_for_that_section(toy_project, monkeypatch):
    edit(toy_project, "up", "    values =", "    raise RuntimeError('CUDA out of memory. Tried to allocate 2 GiB')\n"
         "    values =")
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    got = {}
    monkeypatch.setattr(diagnose, "gpu_memory", lambda device: got.setdefault("device", device) and None)
    monkeypatch.setattr(diagnose, "oom_message",
                        lambda device, memory, hints: f"OOM {device} {memory} " + " | ".join(hints))
    up = by_id(make_engine(toy_project, device="cuda:0", profile="spec").build(["up"]))["up"]
    assert got["device"] == "cuda:0"
    assert up.error == ("OOM cuda:0 None --dtype bfloat16 (half the activation memory) | "
                        "--profile cpu (smaller models and batches than the assignment's)")


def test_every_source_of_randomness_is_seeded_from_the_section(toy_project):
    engine_module.seed_everything(2**40 + 5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    engine_module.seed_everything(2**40 + 5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    np.random.seed(5)
    assert np.random.rand() == a[1]  # numpy takes the seed modulo 2**32
    random.seed(2**40 + 5)
    assert random.random() == a[0]


def test_section_choice_and_its_messages(toy_project):
    engine = make_engine(toy_project)
    assert engine.order(["down"]) == ["up", "down"] and engine.order(None) == ["side", "up", "down"]
    assert [gid for gid, _ in engine.peek(["down"]).items()] == ["up", "down"]
    with pytest.raises(BuildError) as err:
        engine.order(["down", "nope", "gone"])
    assert str(err.value) == "unknown section(s) nope, gone; valid sections are: down, side, up."
    with pytest.raises(BuildError) as err:
        build_order_from_graph({"a": ("b",), "b": ("c",), "c": ("a",)})
    assert str(err.value).startswith("the section dependencies form a cycle: ")
    cycle = str(err.value).split(": ")[1].split(" -> ")
    assert len(cycle) == 4 and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert build_order_from_graph({"z": (), "b": ("z",), "a": ()}) == ["a", "z", "b"]


def test_backend_dependencies_only_for_sections_that_use_it(toy_project):
    spec = Resource("backend", {"name": "toy"}, depends=("up", "up"))
    engine = make_engine(toy_project, backend=spec)
    assert engine.depends("side") == ("up",) and engine.depends("up") == ()
    assert make_engine(toy_project).depends("side") == ()


def test_explain_hit_and_miss_lines(toy_project):
    engine = make_engine(toy_project)
    engine.build(["up"])
    key = engine_module.hash_value(engine.key_components("up", {}))
    assert engine.explain("up") == [f"up: HIT (key {key[:16]}); the cached outputs are intact and will be reused."]
    record = toy_project / "cache" / "entries" / "up" / f"{key}.json"
    for f in (toy_project / "cache" / "objects").rglob("*"):
        if f.is_file():
            f.unlink()
    lines = make_engine(toy_project).explain("up")
    assert lines == [f"up: MISS (key {key[:16]}) because:",
                     "  the record for this key exists but a file it names is missing or altered"]
    assert record.is_file()
    other = make_engine(toy_project, seed=2).explain("up")
    assert other[0].startswith("up: MISS (key ") and other[0].endswith(") because:")
    assert any("seed" in line for line in other[1:])


def test_declared_inputs_are_checksummed_by_content(tmp_path):
    facts = Project(root=tmp_path, inputs={"dataset": lambda: "published-hash"})
    (tmp_path / "one.txt").write_bytes(b"abc")
    folder = tmp_path / "many"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"1")
    (folder / "sub" / "b.bin").write_bytes(b"2")
    from builder.fingerprint import hash_value, sha256_file

    assert facts.input_checksum("one.txt") == sha256_file(tmp_path / "one.txt")
    assert facts.input_checksum("many") == hash_value({"a.bin": sha256_file(folder / "a.bin"),
                                                       "sub/b.bin": sha256_file(folder / "sub" / "b.bin")})
    before = facts.input_checksum("many")
    (folder / "sub" / "b.bin").write_bytes(b"3")
    assert facts.input_checksum("many") != before
    assert facts.input_checksum("dataset") == "published-hash"
    with pytest.raises(BuildError) as err:
        facts.input_checksum("absent")
    assert str(err.value) == (f"a section declares the input 'absent', which is neither 'dataset' or a file or "
                              f"folder under {tmp_path}.")


def test_the_report_checksums_mnist_by_its_published_hashes():
    from builder.fingerprint import hash_value
    from diffusion import data
    from project import PROJECT

    assert PROJECT.input_checksum("mnist") == hash_value(data.checksums())


def test_bytes_under_a_folder(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "x").write_bytes(b"12345")
    (tmp_path / "d" / "e" / "y").write_bytes(b"123")
    assert diagnose.bytes_under(tmp_path / "d") == 8
    assert diagnose.bytes_under(tmp_path / "missing") == 0
    assert diagnose.bytes_under(tmp_path / "d" / "x") == 0  # a file is not a folder


def test_key_components_name_every_input(toy_project):
    engine = make_engine(toy_project, seed=3, profile="smoke", dtype="bfloat16", backend=backend("m"), inputs="v9")
    peeked = engine.peek()
    side, down = peeked["side"][0], peeked["down"][0]
    assert sorted(side) == ["code", "device", "dtype", "inputs", "params", "profile", "record_format", "resources",
                            "seed", "upstream", "versions"]
    assert side["inputs"] == {"toy-data": "toy-data@v9"} and side["resources"] == {"backend": {"name": "toy", "model": "m"}}
    assert (side["profile"], side["dtype"], side["device"]) == ("smoke", "bfloat16", "cpu")
    assert down["upstream"] == {"up": "not built"} and down["resources"] == {}  # peeked before any build
    assert peeked["up"][0]["params"] == {"n": 2}  # the smoke profile's value
    engine.build()
    up_digest = make_engine(toy_project, seed=3, profile="smoke", dtype="bfloat16", backend=backend("m"),
                            inputs="v9").peek(["down"])["up"][1].digest
    assert make_engine(toy_project, seed=3, profile="smoke", dtype="bfloat16", backend=backend("m"),
                       inputs="v9").peek(["down"])["down"][0]["upstream"] == {"up": up_digest}


def test_asking_for_one_section_builds_only_it_and_what_it_needs(toy_project):
    assert [r.id for r in make_engine(toy_project).build(["up"]).results] == ["up"]
    assert [r.id for r in make_engine(toy_project).build(["down"]).results] == ["up", "down"]


def test_a_failure_skips_every_section_downstream_of_it(toy_project):
    # side depends on down through the backend, so up -> down -> side is a chain of three
    spec = Resource("backend", {"name": "toy"}, depends=("down",))
    edit(toy_project, "up", "    values =", "    raise ValueError('broken')\n    values =")
    result = by_id(make_engine(toy_project, backend=spec).build())
    assert [(gid, r.status) for gid, r in result.items()] == [("up", "failed"), ("down", "skipped"),
                                                               ("side", "skipped")]


def test_a_failure_reports_how_long_the_section_ran(toy_project, monkeypatch):
    edit(toy_project, "up", "    values =", "    raise ValueError('broken')\n    values =")
    clock = iter([10.0, 12.5])
    monkeypatch.setattr(engine_module.time, "perf_counter", lambda: next(clock))
    up = by_id(make_engine(toy_project).build(["up"]))["up"]
    assert (up.status, up.seconds) == ("failed", 2.5)
    edit(toy_project, "up", "raise ValueError('broken')", "from builder import BuildError\n    raise BuildError('x')")
    clock = iter([1.0, 1.75])
    up = by_id(make_engine(toy_project).build(["up"]))["up"]
    assert (up.status, up.seconds, up.error) == ("failed", 0.75, "x")


def test_explain_compares_with_the_last_lookup_even_a_hit(toy_project):
    make_engine(toy_project, seed=1).build(["up"])
    make_engine(toy_project, seed=2).build(["up"])
    assert by_id(make_engine(toy_project, seed=1).build(["up"]))["up"].status == "hit"  # remembers seed 1 again
    lines = make_engine(toy_project, seed=3).explain("up")
    assert f"  seed: {derive_seed(1, 'up')} -> {derive_seed(3, 'up')}" in lines


_REAL_DISK_MESSAGE = diagnose.disk_message


def _disk_spy(monkeypatch):
    calls = {}
    real = _REAL_DISK_MESSAGE

    def spy(what, file, cache_root, written, previous, resumable):
        calls.update(what=what, file=file, cache_root=cache_root, written=written, previous=previous,
                     resumable=resumable)
        return real(what, file, cache_root, written, previous, resumable)

    monkeypatch.setattr(diagnose, "disk_message", spy)
    return calls


def test_a_full_disk_when_the_record_is_written_and_without_a_checkpoint(toy_project, monkeypatch):
    calls = _disk_spy(monkeypatch)

    def full(self, *args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / "entries" / "up" / "k.json"))

    monkeypatch.setattr(engine_module.Store, "commit", full)
    up = by_id(make_engine(toy_project).build(["up"]))["up"]
    assert up.status == "failed" and up.error.startswith("the disk is full: writing ")
    # nothing was staged by the generator's own failure, and the scratch folder holds nothing
    assert calls["written"] == 0 and calls["resumable"] is False and calls["previous"] is None


def test_torchs_serialisation_error_on_a_nearly_full_disk_is_a_full_disk(toy_project, monkeypatch):
    calls = _disk_spy(monkeypatch)
    seen = []
    monkeypatch.setattr(diagnose, "disk_usage", lambda path: seen.append(path) or (12_000, 3_000_000))
    edit(toy_project, "up", "    values =", "    raise RuntimeError('[enforce fail at inline_container.cc:672] . "
         "unexpected pos 1852992 vs 1852884')\n    values =")
    up = by_id(make_engine(toy_project).build(["up"]))["up"]
    assert calls["what"] == "torch could not finish writing a file" and calls["file"] is None
    assert seen[0] == toy_project / "cache"
    assert up.error.startswith("the disk is full: a write into the cache folder ")


def test_a_section_that_does_not_declare_the_backend_cannot_load_it(toy_project):
    edit(toy_project, "up", "    values =", "    ctx.resource('backend')\n    values =")
    up = by_id(make_engine(toy_project, backend=backend("a")).build(["up"]))["up"]
    assert (up.status, up.error) == ("failed", "section 'up' asks for the resource 'backend', which this build does "
                                               "not provide or its Section does not declare in uses=.")


def test_a_declared_parameter_that_run_never_reads_fails_the_section(toy_project):
    edit(toy_project, "up", '{"n": 3}', '{"n": 3, "width": 8, "unused": 1}')
    edit(toy_project, "up", "    values =", "    getattr(ctx.params, 'width')\n    values =")
    engine = make_engine(toy_project)
    up = by_id(engine.build(["up"]))["up"]
    assert up.status == "failed"
    assert up.error == ("section 'up' declares the parameter(s) unused but never reads them, so they would change "
                        "its cache key and nothing else; remove them from its Section (or from the profile that "
                        "sets them), or use them.")
    assert engine.store.entries_of("up") == []
    with pytest.raises(AttributeError, match="no parameter 'nope'"):
        from builder.context import Params

        Params("up", {"n": 1}).nope


def test_a_resource_gives_its_own_parameters_to_the_sections_that_use_it(toy_project):
    edit(toy_project, "side", "    if ctx.params.fail:", "    assert ctx.params.prompt\n    if ctx.params.fail:")
    seen = []
    res = Resource("backend", {"name": "toy"},
                   params=lambda gid, profile: seen.append((gid, profile)) or {"prompt": f"{profile} digit"})
    engine = make_engine(toy_project, profile="smoke", backend=res)
    peeked = engine.peek()
    assert peeked["side"][0]["params"] == {"fail": False, "prompt": "smoke digit"}
    assert peeked["up"][0]["params"] == {"n": 2} and set(seen) == {("side", "smoke")}
    assert by_id(engine.build())["side"].status == "miss"
    clash = Resource("backend", {"name": "toy"}, params=lambda gid, profile: {"fail": True})
    with pytest.raises(BuildError, match="section 'side' declares fail, which the backend resource also sets"):
        make_engine(toy_project, backend=clash).peek()
