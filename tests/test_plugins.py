"""A new Part A backend is one module in backends/, a new page one line in the project: shown with toys."""
from __future__ import annotations

import json

import jinja2
import pytest
import torch

import backends
import build
from backends import RESOURCE, Backend, local
from builder import BuildError
from builder.graph.engine import BuildConfig, Engine, Resource
from builder.project import Page
from builder.graph.registry import discover
from project import PROJECT


def _toy_resource(args, device, project) -> Resource:
    """A backend whose model is an untrained class-conditioned UNet, built on the spot."""

    def load(ctx):
        from diffusion.local_denoiser import LocalBackend
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


TOY = Backend(name="toy", help="an untrained UNet (tests only)", add_options=_toy_options,
              available=lambda args, device: False, resource=_toy_resource, words=local.WORDS)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "toy", TOY)  # what finding backends/toy.py would do


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


def test_the_backends_are_found_in_their_folder_without_a_registry_line(tmp_path, monkeypatch):
    assert list(backends.BACKENDS) == ["deepfloyd", "local"]  # --backend auto tries the one that needs weights first
    assert list(backends._registry()) == list(backends.BACKENDS)
    # A module dropped into the folder is a backend, placed by its auto_order.
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "early.py").write_text(
        "from backends import Backend\n"
        "BACKEND = Backend(name='early', help='h', add_options=lambda g: None,\n"
        "                  available=lambda a, d: True, resource=None, auto_order=0)\n")
    monkeypatch.setattr(backends, "__path__", [*backends.__path__, str(folder)])
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(backends, "__name__", "backends")
    import importlib
    import sys

    spec = importlib.util.spec_from_file_location("backends.early", folder / "early.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["backends.early"] = module
    try:
        spec.loader.exec_module(module)
        assert list(backends._registry()) == ["early", "deepfloyd", "local"]
    finally:
        del sys.modules["backends.early"]


def test_every_backend_gives_the_words_of_every_place_and_no_content_file_names_a_domain():
    for backend in backends.BACKENDS.values():
        assert set(backend.words) == set(backends.WORDS), backend.name
    content = PROJECT.root / "content"
    for path in sorted(content.glob("*.md")):
        text = path.read_text()
        assert "domain" not in text and '"digits"' not in text and '"photos"' not in text, path.name
        for place in backends.WORDS:  # each place is used, and only through the filter that renders its helpers
            text = text.replace(f"build.words.{place} | expand", "")
        assert "build.words." not in text, path.name
    used = "".join(p.read_text() for p in content.glob("*.md"))
    assert all(f"build.words.{place} | expand" in used for place in backends.WORDS)


def test_the_words_follow_the_backend_that_computed_the_edition():
    local_words = backends.page_words({"backend": {"name": "local"}})
    deepfloyd_words = backends.page_words({"backend": {"name": "deepfloyd"}})
    assert local_words["web_image"] == "a typed image" and deepfloyd_words["web_image"] == "a web image"
    assert backends.page_words({}) == {place: "" for place in backends.WORDS}  # an edition without Part A
    with pytest.raises(BuildError, match=r"backend 'gone', which no module in backends/ declares"):
        backends.page_words({"backend": {"name": "gone"}})


def test_a_backend_without_every_word_is_refused_with_the_places_it_lacks(monkeypatch):
    short = Backend(name="short", help="h", add_options=_toy_options,
                    available=lambda args, device: False, resource=_toy_resource,
                    words={k: v for k, v in local.WORDS.items() if k != "web_image"})
    monkeypatch.setitem(backends.BACKENDS, "short", short)
    with pytest.raises(BuildError, match=r"backends/short.py gives no words for web_image"):
        backends.page_words({"backend": {"name": "short"}})


def test_words_render_with_the_page_helpers_in_both_editions(tmp_path):
    """The words are templates themselves: the local backend's use param() and ref(); rendered, they read
    as the pages did when the content branched on the domain."""
    from builder.site.templating import environment

    env, _ = environment(PROJECT.root / "templates")
    template = env.overlay(undefined=jinja2.StrictUndefined).from_string("A{{ build.words.sdedit_inputs | expand }}B")
    words = backends.page_words({"backend": {"name": "local"}})
    inputs = {"test": {"mnist_test": 0}, "own1": {"mnist_test": 1}, "own2": {"mnist_test": 18}}
    text = template.render(build={"words": words}, param=lambda sid, name: inputs)
    # ({% set %} keeps no line of its own: trim_blocks, as in a page)
    assert text.startswith("AThe course asks") and "(indices 0, 1 and 18)" in text and text.endswith("digits.B")
    words = backends.page_words({"backend": {"name": "deepfloyd"}})
    assert template.render(build={"words": words}, param=lambda sid, name: inputs) == "AB"
