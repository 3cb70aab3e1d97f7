"""Run a child process (training, GPU generation) whose output streams into the Prefect run log.

GPU stages run in a child so CUDA memory is freed when they end, and so Unsloth is imported
before transformers/trl/peft. The child gets its own session, so cancelling a flow run (which
kills the worker's process group) cannot orphan it without us noticing: we kill it in `finally`
whenever we stop waiting for it (task timeout, cancellation, error).
"""

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence


def run_logged(
    argv: Sequence[str],
    logger: logging.Logger | logging.LoggerAdapter,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: str | None = None,
) -> None:
    """Run `argv`, log each output line at INFO, hand it to `on_line`, and raise on a non-zero exit.

    `env` adds to (not replaces) the current environment. The child's last lines go into the
    error message so the Prefect UI shows why it failed.
    """
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        env=child_env, cwd=cwd, start_new_session=True,
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


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]
