"""This report's facts, handed to the generic engine in ``builder/``.

The engine knows nothing about diffusion; what it must know about this project is here: where the
sections live, which code is science (so it joins the keys), which libraries' versions matter,
the MNIST checksum, the pages and the project seed.
"""
from __future__ import annotations

from pathlib import Path

from builder.project import Page, Project


def _mnist_checksum() -> str:
    """The hash of MNIST's published sha256 (diffusion/data.py's, verified when the data are read). The
    stat cache keeps it with that file's own stat, so a build that computes nothing reads it without
    importing the module (and numpy with it)."""
    from builder import statcache
    from builder.fingerprint import hash_value

    def compute(_source: bytes) -> str:
        from diffusion import data

        return hash_value(data.checksums())

    return statcache.digest(Path(__file__).resolve().parent / "diffusion" / "data.py", "mnist-checksum", compute)


def _backend_words(resources: dict) -> dict[str, str]:
    """What the pages say of the Part A backend's domain, from the plug-in that computed the edition."""
    from backends import page_words

    return page_words(resources)


PROJECT = Project(
    root=Path(__file__).resolve().parent,
    sections="generators",
    science=("generators", "diffusion"),
    writers=("builder.figures", "builder.context"),
    libraries=("torch", "diffusers", "transformers", "numpy", "pillow", "matplotlib"),
    inputs={"mnist": _mnist_checksum},
    pages=(
        Page("index", "index.html", "Overview", "Overview"),
        Page("part-a", "part-a.html", "Part A: the power of diffusion models", "Part A"),
        Page("part-b", "part-b.html", "Part B: diffusion models from scratch", "Part B"),
        Page("appendix", "appendix.html", "Appendix: methods and benchmarks", "Appendix"),
    ),
    seed=180,
    editions=("spec", "cpu"),
    words=_backend_words,
)
