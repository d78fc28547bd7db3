"""A new Part A backend, or a new page, is one module plus one registry line: shown with toys."""
from __future__ import annotations

import json

import pytest
import torch

import backends
import build
from backends import RESOURCE, Backend, local
from builder.graph.engine import BuildConfig, Engine, Resource
from builder.project import Page
from builder.graph.registry import discover
from project import PROJECT


def _toy_resource(args, device, project) -> Resource:
    """A backend whose model is an untrained class-conditioned UNet, built on the spot."""

    def load(ctx):
        from diffusion.backends.local import LocalBackend
        from diffusion.unet import ClassConditionalUNet

        torch.manual_seed(0)
        return LocalBackend.from_model(ClassConditionalUNet(1, 10, args.toy_width),
                                       {"T": 50, "beta1": 1e-4, "beta2": 0.02}, checkpoint_sha256="toy",
                                       device=ctx.device)

    params = {**local.PARAMS, "a1_8_anagrams": {"view": "rotate_180", "pairs": [["a handwritten 0", "a handwritten 6"]]}}
    identity = {"name": "toy", "domain": "digits", "label": "a toy UNet", "model": f"random UNet, D = {args.toy_width}"}
    return Resource(RESOURCE, identity,
                    load=load, params=lambda section, profile: params.get(section, {}))


def _toy_options(group) -> None:
    group.add_argument("--toy-width", type=int, default=4, help="the toy UNet's width")


TOY = Backend(name="toy", domain="digits", help="an untrained UNet (tests only)", add_options=_toy_options,
              available=lambda args, device: False, resource=_toy_resource)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "toy", TOY)  # the one registry line


def test_a_registered_backend_is_offered_and_runs_every_part_a_section(toy_registered, tmp_path, capsys):
    with pytest.raises(SystemExit):
        build.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--backend {auto,deepfloyd,local,toy}" in help_text and "toy = an untrained UNet (tests only)" in help_text
    assert "--toy-width TOY_WIDTH the toy UNet's width" in help_text
    args = build.parse_args(["--backend", "toy", "--toy-width", "6"])
    assert args.backend == "toy" and args.toy_width == 6
    resource = backends.resource(args, "cpu", PROJECT)
    assert resource.identity["name"] == "toy" and resource.depends == ()
    config = BuildConfig(profile="smoke", device="cpu", dtype="float32", seed=5, cache_root=tmp_path,
                         resources={RESOURCE: resource})
    sections = discover(PROJECT.sections)
    part_a = [sid for sid, mod in sections.items() if RESOURCE in mod.section.uses]
    engine = Engine(PROJECT, config, sections)
    result = engine.build(part_a)
    # No diffusion model is trained for the toy; only the MNIST classifier that judges the illusions.
    assert sorted(r.id for r in result.results) == sorted(part_a + ["b0_classifier"])
    assert {r.status for r in result.results} == {"miss"}, [(r.id, r.error) for r in result.results]
    anagram = next(r for r in result.results if r.id == "a1_8_anagrams").entry
    assert anagram.record["components"]["params"]["pairs"] == [["a handwritten 0", "a handwritten 6"]]
    figure = next(o for o in anagram.outputs if o["id"] == "a1_8_anagram1")
    assert figure["meta"]["backend"] == "toy" and figure["meta"]["model"] == "random UNet, D = 6"
    assert "; a toy UNet. The independent MNIST classifier reads" in figure["caption"]  # the plug-in's model


def test_an_unregistered_backend_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        build.parse_args(["--backend", "toy"])
    assert "invalid choice: 'toy' (choose from 'auto', 'deepfloyd', 'local')" in capsys.readouterr().err


def test_a_page_is_one_line_in_the_project(smoke_build, tmp_path):
    from builder.site.render import render_site
    from builder.cache import Store

    notes = Page("notes", "notes.html", "Notes for graders", "Notes")
    content = tmp_path / "content"
    content.mkdir()
    (content / "index.md").write_text("---\ntitle: Home\n---\nSee the notes.\n")
    (content / "n1.md").write_text("---\ntitle: What to look at\npage: notes\n---\n{{ figure('b1_loss') }}\n")
    manifest = json.loads((smoke_build["site"] / "manifest.json").read_text())
    out = tmp_path / "site"
    render_site(manifest, (*PROJECT.pages, notes), content, PROJECT.root / "templates", out,
                Store(smoke_build["cache"]).object_path)
    page = (out / "notes.html").read_text()
    assert "<h1" in page and "Notes for graders" in page and 'id="fig-b1_loss"' in page
    assert 'href="notes.html"' in (out / "index.html").read_text()
    assert not (out / "part-a.html").exists()  # a page without content is neither written nor linked
