"""What a section module declares about itself."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROFILES = ("smoke", "cpu", "spec")


@dataclass(frozen=True)
class Section:
    """One report section: what its ``run(ctx)`` computes from.

    ``params`` holds the values shared by every profile and ``profiles`` the per-profile
    overrides; ``resolve(profile)`` merges them. ``depends`` names other sections whose
    artifacts ``run(ctx)`` reads through ``ctx.upstream``; ``inputs`` names input data
    (``"mnist"`` or repository paths such as ``content/images/x.png``) whose checksums join the
    cache key. ``uses`` names the shared resources (``engine.Resource``, e.g. a pretrained model)
    that ``run`` asks for with ``ctx.resource(name)``; their identities join the key.

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
