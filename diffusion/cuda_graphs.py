"""CUDA graphs: record a region of GPU work once, then replay it with a single launch.

A Part B training step or sampler call is a few hundred small kernels; launched one by one from
Python, the GPU waits on the interpreter (18.8 ms per spec training step on an H100, 3.5 ms as one
graph, see shared/notes/gpu.md). A graph is only worth having if it can never lose a build, so
every use here is checked against the eager computation on its first input, and any failure to
capture or any disagreement falls back to the eager code with one warning that names the reason.

Only CUDA captures. On any other device the callers run eagerly and nothing here is touched, so
CPU results stay exactly what they were. ``capture`` is the single place that talks to
``torch.cuda``; tests replace it to run the surrounding logic (static buffers, the check against
eager, the fallback) on a CPU.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor

WARMUP = 2  # eager calls before capture: they create cuBLAS/cuDNN handles and lazy optimizer state
FALLBACK = "cuda-graph fallback"  # the prefix of every fallback warning (scripts/gpu-check counts them)


def enabled_for(device) -> bool:
    return torch.device(device).type == "cuda"


def capture(body: Callable[[], None], *, generators: Sequence[torch.Generator] = (),
            before_capture: Callable[[], None] | None = None) -> Callable[[], None]:
    """Run ``body`` WARMUP times on a side stream, then record one call of it as a CUDA graph and
    return the graph's replay. The recorded call does not execute; the warm-up calls do, so a
    caller whose body has side effects must undo them. ``generators`` are the non-default CUDA
    generators the body draws from: registered, each replay advances them as an eager call would.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(WARMUP):
            body()
    torch.cuda.current_stream().wait_stream(stream)
    if before_capture is not None:
        before_capture()
    graph = torch.cuda.CUDAGraph()
    for g in generators:
        graph.register_generator_state(g)
    with torch.cuda.graph(graph):
        body()
    return graph.replay


def warn_fallback(what: str, reason: BaseException | str) -> str:
    text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    message = f"{FALLBACK}: the {what} runs eagerly (slower, same algorithm) because {text}"
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return message


def graphed(fn: Callable[..., Tensor], *example: Tensor, what: str = "sampler's network call",
            rtol: float = 2e-2, atol: float = 2e-2) -> Callable[..., Tensor]:
    """``fn`` replayed as a CUDA graph for arguments shaped like ``example``; ``fn`` itself elsewhere.

    ``fn`` must be a pure function of its tensor arguments (no randomness, no state it changes),
    as a network in eval mode under ``torch.no_grad`` is. Each call copies its arguments into the
    graph's input buffers, replays, and returns a copy of the output. The first replay is compared
    with ``fn`` on the same arguments; a mismatch beyond (rtol, atol) means the graph is not to be
    trusted, and ``fn`` is returned instead.
    """
    if not enabled_for(example[0].device):
        return fn
    inputs = [a.clone() for a in example]
    out: list[Tensor] = []

    def body():
        out[:] = [fn(*inputs)]

    try:
        replay = capture(body)
        expected = fn(*example)
        replay()
        if out[0].shape != expected.shape or not torch.allclose(out[0].float(), expected.float(), rtol=rtol, atol=atol):
            diff = (out[0].float() - expected.float()).abs().max().item()
            raise RuntimeError(f"its first replay differs from the eager call by up to {diff:.3g}")
    except Exception as exc:  # noqa: BLE001 - a graph is an optimisation; never lose a build to it
        warn_fallback(what, exc)
        return fn
    shapes = [a.shape for a in example]

    def call(*args: Tensor) -> Tensor:
        if [a.shape for a in args] != shapes:
            return fn(*args)
        for buffer, a in zip(inputs, args):
            buffer.copy_(a)
        replay()
        return out[0].clone()  # the next replay overwrites the output buffer

    return call
