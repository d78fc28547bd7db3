"""What a section module declares about itself."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROFILES = ("smoke", "cpu", "spec")


@dataclass(frozen=True)
class Needs:
    """What a section occupies while it runs, for ``--jobs`` and ``--executor ray`` to schedule it.

    ``threads``: the CPU threads it computes with, in every build, serial or parallel (a thread count
    changes the last bits of a training run, so it must not depend on what else runs); None takes the
    build's default, torch's own (every core, or ``OMP_NUM_THREADS``). ``gpu``: the share of one GPU
    it occupies on CUDA (0.5: two such sections share a GPU; 0: it never uses one, e.g. a plot of
    upstream data, and runs beside whatever holds the GPUs). ``gpu_memory_gb``: it is placed only on
    a GPU with that much memory not claimed by the sections already there. ``accelerator``: the kind of
    GPU it must have on a Ray cluster (Ray's ``accelerator_type``, e.g. "H100"); one machine's GPUs are
    what they are, so ``--jobs`` does not look at it.
    """

    threads: int | None = None
    gpu: float = 1.0
    gpu_memory_gb: float | None = None
    accelerator: str | None = None

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"Needs(threads={self.threads}): a section computes with at least one thread")
        if not 0 <= self.gpu <= 1:
            raise ValueError(f"Needs(gpu={self.gpu}): the share of one GPU is in [0, 1] (0: it uses none)")


@dataclass(frozen=True)
class Section:
    """One report section: what its ``run(ctx)`` computes from.

    ``params`` holds the values shared by every profile and ``profiles`` the per-profile
    overrides; ``resolve(profile)`` merges them. ``depends`` names other sections whose
    artifacts ``run(ctx)`` reads through ``ctx.upstream``; ``inputs`` names input data
    (``"mnist"`` or repository paths such as ``content/images/x.png``) whose checksums join the
    cache key. ``uses`` names the shared resources (``engine.Resource``, e.g. a pretrained model)
    that ``run`` asks for with ``ctx.resource(name)``; their identities join the key. ``needs``
    says what it occupies while it runs (see ``Needs``). ``portable``: see the field.

    Every parameter a profile resolves must be read by ``run``: one that is declared but never
    read fails the build, so a key never holds a value that changes nothing.
    """

    id: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    depends: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    needs: Needs = Needs()
    # Its outputs are the same bytes on every machine: it computes nothing on a device and lays out committed
    # files (a benchmark's results), so any machine may compute it for any edition and it says where it ran.
    portable: bool = False

    def __post_init__(self):
        unknown = set(self.profiles) - set(PROFILES)
        if unknown:
            raise ValueError(f"section {self.id!r} declares unknown profiles {sorted(unknown)}; "
                             f"valid profiles are {', '.join(PROFILES)}")
        object.__setattr__(self, "depends", tuple(self.depends))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "uses", tuple(self.uses))

    def resolve(self, profile: str) -> dict[str, Any]:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; valid profiles are {', '.join(PROFILES)}")
        return {**self.params, **self.profiles.get(profile, {})}
