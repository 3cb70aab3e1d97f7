"""Throughput and memory figures the fine-tune worker reports (titlegen.train_progress)."""

from titlegen.train_progress import memory_split, steady_rate


def test_memory_split_separates_training_from_validation_and_finds_the_biggest_step():
    # (step, seconds, non-padding tokens seen so far): the longest rows come first (group_by_length).
    marks = [(1, 0.0, 8000), (2, 1.0, 12000), (3, 2.0, 16500), (4, 3.0, 19000)]
    split = memory_split(marks, {"train": 13 * 2**30, "eval": 9 * 2**29})
    assert split == {"peak_train_step_gib": 13.0, "peak_validation_gib": 4.5, "max_step_tokens": 4500}


def test_memory_split_on_a_run_without_validation_or_steps():
    assert memory_split([], {"train": 0, "eval": 0}) == {"peak_train_step_gib": None, "peak_validation_gib": None, "max_step_tokens": None}


def test_steady_rate_skips_the_first_steps():
    marks = [(s, float(s), 1000 * s) for s in range(1, 21)]
    marks[0] = (1, -40.0, 1000)  # a slow first step (compilation) stays out of the figure
    assert steady_rate(marks) == {"steady_steps_per_second": 1.0, "steady_tokens_per_second": 1000.0}


def test_a_validation_pass_or_a_checkpoint_between_steps_stays_out_of_the_step_marks(monkeypatch):
    # A whole run validates each epoch and saves checkpoints: the rate is the training steps' rate.
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    import titlegen.train_progress as tp

    clock = iter([11.0, 11.0, 12.0, 12.0, 42.0, 43.0, 43.0, 50.0, 51.0, 51.0]).__next__
    monkeypatch.setattr(tp.time, "perf_counter", clock)
    callback = tp.make_callback(SimpleNamespace(checkpoint_dir="/nonexistent", train=SimpleNamespace(keep_adapter="best")))
    args, state, control = SimpleNamespace(output_dir="/nonexistent"), TrainerState(max_steps=3), TrainerControl()
    callback.on_step_begin(args, state, control)  # step 1 ends at 11 (marked 11), then no other work
    state.global_step = 1
    callback.on_step_end(args, state, control)
    callback.on_step_begin(args, state, control)  # step 2 ends at 12, then a 30 s validation pass
    state.global_step = 2
    callback.on_step_end(args, state, control)
    callback.on_evaluate(args, state, control, metrics=None)
    callback.on_step_begin(args, state, control)  # begins at 42: 30 s paused
    state.global_step = 3
    callback.on_step_end(args, state, control)  # ends at 43, marked 13
    callback.on_save(args, state, control)  # a checkpoint: 7 s more
    callback.on_step_begin(args, state, control)  # begins at 50
    state.global_step = 4
    callback.on_step_end(args, state, control)  # ends at 51, marked 14
    assert [m[1] for m in callback.marks] == [11.0, 12.0, 13.0, 14.0]


def test_a_profile_says_how_busy_the_gpu_kept_and_lists_the_operators(tmp_path):
    import torch

    from titlegen.train_progress import start_profiler, write_profile

    prof = start_profiler()
    x = torch.randn(64, 64)
    for _ in range(5):
        x = x @ x.T / 64
    write_profile(prof, tmp_path / "profile.txt")
    text = (tmp_path / "profile.txt").read_text()
    first = text.splitlines()[0]
    # On CPU no kernel ran on a GPU: 0 % busy, and the window's wall time is there.
    assert first.startswith("profiled window: ") and first.endswith("s of GPU kernels (0 % busy)")
    assert "aten::mm" in text
    # The operators again by input shape: the product's [64, 64] operands name it.
    by_shape = text.split("by input shapes:")[1]
    assert "aten::mm" in by_shape and "[[64, 64], [64, 64]]" in by_shape


def _profiled_run(monkeypatch, tmp_path, window: str, max_steps: int, stop_after: int | None = None):
    """Drive the worker's callback as the trainer does (on_step_begin before step s, on_step_end after it, on_train_end
    once training stops) through `max_steps` optimizer steps, or `stop_after` (an early stop), with
    TITLEGEN_PROFILE_STEPS=`window`."""
    from types import SimpleNamespace

    import torch
    from transformers import TrainerControl, TrainerState

    from titlegen.train_progress import make_callback

    monkeypatch.setenv("TITLEGEN_PROFILE_STEPS", window)
    callback = make_callback(SimpleNamespace(checkpoint_dir=str(tmp_path)))
    args, state, control = SimpleNamespace(), TrainerState(max_steps=max_steps), TrainerControl()
    x = torch.randn(32, 32)
    for _ in range(stop_after or max_steps):
        callback.on_step_begin(args, state, control)
        x = x @ x.T / 32  # the step's work
        state.global_step += 1
        callback.on_step_end(args, state, control)
    callback.on_train_end(args, state, control)
    return callback


def test_a_profile_window_ending_at_the_last_step_is_written(monkeypatch, tmp_path):
    # The bench's +profile cases: steps A+1..B profiled, B = max_steps; the steps before the window are measured.
    callback = _profiled_run(monkeypatch, tmp_path, "4:7", max_steps=7)
    assert (tmp_path / "profile.txt").read_text().startswith("profiled window: ")
    assert [m[0] for m in callback.marks] == [1, 2, 3, 4] and callback.profiler is False


def test_a_profile_window_cut_by_the_end_of_training_is_still_written(monkeypatch, tmp_path):
    # Training stops (max_steps, the last epoch) after step 6 of a window 5..8: the two profiled steps are written.
    callback = _profiled_run(monkeypatch, tmp_path, "4:8", max_steps=6)
    text = (tmp_path / "profile.txt").read_text()
    assert text.startswith("profiled window: ") and "aten::mm" in text
    assert callback.profiler is False


def test_a_profile_window_cut_by_an_early_stop_is_written_when_training_ends(monkeypatch, tmp_path):
    callback = _profiled_run(monkeypatch, tmp_path, "4:8", max_steps=20, stop_after=6)
    assert (tmp_path / "profile.txt").read_text().startswith("profiled window: ")
    assert callback.profiler is False
