"""Independent sections at once: ``--jobs N`` in worker processes on this machine, or ``--executor ray``.

The driver (this process) keeps what a serial build does: the dependency order, every cache lookup
(so a hit, a frozen or shared result and early cut-off are decided here, as before), the shared
cache's uploads and the summary. Only the sections that must run go to a worker, with the key the
driver computed; the worker runs it into the same store (records are written last and atomically,
so workers never see each other's half-written results) and sends back its ``SectionResult``.

A section starts when its upstream results are settled and what it ``needs`` fits: CPU threads out
of this machine's cores (each computes with the same thread count as in a serial build, so the
bytes are the same), and on CUDA a share of one GPU (``Needs.gpu``) with the GPU memory it
declares. Workers are spawned, not forked: a fork of a process that has started CUDA or OpenMP
threads is not safe.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import Any

from . import BuildError
from .engine import BuildResult, Engine, Ledger, SectionResult, _cores, _default_threads


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
            return cls(_cores())
        import torch

        indices = [int(device.split(":")[1])] if ":" in device else list(range(torch.cuda.device_count()))
        return cls(_cores(), [torch.cuda.get_device_properties(i).total_memory for i in indices])

    def claim(self, engine: Engine, gid: str) -> "Claim | None":
        """Take what the section needs, or None if it does not fit now."""
        needs = engine.sections[gid].section.needs
        threads = engine.threads_for(gid)
        if threads > self.free_cores:
            return None
        if not self.gpu_total or needs.gpu == 0:
            self.free_cores -= threads
            return Claim(threads, None, 0.0, 0)
        memory = int((needs.gpu_memory_gb or 0) * 2**30)
        for index, free in enumerate(self.gpus):
            if free + 1e-9 >= needs.gpu and self.gpu_bytes[index] >= memory:
                self.free_cores -= threads
                self.gpus[index] -= needs.gpu
                self.gpu_bytes[index] -= memory
                return Claim(threads, index, needs.gpu, memory)
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
    threads: int
    gpu: int | None  # the index of the GPU it runs on
    share: float
    memory: int


def build_in_parallel(engine: Engine, wanted: list[str] | None, on_section=None) -> BuildResult:
    order = engine.order(wanted)
    ledger = Ledger(engine)
    pool = _pool(engine)
    slots = pool.slots
    pending = list(order)
    queued: dict[str, tuple[dict[str, Any], str, dict]] = {}  # must run: key components, key, upstream
    running: dict[Any, tuple[str, Claim]] = {}

    def settled(res: SectionResult) -> None:
        ledger.finish(res)
        if on_section:
            on_section(res)

    interrupted = True
    try:
        while pending or queued or running:
            ready = [gid for gid in pending if ledger.ready(gid)]
            for gid in ready:  # lookups are quick and decide what must run: all of them first
                pending.remove(gid)
                if ledger.blocked(gid):
                    res = ledger.skip(gid)
                    if on_section:
                        on_section(res)
                    continue
                upstream = ledger.upstream(gid)
                components, key, res = engine._settle(gid, upstream)
                if res is None:
                    why = slots.never_fits(engine, gid)
                    if why is None:
                        queued[gid] = (components, key, upstream)
                        continue
                    res = SectionResult(gid, "failed", 0.0, error=why)
                settled(res)
            if ready:
                continue  # a settled section may have made others ready
            for gid in list(queued):  # in build order, as far as the machine has room
                if len(running) >= pool.width:
                    break
                claim = slots.claim(engine, gid)
                if claim is not None:
                    components, key, upstream = queued.pop(gid)
                    running[pool.submit(gid, components, key, upstream, claim)] = (gid, claim)
            if not running:
                raise BuildError(f"internal error: sections {', '.join([*pending, *queued])} can never start")
            for handle in pool.wait(list(running)):
                gid, claim = running.pop(handle)
                slots.release(claim)
                res = pool.result(handle, gid)
                engine._publish_result(res)
                settled(res)
        interrupted = False
    finally:
        pool.close(interrupted)
    position = {gid: i for i, gid in enumerate(order)}
    ledger.result.results.sort(key=lambda r: position[r.id])  # the summary reads in build order
    return ledger.result


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
        from .app import deterministic_kernels

        deterministic_kernels(device)
        import torch

        torch.cuda.set_device(device)
    return engine._execute(gid, components, key, upstream)


def payload(engine: Engine, uploads: bool = False) -> bytes:
    """The engine as a worker rebuilds it: the build's default thread count fixed here, so that a section
    that declares none computes with the driver's, and the shared cache only where the worker itself
    ``uploads`` (a Ray node without the driver's disk); otherwise the driver uploads."""
    import cloudpickle

    config = replace(engine.config, threads=engine.config.threads or _default_threads(),
                     shared=engine.config.shared if uploads else None, jobs=1, executor="local")
    return cloudpickle.dumps(Engine(engine.project, config, engine.sections, store=engine.store))


def _device_for(engine: Engine, claim: Claim) -> str:
    if claim.gpu is None:
        return engine.config.device
    base = engine.config.device
    return base if ":" in base else f"cuda:{claim.gpu}"


class _LocalPool:
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


def _pool(engine: Engine):
    if engine.config.executor == "ray":
        from .ray_executor import RayPool

        return RayPool(engine)
    if engine.config.executor != "local":
        raise BuildError(f"unknown executor {engine.config.executor!r}; use local or ray.")
    return _LocalPool(engine)
