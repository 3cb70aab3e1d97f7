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
