"""build.py end to end on the smoke profile, in fresh processes as a user runs it."""
import json
import subprocess
import sys

from tests.conftest import ROOT, build
from tests.test_render import assert_links_resolve


def test_cold_build_runs_every_section(smoke_build):
    lines = smoke_build["cold"].stdout
    assert " hit " not in lines and "miss" in lines


def test_warm_rebuild_executes_no_generator_and_writes_nothing(smoke_build):
    out = smoke_build["warm"].stdout
    assert "0 of " in out and "everything came from the cache" in out
    assert "0 written, 0 removed" in out


def test_links_resolve_in_the_built_site(smoke_build):
    assert_links_resolve(smoke_build["site"])


def test_manifest_figures_have_captions_and_alt_text(smoke_build):
    manifest = json.loads((smoke_build["site"] / "manifest.json").read_text())
    figures = [f for s in manifest["sections"].values() for f in s["figures"]]
    assert figures
    for fig in figures:
        assert fig["caption"].strip() and fig["alt"].strip(), fig["id"]
    assert manifest["build"]["profile"] == "smoke"


def test_explain_and_list(smoke_build):
    out = build("--profile", "smoke", "--list", cache=smoke_build["cache"], site=smoke_build["site"]).stdout
    assert "b1_2_noising" in out and "cached" in out
    out = build("--profile", "smoke", "--seed", "5", "--explain", "b1_2_noising",
                cache=smoke_build["cache"], site=smoke_build["site"]).stdout
    assert "MISS" in out and "seed:" in out


def test_unknown_section_lists_the_valid_ones(tmp_path):
    proc = build("--only", "no_such_section", cache=tmp_path / "c", site=tmp_path / "s", check=False)
    assert proc.returncode == 2
    assert "unknown section(s) no_such_section" in proc.stderr and "b1_2_noising" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_unknown_profile_lists_the_valid_ones(tmp_path):
    proc = build("--profile", "huge", cache=tmp_path / "c", site=tmp_path / "s", check=False)
    assert proc.returncode == 2 and "smoke" in proc.stderr and "spec" in proc.stderr


def test_help_documents_every_option():
    out = subprocess.run([sys.executable, str(ROOT / "build.py"), "--help"], capture_output=True, text=True).stdout
    for flag in ("--only", "--force", "--profile", "--device", "--seed", "--list", "--explain", "--clean"):
        assert flag in out
