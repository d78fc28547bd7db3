"""The Part A backends as build plug-ins: one module each, one line in ``BACKENDS``.

A plug-in says what it is called, which command-line options it adds, whether it can run here
(for ``--backend auto``), and how it becomes the engine's ``backend`` resource: one identity (its
model, weights, dtype and the hash of its model code), the sections it needs built first, the
parameters it gives the Part A sections (its prompts, masks and input images) and a lazy loader.
The Part A sections never import a plug-in, so editing one backend's prompts re-runs only the
sections built with that backend.

Adding a backend: write ``backends/<name>.py`` with a ``BACKEND = Backend(...)`` and add it to
``BACKENDS`` below; ``--backend`` offers it and the Part A sections run on it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from builder import BuildError
from builder.graph.engine import Resource
from builder.project import Project

RESOURCE = "backend"  # the name Part A sections declare in Section(uses=...)


@dataclass(frozen=True)
class Backend:
    name: str
    help: str  # one line for --backend's help
    domain: str  # what its images show ("digits" or "photos"): the report's prose follows it
    add_options: Callable[[argparse._ArgumentGroup], None]
    available: Callable[[argparse.Namespace, str], bool]  # can "auto" pick it on this device?
    resource: Callable[[argparse.Namespace, str, Project], Resource]


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


def _registry() -> dict[str, Backend]:
    from . import deepfloyd, local  # the plug-ins import Backend and model_code from above

    # In the order --backend auto tries them: the first available wins.
    return {b.name: b for b in (deepfloyd.BACKEND, local.BACKEND)}


BACKENDS = _registry()
