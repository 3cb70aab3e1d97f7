"""evaluate-gate: gate decisions, generation on tiny models, the stage end to end (GateBlocked in the flow: tests/flows/test_titlegen.py)."""

import json
from pathlib import Path

import pytest

from titlegen.params import EvalParams, GateParams
from titlegen.runs import read_jsonl, write_jsonl
from titlegen.tasks.evaluate import gate, load_rows, metrics_table, report_markdown

# ---- gate (pure) -----------------------------------------------------------------------------


def _system(rouge_l, rouge_1=0.4, rouge_2=0.2, bleu_1=0.35, fail_rate=0.0):
    return {"rouge_1": rouge_1, "rouge_2": rouge_2, "rouge_l": rouge_l, "bleu_1": bleu_1,
            "ci": {k: [0.0, 1.0] for k in ("rouge_1", "rouge_2", "rouge_l", "bleu_1")},
            "checks": {"any": fail_rate}}


def _metrics(cand=None, lead=0.20, base=0.15, champion=None):
    return {
        "n": 100,
        "candidate": cand or _system(0.30),
        "baselines": {
            "lead": None if lead is None else _system(lead),
            "base": None if base is None else _system(base),
            "champion": champion,
        },
    }


def _failed_rules(decision):
    return [c["rule"] for c in decision["checks"] if c["status"] == "fail"]


def test_gate_passes_with_every_rule_listed():
    d = gate(_metrics(champion={**_system(0.30), "same_test_split": True}), 0.25, GateParams())
    assert d["passed"] and d["reasons"] == [] and d["notes"] == []
    assert len(d["checks"]) == 8 and all(c["status"] == "pass" for c in d["checks"])


@pytest.mark.parametrize("status", ["none", "gone", None])
def test_gate_without_a_champion_says_so_and_uses_the_other_rules(status):
    """No champion recorded, or its weights gone from this worker: the champion rule is skipped with the reason,
    whatever `missing_baseline` says, and the run is gated on the other rules."""
    metrics = _metrics()
    if status:
        metrics["champion"] = {"status": status, "message": f"the champion is {status}"}
    for params in (GateParams(), GateParams(missing_baseline="fail")):
        d = gate(metrics, 0.25, params)
        assert d["passed"] and len(d["notes"]) == 1
        assert d["notes"][0].startswith("ROUGE-L ≥ champion + gate.margin_over_champion: not applied")
        assert (f"the champion is {status}" if status else "no champion was given") in d["notes"][0]
    assert not gate(metrics, 0.35, GateParams())["passed"]  # the other rules still apply


def test_gate_blocks_a_challenger_below_the_champion_by_default_and_ties_pass():
    champion = {**_system(0.30), "same_test_split": True}
    assert GateParams().margin_over_champion == 0.0
    assert gate(_metrics(_system(0.30), champion=champion), 0.25, GateParams())["passed"]
    d = gate(_metrics(_system(0.2999), champion=champion), 0.25, GateParams())
    assert _failed_rules(d) == ["ROUGE-L ≥ champion + gate.margin_over_champion"]
    d = gate(_metrics(_system(0.31), champion=champion), 0.25, GateParams(margin_over_champion=0.02))
    assert _failed_rules(d) == ["ROUGE-L ≥ champion + gate.margin_over_champion"]


@pytest.mark.parametrize(
    ("metrics", "min_rouge_l", "params", "failing"),
    [
        (_metrics(_system(0.24)), 0.25, GateParams(), "ROUGE-L ≥ min_rouge_l"),
        (_metrics(_system(0.30, rouge_1=0.1)), 0.25, GateParams(min_rouge_1=0.2), "ROUGE-1 ≥ gate.min_rouge_1"),
        (_metrics(_system(0.30, rouge_2=0.1)), 0.25, GateParams(min_rouge_2=0.2), "ROUGE-2 ≥ gate.min_rouge_2"),
        (_metrics(_system(0.30, bleu_1=0.1)), 0.25, GateParams(min_bleu_1=0.2), "BLEU-1 ≥ gate.min_bleu_1"),
        (_metrics(_system(0.30, fail_rate=0.2)), 0.25, GateParams(), "headline check failures ≤ gate.max_check_failure_rate"),
        (_metrics(lead=0.29), 0.25, GateParams(margin_over_lead=0.02), "ROUGE-L ≥ Lead + gate.margin_over_lead"),
        (_metrics(base=0.31), 0.25, GateParams(), "ROUGE-L ≥ base model + gate.margin_over_base"),
        (_metrics(champion={**_system(0.31), "same_test_split": True}), 0.25, GateParams(margin_over_champion=0.0),
         "ROUGE-L ≥ champion + gate.margin_over_champion"),
    ],
)
def test_gate_each_single_failure(metrics, min_rouge_l, params, failing):
    d = gate(metrics, min_rouge_l, params)
    assert not d["passed"]
    assert _failed_rules(d) == [failing]
    assert len(d["reasons"]) == 1 and d["reasons"][0].startswith(failing)


def test_gate_ties_pass():
    # Exactly at every threshold, including a sum that is not exact in floating point (0.2 + 0.1).
    cand = _system(0.3, rouge_1=0.4, rouge_2=0.2, bleu_1=0.35, fail_rate=0.1)
    params = GateParams(min_rouge_1=0.4, min_rouge_2=0.2, min_bleu_1=0.35, margin_over_lead=0.1,
                        margin_over_base=0.0, max_check_failure_rate=0.1, margin_over_champion=0.05)
    champion = {**_system(0.25), "same_test_split": True}
    d = gate(_metrics(cand, lead=0.2, base=0.3, champion=champion), 0.3, params)
    assert 0.2 + 0.1 > 0.3  # the float trap the tolerance covers
    assert d["passed"], d["reasons"]


def test_gate_just_below_a_tie_fails():
    d = gate(_metrics(_system(0.3 - 1e-6)), 0.3, GateParams())
    assert _failed_rules(d) == ["ROUGE-L ≥ min_rouge_l"]


def test_gate_missing_base_baseline_fails_by_default_and_can_be_skipped():
    d = gate(_metrics(base=None), 0.25, GateParams())
    assert not d["passed"]
    assert "base model baseline was not measured" in d["reasons"][0]
    d = gate(_metrics(base=None), 0.25, GateParams(missing_baseline="skip"))
    assert d["passed"] and len(d["notes"]) == 2 and "not measured" in d["notes"][0]  # notes[1]: no champion


def test_gate_missing_lead_fails():
    assert "Lead baseline was not measured" in gate(_metrics(lead=None), 0.25, GateParams())["reasons"][0]


def test_gate_champion_only_gated_when_margin_set_and_same_split():
    other_split = {**_system(0.5), "same_test_split": False}
    assert gate(_metrics(champion=other_split), 0.25, GateParams(margin_over_champion=None))["passed"]  # reported, not gated
    d = gate(_metrics(champion=other_split), 0.25, GateParams())
    assert not d["passed"] and "different test split" in d["reasons"][0]
    d = gate(_metrics(champion=None), 0.25, GateParams(margin_over_champion=0.0, missing_baseline="skip"))
    assert d["passed"] and d["notes"]


def test_gate_nan_or_missing_candidate_metric_fails():
    d = gate(_metrics(_system(float("nan"))), 0.0, GateParams())
    assert "ROUGE-L ≥ min_rouge_l" in _failed_rules(d)
    assert not gate({"candidate": {}, "baselines": {}}, 0.0, GateParams())["passed"]


def test_metrics_table_has_a_row_per_rule_with_baselines_and_verdict():
    m = _metrics()
    d = gate(m, 0.25, GateParams())
    rows = metrics_table(m, d)
    assert len(rows) == len(d["checks"])
    assert rows[0]["rule"] == "ROUGE-L ≥ min_rouge_l" and rows[0]["result"] == "PASS"
    assert rows[0]["Lead"] == "0.2000" and rows[0]["base model"] == "0.1500" and rows[0]["required"] == "≥ 0.2500"


# ---- generation on tiny models -----------------------------------------------------------------

ARTICLES = [
    ("總統府今天表示，台灣的經濟成長穩定，第三季出口創下新高。行政院長也說明了明年度的預算案。", "總統府：經濟成長穩定 出口創新高"),
    ("中央氣象署發布颱風警報，颱風預計明天登陸東部。各縣市政府宣布停班停課。", "颱風明登陸東部 多縣市停班停課"),
    ("立法院今天三讀通過食品安全衛生管理法修正案，違規業者最高可罰新台幣兩億元。", "食安法修正三讀 違規最高罰兩億"),
    ("台北市今年跨年晚會將在市府廣場舉行，預計吸引數十萬人參加，捷運將通宵營運。", "台北跨年晚會 捷運通宵營運"),
    ("衛福部宣布流感疫苗開打，六十五歲以上長者與學童可免費接種。", "流感疫苗開打 長者學童免費"),
]


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    rows = [{"id": f"a{i}", "content": c, "title": t} for i, (c, t) in enumerate(ARTICLES)]
    write_jsonl(d / "test.jsonl", rows)
    write_jsonl(d / "validation.jsonl", rows[:2])
    write_jsonl(d / "train.jsonl", rows)
    return d


def _make_adapter(base_dir, out, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False))
    peft.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_adapter(tiny_gemma3_dir, tmp_path_factory):
    """A LoRA adapter with non-zero weights on the tiny Gemma 3, saved with its tokenizer like the fine-tune stage does."""
    return _make_adapter(tiny_gemma3_dir, tmp_path_factory.mktemp("adapter") / "tiny-lora", seed=0)


@pytest.mark.parametrize("fixture", ["tiny_gemma3_dir", "tiny_gemma3n_dir"])
def test_generation_batched_left_padded_equals_one_by_one(fixture, request):
    from titlegen.generate import generate_titles, load_model, max_new_tokens_for

    model, tok = load_model(str(request.getfixturevalue(fixture)), device="cpu")
    assert tok.padding_side == "left"
    contents = [ARTICLES[0][0], ARTICLES[4][0]]  # different lengths, so one is padded
    batched = generate_titles(model, tok, contents, 12, batch_size=2, max_new_tokens=5)
    single = [generate_titles(model, tok, [c], 12, batch_size=1, max_new_tokens=5)[0] for c in contents]
    assert batched[0]["prompt_tokens"] != batched[1]["prompt_tokens"]
    assert [b["prediction"] for b in batched] == [s["prediction"] for s in single]
    assert all(b["new_tokens"] <= 5 and b["prompt_tokens"] > 20 for b in batched)
    assert max_new_tokens_for(40) == 52


def test_generation_halves_the_batch_on_out_of_memory(tiny_gemma3_dir, capsys):
    """A GPU out-of-memory error in a batch retries it smaller instead of failing the stage."""
    import torch

    from titlegen.generate import generate_titles, load_model

    model, tok = load_model(str(tiny_gemma3_dir), device="cpu")
    contents = [a for a, _ in ARTICLES[:4]]
    reference = generate_titles(model, tok, contents, 12, batch_size=1, max_new_tokens=4)
    real, sizes = model.generate, []

    def small_memory(**kw):
        sizes.append(kw["input_ids"].shape[0])
        if kw["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(**kw)

    model.generate = small_memory
    out = generate_titles(model, tok, contents, 12, batch_size=4, max_new_tokens=4)
    assert sizes[:3] == [4, 2, 1] and len(sizes) == 3 + 3  # then the remaining rows one by one
    assert [o["prediction"] for o in out] == [r["prediction"] for r in reference]
    assert "batch size lowered to 2" in capsys.readouterr().out

    model.generate = lambda **kw: (_ for _ in ()).throw(torch.OutOfMemoryError("even one row"))
    with pytest.raises(torch.OutOfMemoryError):
        generate_titles(model, tok, contents[:1], 12, batch_size=1, max_new_tokens=4)


def test_generation_stops_at_end_of_turn_and_strips_it(tiny_gemma3_dir):
    """Force the tiny model to emit `<end_of_turn>` second: the prediction is the text before it."""
    import torch

    from titlegen.generate import generate_titles, load_model

    model, tok = load_model(str(tiny_gemma3_dir), device="cpu")
    word = tok.convert_tokens_to_ids("台")
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert eot == 106

    class Script(torch.nn.Module):
        """A logits processor that writes 台, then <end_of_turn>."""

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.start
            forced = word if step == 0 else eot
            scores[:] = -1e9
            scores[:, forced] = 0
            return scores

    script = Script()
    original = model.generate

    def generate(**kw):
        script.start = kw["input_ids"].shape[1]
        rules = list(kw.pop("logits_processor", None) or [])  # the stage's own (the decoding rule), then the script
        return original(**kw, logits_processor=[*rules, script])

    model.generate = generate
    out = generate_titles(model, tok, [ARTICLES[0][0], ARTICLES[1][0]], 12, batch_size=2, max_new_tokens=6)
    assert [o["prediction"] for o in out] == ["台", "台"]
    assert all(o["stopped"] and o["new_tokens"] == 2 for o in out)


def test_adapter_attaches_and_changes_outputs(tiny_gemma3_dir, tiny_adapter):
    from titlegen.generate import generate_titles, load_model

    base, tok = load_model(str(tiny_gemma3_dir), device="cpu")
    tuned, _ = load_model(str(tiny_gemma3_dir), str(tiny_adapter), device="cpu", merge=True)
    args = ([ARTICLES[0][0]], 12, 1, 6)
    assert generate_titles(base, tok, *args)[0]["raw"] != generate_titles(tuned, tok, *args)[0]["raw"]


def test_adapter_errors_are_clear(tiny_gemma3_dir, tmp_path):
    from titlegen.generate import load_model

    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_model(str(tiny_gemma3_dir), str(tmp_path), device="cpu")


def test_load_rows_subset_and_field_names(split_dir, tmp_path):
    rows = load_rows(split_dir / "test.jsonl", 3, seed=1)
    assert len(rows) == 3 and rows == load_rows(split_dir / "test.jsonl", 3, seed=1)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)  # file order kept
    write_jsonl(tmp_path / "x.jsonl", [{"input": "文", "target": "題"}])
    assert load_rows(tmp_path / "x.jsonl", None, 0) == [{"id": 0, "content": "文", "title": "題"}]
    write_jsonl(tmp_path / "y.jsonl", [{"body": "文"}])
    with pytest.raises(ValueError, match="input/target or content/title"):
        load_rows(tmp_path / "y.jsonl", None, 0)


# ---- the stage end to end --------------------------------------------------------------------


def test_evaluate_end_to_end(tiny_gemma3_dir, tiny_adapter, split_dir, tmp_path):
    from titlegen.tasks.evaluate import evaluate

    params = EvalParams(batch_size=4, bootstrap_samples=100, max_new_tokens=6, score_validation=True)
    run = tmp_path / "run"
    out = evaluate(str(tiny_adapter), str(tiny_gemma3_dir), str(split_dir), str(run), 20, 4, params)
    metrics = json.loads(Path(out["metrics_path"]).read_text(encoding="utf-8"))
    assert metrics["n"] == 5 and metrics["validation"]["n"] == 2
    assert set(metrics["baselines"]) == {"lead", "base", "champion"} and metrics["baselines"]["champion"] is None
    assert 0 < metrics["baselines"]["lead"]["rouge_l"] < 1  # Lead overlaps the reference titles
    assert metrics["baselines"]["lead"]["checks"]["copies_first_sentence"] == 1.0
    assert set(metrics["differences"]) == {"lead", "base"}
    preds = read_jsonl(out["predictions_path"])
    # 6 tokens are not enough for a random model to write `<end_of_turn>`; a title stop (the `<` of a random `<unusedN>`) can end one.
    assert metrics["candidate"]["checks"]["no_stop"] == sum(not p["stopped"] for p in preds) / 5 >= 0.6
    assert [p["id"] for p in preds] == [f"a{i}" for i in range(5)]
    assert {"reference", "prediction", "lead", "base", "failed_checks", "rouge_l"} <= set(preds[0])
    assert json.loads((tiny_adapter / "eval_metrics.json").read_text(encoding="utf-8"))["inputs_fingerprint"] == metrics["inputs_fingerprint"]
    assert not list(run.glob("eval/*.input.jsonl")) and not list(run.glob(".eval.*"))
    assert out["metrics"]["n"] == 5 and "lead_rouge_l" in out["metrics"]

    d = gate(metrics, 0.0, GateParams(max_check_failure_rate=1.0, margin_over_lead=-1.0, margin_over_base=-1.0))
    assert d["passed"]
    assert "## 5 test articles" in report_markdown(metrics, d, preds)


@pytest.mark.slow
def test_evaluate_scores_the_recorded_champion_on_the_same_split(tiny_gemma3_dir, tiny_adapter, split_dir, tmp_path):
    """A champion record (titlegen.champion) makes the stage regenerate the champion's titles on this test split,
    score them beside the candidate's with the paired difference, and show both in the report; weights gone or the
    same adapter are said so, and each champion state is part of the reuse key."""
    from titlegen.champion import adapter_sha256
    from titlegen.tasks.evaluate import evaluate

    champion_adapter = _make_adapter(tiny_gemma3_dir, tmp_path / "champion-lora", seed=1)
    record = {"run_name": "old-run", "base_model": str(tiny_gemma3_dir), "adapter_dir": str(champion_adapter),
              "adapter_sha256": adapter_sha256(champion_adapter), "final_hf": None, "promoted_at": "2026-01-01T00:00:00+00:00",
              "hub": {"repo": "org/tg", "commit": "c0ffee1234567", "dry_run": False}, "ollama": {"tag": "tg:latest", "digest": "abc"}}
    params = EvalParams(batch_size=4, bootstrap_samples=100, max_new_tokens=6, run_base_baseline=False, score_validation=False)
    run = tmp_path / "run"
    out = evaluate(str(tiny_adapter), str(tiny_gemma3_dir), str(split_dir), str(run), 20, 4, params, champion=record)
    metrics = json.loads(Path(out["metrics_path"]).read_text(encoding="utf-8"))
    assert metrics["champion"]["status"] == "scored" and metrics["champion"]["record"]["run_name"] == "old-run"
    champ = metrics["baselines"]["champion"]
    assert champ["same_test_split"] and champ["n"] == 5 and set(metrics["differences"]) == {"lead", "champion"}
    assert metrics["differences"]["champion"]["rouge_l"]["diff"] == pytest.approx(metrics["candidate"]["rouge_l"] - champ["rouge_l"])
    assert json.loads((run / "eval" / "generate.champion.json").read_text())["adapter"] == str(champion_adapter)
    preds = read_jsonl(out["predictions_path"])
    assert all("champion" in p and "champion_rouge_l" in p for p in preds)
    # The same adapter on another base model titles differently: the champion's own titles were generated.
    assert [p["champion"] for p in preds] != [p["prediction"] for p in preds]
    d = gate(metrics, 0.0, GateParams(max_check_failure_rate=1.0, margin_over_lead=-1.0, margin_over_champion=-1.0))
    report = report_markdown(metrics, d, preds)
    assert "## Challenger vs champion" in report and "`org/tg` at `c0ffee123456`" in report and "- champion: " in report
    assert out["metrics"]["champion_status"] == "scored" and "champion_rouge_l" in out["metrics"]

    # Weights gone from this worker: said so, not compared, evaluated again (the champion is part of the key).
    champion_adapter.joinpath("adapter_model.safetensors").unlink()
    gone = evaluate(str(tiny_adapter), str(tiny_gemma3_dir), str(split_dir), str(run), 20, 4, params, champion=record)
    metrics = json.loads(Path(gone["metrics_path"]).read_text(encoding="utf-8"))
    assert metrics["champion"]["status"] == "gone" and "weights are gone" in metrics["champion"]["message"]
    assert metrics["baselines"]["champion"] is None and "champion" not in metrics["differences"]
    lenient = GateParams(max_check_failure_rate=1.0, margin_over_lead=-1.0, missing_baseline="skip")  # base model not run
    d = gate(metrics, 0.0, lenient)
    assert d["passed"] and "weights are gone" in d["notes"][-1]
    assert "Not compared" in report_markdown(metrics, d, [])

    # This run's adapter is the champion's: a tie with itself, no second generation.
    same = {**record, "adapter_sha256": adapter_sha256(tiny_adapter)}
    itself = evaluate(str(tiny_adapter), str(tiny_gemma3_dir), str(split_dir), str(run), 20, 4, params, champion=same)
    metrics = json.loads(Path(itself["metrics_path"]).read_text(encoding="utf-8"))
    assert metrics["champion"]["status"] == "same_model" and not (run / "eval" / "generate.champion.json").exists()
    assert metrics["differences"]["champion"]["rouge_l"]["diff"] == 0.0
    assert gate(metrics, 0.0, lenient)["passed"]


def test_evaluate_rejects_missing_champion_before_generating(tiny_gemma3_dir, tiny_adapter, split_dir, tmp_path):
    from titlegen.tasks.evaluate import evaluate

    params = EvalParams(batch_size=4, champion_metrics=str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="champion_metrics"):
        evaluate(str(tiny_adapter), str(tiny_gemma3_dir), str(split_dir), str(tmp_path / "run"), 20, 4, params)
    assert not (tmp_path / "run" / "eval").exists()
