"""Scheduled retraining through the real `titlegen` flow (Prefect test server, CPU, a tiny random Gemma 3).

All runs share one run folder, as a weekly schedule's runs do (the folder's name comes from the
parameters, not the data). Run A trains a champion and publishes it (merge, GGUF, dry-run upload, a
fake Ollama), which records it. Run A again on unchanged inputs changes nothing: no stage but the
cache hits runs, no Ollama request creates anything, the state is `NothingChanged`. Run B trains a
worse challenger on purpose (one step, negligible learning rate) over A's adapter in that folder:
the evaluate stage regenerates the champion's titles on B's test split from the champion's kept
adapter copy, and the gate blocks B.

Every title of the dataset is the same phrase, so a few optimizer steps teach the tiny model to write
it (ROUGE-L near 1) while one step leaves it writing noise (ROUGE-L near 0): the ordering the gate must
see, measured rather than assumed.
"""

import json
import random
import re
from pathlib import Path

import pytest

from tests.ollama_fake import fake_ollama  # noqa: F401  (fixture)

TITLE = "今日新聞重點"
CJK = "的一是在不了有和人這中大為上個國我以要他時來用們生到作地於出就分對成會可主發年動同工也能下過子說產種面而方後多定行學法所民得經十三之進著等部度家電力裡如水化高自二理起小物現實加量都兩體制機當使點從業本去把性好應開它合還因由其些然前外天政四日那社義事平形相全表間樣與關各重新線內數正心反你明看原又麼利比或但質氣第向道命此變條只沒結解問意建月公無系軍很情者最立代想已通並提直題黨程展五果料象員革位入常文總次品式活設及管特件長求老頭基資邊流路級少圖山統接知較將組見計別她手角期根論運農指幾九區強放決西被幹做必戰先回則任取據處隊南給色光門即保治北造百規熱領七海口東導器壓志世金增爭濟階油思術極交受聯什認六共權收證改清己美再採轉更單風切打白教速花帶安場身車例真務具萬每目至達走積示議聲報鬥完類八離華名確才科張信馬節話米整空元況今集溫傳土許步群廣石記需段研界拉林律叫且究觀越織裝影算低持音眾書布复容兒須際商非驗連斷深難近礦千週委素技備半辦青省列習響約支般史感勞便團往酸歷市克何除消構府稱太準精值號率族維劃選標寫存候毛親快效斯院查江型眼王按格養易置派層片始卻專狀育廠京識適屬圓包火住調滿縣局照參紅細引聽該鐵價嚴"


def write_dataset(path: Path, rows: int, seed: int) -> Path:
    """`rows` distinct articles (random CJK sentences, over 80 characters), every one titled TITLE."""
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        sentences = ["".join(rng.choice(CJK) for _ in range(rng.randint(18, 28))) + "。" for _ in range(4)]
        lines.append(json.dumps({"content": "".join(sentences), "title": TITLE}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def flow_params(dataset: Path, base: Path, out: Path, host: str, max_steps: int) -> dict:
    """Small, fast settings: 32 training rows, 4 test rows, a short title budget, one GGUF, relaxed absolute gates."""
    return {
        "dataset": str(dataset), "preset": "cpu", "base_model": str(base), "output_root": str(out),
        "epochs": 1.0, "max_steps": max_steps, "learning_rate": 1e-2, "lora_rank": 8, "min_rouge_l": 0.0,
        "ollama_model": "tg-retrain", "run_name": "weekly",
        "clean": {"min_title_chars": 4, "max_title_chars": 12},
        "split": {"min_eval_rows": 2},
        "train": {"per_device_batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 160,
                  "warmup_steps": 0, "gradient_checkpointing": False, "checkpoint_steps": 50, "logging_steps": 5,
                  "max_validation_rows": 2, "eval_every_epoch": False},
        "evaluation": {"batch_size": 4, "max_new_tokens": 10, "bootstrap_samples": 100, "run_base_baseline": False,
                       "score_validation": False, "report_samples": 2},
        "gate": {"margin_over_lead": -1.0, "max_check_failure_rate": 1.0, "missing_baseline": "skip"},
        "publish": {"gguf_types": ["f16"], "verify_gguf": False, "verify_articles": 1},
        "ollama": {"host": host, "gguf_type": "f16", "smoke_articles": 1, "latency_requests": 1,
                   "max_p50_ms": 60000.0, "max_p95_ms": 60000.0},
    }


def _task_runs(flow_run_id) -> dict[str, str]:
    """{task name: final state name} of one flow run, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {re.sub(r"-[0-9a-f]{3}$", "", r.name): r.state.name for r in runs}


@pytest.mark.slow
def test_retraining_keeps_the_better_model_and_does_nothing_when_nothing_changed(tiny_gemma3_dir, fake_ollama, prefect_api, tmp_path, monkeypatch):  # noqa: F811
    from prefect.variables import Variable

    from titlegen.champion import champion_key
    from titlegen.flows.titlegen import titlegen

    for var in ("HF_TOKEN", "HF_ORG", "HF_REPO"):  # the upload is a dry run
        monkeypatch.delenv(var, raising=False)
    data = write_dataset(tmp_path / "news.jsonl", 40, seed=1)
    params = flow_params(data, tiny_gemma3_dir, tmp_path / "outputs", fake_ollama.url, max_steps=8)
    key = champion_key("tg-retrain")
    # Run A: no champion yet; gated on the thresholds, published, recorded as the champion.
    a = titlegen(**params, return_state=True)
    assert a.is_completed(), a.message
    out_a = a.result()
    champion = Variable.get(key)
    assert champion["ollama"]["digest"] == fake_ollama.models["tg-retrain:latest"]
    assert champion["run_dir"] == out_a["run_dir"] and champion["adapter_sha256"]
    metrics_a = json.loads((Path(out_a["run_dir"]) / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics_a["champion"]["status"] == "none"
    gate_a = json.loads((Path(out_a["run_dir"]) / "eval" / "gate.json").read_text(encoding="utf-8"))
    assert any("no champion is recorded" in n for n in gate_a["notes"])
    print("A", metrics_a["candidate"]["rouge_l"])

    # Run A again, unchanged data, code and parameters: every stage a cache hit, nothing published.
    created = len(fake_ollama.bodies("POST", "/api/create"))
    adapter_stamp = (Path(out_a["adapter_dir"]) / "training.json").stat().st_mtime_ns
    again = titlegen(**params, return_state=True)
    assert again.is_completed() and again.name == "NothingChanged", again.message
    assert again.message.startswith("Nothing changed")
    ran = _task_runs(again.state_details.flow_run_id)
    assert {ran[t] for t in ("ingest", "clean", "split", "fine-tune")} == {"Cached"}, ran
    assert not {"evaluate", "gate", "merge", "merge-export", "upload", "ollama-create", "record-champion"} & set(ran), ran
    assert len(fake_ollama.bodies("POST", "/api/create")) == created
    assert (Path(out_a["adapter_dir"]) / "training.json").stat().st_mtime_ns == adapter_stamp
    assert Variable.get(key) == champion

    # Run B: a challenger made worse on purpose (one step at a negligible learning rate) is blocked.
    b = titlegen(**{**params, "max_steps": 1, "learning_rate": 1e-6}, return_state=True)
    assert b.is_failed() and b.name == "GateBlocked", b.message
    assert "ROUGE-L ≥ champion + gate.margin_over_champion" in b.message
    metrics_path = Path(out_a["run_dir"]) / "eval" / "metrics.json"
    metrics_b = json.loads(metrics_path.read_text(encoding="utf-8"))
    print("B", metrics_b["candidate"]["rouge_l"], metrics_b["baselines"]["champion"]["rouge_l"])
    assert metrics_b["champion"]["status"] == "scored"
    # B trained in A's run folder and replaced A's adapter there: the champion was scored from its kept copy.
    assert (Path(out_a["adapter_dir"]) / "training.json").stat().st_mtime_ns != adapter_stamp
    kept = json.loads(metrics_path.with_name("generate.champion.json").read_text(encoding="utf-8"))["adapter"]
    assert kept == champion["adapter_dir"] and Path(kept).parent.parent == tmp_path / "outputs" / "champions"
    assert metrics_b["baselines"]["champion"]["rouge_l"] == pytest.approx(metrics_a["candidate"]["rouge_l"])
    assert metrics_b["differences"]["champion"]["rouge_l"]["diff"] < 0
    assert "champion" in json.loads(metrics_path.with_name("predictions.test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert len(fake_ollama.bodies("POST", "/api/create")) == created
    assert Variable.get(key) == champion
