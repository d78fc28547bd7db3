"""The Part A backends as build plug-ins: the one place that knows which model Part A runs on.

A plug-in says what it is called, which command-line options it adds, whether it can run here
(for ``--backend auto``), how it becomes the engine's ``backend`` resource (one identity: its
model, weights, dtype and the hash of its model code; the sections it needs built first; the
parameters it gives the Part A sections: its prompts, masks and input images; a lazy loader), and
the words the pages use for its domain (``words``: a Markdown paragraph or phrase per place, which
the pages read as ``build.words``). The Part A sections never import a plug-in, so editing one
backend's prompts re-runs only the sections built with that backend, and editing its words
re-renders pages and recomputes nothing. The model code itself is science, in ``diffusion/``
(``diffusion/local_denoiser.py``, ``diffusion/deepfloyd_denoiser.py``).

Adding a backend: write ``backends/<name>.py`` with a ``BACKEND = Backend(...)`` that gives every
word of ``WORDS``; ``--backend`` offers it and the Part A sections run on it.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from builder import BuildError
from builder.graph.engine import Resource
from builder.project import Project

RESOURCE = "backend"  # the name Part A sections declare in Section(uses=...)

# The places where the pages speak of the backend's domain; each backend gives every one (an empty
# string where it has nothing to say there).
WORDS = {
    "overview": "index: what Part A ran on, as the overview's first note",
    "setup_backend": "1.0: the model this build uses",
    "unguided_samples": "1.5: what the unguided samples are",
    "cfg_prompts": "1.6: what guidance is towards",
    "sdedit_inputs": "1.7: where the test image and own images come from",
    "sdedit_reading": "1.7: how to read the rows",
    "web_image": "1.7.1: the heading's name for the 'web image' (a phrase)",
    "edits_reading": "1.7.1: how to read the edits of drawn inputs",
    "inpaint_reading": "1.7.2: how to read the inpainting rows",
    "hybrid_blur": "1.9: why this blur (continues the paragraph: begins with a line break)",
}


@dataclass(frozen=True)
class Backend:
    name: str
    help: str  # one line for --backend's help
    add_options: Callable[[argparse._ArgumentGroup], None]
    available: Callable[[argparse.Namespace, str], bool]  # can "auto" pick it on this device?
    resource: Callable[[argparse.Namespace, str, Project], Resource]
    words: Mapping[str, str] = field(default_factory=dict)  # WORDS' places -> Markdown with the page's helpers
    auto_order: int = 50  # --backend auto tries the backends from the lowest


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Part A backend")
    lines = "; ".join(f"{b.name} = {b.help}" for b in BACKENDS.values())
    group.add_argument("--backend", choices=["auto", *BACKENDS], default="auto",
                       help=f"the model behind Part A: {lines}; auto (default) = the first of "
                            f"{', '.join(BACKENDS)} that can run here")
    for backend in BACKENDS.values():
        backend.add_options(group)


def choose(args: argparse.Namespace, device: str) -> Backend:
    if args.backend != "auto":
        if args.backend not in BACKENDS:
            raise BuildError(f"unknown backend {args.backend!r}; choose auto or one of {', '.join(BACKENDS)}.")
        return BACKENDS[args.backend]
    for backend in BACKENDS.values():
        if backend.available(args, device):
            return backend
    raise BuildError(f"no Part A backend can run here; tried {', '.join(BACKENDS)}.")


def resource(args: argparse.Namespace, device: str, project: Project) -> Resource:
    """The selected backend as the engine's resource, its identity computed once."""
    backend = choose(args, device)
    return backend.resource(args, device, project)


def model_code(project: Project, module: str) -> dict[str, str]:
    """A backend's model code for its identity: the module, and one digest of it and the science it
    imports (the module is named so that a freeze can be re-keyed from the code of its commit)."""
    return project.resource_code(module)


def page_words(resources: dict[str, Any]) -> dict[str, str]:
    """The words of the backend that computed an edition, by the name in its identity (the manifest's
    ``resources``); an edition without Part A says nothing in those places."""
    identity = resources.get(RESOURCE)
    if not identity:
        return {place: "" for place in WORDS}
    name = identity["name"] if isinstance(identity, dict) else None
    if name not in BACKENDS:
        raise BuildError(f"the edition was computed with the Part A backend {name!r}, which no module in backends/ "
                         f"declares (there are {', '.join(BACKENDS)}); restore its module, or rebuild the edition "
                         f"with one of those.")
    backend = BACKENDS[name]
    missing = sorted(set(WORDS) - set(backend.words))
    if missing:
        raise BuildError(f"backends/{name}.py gives no words for {', '.join(missing)}; add them to its Backend(words=...) "
                         f"(an empty string where the pages need say nothing for it).")
    return {place: backend.words[place] for place in WORDS}


def _registry() -> dict[str, Backend]:
    """Every module of this package that declares a ``BACKEND``, in the order --backend auto tries them."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        plugin = getattr(importlib.import_module(f"{__name__}.{info.name}"), "BACKEND", None)
        if isinstance(plugin, Backend):
            found.append(plugin)
    return {b.name: b for b in sorted(found, key=lambda b: (b.auto_order, b.name))}


BACKENDS = _registry()
