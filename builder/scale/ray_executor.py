"""``--executor ray``: each section that must run is a Ray task with the resources it declares.

The driver is ``builder.scale.parallel``'s, as for local workers: it keeps the order, the lookups and the summary, and
Ray does the placing (``num_cpus`` = the section's threads, ``num_gpus`` = its GPU share; Ray has no
per-task GPU memory, so a declared ``gpu_memory_gb`` is not asked for). The code
travels with the job's ``runtime_env`` (the project's source, without the site, the freezes, caches
and data); the engine travels once, pickled, as an object in Ray's store.

A task writes its outputs into the store at the driver's path, which a local Ray instance (and a
cluster on a shared file system) can reach. On a cluster without one, give the build a
``--cache-url``: the task then uploads its result there and the driver copies it in, as any
machine does.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from .. import BuildError
from ..cache import Entry
from ..graph.compute import cores
from ..graph.engine import Engine, SectionResult
from .workers import Claim, Slots, payload, run_section

# What a task does not need: the built site, the committed freezes (the driver reads them), caches,
# data (the variables below point the tasks at it), and version control.
EXCLUDES = ["site/", "frozen/", ".cache/", ".venv/", "node_modules/", "data/", ".git/", "artifacts/", ".pytest_cache/",
            "templates/static/vendor/",
            "**/__pycache__/", "*.pdf"]

# The driver's settings that a task needs to find its inputs and compute the same way. Credentials are
# not among them: a cluster's nodes have the storage backend's configuration of their own.
PASSED_ON = ("MNIST_ROOT", "DEEPFLOYD_DIR", "HF_HOME", "HF_HUB_OFFLINE", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS")

_ENGINES: dict[str, Engine] = {}  # per Ray worker process: the engine, unpickled once per build


def _task(payload_id: str, payload: bytes, gid: str, components: dict[str, Any], key: str, upstream: dict,
          device: str) -> SectionResult:
    if payload_id not in _ENGINES:
        import cloudpickle

        _ENGINES.clear()
        _ENGINES[payload_id] = cloudpickle.loads(payload)
    engine = _ENGINES[payload_id]
    res = run_section(engine, gid, components, key, upstream, device)
    engine.publish_result(res)  # only on a cluster node does the engine it was sent have a shared cache
    return res


class _Unbounded(Slots):
    """Ray places the tasks; the driver only checks that a section could run somewhere."""

    def claim(self, engine: Engine, gid: str) -> Claim | None:
        return Claim(engine.threads_for(gid), None, engine.sections[gid].section.needs.gpu, 0)

    def never_fits(self, engine: Engine, gid: str) -> str | None:
        return None

    def release(self, claim: Claim) -> None:
        pass


class RayPool:
    def __init__(self, engine: Engine):
        try:
            import ray
        except ImportError:
            raise BuildError("--executor ray needs Ray: pip install 'ray==2.60.0' (scripts/env.sh installs it), or "
                             "build with --executor local.") from None
        self.ray = ray
        self.engine = engine
        self.width = 10**6 if engine.config.jobs <= 1 else engine.config.jobs  # Ray's resources limit the rest
        self.slots = _Unbounded(cores())
        self.started = self.started_here = False

    def _start(self) -> None:
        """Join (or start) Ray and put the engine in its object store: on the first section that must run."""
        ray, engine = self.ray, self.engine
        root = engine.project.root
        address = engine.config.ray_address or os.environ.get("RAY_ADDRESS") or None
        env_vars = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
        self.started_here = address is None and not ray.is_initialized()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=True,
                     configure_logging=True,
                     runtime_env={"working_dir": str(root), "excludes": EXCLUDES, "env_vars": env_vars},
                     **({"num_cpus": cores()} if address is None else {}))
        self.payload_id = f"{os.getpid()}-{id(self)}"
        self.payload = ray.put(payload(engine, uploads=address is not None))
        self.remote = ray.remote(max_retries=0)(_task)
        self.remote_cluster = address is not None
        self.started = True

    def submit(self, gid, components, key, upstream, claim: Claim):
        if not self.started:
            self._start()
        device = self.engine.config.device
        gpu = device.startswith("cuda")
        options = {"num_cpus": claim.threads, "num_gpus": claim.share if gpu else 0, "name": f"section:{gid}"}
        accelerator = self.engine.sections[gid].section.needs.accelerator
        if gpu and accelerator:
            options["accelerator_type"] = accelerator
        # Ray sets CUDA_VISIBLE_DEVICES for a task: the GPU it was given is cuda:0 inside it.
        return self.remote.options(**options).remote(self.payload_id, self.payload, gid, components, key, upstream,
                                                     "cuda:0" if gpu else device)

    def wait(self, handles: list) -> list:
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def result(self, handle, gid: str) -> SectionResult:
        try:
            res = self.ray.get(handle)
        except Exception as exc:  # noqa: BLE001 - the task's process died, or Ray lost it
            return SectionResult(gid, "failed", 0.0, error=(
                f"the Ray task running {gid} failed ({type(exc).__name__}: {str(exc)[:300]}); build again with "
                f"--executor local to see the section's own error."))
        if res.entry is not None and res.entry.layer is None and self.remote_cluster:
            return self._bring_home(res)
        return res

    def _bring_home(self, res: SectionResult) -> SectionResult:
        """A result computed on another node: copy it in from the shared cache, as any machine would."""
        store, shared = self.engine.store, self.engine.config.shared
        if store.lookup_local(res.id, res.entry.key) is not None:
            return res  # a shared file system: it is here already
        entry = shared.fetch(res.id, res.entry.key, store) if shared is not None else None
        if entry is None:
            return replace(res, status="failed", entry=None, error=(
                f"section {res.id} ran on the Ray cluster, but its outputs cannot reach this machine: give the "
                f"build a --cache-url that the cluster and this machine share (or put the cache on a shared "
                f"file system)."))
        return replace(res, entry=Entry(entry.key, entry.record))

    def close(self, interrupted: bool = False) -> None:
        if self.started_here:
            self.ray.shutdown()

