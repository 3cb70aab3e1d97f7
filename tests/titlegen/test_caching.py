"""`StageCache`, the one cache of the stages: what code a key covers, and fine-tune and evaluate
cached through real Prefect (a temporary API; the stages' work is stubbed, their own tests run it).

A second identical call is a hit; a deleted output, an input file changed in place (the split, the
champion's metrics) is a miss; the flow passes no cache options.
"""

import json
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from titlegen.caching import code_modules
from titlegen.params import EvalParams, TrainParams
from titlegen.runs import atomic_dir, atomic_write_json

ROOT = Path(__file__).resolve().parents[2]


def test_the_key_covers_every_module_a_stage_runs():
    # Imported at module level, inside functions, or started by name as a worker process.
    assert {"titlegen.tasks.clean", "titlegen.neardup"} <= set(code_modules("titlegen.tasks.clean"))
    assert {"titlegen.train_worker", "titlegen.prompt", "titlegen.models"} <= set(code_modules("titlegen.tasks.finetune"))
    assert {"titlegen.generate", "titlegen.metrics"} <= set(code_modules("titlegen.tasks.evaluate"))
    assert "titlegen.tasks.merge" not in code_modules("titlegen.tasks.clean")


def test_an_unknown_module_is_named():
    with pytest.raises(ModuleNotFoundError, match="titlegen.tasks.nope"):
        code_modules("titlegen.tasks.nope")


def test_the_flow_passes_no_cache_options():
    source = (ROOT / "flows" / "titlegen.py").read_text(encoding="utf-8")
    assert "refresh_cache" not in source and "cache_key_fn" not in source and "cache_policy" not in source


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("results")}):
            yield


@pytest.fixture
def split_dir(tmp_path) -> Path:
    d = tmp_path / "split"
    d.mkdir()
    for name in ("train", "validation", "test"):
        (d / f"{name}.jsonl").write_text(json.dumps({"input": "內文", "target": "標題"}, ensure_ascii=False) + "\n")
    return d


def test_fine_tune_hits_until_the_adapter_or_the_data_change(prefect_api, monkeypatch, split_dir, tmp_path):
    import titlegen.tasks.finetune as stage

    calls = []

    def fake_finetune(split_dir, run_dir, base_model, **kwargs):
        calls.append(run_dir)
        adapter = Path(run_dir) / "base-lora"
        with atomic_dir(adapter) as tmp:
            atomic_write_json(tmp / "training.json", {"config_hash": "x"})
        return {"adapter_dir": str(adapter), "base_model_dir": base_model, "training_json": str(adapter / "training.json")}

    monkeypatch.setattr(stage, "finetune", fake_finetune)
    run = tmp_path / "run"

    @flow
    def once() -> str:
        return stage.finetune_task(split_dir=str(split_dir), run_dir=str(run), base_model="base", epochs=1.0, max_steps=2,
                                   learning_rate=1e-4, lora_rank=4, max_title_chars=40, train=TrainParams(),
                                   return_state=True).name

    assert once() == "Completed"
    assert once() == "Cached" and len(calls) == 1
    (run / "base-lora" / ".complete").unlink()  # the adapter folder is gone or half there: train again
    assert once() == "Completed"
    (split_dir / "train.jsonl").write_text(json.dumps({"input": "新內文", "target": "新標題"}, ensure_ascii=False) + "\n")
    assert once() == "Completed"
    assert once() == "Cached" and len(calls) == 3


def test_evaluate_hits_until_the_champion_or_the_output_change(prefect_api, monkeypatch, split_dir, tmp_path):
    import titlegen.tasks.evaluate as stage

    calls = []

    def fake_evaluate(adapter_dir, base_model_dir, split_dir, run_dir, *args, **kwargs):
        calls.append(run_dir)
        with atomic_dir(Path(run_dir) / "eval") as tmp:
            atomic_write_json(tmp / "metrics.json", {"n": 1})
        return {"metrics_path": str(Path(run_dir) / "eval" / "metrics.json")}

    monkeypatch.setattr(stage, "evaluate", fake_evaluate)
    champion = atomic_write_json(tmp_path / "champion.json", {"candidate": {"rouge_l": 0.3}})
    run = tmp_path / "run"

    @flow
    def once() -> str:
        return stage.evaluate_task(adapter_dir=None, base_model_dir="base", split_dir=str(split_dir), run_dir=str(run),
                                   max_title_chars=40, min_title_chars=4,
                                   evaluation=EvalParams(batch_size=4, champion_metrics=str(champion)), return_state=True).name

    assert once() == "Completed"
    assert once() == "Cached"
    atomic_write_json(champion, {"candidate": {"rouge_l": 0.4}})  # same path, a new champion
    assert once() == "Completed"
    (run / "eval" / "metrics.json").unlink()
    assert once() == "Completed"
    assert once() == "Cached" and len(calls) == 3
