"""Faults a user can act on, inside a section: a full disk and a GPU out of memory.

Each ends in one paragraph on stderr (no traceback unless --debug), exit status 1, no temporary
file left behind, and a next build that recovers once the cause is gone. A full disk is simulated
by writes that raise ENOSPC (or torch's own serialisation error) and, where the tests run as root
on Linux, made real with a 3 MB tmpfs; CUDA out of memory is simulated by raising torch's error.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from builder.graph import diagnose
from tests.conftest import ROOT
from tests.test_determinism import assert_same_site
from tests.test_faults import cache_copy, leftovers, load_cli  # noqa: F401 - cache_copy is a fixture

SECTION = "b1_train_denoiser"


def cli(cache: Path, site: Path, *extra: str) -> int:
    return load_cli().main(["--profile", "smoke", "--no-progress", "--cache-dir", str(cache), "--site-dir",
                            str(site), *extra])


def error_paragraph(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert lines[0].startswith(f"error: section {SECTION} failed: "), err
    assert "Traceback" not in err, "a traceback without --debug"
    return lines[0]


def recovers(cache: Path, site: Path, smoke_build, capsys):
    assert leftovers(cache) == [], "a failed write left its temporary file"
    assert cli(cache, site, "--force", SECTION) == 0
    capsys.readouterr()
    assert_same_site(smoke_build["site"], site)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_a_section_writes(smoke_build, cache_copy, monkeypatch, capsys):
    cache, site = cache_copy
    monkeypatch.setattr(os, "fsync", no_space)  # the checkpoint's bytes went out; the disk filled on the flush
    assert cli(cache, site, "--force", SECTION) == 1
    line = error_paragraph(capsys)
    assert f"the disk is full: writing {cache}/scratch/{SECTION}/" in line
    assert "/resume.pt failed (ENOSPC, No space left on device)" in line
    assert f"The disk holding the cache folder {cache} has " in line and "its last complete run stored" in line
    assert "--cache-dir" in line and "--site-dir" in line and "run the same command again" in line
    monkeypatch.undo()
    recovers(cache, site, smoke_build, capsys)


def test_full_disk_seen_only_through_torchs_serialisation_error(smoke_build, cache_copy, monkeypatch, capsys):
    cache, site = cache_copy
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if hasattr(f, "fileno"):  # a real file: half of it gets out, then the zip writer gives up
            f.write(b"PK\x03\x04 partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1852992 vs 1852884")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(diagnose, "disk_usage", lambda folder: (12_000, 3_000_000))
    assert cli(cache, site, "--force", SECTION) == 1
    line = error_paragraph(capsys)
    assert "the disk is full: a write into the cache folder" in line and "torch could not finish writing" in line
    assert "has 12.0 KB free of 3.0 MB" in line
    monkeypatch.undo()
    recovers(cache, site, smoke_build, capsys)


def test_a_torch_write_error_with_room_on_the_disk_is_reported_as_it_is(smoke_build, cache_copy, monkeypatch,
                                                                       capsys):
    cache, site = cache_copy
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if hasattr(f, "fileno"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(diagnose, "disk_usage", lambda folder: (50 * 2**30, 100 * 2**30))
    assert cli(cache, site, "--force", SECTION) == 1
    line = error_paragraph(capsys)
    assert "disk is full" not in line and "RuntimeError: [enforce fail at inline_container.cc:672]" in line


def test_cuda_out_of_memory_names_the_section_the_memory_and_what_lowers_it(smoke_build, cache_copy, monkeypatch,
                                                                           capsys):
    import generators.b1_train_denoiser as section

    cache, site = cache_copy

    def run(ctx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                          "capacity of 15.70 GiB of which 1.10 GiB is free.")

    monkeypatch.setattr(section, "run", run)
    gib = 2**30
    monkeypatch.setattr(diagnose, "gpu_memory", lambda device: {
        "allocated": 9 * gib, "reserved": 10 * gib, "free": 1 * gib, "total": 16 * gib, "name": "NVIDIA T4"})
    assert cli(cache, site, "--force", SECTION) == 1
    line = error_paragraph(capsys)
    assert "out of GPU memory on cpu (NVIDIA T4): when it failed, this build's tensors held 9.7 GB" in line
    assert "PyTorch's allocator 10.7 GB, with 1.1 GB free of 17.2 GB" in line
    assert "(about 5.4 GB is held by other processes)" in line
    assert "a smaller batch_size (now 64) in the 'smoke' profile of generators/b1_train_denoiser.py" in line
    assert "nvidia-smi" in line and "run the same command again" in line

    assert cli(cache, site, "--force", SECTION, "--debug") == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "OutOfMemoryError: CUDA out of memory" in err
    monkeypatch.undo()
    recovers(cache, site, smoke_build, capsys)


def test_memory_hints_follow_the_settings(tmp_path):
    from types import SimpleNamespace

    from builder.graph.engine import BuildConfig, Engine

    import argparse

    from backends import deepfloyd
    from builder.graph.engine import Resource
    from builder.graph.registry import SectionModule
    from builder.section import Section
    from project import PROJECT

    mod = SectionModule(Section("a1_5_sampling", "t", uses=("backend",)), "generators.a1_5_sampling")
    engine = Engine(PROJECT, BuildConfig(profile="spec", device="cuda", dtype="float32", seed=0, cache_root=tmp_path),
                    {"a1_5_sampling": mod})
    hints = engine.memory_hints(mod, {"params": {"batch_size": 500, "num_samples": 1000}})
    assert hints == ["--dtype bfloat16 (half the activation memory)",
                     "a smaller batch_size (now 500) in the 'spec' profile of generators/a1_5_sampling.py",
                     "--profile cpu (smaller models and batches than the assignment's)"]
    engine.config.resources["backend"] = Resource("backend", {"name": "deepfloyd"},
                                                  memory_hints=deepfloyd.MEMORY_HINTS)
    hints = engine.memory_hints(mod, {"params": {}})
    assert any("--embeddings FILE" in h for h in hints) and any("IF-I-L-v1.0" in h for h in hints)
    assert argparse  # the hints name options the deepfloyd plug-in really adds:
    parser = argparse.ArgumentParser()
    deepfloyd.BACKEND.add_options(parser.add_argument_group())
    assert {"--embeddings", "--deepfloyd-model"} <= {o for a in parser._actions for o in a.option_strings}


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a tmpfs needs root on Linux")
def test_a_real_full_disk(tmp_path):
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "3m"):
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        cmd = [sys.executable, str(ROOT / "build.py"), "--no-progress", "--profile", "smoke", "--only", "b0_classifier",
               "--cache-dir", str(small / "cache"), "--site-dir", str(tmp_path / "site")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        err = proc.stderr.strip()
        assert err.startswith("error: section b0_classifier failed: the disk is full: ") and "\n" not in err, err
        assert "resume.pt failed (ENOSPC" in err and f"the cache folder {small / 'cache'}" in err
        assert "free of 3.1 MB" in err
        assert leftovers(small / "cache") == []
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert again.returncode == 0 and "b0_classifier" in again.stdout, again.stdout + again.stderr
        assert leftovers(small / "cache") == []
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
