"""The report's required figures, and the DeepFloyd path end to end on a tiny offline IF."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, build, statuses

PART_A = ["a0_samples", "a1_forward", "a1_blur", "a1_one_step", "a1_4_trajectory", "a1_4_comparison",
          "a1_5_samples", "a1_6_cfg", "a1_7_sdedit", "a1_7_1_edits", "a1_7_2_inpaint", "a1_7_3_text",
          "a1_8_anagram1", "a1_8_anagram2", "a1_8_anagram3", "a1_9_hybrid1", "a1_9_hybrid2", "a1_9_hybrid3",
          "a1_quality", "a1_4_quality"]
PART_B = ["b1_2_noising", "b1_loss", "b1_denoised_epoch1", "b1_denoised_final", "b1_ood", "b1_hparams",
          "b2_loss", "b2_hparams", "b3_loss", "b3_guidance", "b3_accuracy", "b3_hparams", "b3_live",
          "b1_quality", "b0_classifier", "b2_quality", "b2_quality_plot", "b3_accuracy_plot"]
APPENDIX = ["bench_machine", "bench_cold", "bench_cold_plot", "bench_incremental", "bench_sampling", "bench_training",
            "bench_deepfloyd", "bench_live", "bench_scale_out", "bench_gpu_step", "bench_gpu_build", "bench_writer_loop"]


def figures_of(manifest: dict) -> dict:
    return {f["id"]: f for s in manifest["sections"].values() for f in s["figures"]}


def assert_required(manifest: dict):
    figures = figures_of(manifest)
    missing = [fid for fid in PART_A + PART_B if fid not in figures]
    assert not missing, f"required figures missing from the manifest: {missing}"
    for fid in PART_A + PART_B:
        assert figures[fid]["caption"].strip(), f"{fid} has an empty caption"
    for prefix, train in (("b2", "b2_train_time"), ("b3", "b3_train_class")):
        for epoch in manifest["sections"][train]["params"]["snapshot_epochs"]:
            for kind in ("samples", "gif"):
                assert f"{prefix}_{kind}_epoch{epoch}" in figures


def test_smoke_build_has_every_required_figure(smoke_build):
    manifest = json.loads((smoke_build["site"] / "manifest.json").read_text())
    assert_required(manifest)


# The published site: the spec edition (computed on a GPU) at the root, the cpu edition in its folder.
EDITIONS = {"spec": ROOT / "site" / "manifest.json", "cpu": ROOT / "site" / "cpu" / "manifest.json"}


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_committed_site_has_every_required_figure_in_each_edition(edition):
    manifest = json.loads(EDITIONS[edition].read_text())
    assert_required(manifest)
    assert manifest["build"]["profile"] == edition and manifest["build"]["stale"] == []


def test_the_spec_edition_was_computed_on_an_nvidia_gpu_and_the_cpu_edition_on_a_cpu():
    spec, cpu = (json.loads(EDITIONS[e].read_text()) for e in ("spec", "cpu"))
    computed = {sid: s for sid, s in spec["sections"].items() if not s.get("portable")}
    # Only the appendix's benchmark tables, which compute nothing, may be laid out elsewhere.
    assert set(spec["sections"]) - set(computed) <= {"appendix_benchmarks"}
    assert {s["machine"]["device"] for s in computed.values()} == {"cuda"} and spec["build"]["device"] == "cuda"
    assert all(s["machine"]["name"].startswith("NVIDIA ") for s in computed.values())
    assert {s["machine"]["device"] for s in cpu["sections"].values()} == {"cpu"}
    assert spec["build"]["versions"]["torch"] != cpu["build"]["versions"]["torch"], \
        "each edition names the versions it was computed with, not the rendering machine's"


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_committed_site_comes_from_the_current_code(edition):
    """Each edition's sections, parameters, seeds and backend are what this code resolves for its profile."""
    import backends
    import build
    from builder import app
    from builder.context import derive_seed
    from project import PROJECT

    manifest = json.loads(EDITIONS[edition].read_text())
    settings = app.Settings(PROJECT, profile=edition, device="cpu")
    settings.resources["backend"] = backends.resource(build.parse_args(["--backend", "local"]), "cpu", PROJECT)
    engine = app.make_engine(settings)
    assert manifest["build"]["resources"]["backend"]["name"] == "local"
    assert sorted(manifest["sections"]) == sorted(engine.sections)
    for sid in engine.sections:
        assert manifest["sections"][sid]["params"] == json.loads(json.dumps(engine.params(sid))), sid
        assert manifest["sections"][sid]["seed"] == derive_seed(PROJECT.seed, sid), sid


@pytest.mark.parametrize("edition", sorted(EDITIONS))
def test_committed_site_reports_a_judge_of_at_least_99_percent_and_the_benchmarks(edition):
    figures = figures_of(json.loads(EDITIONS[edition].read_text()))
    card = dict(figures["b0_classifier"]["table"]["rows"])
    accuracy = float(re.match(r"([\d.]+)%", card["test accuracy"]).group(1))
    assert accuracy >= 99.0, f"the scoring classifier reaches only {accuracy}% on the test set"
    assert [fid for fid in APPENDIX if fid not in figures] == []
    machines = dict(figures["bench_machine"]["table"]["rows"])
    assert {m.split(" (Chromium")[0] for m in machines} == {"build times", "sampling throughput", "training throughput",
                                                         "DeepFloyd IF at full size, CPU", "live sampler",
                                                         "parallel and shared builds", "GPU check (scripts/gpu-check)",
                                                         "the writer's loop"}
    assert "NVIDIA H200" in machines["GPU check (scripts/gpu-check)"]
    loop = {row[0]: row[-1] for row in figures["bench_writer_loop"]["table"]["rows"]}
    assert len(loop) == 4 and set(loop.values()) == {"yes"}, f"the writer's loop within its goals: {loop}"
    assert all("cores" in m for m in machines.values())
    ran = {row[0]: row[-1] for row in figures["bench_incremental"]["table"]["rows"]}
    assert ran["warm rebuild, nothing changed"] == "none"
    scale = {row[0]: row for row in figures["bench_scale_out"]["table"]["rows"]}
    assert [scale[m][-1] for m in ("jobs", "ray", "shared")] == ["yes", "yes", "yes"]  # the serial site, byte for byte
    assert scale["shared"][3] == "0"  # a second machine with the shared cache runs nothing
    deepfloyd = figures["bench_deepfloyd"]["table"]
    exact = deepfloyd["columns"].index("equal to the pipeline bit for bit")
    assert len(deepfloyd["rows"]) == 3 and all(row[exact] == "yes" for row in deepfloyd["rows"])


def test_captions_state_the_parameters(smoke_build):
    figures = figures_of(json.loads((smoke_build["site"] / "manifest.json").read_text()))
    assert "i_start" in figures["a1_7_sdedit"]["caption"] and "γ" in figures["a1_7_sdedit"]["caption"]
    assert "t = " in figures["a1_forward"]["caption"]
    assert "local" in figures["a1_6_cfg"]["caption"]


def test_deepfloyd_without_weights_is_one_clear_error(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("DEEPFLOYD_DIR", None)
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "--backend", "deepfloyd", "--no-progress",
                           "--cache-dir", str(tmp_path / "c"), "--site-dir", str(tmp_path / "s")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for needle in ("DeepFloyd/IF-I-XL-v1.0", "licence", "huggingface-cli login", "--deepfloyd-dir", "DEEPFLOYD_DIR"):
        assert needle in proc.stderr
    assert not (tmp_path / "s").exists()


def test_deepfloyd_build_runs_end_to_end_on_a_tiny_offline_if(smoke_build, tmp_path):
    from tests import random_if

    random_if.save_tiny_if(tmp_path / "weights", sample_size=32, with_stage2=True)
    site, cache = tmp_path / "site", tmp_path / "cache"
    # A private copy of the local smoke build's cache: Part B comes from it, only Part A runs here.
    shutil.copytree(smoke_build["cache"], cache)
    proc = build("--profile", "smoke", "--backend", "deepfloyd", "--deepfloyd-dir", str(tmp_path / "weights"),
                 "--upsample", cache=cache, site=site)
    status = statuses(proc)
    assert {s for sid, s in status.items() if re.match(r"a\d", sid)} == {"miss"}, proc.stdout
    assert {s for sid, s in status.items() if re.match(r"b\d", sid)} == {"hit"}, proc.stdout
    manifest = json.loads((site / "manifest.json").read_text())
    assert_required(manifest)
    assert manifest["build"]["resources"]["backend"]["name"] == "deepfloyd"
    part_a = [s for sid, s in manifest["sections"].items() if re.match(r"a\d", sid)]
    assert part_a and all(s["resources"]["backend"]["name"] == "deepfloyd" for s in part_a)
    assert figures_of(manifest)["a1_8_anagram1"]["meta"]["prompts"][0] == "an oil painting of people around a campfire"
    assert "a0_samples_stage2" in figures_of(manifest)
    assert "DeepFloyd IF" in figures_of(manifest)["a1_6_cfg"]["caption"]


def _links_in(html_text: str) -> list[tuple[str, str]]:
    return [(href, re.sub(r"<[^>]+>", "", text).strip()) for href, text in
            re.findall(r'<a href="([^"]+)"[^>]*>(.*?)</a>', html_text, re.S)]


@pytest.mark.parametrize("folder", ["", "cpu/", "smoke"])
def test_the_landing_page_lists_every_numbered_entry_of_each_pages_contents(folder, request):
    """"Read the report" on the landing page: for each page, its numbered contents entries (sections and
    numbered subsections such as 1.7.1), in the page's own order, linking where the contents link."""
    site = request.getfixturevalue("smoke_build")["site"] if folder == "smoke" else ROOT / "site" / folder
    landing = (site / "index.html").read_text()
    landing = landing[landing.index('id="parts-title"'):]
    for page in ("part-a.html", "part-b.html", "appendix.html"):
        text = (site / page).read_text()
        toc = text[text.index('<nav class="toc"'):text.index("</nav>", text.index('<nav class="toc"'))]
        numbered = [(f"{page}{href}", title) for href, title in _links_in(toc)
                    if re.match(r"(\d+(\.\d+)*|[A-Z]\.)\s", title)]
        card = landing[landing.index(f'<h3><a href="{page}">'):]
        card = card[:card.index("</ul>")]
        listed = [(href, title) for href, title in _links_in(card) if "#" in href]
        assert listed == numbered, f"{page}: the landing page lists {listed}, its contents {numbered}"
    if folder != "smoke":
        assert ("part-a.html#sdedit-171-editing-a-typed-image-and-hand-drawn-images",
                "1.7.1 Editing a typed image and hand-drawn images") in _links_in(landing)
