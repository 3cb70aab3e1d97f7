"""The `titlegen` flow's gate branch, run through `flows/titlegen.py` itself on a test Prefect API.

Every stage before the gate is replaced by a stand-in task that writes nothing heavy (the stages
have their own tests); the real `gate_task` reads a real metrics.json. A failing gate ends the flow
in `GateBlocked` and merge, upload and ollama-create never run; a passing gate runs all three.
"""

import json
from pathlib import Path

import pytest
from prefect import task

from titlegen.runs import atomic_write_json

from tests.tasks.test_evaluate import _metrics


@pytest.fixture
def stubbed_flow(monkeypatch, tmp_path):
    """`flows/titlegen.py` with the stages before the gate stubbed; yields the list of stages run after it."""
    import titlegen.flows.titlegen as module

    ran: list[str] = []
    metrics = {**_metrics(), "tokenization": "character", "rouge_averaging": "mean", "bleu_averaging": "corpus",
               "differences": {}, "validation": None, "predictions_path": str(tmp_path / "none.jsonl")}

    @task
    def ingest(dataset, revision, columns, out, stale=None):
        return {"path": str(tmp_path / "raw.jsonl"), "provenance": {"dataset": dataset}}

    @task
    def clean(path, columns, params, out):
        return {"path": path}

    @task
    def split(path, params, out):
        return {"dir": str(tmp_path / "split"), "sizes": {"train": 1}}

    @task
    def finetune(**kwargs):
        return {"adapter_dir": str(tmp_path / "adapter"), "base_model_dir": str(tmp_path / "base")}

    @task
    def evaluate(**kwargs):
        path = atomic_write_json(Path(kwargs["run_dir"]) / "eval" / "metrics.json", metrics)
        return {"metrics_path": str(path)}

    def after_gate(name: str, result: dict):
        @task(name=name)
        def stage(**kwargs):
            ran.append(name)
            return result

        return stage

    monkeypatch.setattr(module, "check_base_model", lambda base_model: None)
    for name, stub in {"ingest_task": ingest, "clean_task": clean, "split_task": split, "finetune_task": finetune,
                       "evaluate_task": evaluate}.items():
        monkeypatch.setattr(module, name, stub)
    monkeypatch.setattr(module, "merge_task", after_gate("merge", {"final_hf": str(tmp_path / "final-hf"), "gguf": {}}))
    monkeypatch.setattr(module, "upload_task", after_gate("upload", {"dry_run": True}))
    monkeypatch.setattr(module, "ollama_create_task", after_gate("ollama-create", {"model": "titlegen"}))
    # No champion is served yet (the champion stages have their own tests, tests/flows/test_retraining.py).
    monkeypatch.setattr(module, "find_champion_task", task(name="find-champion")(lambda *a, **k: None))
    monkeypatch.setattr(module, "nothing_changed_task",
                        task(name="compare-with-champion")(lambda *a, **k: {"nothing_changed": False, "reason": "no champion"}))
    monkeypatch.setattr(module, "record_champion_task", task(name="record-champion")(lambda *a, **k: None))
    return module.titlegen, ran


def test_failing_gate_ends_the_flow_in_gate_blocked_and_nothing_after_it_runs(prefect_api, stubbed_flow, tmp_path):
    from prefect.artifacts import Artifact

    titlegen, ran = stubbed_flow
    state = titlegen(dataset=str(tmp_path / "data"), run_name="blocked", output_root=str(tmp_path / "out"),
                     min_rouge_l=0.9, return_state=True)
    assert state.is_failed() and state.name == "GateBlocked"
    assert "ROUGE-L ≥ min_rouge_l: 0.3000 < required 0.9000" in state.message
    assert ran == []
    gate = json.loads((tmp_path / "out" / "blocked" / "eval" / "gate.json").read_text(encoding="utf-8"))
    assert gate["passed"] is False
    report = Artifact.get("titlegen-eval-report")
    assert report is not None and "BLOCKED (GateBlocked)" in report.data


def test_passing_gate_runs_merge_upload_and_ollama_create(prefect_api, stubbed_flow, tmp_path):
    titlegen, ran = stubbed_flow
    state = titlegen(dataset=str(tmp_path / "data"), run_name="passed", output_root=str(tmp_path / "out"),
                     min_rouge_l=0.25, return_state=True)
    assert state.is_completed(), state.message
    assert ran == ["merge", "upload", "ollama-create"]
