"""titlegen.watch: the lines `make run` prints for a run's stages, logs, training progress and end."""

import datetime as dt
import json
from types import SimpleNamespace
from uuid import uuid4

import pytest
from prefect.states import Completed, Crashed, Failed, Pending, Running, Scheduled

from titlegen.outcomes import gate_blocked
from titlegen.watch import (
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_GATE_BLOCKED,
    EXIT_TIMEOUT,
    PROGRESS_PREFIX,
    Follower,
    duration,
    follow,
    label,
    stage_of,
)

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def task(name, state, seconds=None, id=None):
    end = T0 + dt.timedelta(seconds=seconds) if seconds is not None else None
    return SimpleNamespace(id=id or name, name=name, state=state, start_time=T0 if end else None, end_time=end,
                           total_run_time=None)


def flow_run(state, seconds=None):
    return SimpleNamespace(id=uuid4(), name="brass-dragonfly", state=state, start_time=T0,
                           end_time=T0 + dt.timedelta(seconds=seconds) if seconds else None, total_run_time=None)


def log(message, level=20, at=None):
    return SimpleNamespace(id=uuid4(), level=level, message=message, timestamp=at)


def progress(event, **fields):
    return log(PROGRESS_PREFIX + json.dumps({"event": event, **fields}))


@pytest.mark.parametrize("name, stage", [("ingest-a1b", "ingest"), ("fine-tune-3f0", "fine-tune"), ("merge-export", "merge"),
                                         ("upload", "upload"), ("ollama-create-9", "ollama-create"), ("gate-1", "gate"),
                                         ("something-else", None)])
def test_task_runs_map_to_their_stage(name, stage):
    assert stage_of(name) == stage


def test_labels_number_the_eight_stages():
    assert label("ingest-1") == "[1/8] ingest"
    assert label("gate-2") == "[5/8] gate" and label("evaluate-2") == "[5/8] evaluate"
    assert label("ollama-create-7") == "[8/8] ollama-create"


@pytest.mark.parametrize("seconds, text", [(0.43, "0.4 s"), (17, "17 s"), (185, "3 min 05 s"), (3720, "1 h 02 min"), (None, "?")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_each_stage_start_and_end_is_printed_once():
    f = Follower(Clock())
    assert f.task_lines([task("ingest-1", Running())]) == ["▶ [1/8] ingest started"]
    assert f.task_lines([task("ingest-1", Running())]) == []
    assert f.task_lines([task("ingest-1", Completed(), 1.02)]) == ["✓ [1/8] ingest done in 1.0 s"]
    lines = f.task_lines([task("ingest-1", Completed(), 1.02), task("clean-1", Completed(name="Cached"), 0.1),
                          task("fine-tune-1", Failed(message="Task run encountered an exception RuntimeError: out of memory\nmore"), 75)])
    assert lines == ["✓ [2/8] clean cached: same inputs as an earlier run, not run again",
                     "✗ [4/8] fine-tune failed after 1 min 15 s: RuntimeError: out of memory …"]


def test_a_retry_is_announced():
    f = Follower(Clock())
    lines = f.task_lines([task("ollama-create-1", Scheduled(name="AwaitingRetry", message="Ollama at http://x is unreachable"))])
    assert lines == ["↻ [8/8] ollama-create will retry: Ollama at http://x is unreachable"]
    assert f.task_lines([task("ollama-create-1", Running(name="Retrying"))]) == ["▶ [8/8] ollama-create retrying"]


def test_training_progress_with_step_loss_and_eta_from_the_measured_steps():
    f = Follower(Clock())
    lines = f.log_lines([
        progress("start", t=30.0, max_steps=40, global_step=0),
        progress("log", t=47.0, step=1, max_steps=40, loss=5.4321),
        progress("log", t=98.0, step=4, max_steps=40, loss=4.1),
        progress("eval", t=99.0, step=4, eval_loss=3.9, best=True),
        progress("checkpoint", t=99.5, step=4),
        progress("done", t=700.0, global_step=40, final_train_loss=2.5, best_eval_loss=3.1, wall_seconds=680.0),
    ])
    assert lines == [
        "    training: 40 optimizer steps",
        "    step 1/40 (2%)  loss 5.432  17.0 s/step, about 11 min 03 s to go",
        "    step 4/40 (10%)  loss 4.100  17.0 s/step, about 10 min 12 s to go",
        "    validation loss 3.900 at step 4 (best so far)",
        "    checkpoint saved at step 4",
        "    trained 40 steps in 11 min 20 s, final loss 2.500, best validation loss 3.100",
    ]
    # train.keep_adapter=checks: the pass's failed headline checks on its validation titles are shown too.
    assert Follower(Clock()).log_lines([progress("eval", t=99.0, step=4, eval_loss=3.9, best=False, failed_checks=0.0213)]) == [
        "    validation loss 3.900 at step 4, 2.1 % of validation titles fail a headline check",
    ]


def test_a_resumed_training_measures_its_eta_from_the_resumed_step():
    f = Follower(Clock())
    f.log_lines([progress("start", t=10.0, max_steps=12, global_step=4)])
    assert f.log_lines([progress("log", t=30.0, step=6, max_steps=12, loss=3.0)]) == [
        "    step 6/12 (50%)  loss 3.000  10.0 s/step, about 1 min 00 s to go"]


def test_stage_and_log_lines_of_one_poll_come_in_the_order_they_happened():
    f = Follower(Clock())
    started = Running()
    before, after = started.timestamp - dt.timedelta(seconds=1), started.timestamp + dt.timedelta(seconds=1)
    lines = f.lines([task("ingest-1", started)], [log("loading rows", at=after), log("Run folder outputs/r", at=before)])
    assert lines == ["    Run folder outputs/r", "▶ [1/8] ingest started", "    loading rows"]


def test_logs_warnings_and_the_run_folder_without_prefect_chatter_or_duplicates():
    f = Follower(Clock())
    folder = log("Run folder outputs/gemma3-270m-news-1a2b (preset cpu, base model pypi:x)")
    warning = log("WARNING-level line\nwith a traceback below", level=30)
    chatter = [log("Finished in state Completed()"), log(" 45%|████ | 9/20"), log("Finished in state Failed('x')", 40),
               log("Engine execution exited with unexpected exception", 40), log("Worker 'ProcessWorker 1' submitting flow run '2'")]
    lines = f.log_lines([folder, *chatter, warning])
    assert lines == ["    Run folder outputs/gemma3-270m-news-1a2b (preset cpu, base model pypi:x)", "  ! WARNING-level line …"]
    assert f.log_lines([folder, warning]) == []
    assert f.run_folder == "outputs/gemma3-270m-news-1a2b"


def test_a_quiet_stage_gets_a_still_running_line_after_a_minute():
    clock = Clock()
    f = Follower(clock)
    f.task_lines([task("evaluate-1", Running())])
    clock.now = 59.0
    assert f.quiet_lines() == []
    clock.now = 125.0
    assert f.quiet_lines() == ["… [5/8] evaluate still running (2 min 05 s)"]
    assert f.quiet_lines() == []


def test_a_run_no_worker_picks_up_gets_a_hint():
    clock = Clock()
    f = Follower(clock)
    assert f.flow_lines(flow_run(Scheduled()), "w.log") == []
    clock.now = 31.0
    assert f.flow_lines(flow_run(Pending()), "w.log") == [
        "… still waiting for the worker to start the run (its log: w.log); `make status` shows what is running"]
    assert f.flow_lines(flow_run(Running()))[0].startswith("Flow run 'brass-dragonfly' is running: 8 stages, ingest → clean")


def test_summary_of_a_gate_blocked_run_lists_each_failed_rule():
    f = Follower(Clock())
    f.run_folder = "outputs/r"
    state = gate_blocked(["ROUGE-L ≥ min_rouge_l: 0.1420 < required 0.2500", "ROUGE-L ≥ Lead + margin: 0.1420 < required 0.2160"])
    lines, code = f.summary(flow_run(state, 760), [], "http://ui/runs/flow-run/1")
    assert code == EXIT_GATE_BLOCKED
    assert lines[0].startswith("✗ GateBlocked after 12 min 40 s: the quality gate kept this model")
    assert lines[1:3] == ["  - ROUGE-L ≥ min_rouge_l: 0.1420 < required 0.2500", "  - ROUGE-L ≥ Lead + margin: 0.1420 < required 0.2160"]
    assert "expected end" in lines[3]
    assert lines[-2:] == ["Run folder: outputs/r", "UI: http://ui/runs/flow-run/1"]


def test_summary_of_a_failed_run_shows_the_failing_tasks_error():
    f = Follower(Clock())
    error = "Task run encountered an exception ValueError: the Hub could not be reached for dataset 'x'.\nPass a local parquet/JSONL/CSV file."
    lines, code = f.summary(flow_run(Failed(message="Flow run encountered an exception."), 3),
                            [task("ingest-1", Failed(message=error), 1.0), task("clean-1", Completed(), 1.0)], "http://ui")
    assert code == EXIT_FAILED
    assert lines == ["✗ Failed after 3.0 s.", "  [1/8] ingest failed:",
                     "    ValueError: the Hub could not be reached for dataset 'x'.", "    Pass a local parquet/JSONL/CSV file.",
                     "UI: http://ui"]


def test_summary_of_a_crash_without_a_failed_task_names_the_worker_log():
    lines, code = Follower(Clock()).summary(flow_run(Crashed(message="Flow run infrastructure exited with non-zero status code -9.")),
                                            [], "http://ui", "/x/worker.log")
    assert code == EXIT_FAILED
    assert lines[1] == "  Flow run infrastructure exited with non-zero status code -9."
    assert "/x/worker.log" in lines[2]


def test_summary_of_a_completed_run():
    lines, code = Follower(Clock()).summary(flow_run(Completed(), 372), [], "http://ui")
    assert (code, lines[0]) == (EXIT_COMPLETED, "✓ Completed in 6 min 12 s: all 8 stages ran.")


class FakeClient:
    """Serves a scripted sequence of snapshots, one per poll."""

    def __init__(self, snapshots):
        self.snapshots, self.i = snapshots, 0

    def read_flow_run(self, _id):
        run = self.snapshots[min(self.i, len(self.snapshots) - 1)][0]
        return run

    def read_task_runs(self, **_):
        return self.snapshots[min(self.i, len(self.snapshots) - 1)][1]

    def read_logs(self, offset=0, **_):
        return self.snapshots[min(self.i, len(self.snapshots) - 1)][2][offset:]


def test_follow_prints_the_run_to_its_end_and_returns_its_exit_status():
    now = dt.datetime.now(dt.timezone.utc)
    logs = [log("Run folder outputs/r1 (preset cpu, base model m)", at=now - dt.timedelta(minutes=1))]
    client = FakeClient([
        (flow_run(Running()), [task("ingest-1", Running())], logs),
        (flow_run(gate_blocked(["rule one"]), 10), [task("ingest-1", Completed(), 1.0)], logs + [log("Gate blocked the model: rule one", 40, now + dt.timedelta(minutes=1))]),
    ])
    out = []

    def sleep(_):
        client.i += 1

    code = follow(client, uuid4(), "http://ui", out=out.append, sleep=sleep, clock=Clock())
    assert code == EXIT_GATE_BLOCKED
    assert out[:3] == ["Flow run 'brass-dragonfly' is running: 8 stages, ingest → clean → split → fine-tune → evaluate-gate → merge → upload → ollama-create",
                       "    Run folder outputs/r1 (preset cpu, base model m)", "▶ [1/8] ingest started"]
    assert "✓ [1/8] ingest done in 1.0 s" in out and "  ! Gate blocked the model: rule one" in out
    assert out[-2:] == ["Run folder: outputs/r1", "UI: http://ui"] and "  - rule one" in out


def test_follow_stops_watching_after_its_timeout():
    clock = Clock()
    client = FakeClient([(flow_run(Running()), [], [])])
    out = []

    def sleep(s):
        clock.now += s

    assert follow(client, uuid4(), "http://ui", out=out.append, sleep=sleep, clock=clock, timeout=5) == EXIT_TIMEOUT
    assert out[-1] == "Stopped watching after 5.0 s; the run goes on: http://ui"


def test_summary_of_a_run_that_changed_nothing():
    state = Completed(name="NothingChanged", message="Nothing changed: the served model is this run's adapter on the same base")
    lines, code = Follower(Clock()).summary(flow_run(state, 2), [], "http://ui")
    assert code == 0 and lines[0].startswith("✓ Nothing changed") and "served model is this run's adapter" in lines[0]
    assert not any("all 8 stages ran" in line for line in lines)
