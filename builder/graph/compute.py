"""How a section computes on this machine: the cores it may use, torch's thread count around its run,
deterministic kernels on CUDA, the peak GPU memory it held, and the global seeds set before it runs.
The engine, the workers of a parallel build and the app share these, so that a section computes the
same way wherever it runs."""
from __future__ import annotations

import functools
import os
import random
from contextlib import contextmanager


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def default_threads() -> int:
    """Torch's own thread count in this process, read once, before any section changes it."""
    import torch

    return torch.get_num_threads()


@contextmanager
def torch_threads(n: int):
    """Compute with ``n`` threads inside the block, and give back the count found outside it."""
    import torch

    default_threads()
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def deterministic_kernels(device: str) -> None:
    """On CUDA, the same inputs must give the same bytes, as they do on a CPU: PyTorch's recipe
    (docs: Reproducibility) of deterministic algorithms, no cuDNN autotuning, and a fixed cuBLAS
    workspace. An op with no deterministic kernel warns, naming itself, instead of failing the build."""
    if not device.startswith("cuda"):
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts; build.py sets it first
    import torch

    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


class GpuMemory:
    """The peak GPU memory of one section (None off CUDA): reset when the section starts."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(device)
            self.device = device

    def peak(self) -> int | None:
        if not self.cuda:
            return None
        import torch

        return int(torch.cuda.max_memory_allocated(self.device))


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators, seeded for one section (its own streams come
    from its seed too; this catches code that draws from the global ones)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
