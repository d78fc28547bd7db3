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

The slots, the worker side and the local pool are ``builder.scale.workers``; Ray's pool is
``builder.scale.ray_executor``. The engine knows neither: ``builder.app`` hands a build with ``--jobs`` or
``--executor ray`` to ``build`` here.
"""
from __future__ import annotations

from typing import Any

from .. import BuildError
from ..graph.engine import BuildResult, Engine, Ledger, SectionResult
from .workers import Claim, LocalPool


def build(engine: Engine, wanted: list[str] | None = None, on_section=None) -> BuildResult:
    """The sections ``wanted`` needs (None: all), several at once, with the cache locked as a serial build
    locks it; the result lists them in build order."""
    with engine.store.lock():
        return _build(engine, wanted, on_section)


def _build(engine: Engine, wanted: list[str] | None, on_section) -> BuildResult:
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
                components, key, res = engine.settle(gid, upstream)
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
                engine.publish_result(res)
                settled(res)
        interrupted = False
    finally:
        pool.close(interrupted)
    position = {gid: i for i, gid in enumerate(order)}
    ledger.result.results.sort(key=lambda r: position[r.id])  # the summary reads in build order
    return ledger.result


def _pool(engine: Engine):
    if engine.config.executor == "ray":
        from .ray_executor import RayPool

        return RayPool(engine)
    if engine.config.executor != "local":
        raise BuildError(f"unknown executor {engine.config.executor!r}; use local or ray.")
    return LocalPool(engine)
