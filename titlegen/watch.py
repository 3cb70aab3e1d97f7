"""Follow a titlegen flow run in the terminal: what `make run` prints while the run goes on.

    python -m titlegen.watch FLOW_RUN_ID [--timeout SECONDS] [--worker-log PATH]

It polls the Prefect API (every 2 s) for the flow run, its task runs and its logs, and prints each
stage as it starts and ends, the flow's own log lines, the fine-tune's training progress (step of
total, loss, seconds per step and an ETA measured from the steps done so far; read from the
`@@titlegen {json}` lines of the training worker, which the fine-tune task logs) and, at the end,
the final state with its reasons: the quality gate's failed rules, or the failing task's error,
plus the run folder and the UI link.

Exit status: 0 Completed, 3 GateBlocked (an expected end, see titlegen.outcomes), 1 any other end
(Failed, Crashed, Cancelled), 124 when --timeout ends the watching (the run goes on), 130 on Ctrl-C.
"""

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from titlegen.outcomes import GATE_BLOCKED, gate_reasons
from titlegen.train_progress import PROGRESS_PREFIX, parse_progress

STAGES = ("ingest", "clean", "split", "fine-tune", "evaluate-gate", "merge", "upload", "ollama-create")
TASK_STAGE = {"ingest": 1, "clean": 2, "split": 3, "fine-tune": 4, "evaluate": 5, "gate": 5, "merge": 6, "upload": 7,
              "ollama-create": 8}
EXIT_COMPLETED, EXIT_FAILED, EXIT_GATE_BLOCKED, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 3, 124, 130
QUIET_SECONDS = 60  # a "still running" line after this long without output
WAITING_HINT_SECONDS = 30
MAX_LINE = 220
MAX_ERROR_LINES = 12
# Prefect's own INFO lines that the stage lines already say.
_PREFECT_CHATTER = re.compile(
    r"^(Finished in state|Beginning flow run|View at |Created task run|Executing |Worker '|Flow run '.*' submitted to|"
    r"Running \d+ deployment pull step|Deployment step |All deployment steps|Opening process|Process for flow run|"
    r"Encountered exception during execution|Engine execution exited with unexpected exception)"
)
_NOISE = re.compile(r"\d+%\|")  # progress bars
_RUN_FOLDER = re.compile(r"^Run folder (\S+)")
_TASK_ERROR = "Task run encountered an exception "


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s" if seconds >= 10 or seconds == 0 else f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def stage_of(task_run_name: str) -> str | None:
    """`fine-tune-3a1` -> `fine-tune`: task run names are `<task name>-<suffix>` or set by the task."""
    hits = [t for t in TASK_STAGE if task_run_name == t or task_run_name.startswith(t + "-")]
    return max(hits, key=len) if hits else None


def label(task_run_name: str) -> str:
    task = stage_of(task_run_name)
    return f"[{TASK_STAGE[task]}/{len(STAGES)}] {task}" if task else task_run_name


def _first_line(text: str | None, limit: int = MAX_LINE) -> str:
    lines = (text or "").strip().splitlines() or [""]
    line = lines[0] + (" …" if len(lines) > 1 else "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _error_lines(message: str | None) -> list[str]:
    text = (message or "").strip()
    if text.startswith(_TASK_ERROR):
        text = text[len(_TASK_ERROR):]
    lines = text.splitlines() or ["(no message)"]
    if len(lines) > MAX_ERROR_LINES:
        lines = lines[:MAX_ERROR_LINES] + [f"… ({len(lines) - MAX_ERROR_LINES} more lines in the UI)"]
    return lines


def _error_head(message: str | None) -> str:
    return _first_line("\n".join(_error_lines(message)))


def _run_seconds(run: Any) -> float | None:
    if getattr(run, "start_time", None) and getattr(run, "end_time", None):
        return (run.end_time - run.start_time).total_seconds()
    total = getattr(run, "total_run_time", None)
    return total.total_seconds() if total is not None else None


class Follower:
    """Turns snapshots of a flow run (its task runs, its new logs) into terminal lines; no I/O of its own."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.task_states: dict[Any, tuple[str, str]] = {}
        self.running: dict[Any, tuple[str, float]] = {}  # task run id -> (name, since)
        self.seen_logs: set = set()
        self.run_folder: str | None = None
        self.train: dict[str, Any] = {}
        self.last_output = clock()
        self.started = clock()
        self.flow_state: str | None = None
        self.hinted_waiting = False

    # --- flow and task runs ------------------------------------------------------------------
    def flow_lines(self, flow_run: Any, worker_log: str | None = None) -> list[str]:
        state = flow_run.state
        key = state.type.value if state else "UNKNOWN"
        out = []
        if key != self.flow_state:
            self.flow_state = key
            if key == "RUNNING":
                out.append(f"Flow run {flow_run.name!r} is running: {len(STAGES)} stages, " + " → ".join(STAGES))
        if key in ("SCHEDULED", "PENDING") and not self.hinted_waiting and self.clock() - self.started > WAITING_HINT_SECONDS:
            self.hinted_waiting = True
            where = f" (its log: {worker_log})" if worker_log else ""
            out.append(f"… still waiting for the worker to start the run{where}; `make status` shows what is running")
        return self._emitted(out)

    def task_lines(self, task_runs: Iterable[Any]) -> list[str]:
        return self._emitted([line for _, line in self._task_events(task_runs)])

    def log_lines(self, logs: Iterable[Any]) -> list[str]:
        return self._emitted([line for _, line in self._log_events(logs)])

    def lines(self, task_runs: Iterable[Any], logs: Iterable[Any]) -> list[str]:
        """Stage lines and log lines of one poll, in the order they happened."""
        events = self._task_events(task_runs) + self._log_events(logs)
        events.sort(key=lambda e: e[0].timestamp() if e[0] is not None else 0.0)  # stable: ties keep their order
        return self._emitted([line for _, line in events])

    def _task_events(self, task_runs: Iterable[Any]) -> list[tuple[Any, str]]:
        out: list[tuple[Any, str]] = []
        for tr in task_runs:
            if tr.state is None:
                continue
            key = (tr.state.type.value, tr.state.name or "")
            if self.task_states.get(tr.id) == key:
                continue
            self.task_states[tr.id] = key
            kind, name = key
            what, ts = label(tr.name), getattr(tr.state, "timestamp", None)
            if kind == "RUNNING":
                self.running[tr.id] = (what, self.clock())
                out.append((ts, f"▶ {what} retrying" if name == "Retrying" else f"▶ {what} started"))
                continue
            self.running.pop(tr.id, None)
            if kind == "COMPLETED":
                if name == "Cached":
                    out.append((ts, f"✓ {what} cached: same inputs as an earlier run, not run again"))
                else:
                    out.append((ts, f"✓ {what} done in {duration(_run_seconds(tr))}"))
            elif kind in ("FAILED", "CRASHED"):
                out.append((ts, f"✗ {what} {name.lower() or kind.lower()} after {duration(_run_seconds(tr))}: "
                                f"{_error_head(tr.state.message)}"))
            elif kind == "SCHEDULED" and name == "AwaitingRetry":
                out.append((ts, f"↻ {what} will retry: {_error_head(tr.state.message)}"))
            elif kind == "CANCELLED":
                out.append((ts, f"■ {what} cancelled"))
        return out

    # --- logs ----------------------------------------------------------------------------------
    def _log_events(self, logs: Iterable[Any]) -> list[tuple[Any, str]]:
        out: list[tuple[Any, str]] = []
        for log in logs:
            if log.id in self.seen_logs:
                continue
            self.seen_logs.add(log.id)
            message, ts = log.message or "", getattr(log, "timestamp", None)
            if message.startswith(PROGRESS_PREFIX):
                line = self.progress_line(message)
                if line:
                    out.append((ts, line))
                continue
            found = _RUN_FOLDER.match(message)
            if found:
                self.run_folder = found.group(1)
            if _PREFECT_CHATTER.match(message) or _NOISE.search(message) or not message.strip():
                continue
            out.append((ts, f"  ! {_first_line(message)}" if log.level >= 30 else f"    {_first_line(message)}"))
        return out

    def progress_line(self, line: str) -> str | None:
        """A training progress record as one line; an ETA once a step has been timed."""
        record = parse_progress(line)
        if record is None:
            return None
        event = record.get("event")
        if event == "start":
            self.train = {"t0": record.get("t"), "step0": record.get("global_step") or 0, "max_steps": record.get("max_steps")}
            resumed = f", resuming at step {self.train['step0']}" if self.train["step0"] else ""
            return f"    training: {record.get('max_steps')} optimizer steps{resumed}"
        if event == "log" and "loss" in record and record.get("step"):
            step, total = record["step"], record.get("max_steps") or self.train.get("max_steps")
            text = f"    step {step}/{total}" if total else f"    step {step}"
            if total:
                text += f" ({100 * step / total:.0f}%)"
            text += f"  loss {record['loss']:.3f}"
            t0, step0, t = self.train.get("t0"), self.train.get("step0", 0), record.get("t")
            if t0 is not None and t is not None and step > step0:
                per_step = (t - t0) / (step - step0)
                text += f"  {per_step:.1f} s/step"
                if total and total > step:
                    text += f", about {duration(per_step * (total - step))} to go"
            return text
        if event == "eval" and record.get("eval_loss") is not None:
            best = " (best so far)" if record.get("best") else ""
            checks = record.get("failed_checks")  # train.keep_adapter=checks: the validation titles' failed checks
            checks = f", {100 * checks:.1f} % of validation titles fail a headline check" if checks is not None else ""
            return f"    validation loss {record['eval_loss']:.3f} at step {record.get('step')}{checks}{best}"
        if event == "checkpoint" and record.get("step"):
            return f"    checkpoint saved at step {record['step']}"
        if event == "done":
            parts = [f"    trained {record.get('global_step')} steps in {duration(record.get('wall_seconds'))}"]
            if record.get("final_train_loss") is not None:
                parts.append(f"final loss {record['final_train_loss']:.3f}")
            if record.get("best_eval_loss") is not None:
                parts.append(f"best validation loss {record['best_eval_loss']:.3f}")
            return ", ".join(parts)
        return None

    def quiet_lines(self) -> list[str]:
        """After QUIET_SECONDS without output, one line naming what is still running and for how long."""
        now = self.clock()
        if not self.running or now - self.last_output < QUIET_SECONDS:
            return []
        what, since = next(iter(self.running.values()))
        return self._emitted([f"… {what} still running ({duration(now - since)})"])

    def _emitted(self, lines: list[str]) -> list[str]:
        if lines:
            self.last_output = self.clock()
        return lines

    # --- the end -------------------------------------------------------------------------------
    def summary(self, flow_run: Any, task_runs: Iterable[Any], ui_url: str, worker_log: str | None = None) -> tuple[list[str], int]:
        state = flow_run.state
        took = duration(_run_seconds(flow_run))
        if state.is_completed() and state.name == "NothingChanged":
            # A scheduled run whose data, code and parameters give the model already served (titlegen.champion).
            lines, code = [f"✓ Nothing changed ({took}): {state.message or 'the model in service is this run’s model'}"], EXIT_COMPLETED
        elif state.is_completed():
            lines, code = [f"✓ Completed in {took}: all {len(STAGES)} stages ran."], EXIT_COMPLETED
        elif state.name == GATE_BLOCKED:
            reasons = gate_reasons(state.message) or [state.message or "(no reasons recorded)"]
            lines = [f"✗ GateBlocked after {took}: the quality gate kept this model from merge, upload and "
                     "ollama-create. Failed rules:", *(f"  - {r}" for r in reasons),
                     "  On a CPU-only machine this is the expected end (a few CPU training steps do not make a "
                     "good model); README, \"All eight stages on a CPU machine\", finishes a run with an adapter "
                     "trained on a GPU."]
            code = EXIT_GATE_BLOCKED
        else:
            lines, code = [f"✗ {state.name} after {took}."], EXIT_FAILED
            failed = [t for t in task_runs if t.state is not None and t.state.type.value in ("FAILED", "CRASHED")]
            for tr in failed:
                lines.append(f"  {label(tr.name)} {tr.state.name.lower()}:")
                lines += [f"    {line}" for line in _error_lines(tr.state.message)]
            if not failed:
                lines += [f"  {line}" for line in _error_lines(state.message)]
            if state.type.value == "CRASHED" and worker_log:
                lines.append(f"  The flow run's process ended without reporting; its last output is in {worker_log}")
        if self.run_folder:
            lines.append(f"Run folder: {self.run_folder}")
        lines.append(f"UI: {ui_url}")
        return lines, code


def _task_runs(client: Any, flow_run_id: Any) -> list:
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import TaskRunSort

    return client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])),
                                 sort=TaskRunSort.EXPECTED_START_TIME_ASC)


def _new_logs(client: Any, flow_run_id: Any, follower: Follower) -> list:
    """Logs in timestamp order from a little before the last seen one (late batches are deduplicated by id)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    offset, logs = max(0, len(follower.seen_logs) - 50), []
    while True:
        page = client.read_logs(log_filter=flt, sort=LogSort.TIMESTAMP_ASC, offset=offset, limit=200)
        logs += page
        if len(page) < 200:
            return logs
        offset += len(page)


def follow(client: Any, flow_run_id: Any, ui_url: str, out: Callable[[str], None] = print, poll: float = 2.0,
           timeout: float | None = None, worker_log: str | None = None, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> int:
    """Print the run as it goes until it ends (or `timeout` seconds pass); returns the exit status."""
    follower = Follower(clock)
    while True:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = _task_runs(client, flow_run_id)
        for line in (follower.flow_lines(flow_run, worker_log)
                     + follower.lines(task_runs, _new_logs(client, flow_run_id, follower)) + follower.quiet_lines()):
            out(line)
        if flow_run.state is not None and flow_run.state.is_final():
            sleep(poll)  # the last log lines reach the API in batches, a moment after the state
            task_runs = _task_runs(client, flow_run_id)
            for line in follower.lines(task_runs, _new_logs(client, flow_run_id, follower)):
                out(line)
            lines, code = follower.summary(flow_run, task_runs, ui_url, worker_log)
            for line in lines:
                out(line)
            return code
        if timeout is not None and clock() - follower.started > timeout:
            out(f"Stopped watching after {duration(timeout)}; the run goes on: {ui_url}")
            return EXIT_TIMEOUT
        sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m titlegen.watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("flow_run_id")
    parser.add_argument("--timeout", type=float, default=None, help="stop watching after this many seconds")
    parser.add_argument("--worker-log", default=None, help="the worker's log file, named when a run crashes")
    args = parser.parse_args(argv)
    try:
        flow_run_id = UUID(args.flow_run_id)
    except ValueError:
        parser.error(f"{args.flow_run_id!r} is not a flow run id (a UUID, as `prefect deployment run` prints it)")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace", line_buffering=True)

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_UI_URL

    ui_url = f"{(PREFECT_UI_URL.value() or '').rstrip('/')}/runs/flow-run/{args.flow_run_id}"
    try:
        with get_client(sync_client=True) as client:
            return follow(client, flow_run_id, ui_url, timeout=args.timeout, worker_log=args.worker_log)
    except KeyboardInterrupt:
        print(f"\nStopped watching; the run goes on: {ui_url}  (`make down` stops it)", flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
