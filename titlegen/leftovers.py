"""Crash leftovers: what a killed stage leaves in its output folder, swept when the stage next starts.

Every stage output is written under a temporary name and renamed into place (`titlegen.runs`:
`.final-hf.<random>.tmp`, `.gguf.<random>.tmp`, `.<file>.<random>.tmp`, `.<folder>.old`). An
exception removes them; a SIGKILL, an OOM kill or a power cut cannot, and an E4B export leaves GBs
each time. A stage therefore takes its lock (`stage_lock`, an `flock` the kernel drops when the
holder dies, however it dies) and then removes its own leftovers (`sweep`): while the lock is
held no other process of that stage is writing there, so anything matching is a leftover.
"""

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path


class StageBusy(RuntimeError):
    """Another process runs the same stage on the same run folder; the message names it."""


@contextlib.contextmanager
def stage_lock(folder: str | Path, stage: str) -> Iterator[Path]:
    """Hold `<folder>/.<stage>.lock` (exclusive, non-blocking) for the block; raise StageBusy when it is taken.

    The file holds the holder's pid (for the message) and is removed on release, so a finished stage
    leaves nothing behind; a lock taken on a file that was removed meanwhile is retaken on the new one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{stage}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StageBusy(
                f"The {stage} stage is already running on {folder} (process {holder} holds {path}). "
                "Wait for it to finish, or give this run another run_name."
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # closing the descriptor releases the lock


def sweep(folder: str | Path, patterns: Iterable[str], logger: logging.Logger | logging.LoggerAdapter | None = None) -> list[str]:
    """Remove what matches `patterns` (globs) directly in `folder`; returns the names removed. Call under `stage_lock`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
                shutil.rmtree(path, ignore_errors=True)
            else:
                size = path.lstat().st_size
                path.unlink(missing_ok=True)
            removed.append(path.name)
            (logger or logging.getLogger(__name__)).warning(
                "Removed %s (%.1f MB): left behind by an earlier run of this stage that was killed", path, size / 1e6)
    return removed
