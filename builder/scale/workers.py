"""What runs the sections of a parallel build: the machine's slots (cores, GPU shares and memory) and what
a section claims of them, the worker side (a section run as the driver asked, in a spawned process that
rebuilt the engine from its pickle), and the pool of local worker processes. ``builder.scale.parallel`` is the
driver that uses them; ``builder.scale.ray_executor`` places the same runs as Ray tasks.

Workers are spawned, not forked: a fork of a process that has started CUDA or OpenMP threads is not safe.
"""
from __future__ import annotations

import math
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import Any

from ..graph.compute import cores, default_threads, deterministic_kernels
from ..graph.engine import Engine, SectionResult


@dataclass
class Slots:
    """The cores and GPUs of a machine, and what the running sections have claimed of them."""

    cores: int
    gpu_total: list[int] = field(default_factory=list)  # memory of each GPU (none: a CPU build)
    free_cores: int = 0
    gpus: list[float] = field(default_factory=list)  # unclaimed share of each GPU
    gpu_bytes: list[int] = field(default_factory=list)  # unclaimed memory of each GPU

    def __post_init__(self):
        self.free_cores = self.cores
        self.gpus = [1.0 for _ in self.gpu_total]
        self.gpu_bytes = list(self.gpu_total)

    @classmethod
    def of(cls, engine: Engine) -> "Slots":
        device = engine.config.device
        if not device.startswith("cuda"):
            return cls(cores())
        import torch

        indices = [int(device.split(":")[1])] if ":" in device else list(range(torch.cuda.device_count()))
        return cls(cores(), [torch.cuda.get_device_properties(i).total_memory for i in indices])

    def claim(self, engine: Engine, gid: str) -> "Claim | None":
        """Take what the section needs, or None if it does not fit now."""
        needs = engine.sections[gid].section.needs
        threads = engine.threads_for(gid)
        on_gpu = bool(self.gpu_total) and needs.gpu > 0
        # On a GPU a section is paced by its share of the card, not by its CPU threads: it holds that share
        # of its threads' cores (at least one), so the sections sharing a GPU share the cores alike. It still
        # computes with all its threads (Engine.threads_for), so its bytes are those of a serial build.
        held = max(1, math.ceil(threads * needs.gpu - 1e-9)) if on_gpu else threads
        if held > self.free_cores:
            return None
        if not on_gpu:
            self.free_cores -= held
            return Claim(held, None, 0.0, 0)
        memory = int((needs.gpu_memory_gb or 0) * 2**30)
        for index, free in enumerate(self.gpus):
            if free + 1e-9 >= needs.gpu and self.gpu_bytes[index] >= memory:
                self.free_cores -= held
                self.gpus[index] -= needs.gpu
                self.gpu_bytes[index] -= memory
                return Claim(held, index, needs.gpu, memory)
        return None

    def never_fits(self, engine: Engine, gid: str) -> str | None:
        """Why the section could not start even on an idle machine, if so."""
        needs = engine.sections[gid].section.needs
        if self.gpu_total and needs.gpu_memory_gb and needs.gpu_memory_gb * 2**30 > max(self.gpu_total):
            return (f"section {gid} declares Needs(gpu_memory_gb={needs.gpu_memory_gb}), more than the largest "
                    f"GPU here has ({max(self.gpu_total) / 2**30:.1f} GB); lower the declaration in its module, "
                    f"or build it on a larger GPU.")
        return None

    def release(self, claim: "Claim") -> None:
        self.free_cores += claim.threads
        if claim.gpu is not None:
            self.gpus[claim.gpu] += claim.share
            self.gpu_bytes[claim.gpu] += claim.memory


@dataclass(frozen=True)
class Claim:
    threads: int  # the cores it holds in the count (on a GPU, its share of its threads)
    gpu: int | None  # the index of the GPU it runs on
    share: float
    memory: int


# -- worker processes on this machine -------------------------------------------------------------

_WORKER: dict[str, Engine] = {}


def _start_worker(payload: bytes) -> None:
    import cloudpickle

    _WORKER["engine"] = cloudpickle.loads(payload)


def _run_in_worker(gid: str, components: dict[str, Any], key: str, upstream: dict, device: str) -> SectionResult:
    engine = _WORKER["engine"]
    return run_section(engine, gid, components, key, upstream, device)


def run_section(engine: Engine, gid: str, components: dict[str, Any], key: str, upstream: dict,
                device: str) -> SectionResult:
    """One section, run as the driver asked, on ``device`` (``cuda:N`` names the GPU it was given)."""
    if device != engine.config.device:
        engine = Engine(engine.project, replace(engine.config, device=device), engine.sections, store=engine.store)
    if device.startswith("cuda"):
        deterministic_kernels(device)
        import torch

        torch.cuda.set_device(device)
    return engine.execute(gid, components, key, upstream)


def payload(engine: Engine, uploads: bool = False) -> bytes:
    """The engine as a worker rebuilds it: the build's default thread count fixed here, so that a section
    that declares none computes with the driver's, and the shared cache only where the worker itself
    ``uploads`` (a Ray node without the driver's disk); otherwise the driver uploads."""
    import cloudpickle

    config = replace(engine.config, threads=engine.config.threads or default_threads(),
                     shared=engine.config.shared if uploads else None, jobs=1, executor="local")
    return cloudpickle.dumps(Engine(engine.project, config, engine.sections, store=engine.store))


def _device_for(engine: Engine, claim: Claim) -> str:
    if claim.gpu is None:
        return engine.config.device
    base = engine.config.device
    return base if ":" in base else f"cuda:{claim.gpu}"


class LocalPool:
    """Up to ``--jobs`` spawned worker processes on this machine, started by the first section that must run."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.slots = Slots.of(engine)
        self.width = engine.config.jobs
        self.executor: ProcessPoolExecutor | None = None  # started by the first section that must run

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.width, mp_context=get_context("spawn"),
                                   initializer=_start_worker, initargs=(payload(self.engine),))

    def submit(self, gid, components, key, upstream, claim: Claim) -> Future:
        args = (_run_in_worker, gid, components, key, upstream, _device_for(self.engine, claim))
        if self.executor is None:
            self.executor = self._start()
        try:
            return self.executor.submit(*args)
        except BrokenProcessPool:  # a worker died earlier: its pool is unusable, the build goes on in a new one
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._start()
            return self.executor.submit(*args)

    def wait(self, handles: list[Future]) -> list[Future]:
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Future, gid: str) -> SectionResult:
        try:
            return handle.result()
        except Exception as exc:  # noqa: BLE001 - a worker process died (killed, out of memory, os._exit)
            return SectionResult(gid, "failed", 0.0, error=(
                f"a worker process ended abruptly while {gid} ran ({type(exc).__name__}), taking the sections "
                f"that ran beside it down too; their partial outputs were discarded. Build again without --jobs "
                f"to see which section it was and why."))

    def close(self, interrupted: bool = False) -> None:
        if self.executor is None:
            return
        if interrupted:  # Ctrl-C or an error in the driver: stop the workers now; their staging is swept later
            for process in list(getattr(self.executor, "_processes", {}).values()):
                process.terminate()
        self.executor.shutdown(wait=not interrupted, cancel_futures=True)
