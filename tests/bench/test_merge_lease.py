"""bench/merge_lease.py: one GPU lease's results merged into bench/results."""

import json
import sys

import pytest

from tests.conftest import bench_module

merge_lease = bench_module("merge_lease")
quality_sweep = sys.modules["quality_sweep"]  # imported by merge_lease, from bench/


def metrics(rouge_l: float, failed: float, penalty: float = 1.4) -> dict:
    """A quality run's metrics.json as far as the merge reads it (the stage's rule 1.4:16)."""
    checks = {"any": failed, "no_stop": 0.0, "repeats": failed}
    return {"validation": {"rouge_l": rouge_l, "checks": checks},
            "candidate": {"rouge_l": rouge_l, "ci": {"rouge_l": [rouge_l - 0.02, rouge_l + 0.02]}, "checks": checks},
            "differences": {"lead": {"rouge_l": {"diff": rouge_l - 0.22, "ci": [rouge_l - 0.24, rouge_l - 0.20]}}},
            "baselines": {"lead": {"rouge_l": 0.2241}}, "test_sha256": "a4df1feb" + "0" * 56,
            "inputs": {"evaluation": {"repeat_penalty": penalty, "repeat_last_n": 16}}}


def sweep_output(seed: int, rouge_l: float) -> dict:
    """What `quality_sweep.py run` writes for one seed: one config, decoded under one more rule."""
    stronger = quality_sweep.decoding_summary(metrics(rouge_l - 0.01, 0.01, 2.0))
    return {"card": "NVIDIA H200", "train_set": {"seed": seed, "optimizer": "adamw_torch_fused", "keep_adapter": "best"},
            "rows": [{"config": "e3-lr5e-4-r16-b16", "metrics": metrics(rouge_l, 0.03), "decoding": {"2.0:16": stronger},
                      "training": {"kept_adapter": {"from": "best"}, "global_step": 210, "train_seconds": 190.0},
                      "failed_titles": [{"id": "a1", "failed_checks": ["repeats"], "raw": "指尖陀螺 網友：那不是指尖陀螺"}],
                      "test_titles": [{"id": "a1", "raw": "指尖陀螺 網友：那不是指尖陀螺", "stopped": True}]}]}


@pytest.fixture
def lease(tmp_path):
    results, into = tmp_path / "results", tmp_path / "bench-results"
    results.mkdir()
    (into / "profiles").mkdir(parents=True)
    stage = {"case": "270m-stage-4bit-b16", "model": "gemma3-270m", "raw_case": "270m-raw-unsloth-16bit", "full_pts_run": False}
    whole = {"case": "270m-stage-16bit-b16", "model": "gemma3-270m", "full_pts_run": True}
    (results / "train_w.json").write_text(json.dumps({"rows": [{"case": "270m-raw-unsloth-16bit"}, stage]}))
    (results / "train_whole.json").write_text(json.dumps({"rows": [{"case": "270m-raw-unsloth-16bit"}, whole]}))
    for seed, rl in ((42, 0.28), (43, 0.29)):
        out = sweep_output(seed, rl)
        if seed == 43:  # trained with the stop token weighted 3 (the default since 2026-12-01), which its record says
            out["rows"][0]["training"]["stop_token_weight"] = {"weight": 3.0, "loss_path": "fused LM head", "weighted_steps": 210}
        (results / f"quality_window_seed{seed}.json").write_text(json.dumps(out))
    (results / "queue.log").write_text("22:00 queue start\n22:20 queue done\n")
    (into / "train_throughput.json").write_text(json.dumps({"description": "d", "rows": [{"case": "old"}]}))
    (into / "quality_training.json").write_text(json.dumps({"description": "d", "summary": [{"seed": 1}], "runs": []}))
    return results, into


def test_a_lease_merges_its_rows_runs_summaries_rules_and_log(lease):
    results, into = lease
    changed = merge_lease.merge("2026-12-01w", results, "2026-12-01 10:00 UTC, 2 x NVIDIA H200", ["train_w.json", "train_whole.json:2026-12-01w2"],
                                ["quality_window_seed:1"], into)
    rows = json.loads((into / "train_throughput.json").read_text())["rows"]
    assert [r["case"] for r in rows] == ["old", "270m-raw-unsloth-16bit@2026-12-01w", "270m-stage-4bit-b16@2026-12-01w"]
    assert rows[2]["raw_case"] == "270m-raw-unsloth-16bit@2026-12-01w"  # compared within its own invocation
    assert rows[2]["lease"] == "2026-12-01 10:00 UTC, 2 x NVIDIA H200"  # when, where and which queue measured it
    # A whole run goes beside the earlier whole runs, with the raw loop of its invocation.
    assert [r["case"] for r in json.loads((into / "train_full_pts.json").read_text())["rows"]] == [
        "270m-raw-unsloth-16bit@2026-12-01w2", "270m-stage-16bit-b16@2026-12-01w2"]
    runs = json.loads((into / "quality_training_2026-12-01w.json").read_text())["runs"]
    assert [(r["seed"], r["gpu_index"], r["concurrent_trainings_on_gpu"]) for r in runs] == [(42, 1, 2), (43, 1, 2)]
    assert runs[0]["training"] == "QLoRA, Unsloth's compile by the default rule, optimizer adamw_torch_fused, keep_adapter best"
    assert runs[0]["decoding"].endswith("decoded again under 2.0:16 (row `decoding`)")
    assert runs[0]["split"] == "quality-split (test sha256 a4df1feb..., Lead ROUGE-L 0.2241)"
    text = (into / "quality_training_2026-12-01w.json").read_text()
    assert '{"id": "a1", "raw": "指尖陀螺 網友：那不是指尖陀螺", "stopped": true}' in text  # a title on one line
    summary = json.loads((into / "quality_training.json").read_text())["summary"]
    assert [s["seed"] for s in summary] == [1, 42, 43]
    assert summary[1]["test_failures"] == {"repeats": 1} and summary[1]["lease"] == "2026-12-01w"
    assert summary[1]["decoded_under_more_rules"] == ["2.0:16"] and summary[1]["quantization"] == "4bit"
    assert [s.get("stop_token_weight") for s in summary] == [None, 1.0, 3.0]  # what trained, not what the train set named
    rules = json.loads((into / "quality_rules_2026-12-01w.json").read_text())
    assert set(rules["by_rule"]) == {"1.4:16", "2.0:16"} and rules["chosen_on_validation"] == "2.0:16"
    assert rules["results"][0] == "bench/results/quality_training_2026-12-01w.json (runs[].output, quality_window_seed, seed 42)"
    assert (into / "profiles" / "lease-2026-12-01w-queue.log").read_text().endswith("queue done\n")
    assert changed["quality_training.json"] == "2 summaries"


def test_a_case_merged_before_or_runs_merged_before_stop_the_merge_before_it_writes(lease):
    results, into = lease
    merge_lease.merge("2026-12-01w", results, "w", ["train_w.json"], [], into)
    before = (into / "train_throughput.json").read_text()
    with pytest.raises(SystemExit, match="already has case '270m-raw-unsloth-16bit@2026-12-01w'"):
        merge_lease.merge("2026-12-01w", results, "w", ["train_w.json"], ["quality_window_seed:1"], into)
    assert (into / "train_throughput.json").read_text() == before
    assert not (into / "quality_training_2026-12-01w.json").exists()  # nothing half-merged
    merge_lease.merge("2026-12-01w", results, "w", ["train_w.json:2026-12-01w2"], ["quality_window_seed:1"], into)
    with pytest.raises(SystemExit, match="merged already"):
        merge_lease.merge("2026-12-01w", results, "w", [], ["quality_window_seed:1"], into)
    with pytest.raises(SystemExit, match="no quality_rules_seed<seed>.json"):
        merge_lease.merge("2026-12-01x", results, "w", [], ["quality_rules_seed:0"], into)


def test_two_qseeds_calls_under_one_prefix_merge_apart_by_their_seeds(lease):
    """One prefix trained on two GPUs (seeds 42 on GPU 0, 43 on GPU 1): each call its GPU, its count and its rules file."""
    results, into = lease
    changed = merge_lease.merge("2026-12-01x3", results, "x", [], ["quality_window_seed:0:42-42", "quality_window_seed:1:43-43"], into)
    runs = json.loads((into / "quality_training_2026-12-01x3.json").read_text())["runs"]
    assert [(r["seed"], r["gpu_index"], r["concurrent_trainings_on_gpu"]) for r in runs] == [(42, 0, 1), (43, 1, 1)]
    assert {"quality_rules_2026-12-01x3-window-42-42.json", "quality_rules_2026-12-01x3-window-43-43.json"} <= set(changed)
    rules = json.loads((into / "quality_rules_2026-12-01x3-window-43-43.json").read_text())
    assert rules["by_rule"]["1.4:16"]["adapters"] == 1
    with pytest.raises(SystemExit, match="no quality_window_seed<seed>.json for seeds 50-51"):
        merge_lease.merge("2026-12-01x4", results, "x", [], ["quality_window_seed:0:50-51"], into)
    with pytest.raises(SystemExit, match="FIRST-LAST or a comma list"):
        merge_lease.merge("2026-12-01x4", results, "x", [], ["quality_window_seed:0:42-x"], into)
    with pytest.raises(SystemExit, match="twice"):
        merge_lease.merge("2026-12-01x4", results, "x", [], ["quality_window_seed:0", "quality_window_seed:1"], into)


def test_the_seeds_of_a_call_are_a_range_single_seeds_or_both():
    """A call whose seeds are not one range (lease y: the six of fifteen that did not run out of GPU memory)."""
    assert merge_lease.seed_set("p", "84,88,90-92") == {84, 88, 90, 91, 92}
    assert merge_lease.seed_set("p", "62-71") == set(range(62, 72))
    for bad in ("84,", "a-b", "84;88"):
        with pytest.raises(SystemExit, match="84,88,90-92"):
            merge_lease.seed_set("p", bad)


def test_a_lease_merged_in_several_calls_keeps_its_queue_log_once(lease):
    results, into = lease
    merge_lease.merge("2026-12-01y", results, "y", [], ["quality_window_seed:1:42-42"], into)
    changed = merge_lease.merge("2026-12-01y2", results, "y", [], ["quality_window_seed:1:43-43"], into)
    assert changed["profiles/lease-2026-12-01y-queue.log"] == "already holds this queue.log"
    assert sorted(f.name for f in (into / "profiles").iterdir()) == ["lease-2026-12-01y-queue.log"]
