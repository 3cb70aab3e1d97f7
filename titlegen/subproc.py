"""Child processes (training, GPU generation, the merge worker, the GGUF converter): one launcher, one set of rules.

GPU stages run in a child so CUDA memory is freed when they end, and so Unsloth is imported
before transformers/trl/peft. Every child started here

- streams its output into the Prefect run log (`run_logged`);
- gets its own session, so cancelling a flow run (which kills the worker's process group) cannot
  orphan it without us noticing: we kill it in `finally` whenever we stop waiting for it (task
  timeout, cancellation, error);
- dies with its parent: on Linux the child asks the kernel for SIGKILL when the thread that
  started it ends (`PR_SET_PDEATHSIG`), so a SIGKILLed worker (OOM killer, `kill -9`, a crashed
  container init) leaves no child writing GBs into a temporary folder. The launching thread
  waits for the child, so it ends only with the process;
- gets the environment without the Hub token (`child_env`): none of these children uploads, and a
  converter or a training library that logs its environment, or a crash dump, must not carry it.
  The upload stage talks to the Hub from the parent process only;
- `run_logged`'s children keep torch.compile's caches in one folder across runs
  (`titlegen.paths.compile_cache_env`), unless the environment names its own.
"""

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

from titlegen.paths import compile_cache_env

# The variables huggingface_hub reads a token from (HUGGING_FACE_HUB_TOKEN is its legacy name).
HUB_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
PR_SET_PDEATHSIG = 1


def child_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without the Hub token variables, plus `extra`.

    The rule for every child that does not upload; `extra` cannot put a token back."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in HUB_TOKEN_VARS}
    env.update({k: v for k, v in (extra or {}).items() if k not in HUB_TOKEN_VARS})
    return env


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive SIGKILL when its parent dies; None off Linux.

    libc's `prctl` is looked up here, before the fork, so the child only makes the call. If the
    parent died between fork and prctl, the child is already orphaned and exits at once."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def run_logged(
    argv: Sequence[str],
    logger: logging.Logger | logging.LoggerAdapter,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: str | None = None,
) -> None:
    """Run `argv`, log each output line at INFO, hand it to `on_line`, and raise on a non-zero exit.

    `env` adds to (not replaces) the current environment, less the Hub token (`child_env`). The
    child's last lines go into the error message so the Prefect UI shows why it failed.
    """
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        env=child_env({"PYTHONUNBUFFERED": "1", **compile_cache_env(), **(env or {})}), cwd=cwd, start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if not line:
                continue
            logger.info(line)
            tail = (tail + [line])[-20:]
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code != 0:
        raise RuntimeError(f"{argv[1] if len(argv) > 1 else argv[0]} exited with code {code}; last output:\n" + "\n".join(tail))


def run_captured(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None,
                 check: bool = False) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, capture_output=True, text=True)` under the same rules as `run_logged`: no Hub token
    in the environment (`env` adds to it) and death with the parent. For short children whose output is parsed
    rather than logged (`ollama create`, the converter's tokenizer step)."""
    return subprocess.run(list(argv), env=child_env(env), capture_output=True, text=True, timeout=timeout,
                          check=check, preexec_fn=die_with_parent())


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]
