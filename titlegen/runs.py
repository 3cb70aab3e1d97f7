"""Run folders and atomic writes.

A run folder `<output_root>/<run_name>/` holds every stage's output:
`data/` (ingest, clean), `split/` (train/validation/test JSONL + manifest),
`<model>-lora/` (adapter), `eval/`, `final-hf/`, `gguf/`, `ollama/`.
Nothing is ever half-written: files and folders are written under a temporary name beside the
target and renamed into place, and a folder counts as complete only when its marker file exists.

A run folder is a plain name under a safe `output_root` (`check_run_name`, `check_output_root`,
`run_dir`), and one flow run at a time works in it: `lock_run_folder` takes an exclusive `fcntl`
lock on `<run>/.titlegen.lock` when the flow starts, recording the holder (pid, host, flow run id).
"""

import contextlib
import contextvars
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

COMPLETE_MARKER = ".complete"


def slug(text: str) -> str:
    """A filesystem-safe short name: `unsloth/gemma-3n-E4B-it` -> `gemma-3n-E4B-it`."""
    last = text.rstrip("/").split("/")[-1].split(":")[-1]
    last = re.sub(r"\.gguf$", "", last)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-.") or "model"


def fingerprint(obj: Any, length: int = 10) -> str:
    """A short stable hash of any JSON-serialisable value (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (`/proc/self/status`)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (another thread could see 022 for that instant)
    os.umask(mask)
    return mask


def honor_umask(path: str | Path) -> None:
    """Give a temporary file or folder the mode `open()` or `mkdir()` would have: mkstemp makes files 0600 and
    mkdtemp folders 0700, which other users (a container serving the run folder, the upload CLI) cannot read."""
    path = Path(path)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~current_umask())


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder, then rename; the file's mode follows
    the umask, as a plain write's would."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        honor_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Atomically write rows as UTF-8 JSON lines."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def is_complete(folder: str | Path) -> bool:
    return (Path(folder) / COMPLETE_MARKER).exists()


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if absent), waiting while another process holds it."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file drops the lock


@contextlib.contextmanager
def build_lock(target: str | Path) -> Iterator[None]:
    """One builder at a time for a shared cache entry `target` (a lock file beside it): a second process waits, then
    finds the entry complete instead of replacing it while the first one reads it. Re-check completeness inside."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.with_name(f".{target.name}.lock")):
        yield


def build_once(target: str | Path, build: Callable[[Path], None]) -> Path:
    """A shared cache folder `target`, built by `build(tmp)` into a temporary folder (`atomic_dir`) unless it is
    complete already; under `build_lock`, so of two processes on a fresh cache one builds and the other reuses."""
    target = Path(target)
    if not is_complete(target):
        with build_lock(target):
            if not is_complete(target):
                with atomic_dir(target) as tmp:
                    build(tmp)
    return target


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target` (its mode from the umask, as `mkdir`'s); on success it
    replaces `target` whole.

    On any error the temporary folder is removed and `target` is left as it was.
    The completion marker is written last, inside the temporary folder, before the rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        honor_umask(tmp)
        yield tmp
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
# Folders of the operating system that a run must never write into (or replace folders of).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr")


def check_run_name(name: str) -> str:
    """`name` if it is one plain folder name; ValueError with the rule otherwise (no `/`, `..`, line breaks)."""
    if not re.fullmatch(RUN_NAME_PATTERN.strip("^$"), name):
        raise ValueError(
            f"{name!r} is not a plain folder name: use 1-100 letters, digits, `.`, `_` or `-`, starting with a "
            "letter or digit (no `/`, `..`, spaces or line breaks), e.g. `gemma-news-v2`"
        )
    return name


def check_output_root(output_root: str) -> str:
    """`output_root` unless it resolves to `/`, a system folder, or the home folder itself or above."""
    resolved = Path(output_root).resolve()
    fix = "use a folder of its own, such as `outputs` (the default) or `/data/titlegen-runs`"
    if resolved == Path(resolved.anchor):
        raise ValueError(f"{output_root!r} resolves to the filesystem root; {fix}")
    for system in SYSTEM_DIRS:
        if resolved == Path(system) or Path(system) in resolved.parents:
            raise ValueError(f"{output_root!r} resolves to {resolved}, inside the system folder {system}; {fix}")
    home = Path.home().resolve()
    if resolved == home or resolved in home.parents:
        raise ValueError(f"{output_root!r} resolves to {resolved}, the home folder or above it; {fix}")
    return output_root


def run_dir_problem(output_root: str | Path, run_name: str) -> str | None:
    """Why `<output_root>/<run_name>` is not a safe run folder (a link leading elsewhere), or None."""
    root = Path(output_root).resolve()
    target = (root / run_name).resolve()
    if target.parent != root:
        return (f"run folder {root / run_name} resolves to {target}, outside output_root {root} (a symbolic link?): "
                "remove the link or choose another run_name")
    return None


def run_dir(output_root: str | Path, run_name: str) -> Path:
    """`<output_root>/<run_name>`, absolute, after the checks above (ValueError naming the fix)."""
    check_output_root(str(output_root))
    check_run_name(run_name)
    if problem := run_dir_problem(output_root, run_name):
        raise ValueError(problem)
    return Path(output_root).resolve() / run_name


def default_run_name(base_model: str, dataset: str, identity: Any) -> str:
    """`<model>-<dataset>-<hash>`: the same model, data and training inputs give the same folder,
    so re-running after a crash resumes there instead of starting over. Always a valid run name."""
    name = f"{slug(base_model)[:40]}-{slug(dataset)[:40]}-{fingerprint(identity, 8)}"
    return name.lstrip("_.-")


# --- One flow run per run folder ------------------------------------------------------------

LOCK_FILE = ".titlegen.lock"
log = logging.getLogger(__name__)


class RunFolderBusy(RuntimeError):
    """Another live process holds the lock of this run folder."""


def _holder_text(holder: dict) -> str:
    if not holder:
        return "another process (no holder recorded)"
    run = f"flow run {holder['flow_run_id']}, " if holder.get("flow_run_id") else ""
    return f"{run}pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _warn(message: str) -> None:
    """A warning in the flow run's log (the Prefect UI) when there is one, else in this module's log."""
    try:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        get_run_logger().warning(message)
    except (ImportError, MissingContextError):
        log.warning(message)


def _flow_run_id() -> str | None:
    try:
        from prefect.context import FlowRunContext
    except ImportError:
        return None
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


class RunLock:
    """An exclusive lock on a run folder, held until `release()` or the holder's death (the kernel
    drops an `fcntl` lock with the last open descriptor, so a killed run never blocks the next)."""

    def __init__(self, folder: Path, fd: int, holder: dict, previous: dict):
        self.folder, self.fd, self.holder = folder, fd, holder
        self.previous = previous  # the record of a holder that died without releasing: taken over

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # a clean release leaves no holder behind
        os.close(self.fd)  # closing drops the lock
        self.fd = -1


_HELD: contextvars.ContextVar[list[RunLock] | None] = contextvars.ContextVar("titlegen_run_locks", default=None)


def acquire_run_lock(folder: str | Path, flow_run_id: str | None = None) -> RunLock:
    """Lock `folder` for this process or fail at once with `RunFolderBusy` naming the holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunFolderBusy(
            f"run folder {folder} is in use by {_holder_text(holder)}. Wait for that run to end (or cancel it), "
            "or give this run another run_name or output_root."
        ) from None
    previous = _read_holder(fd)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "flow_run_id": flow_run_id,
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    if previous:
        _warn(f"Took over the lock of run folder {folder} from {_holder_text(previous)}, which is gone.")
    return RunLock(folder, fd, holder, previous)


def lock_run_folder(folder: str | Path) -> RunLock:
    """Lock `folder` for the rest of the calling flow; the enclosing `@releases_run_locks` releases it."""
    held = _HELD.get()
    if held is None:
        raise RuntimeError("lock_run_folder() must be called inside a function decorated with @releases_run_locks")
    lock = acquire_run_lock(folder, _flow_run_id())
    held.append(lock)
    return lock


def releases_run_locks(fn):
    """Decorator: every lock that `lock_run_folder` takes during a call is released when the call ends."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = _HELD.set([])
        try:
            return fn(*args, **kwargs)
        finally:
            for lock in reversed(_HELD.get() or []):
                lock.release()
            _HELD.reset(token)

    return wrapper
