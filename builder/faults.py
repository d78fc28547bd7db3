"""Fault injection for tests: kill the build at a named point, as a power cut or the OOM killer would.

``FUN_DIFFUSION_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches the point of that
name, so tests can check that no kill point leaves a half-written or corrupted file behind. SIGKILL
runs no ``finally`` block and no ``atexit`` hook, which is exactly what must be survived. Points:

  section:<id>          a section's outputs are staged in <cache>/tmp/ but not yet committed
  step:<id>:<n>         a section's n-th progress step (a training section: its n-th optimizer step)
  write:<file name>     an atomic write has its temporary file complete but not yet renamed
  renamed:<file name>   an atomic write has just renamed its file into place
  render                the first file of the site has been written

``FUN_DIFFUSION_CRASH_SIGNAL=INT`` sends SIGINT instead, as Ctrl-C would.
"""
from __future__ import annotations

import os
import signal

ENV = "FUN_DIFFUSION_CRASH_AT"
SIGNAL_ENV = "FUN_DIFFUSION_CRASH_SIGNAL"


def armed() -> bool:
    return ENV in os.environ


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(SIGNAL_ENV, "KILL")))
