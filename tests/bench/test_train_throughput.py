"""bench/train_throughput.py: what a case cut at its time limit still reports (#13)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import bench_module
from titlegen.train_progress import PROGRESS_PREFIX

train_throughput = bench_module("train_throughput")


def _line(event: str, **fields) -> str:
    return PROGRESS_PREFIX + json.dumps({"event": event, **fields})


def test_a_case_cut_after_its_profile_keeps_its_rate_from_the_log_and_its_profile(tmp_path):
    # 12 measured steps of 1 s and 1,000 tokens each, then a profiled step of 40 s, then the kill (writing a checkpoint).
    lines = [_line("start", t=0.0)] + [_line("log", t=10.0 + s, step=s, num_input_tokens_seen=1000 * s) for s in range(1, 13)]
    lines.append(_line("log", t=62.0, step=13, num_input_tokens_seen=13_000))
    (tmp_path / "log.txt").write_text("\n".join(lines) + "\nUnsloth: saving checkpoint-13\n")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "profile.txt").write_text("profiled window: 40.000 s wall, 30.000 s of GPU kernels (75 % busy)\n")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    row = train_throughput.finish_case(proc, tmp_path, {"case": "x+profile", "measured_steps": 12}, started=0.0, timeout=0.0)
    assert row["exit"] == "timeout" and "error_tail" in row
    # The rate of the measured steps only (the worker's rule: from step 5 of 12 to the last), not the profiled one.
    assert row["steady_from_log"] is True
    assert row["steady_tokens_per_second"] == 1000.0 and row["steady_steps_per_second"] == 1.0
    assert row["profile_top"][0].startswith("profiled window: 40.000 s wall")


def test_a_rows_stdout_line_shows_its_profile_headline_but_not_the_whole_profile():
    row = {"case": "x+profile", "exit": 0, "profile_top": ["profiled window: 4.528 s wall, 3.486 s of GPU kernels (77 % busy)", "", "---"],
           "libraries": {"torch": "2"}, "step_seconds": [1.0], "step_tokens": [9000]}
    printed = train_throughput.printed_row(row)
    assert printed == {"case": "x+profile", "exit": 0, "profile": "profiled window: 4.528 s wall, 3.486 s of GPU kernels (77 % busy)"}
    assert "profile" not in train_throughput.printed_row({"case": "x", "exit": 0})


def test_a_finished_case_row_carries_its_steps_and_its_rate_by_half(tmp_path):
    (tmp_path / "log.txt").write_text("")
    (tmp_path / "adapter").mkdir()
    result = {"device": "NVIDIA H200", "global_step": 9, "steady_tokens_per_second": 80000.0,
              "step_seconds": [6.4, 0.2, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1], "step_tokens": [9000] * 8}
    (tmp_path / "adapter" / "worker_result.json").write_text(json.dumps(result))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    row = train_throughput.finish_case(proc, tmp_path, {"case": "270m-stage-4bit-b16"}, started=0.0, timeout=60.0)
    assert row["exit"] == 0 and row["step_tokens"] == [9000] * 8
    assert row["tokens_per_second_by_half"] == [5217.4, 90000.0]  # the 6.4 s step (a new width) in the first half
    assert "step_tokens" not in train_throughput.printed_row(row)


def test_the_rate_by_half_splits_a_warm_up_from_the_steady_steps():
    # The sixteenth lease's 270M stage: steps of 0.2 s early, 0.1 s once every batch width had been seen.
    seconds = [0.2, 0.1, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1]
    tokens = [9000, 9000, 8000, 10000, 9000, 9000, 9000, 9000]
    assert train_throughput.rate_by_half(seconds, tokens) == {"tokens_per_second_by_half": [51428.6, 90000.0]}
    assert train_throughput.rate_by_half([0.1, 0.1], [9000, 9000]) == {}  # too few steps to halve


def test_a_stage_case_run_before_the_raw_loop_still_gets_its_ratio():
    # The fifteenth lease's plan runs the 270M's stage case first in one invocation, then the raw loop.
    rows = [{"case": "270m-stage-4bit-b16+fusedadam", "model": "gemma3-270m", "steady_tokens_per_second": 45000.0},
            {"case": "e4b-stage-4bit-b8", "model": "gemma3n-e4b", "steady_tokens_per_second": 4000.0},
            {"case": "270m-raw-unsloth-16bit", "model": "gemma3-270m", "steady_tokens_per_second": 60000.0}]
    train_throughput.add_ratios(rows)
    assert rows[0]["ratio_to_raw"] == 0.75 and rows[0]["raw_case"] == "270m-raw-unsloth-16bit"
    assert "ratio_to_raw" not in rows[1]  # no raw loop of its model in this invocation
    assert "ratio_to_raw" not in rows[2]  # the raw loop itself


def test_the_bare_loop_steps_the_stages_own_batches_and_counts_their_non_padding_tokens(tiny_gemma3_dir, tmp_path):
    # On CPU the bare loop runs the same code as on the GPU (the worker's model, dataloader and optimizer), in float32.
    from titlegen.records import TrainWorkerConfig
    from titlegen.runs import write_jsonl

    article = "行政院今天通過明年度總預算案，總歲出創新高。社福與國防經費增幅最大，將送立法院審議。"
    rows = [{"content": article * (1 + i % 3), "title": f"總預算案創新高{i}"} for i in range(6)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    config = {"base_model_dir": str(tiny_gemma3_dir), "train_file": str(tmp_path / "train.jsonl"), "output_dir": str(tmp_path / "out"),
              "checkpoint_dir": str(tmp_path / "ckpt"), "max_title_chars": 40, "epochs": 1.0, "learning_rate": 1e-3, "lora_rank": 4,
              "max_train_rows": 6, "device": "cpu",
              "train": {"per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_seq_length": 256, "optimizer": "adamw_torch",
                        "eval_every_epoch": False}}
    TrainWorkerConfig.model_validate(config)  # the bench writes what the worker reads
    (tmp_path / "config.json").write_text(json.dumps(config))
    train_throughput.bare_loop(str(tmp_path / "config.json"), 5, str(tmp_path / "bare.json"))
    row = json.loads((tmp_path / "bare.json").read_text())
    assert row["global_step"] == 5 and row["worker_engine"] == "transformers" and row["device"] == "cpu" and row["autocast"] is False
    # 5 batches of 2 rows from 6 rows: the dataloader cycled; padding is not counted.
    assert 0 < row["tokens_seen"] < row["padded_tokens"]
    assert row["steady_tokens_per_second"] > 0 and row["steady_steps_per_second"] > 0


def test_a_bare_case_runs_the_config_of_its_stage_case_with_the_suffixes():
    assert train_throughput.split_case("270m-bare-4bit-b16+fusedadam") == ("270m-bare-4bit-b16", "fusedadam")
    assert all(stage in train_throughput.CASES for stage in train_throughput.BARE_CASES.values())
    assert train_throughput.split_case("270m-bare-4bit-b16+noautocast") == ("270m-bare-4bit-b16", "noautocast")
    assert train_throughput.bare_stage("270m-bare-4bit-b16+noautocast+fusedadam") == "270m-stage-4bit-b16+fusedadam"
    with pytest.raises(SystemExit, match="bare loops only"):
        train_throughput.split_case("270m-stage-4bit-b16+noautocast")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda(), reason="checks the plumbing through the worker's no-GPU stop")
def test_a_bare_case_writes_its_stage_config_and_runs_the_bare_loop_in_its_own_process(tmp_path):
    # Without a GPU the child stops at once with the worker's own message: the plumbing (config, command line, env,
    # row) is what this checks; the loop itself is checked on CPU above.
    row = train_throughput.run_bare_case("270m-bare-4bit-b16+noautocast+fusedadam", tmp_path / "data", tmp_path / "models", tmp_path / "work", 120)
    config = json.loads((tmp_path / "work" / row["case"] / "config.json").read_text())
    assert row["stage_case"] == "270m-stage-4bit-b16+fusedadam" and row["model"] == "gemma3-270m"
    assert config["train"]["optimizer"] == "adamw_torch_fused" and config["train"]["per_device_batch_size"] == 16
    assert row["exit"] != 0 and any("no CUDA device" in line for line in row["error_tail"])
