"""Files written all or nothing: a temporary file in the same folder, flushed to disk, then renamed over
the target. Every file the build keeps (cache records and objects, the stat cache, the site) is written
this way, so an interrupted build leaves each either as it was or whole.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .faults import crash_point

UMASK = os.umask(0o022)  # the process's umask (reading it means setting it): what new files are created with
os.umask(UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace``: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp creates 0600; published files must be readable
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)
        crash_point(f"renamed:{path.name}")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
