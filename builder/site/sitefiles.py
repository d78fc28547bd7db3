"""Writing the site: every file atomically and only where its bytes changed, files no longer in the site
removed, and a failed write said in one paragraph."""
from __future__ import annotations

import errno
import os
from pathlib import Path


from .. import BuildError
from ..atomic import atomic_write_bytes
from ..faults import crash_point
from ..fingerprint import sha256_bytes


def write_files(written: dict[str, bytes], out_dir: Path, hashes: dict[str, str] | None = None) -> tuple[int, int]:
    """Write the files that changed, atomically, and remove the ones no longer in the site. ``hashes``: the
    sha256 of files whose bytes are known by it (figures, static files), so that they are not hashed again."""
    hashes = hashes or {}
    changed = 0
    target = out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for rel, data in sorted(written.items()):
            target = out_dir / rel
            sha = hashes.get(rel) or sha256_bytes(data)
            if _as_written(target, data, sha):
                continue
            atomic_write_bytes(target, data)
            _remember_written(target, sha)
            changed += 1
            if changed == 1:
                crash_point("render")
        target = out_dir
        removed = _remove_stale(out_dir, set(written))
    except OSError as exc:
        raise BuildError(write_failure(exc, out_dir, target)) from None
    return changed, removed


# What this process last wrote, or found, at each path of a site: (size, mtime, inode, sha256 of the bytes).
_ON_DISK: dict[str, tuple[int, int, int, str]] = {}


def write_one(out_dir: Path, rel: str, data: bytes) -> None:
    """One file of the site, written as ``write_files`` writes each (atomically, only if its bytes changed)."""
    target, sha = out_dir / rel, sha256_bytes(data)
    try:
        if not _as_written(target, data, sha):
            atomic_write_bytes(target, data)
            _remember_written(target, sha)
    except OSError as exc:
        raise BuildError(write_failure(exc, out_dir, target)) from None


def _as_written(target: Path, data: bytes, sha: str) -> bool:
    """Whether ``target`` holds ``data`` already: known from its stat where this process saw it last, else read."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return False
    known = _ON_DISK.get(str(target))
    if known is not None and known[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
        return len(data) == st.st_size and known[3] == sha
    same = target.read_bytes() == data
    if same:
        _remember_written(target, sha)
    return same


def _remember_written(target: Path, sha: str) -> None:
    st = target.stat()
    _ON_DISK[str(target)] = (st.st_size, st.st_mtime_ns, st.st_ino, sha)


_WRITE_HINTS = {
    errno.ENOSPC: "The disk is full: free some space, or pass --site-dir with a folder on another disk.",
    errno.EDQUOT: "Your disk quota is used up: free some space, or pass --site-dir with a folder on another disk.",
    errno.EROFS: "That file system is read-only: pass --site-dir with a folder on a writable disk (or remount it "
                 "read-write).",
    errno.EACCES: "This user may not write there: make the folder writable (chmod u+w) or pass --site-dir with a "
                  "folder of your own.",
    errno.EPERM: "This user may not write there: make the folder writable (chmod u+w) or pass --site-dir with a "
                 "folder of your own.",
    errno.EEXIST: "A file stands where a folder must be: move it away or pass another --site-dir.",
    errno.ENOTDIR: "A file stands where a folder must be: move it away or pass another --site-dir.",
}


def write_failure(exc: OSError, out_dir: Path, target: Path) -> str:
    """One paragraph on a failed write into the site: what, where, how to fix, and what is safe."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    code = f"{errno.errorcode[exc.errno]}, " if exc.errno in errno.errorcode else ""
    hint = _WRITE_HINTS.get(exc.errno, "Fix the cause, or pass --site-dir with another folder.")
    return (f"cannot write the site into {out_dir}: writing {target} failed ({code}{reason}). {hint} "
            f"Then build again: the figures are safely in the cache, so only the pages are written. No "
            f"half-written file was left, but the site may mix files of this build with the previous one "
            f"until a build succeeds.")


def _remove_stale(out_dir: Path, keep: set[str]) -> int:
    removed = 0
    for path in sorted(out_dir.rglob("*"), reverse=True):
        rel = path.relative_to(out_dir).as_posix()
        if path.is_file() and rel not in keep:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed
