"""Where DeepFloyd IF's weights are, without importing torch: the model ids, the folders searched (a folder
the user names, ``$DEEPFLOYD_DIR``, the Hugging Face cache), the one-paragraph message when they are not
there, and a folder's fingerprint. The build reads this for every ``--backend`` choice and ``--help``;
the denoisers that load the weights are in :mod:`diffusion.deepfloyd_denoiser`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

DEFAULT_STAGE1 = "DeepFloyd/IF-I-XL-v1.0"
DEFAULT_STAGE2 = "DeepFloyd/IF-II-L-v1.0"
DEEPFLOYD_DIR_ENV = "DEEPFLOYD_DIR"
LICENCE_URL = "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0"
STAGE1_CLASS = "IFPipeline"


class BackendUnavailable(RuntimeError):
    """The weights cannot be had here; the message (one paragraph) says what to do about it."""


def unavailable_message(model_ids: Sequence[str], searched: str, reason: str = "") -> str:
    """The one-paragraph explanation shown instead of a traceback when weights are missing."""
    ids = " and ".join(model_ids)
    because = f" ({reason})" if reason else ""
    return (
        f"DeepFloyd IF weights for {ids} were not found in {searched}{because}, and nothing is downloaded "
        f"unless you allow it. DeepFloyd IF is gated: accept the licence on the model card at {LICENCE_URL} "
        "(this covers the other IF models too), log in with `huggingface-cli login`, and fetch the weights "
        "once on a machine with network access (into the Hugging Face cache, or let the build download them with "
        f"--allow-download). Then keep them in the Hugging Face cache, or pass --deepfloyd-dir (or set "
        f"the environment variable {DEEPFLOYD_DIR_ENV}) to a directory that holds the saved pipelines "
        "(e.g. DIR/DeepFloyd/IF-I-XL-v1.0) or to a saved pipeline itself. Without them, use the local backend."
    )


# --- finding and loading the pipelines ----------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where a pipeline's files are: a folder on disk, or a hub id that may be downloaded."""

    location: str  # a folder, or a hub id when downloads are allowed
    description: str  # for messages and provenance
    revision: str | None = None  # hub commit of a cached snapshot


def _is_pipeline_dir(path: Path, class_name: str) -> bool:
    index = path / "model_index.json"
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("_class_name") == class_name
    except (OSError, ValueError):
        return False


def _cached_snapshot(model_id: str, cache_dir: Path | None) -> Path | None:
    """The folder of a fully or partly cached hub snapshot, found without any network access."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(model_id, local_files_only=True, cache_dir=cache_dir)
    except (OSError, ValueError):
        return None
    return Path(folder)


def find_source(model_id: str, class_name: str, deepfloyd_dir: str | os.PathLike | None = None,
                *, allow_download: bool = False) -> Source | None:
    """Resolve ``model_id`` to files on disk (or to the hub when allowed). None when not found.

    A named directory is authoritative: when the user names one, the default cache is not searched,
    so a figure never silently comes from weights other than the ones asked for.
    """
    root = deepfloyd_dir if deepfloyd_dir is not None else os.environ.get(DEEPFLOYD_DIR_ENV) or None
    if root is not None:
        root = Path(root).expanduser()
        for candidate in (root, root / model_id, root / model_id.split("/")[-1]):
            if _is_pipeline_dir(candidate, class_name):
                return Source(str(candidate), f"the directory {candidate}")
        for cache in (root, root / "hub"):  # a Hugging Face cache (or HF_HOME) copied as a whole
            if (cache / ("models--" + model_id.replace("/", "--"))).is_dir():
                snapshot = _cached_snapshot(model_id, cache)
                if snapshot is not None and _is_pipeline_dir(snapshot, class_name):
                    return Source(str(snapshot), f"the Hugging Face cache {cache}", snapshot.name)
        return None
    if Path(model_id).expanduser().is_dir():
        path = Path(model_id).expanduser()
        return Source(str(path), f"the directory {path}") if _is_pipeline_dir(path, class_name) else None
    snapshot = _cached_snapshot(model_id, None)
    if snapshot is not None and _is_pipeline_dir(snapshot, class_name):
        return Source(str(snapshot), "the local Hugging Face cache", snapshot.name)
    if allow_download:
        return Source(model_id, "the Hugging Face hub")
    return None


def searched(deepfloyd_dir) -> str:
    """Where weights were looked for, for messages."""
    root = deepfloyd_dir if deepfloyd_dir is not None else os.environ.get(DEEPFLOYD_DIR_ENV) or None
    return f"the directory {root}" if root is not None else "the local Hugging Face cache"


def weights_available(model_id: str = DEFAULT_STAGE1, deepfloyd_dir: str | os.PathLike | None = None) -> bool:
    """Whether stage I weights are on disk (cheap: reads no weights, touches no network)."""
    return find_source(model_id, STAGE1_CLASS, deepfloyd_dir) is not None



def fingerprint(folder: str | os.PathLike) -> str:
    """A cheap content identity of a saved pipeline: its configs by content, weights by name and
    size (hashing gigabytes of weights on every build would cost more than it protects)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.suffix in (".json", ".txt", ".model"):
            digest.update(path.read_bytes())
        else:
            digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()
