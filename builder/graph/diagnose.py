"""One paragraph a user can act on, for the two faults that stop a section without being its bug:
a full disk and a GPU out of memory.

The model is the site writer's message (``render.write_failure``): what happened and where, the
numbers that show it (space free, memory in use), what to change, and that nothing already built
is lost. Anything else a section raises is reported as it is. torch is imported only when a GPU
fault is being described.
"""
from __future__ import annotations

import errno
import gc
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

DISK_FULL = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded"}
# How torch's zip writer reports a failed write when it writes to a path itself (no errno survives).
TORCH_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed writing", "file write failed")
LOW_SPACE = 256 * 2**20  # below this, a failed torch write is taken to be a full disk


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception chained to it (``raise ... from``, or raised while handling)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__]


def size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def disk_usage(folder: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the file system holding ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None
    return usage.free, usage.total


def full_disk(exc: BaseException, cache_root: Path) -> tuple[str, Path | None] | None:
    """(what failed, the file it was writing or None) when ``exc`` is a full disk, else None."""
    for e in causes(exc):
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            name = e.filename if isinstance(e.filename, (str, os.PathLike)) else None
            return f"{errno.errorcode[e.errno]}, {DISK_FULL[e.errno]}", Path(name) if name else None
    for e in causes(exc):
        if isinstance(e, RuntimeError) and any(s in str(e) for s in TORCH_WRITE_FAILURES):
            usage = disk_usage(cache_root)
            if usage is not None and usage[0] < LOW_SPACE:
                return "torch could not finish writing a file", None
    return None


def cuda_out_of_memory(exc: BaseException) -> bool:
    return any(type(e).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(e) for e in causes(exc))


def gpu_memory(device: str) -> dict[str, int] | None:
    """What the GPU's memory looks like now: this process's tensors, its allocator, the device."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info(device)
        return {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device),
                "free": free, "total": total, "name": torch.cuda.get_device_name(device)}
    except Exception:  # noqa: BLE001 - the figures are a courtesy; the advice stands without them
        return None


def release_gpu_memory() -> None:
    """Hand the failed section's cached blocks back, so that the sections after it have room."""
    torch = sys.modules.get("torch")  # a build that never imported torch has no GPU memory to return
    try:
        if torch is not None and torch.cuda.is_available():
            gc.collect()  # tracebacks and frames form cycles that hold tensors until collected
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def disk_message(what: str, file: Path | None, cache_root: Path, written: int,
                 previous: int | None, resumable: bool) -> str:
    cache_root = Path(cache_root)
    target = file.parent if file is not None else cache_root
    inside = (f"the cache folder {cache_root}" if _within(target, cache_root)
              else f"the folder {target}")
    usage = disk_usage(target)
    room = (f"The disk holding {inside} has {size(usage[0])} free of {size(usage[1])} now that the failed "
            f"write's temporary file is removed" if usage else f"The disk holding {inside} is full")
    need = [f"the section had written {size(written)} when the write failed"] if written else []
    if previous:
        need.append(f"its last complete run stored {size(previous)}")
    where = f"writing {file}" if file is not None else f"a write into {inside}"
    again = ("run the same command again: finished sections stay cached"
             + (" and training resumes from its last finished epoch" if resumable else "") + ".")
    return (f"the disk is full: {where} failed ({what}). {'; '.join([room] + need)}. "
            f"Free some space there, or move the cache to a disk with room with --cache-dir DIR (the site "
            f"goes where --site-dir says), then {again}")


def oom_message(device: str, memory: dict[str, int] | None, hints: list[str]) -> str:
    if memory:
        where = f"{device} ({memory['name']})"
        state = (f"this build's tensors held {size(memory['allocated'])} and PyTorch's allocator "
                 f"{size(memory['reserved'])}, with {size(memory['free'])} free of {size(memory['total'])} on the "
                 f"device")
        others = memory["total"] - memory["free"] - memory["reserved"]
        if others > memory["total"] * 0.05:
            state += f" (about {size(others)} is held by other processes)"
    else:
        where, state = device, "its memory figures could not be read"
    advice = "; ".join(hints) if hints else "it has no memory setting of its own, but a smaller --profile lowers " \
                                             "what every section needs"
    return (f"out of GPU memory on {where}: when it failed, {state}. To lower what the section "
            f"needs: {advice}. Or stop other jobs on that GPU (nvidia-smi lists them). Then run the same "
            f"command again: finished sections stay cached.")


def _within(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def bytes_under(folder: Path) -> int:
    """What the files below ``folder`` hold (0 where it is missing or not a folder): what a section had
    written when a full disk stopped it."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
