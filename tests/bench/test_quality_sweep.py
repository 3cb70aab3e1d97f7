"""bench/quality_sweep.py: a prepared split with extra training articles (#14 item 3)."""

import json
from pathlib import Path

import pytest

from tests.conftest import bench_module
from titlegen.runs import read_jsonl, write_jsonl

quality_sweep = bench_module("quality_sweep")

CHARS = "的一是在不了有和人這中大為上個國我以要他時來用們生到作地於出就分對成會可主發年動同工也能下過子說產種面而方後多定行學法所民得經十三之進著等部度家電力裡如水化高自二理起小物現實加量都兩體制機當使點從業本去把性好應開它合還因由其些然前外天政四日那社義事平形相全表間樣與關各重新線內數正心反你明看原又麼利比或但質氣第向道命此變條只沒結解問意建月公無系軍很情者最立代想已通並提直題黨程展五果料象員革位入常文總次品式活設及管特件長求老頭基資邊流路級少圖山統接知較將組見計別她手角期根論運農指幾九區強放決西被幹做必戰先回則任取據處府研"


def body(i: int) -> str:
    """An article body of its own: 160 characters drawn with seed `i` (unrelated bodies share few 5-grams)."""
    import random

    rng = random.Random(i)
    return "".join(rng.choice(CHARS) for _ in range(160)) + "。"


@pytest.fixture
def split_dir(tmp_path):
    out = tmp_path / "split"
    out.mkdir()
    rows = [{"id": f"r{i}", "input": body(i), "target": f"第{i}則標題測試"} for i in range(12)]
    write_jsonl(out / "train.jsonl", rows[:8])
    write_jsonl(out / "validation.jsonl", rows[8:10])
    write_jsonl(out / "test.jsonl", rows[10:])
    (out / "manifest.json").write_text(json.dumps({"sizes": {"train": 8, "validation": 2, "test": 2}, "sha256": {}}))
    return out


def test_extra_articles_go_to_training_only_and_never_copy_a_scored_article(split_dir, tmp_path):
    extra = [{"title": f"總統府第{i}則新聞稿標題", "content": body(100 + i)} for i in range(6)]
    extra.append({"title": "總統府與測試集幾乎相同的新聞", "content": body(11)})  # a near copy of a test article
    data = tmp_path / "extra.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in extra), encoding="utf-8")
    out = tmp_path / "split-extra"
    info = quality_sweep.add_extra_train(str(split_dir), str(data), 4, str(out))
    assert info["left_out_as_near_duplicates_of_validation_or_test"] == 1 and info["cleaned"] == 7
    train = read_jsonl(out / "train.jsonl")
    assert len(train) == 12 and train[:8] == read_jsonl(split_dir / "train.jsonl")
    assert all(r["input"] != body(11) for r in train[8:])
    for name in ("validation.jsonl", "test.jsonl"):
        assert (out / name).read_bytes() == (split_dir / name).read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sizes"]["train"] == 12 and manifest["extra_train"]["rows"] == 4
    with pytest.raises(SystemExit, match="fewer than --rows 7"):
        quality_sweep.add_extra_train(str(split_dir), str(data), 7, str(tmp_path / "too-many"))
    assert not (tmp_path / "too-many").exists()


def test_failed_titles_lists_each_failing_test_title_as_generated(tmp_path):
    rows = [
        {"id": "a", "failed_checks": [], "raw": "立法院三讀通過", "stopped": True, "new_tokens": 8, "reference": "三讀"},
        {"id": "b", "failed_checks": ["line_break", "template_residue"], "raw": "颱風來襲\n標題：颱風", "stopped": True,
         "new_tokens": 12, "reference": "颱風"},
        {"id": "c", "failed_checks": ["no_stop"], "raw": "蓋" * 52, "stopped": False, "new_tokens": 52, "reference": "天氣"},
    ]
    write_jsonl(tmp_path / "predictions.test.jsonl", [{**r, "content": "…", "prediction": r["raw"].strip()} for r in rows])
    failed = quality_sweep.failed_titles(tmp_path / "predictions.test.jsonl")
    assert [f["id"] for f in failed] == ["b", "c"]
    assert failed[0] == {k: rows[1][k] for k in ("id", "failed_checks", "raw", "stopped", "new_tokens", "reference")}
    assert quality_sweep.test_titles(tmp_path / "predictions.test.jsonl") == [
        {k: r[k] for k in ("id", "raw", "stopped")} for r in rows]


def test_restop_cuts_at_a_line_break_and_reproduces_the_stored_metrics_as_generated(tmp_path):
    from titlegen.params import EvalParams
    from titlegen.tasks.evaluate import load_rows, score_run, split_file

    split = tmp_path / "split"
    split.mkdir()
    titles = ["颱風來襲全台戒備", "立法院三讀通過預算", "股市大漲創下新高", "市長宣布興建新捷運"]
    write_jsonl(split / "test.jsonl", [{"id": f"t{i}", "input": body(200 + i), "target": t, "source_row": i, "category": "社會"}
                                       for i, t in enumerate(titles)])
    generated = [("颱風來襲全台戒備\n標題：颱風來襲全台戒備", True), ("立法院三讀通過預算", True),
                 ("股市大漲股市大漲股市大漲股市大漲", False), ("市長宣布興建捷運", True)]
    evaluation = EvalParams(bootstrap_samples=200, seed=7)
    # The row's metrics and test_titles come from the evaluate stage's own scoring of these generations.
    eval_dir = tmp_path / "eval"
    write_jsonl(eval_dir / "candidate.test.jsonl", [{"prediction": raw.strip(), "raw": raw, "stopped": s, "new_tokens": 9} for raw, s in generated])
    test_rows = load_rows(split_file(split, "test"), None, evaluation.seed)
    metrics = score_run(eval_dir, test_rows, [], False, {"status": "none"}, 40, 6, evaluation, final_predictions=eval_dir / "predictions.test.jsonl")
    metrics["inputs"] = {"evaluation": evaluation.model_dump(mode="json")}
    row = {"config": "e2-lr5e-4-r16", "metrics": metrics, "test_titles": quality_sweep.test_titles(eval_dir / "predictions.test.jsonl")}
    result = tmp_path / "sweep.json"
    result.write_text(json.dumps({"train_set": {"seed": 5}, "rows": [row, {"config": "old-row", "metrics": metrics}]}, ensure_ascii=False))

    out = tmp_path / "restop.json"
    doc = quality_sweep.restop(str(split), [str(result)], [quality_sweep.stop_string(r"\n")], str(out))
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(json.dumps(doc))
    (r,) = doc["rows"]
    assert r["seed"] == 5 and r["before"]["rouge_l"] == metrics["candidate"]["rouge_l"]
    assert r["before"]["checks"]["line_break"] == 0.25 and r["after"]["checks"]["line_break"] == 0.0
    assert r["after"]["checks"]["no_stop"] == r["before"]["checks"]["no_stop"] == 0.25  # no line break, still runs away
    (changed,) = r["changed"]
    assert changed["id"] == "t0" and changed["after"] == "颱風來襲全台戒備" and changed["stopped_after"]
    assert "line_break" in changed["failed_before"] and changed["failed_after"] == []
    assert r["after"]["rouge_l"] > r["before"]["rouge_l"]

    row["metrics"] = {**metrics, "candidate": {**metrics["candidate"], "rouge_l": metrics["candidate"]["rouge_l"] + 1e-6}}
    result.write_text(json.dumps({"rows": [row]}, ensure_ascii=False))
    with pytest.raises(ValueError, match=r"sweep\.json row 0 \(e2-lr5e-4-r16\): rescored as generated, rouge_l"):
        quality_sweep.restop(str(split), [str(result)], ["\n"], str(tmp_path / "never.json"))
    assert not (tmp_path / "never.json").exists()


def _summary(val_any: float, test_any: float, minus_lead: float, ci_low: float, val_rouge_l: float = 0.29) -> dict:
    checks = lambda any_: {"any": any_, "no_stop": 0.0}  # noqa: E731
    return {"val_rouge_l": val_rouge_l, "val_checks": checks(val_any), "test_rouge_l": 0.28, "test_ci": [0.26, 0.30],
            "minus_lead": minus_lead, "minus_lead_ci": [ci_low, minus_lead + 0.02], "test_checks": checks(test_any)}


def _decoded_row(stage: dict, decoding: dict) -> dict:
    """A `run` row whose adapter was also decoded under more rules: its metrics are the stage rule's (1.4 over 16)."""
    d = stage
    metrics = {"inputs": {"evaluation": {"repeat_penalty": 1.4, "repeat_last_n": 16}},
               "validation": {"rouge_l": d["val_rouge_l"], "checks": d["val_checks"]},
               "candidate": {"rouge_l": d["test_rouge_l"], "ci": {"rouge_l": d["test_ci"]}, "checks": d["test_checks"]},
               "differences": {"lead": {"rouge_l": {"diff": d["minus_lead"], "ci": d["minus_lead_ci"]}}}}
    return {"config": "e3-lr5e-4-r16-b16", "metrics": metrics, "decoding": decoding}


def test_rules_averages_each_rule_over_the_seeds_and_chooses_on_validation(tmp_path):
    # Two seeds, each decoded under the stage's rule (its metrics) and two more.
    seed1 = _decoded_row(_summary(0.030, 0.030, 0.052, 0.03), {"1.6:16": _summary(0.010, 0.016, 0.055, 0.03),
                                                                "2.0:16": _summary(0.004, 0.030, 0.040, -0.01, val_rouge_l=0.25)})
    seed2 = _decoded_row(_summary(0.020, 0.026, 0.050, 0.02), {"1.6:16": _summary(0.014, 0.020, 0.057, 0.04),
                                                                "2.0:16": _summary(0.008, 0.034, 0.044, 0.01, val_rouge_l=0.25)})
    files = []
    for i, row in enumerate((seed1, seed2)):
        files.append(str(tmp_path / f"seed{i}.json"))
        Path(files[-1]).write_text(json.dumps({"rows": [row, {"config": "x", "exit": "timeout"}]}))
    doc = quality_sweep.rules_over_seeds(files, str(tmp_path / "rules.json"))
    assert set(doc["by_rule"]) == {"1.4:16", "1.6:16", "2.0:16"}
    m = doc["by_rule"]["1.6:16"]
    assert m["adapters"] == 2 and m["val_checks"]["any"] == 0.012 and m["test_checks"]["any"] == 0.018
    assert m["minus_lead"] == 0.056 and m["minus_lead_ci_all_above_zero"]
    assert doc["by_rule"]["2.0:16"]["minus_lead_ci_all_above_zero"] is False
    # Both 1.6:16 and 2.0:16 are within the validation limits; 1.6:16 has the better validation ROUGE-L.
    assert doc["chosen_on_validation"] == "1.6:16" and doc["chosen_meets_item_3_on_test"] is True
    assert json.loads((tmp_path / "rules.json").read_text()) == doc


def test_rules_refuses_runs_not_decoded_under_the_same_rules(tmp_path):
    a = _decoded_row(_summary(0.03, 0.03, 0.05, 0.01), {"1.6:16": _summary(0.01, 0.02, 0.05, 0.01)})
    b = _decoded_row(_summary(0.03, 0.03, 0.05, 0.01), {"1.8:12": _summary(0.01, 0.02, 0.05, 0.01)})
    for name, row in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"rows": [row]}))
    with pytest.raises(ValueError, match="not decoded on the same adapters"):
        quality_sweep.rules_over_seeds([str(tmp_path / "a.json"), str(tmp_path / "b.json")], str(tmp_path / "out.json"))
    (tmp_path / "plain.json").write_text(json.dumps({"rows": [{"config": "x", "metrics": {}}]}))
    with pytest.raises(ValueError, match="--repeat-penalties"):
        quality_sweep.rules_over_seeds([str(tmp_path / "plain.json")], str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


def test_a_runs_own_rule_is_named_after_the_stage_evaluation_it_ran_under():
    # The stage's rule was once plain greedy and labelled "1.0"; since it is 1.4 over 16 the label comes from
    # the evaluation inputs that the metrics record, so a run's choice names the rule it really compared.
    row = _decoded_row(_summary(0.030, 0.030, 0.052, 0.03), {"2.0:16": _summary(0.004, 0.010, 0.050, 0.03)})
    rules = quality_sweep.rules_of(row)
    assert list(rules) == ["1.4:16", "2.0:16"] and rules["1.4:16"]["minus_lead"] == 0.052
    assert quality_sweep.choose_penalty(rules) == "2.0:16"


@pytest.mark.parametrize("bad", ["2.2:16", "1.5:x", "abc", "0", "1.4:5000"])
def test_a_decoding_rule_outside_evalparams_stops_the_sweep_before_it_trains(bad):
    assert quality_sweep.penalty_specs("1.6:16,,2.0") == ("1.6:16", "2.0")
    with pytest.raises(SystemExit, match=f"rule '{bad}' is not a decoding rule"):
        quality_sweep.penalty_specs(f"1.6:16,{bad}")


def test_pooled_compares_the_rules_on_every_adapter_and_replays_keeping_the_validation_best_seed(tmp_path):
    """Four QLoRA adapters from two merged leases (one 16-bit row and another config left out): rules decoded on all
    four are compared, 1.6:16 (on two only) is not; best-of-2 keeps each pair's validation-best adapter and rule."""
    def run(seed: int, stage: dict, more: dict, **train_set) -> dict:
        return {"seed": seed, "output": {"train_set": {"seed": seed, **train_set}, "rows": [_decoded_row(stage, more)]}}

    good, bad = _summary(0.010, 0.010, 0.060, 0.03, val_rouge_l=0.30), _summary(0.040, 0.050, 0.040, 0.01)
    lease_a = [run(1, bad, {"2.0:16": good, "1.6:16": bad}), run(2, good, {"2.0:16": bad, "1.6:16": bad}),
               run(3, good, {"2.0:16": good}, quantization="16bit")]
    other = _decoded_row(good, {"2.0:16": good}) | {"config": "e3-lr5e-4-r32-b16"}
    lease_b = [run(4, bad, {"2.0:16": bad}), run(5, bad, {"2.0:16": _summary(0.015, 0.020, 0.050, 0.02)}),
               {"seed": 6, "output": {"train_set": {"seed": 6}, "rows": [other]}}]
    files = []
    for name, runs in (("a", lease_a), ("b", lease_b)):
        files.append(str(tmp_path / f"quality_training_{name}.json"))
        Path(files[-1]).write_text(json.dumps({"runs": runs}))
    doc = quality_sweep.pooled(files, "e3-lr5e-4-r16-b16", "4bit", 2, str(tmp_path / "pooled.json"))
    assert doc["adapters"] == 4 and doc["leases"] == {"quality_training_a.json": 2, "quality_training_b.json": 2}
    assert doc["rules_on_every_adapter"] == ["1.4:16", "2.0:16"]
    assert doc["by_rule"]["2.0:16"]["test_checks"]["any"] == 0.0325 and doc["chosen_on_validation"] == "2.0:16"
    one, two = doc["seed_selection"]
    # Alone, each seed keeps its better rule on validation (seed 4, with none within the limits, its first).
    assert one["runs"] == 4 and one["rules_picked"] == {"1.4:16": 2, "2.0:16": 2} and one["meets_item_3"] is False
    # Pairs (1, 2) and (4, 5): seed 1 under 2.0:16 and seed 2 under 1.4:16 tie on validation (the first is kept);
    # seed 5 under 2.0:16 is the only candidate of the second pair within the validation limits.
    assert two["runs"] == 2 and two["rules_picked"] == {"2.0:16": 2}
    assert two["test_checks"]["any"] == 0.015 and two["minus_lead"] == 0.055
    assert two["meets_item_3"] is True and two["random_groupings"]["groupings"] == quality_sweep.PARTITIONS
    assert 0 <= two["random_groupings"]["share_meeting_item_3"] <= 1
    assert json.loads((tmp_path / "pooled.json").read_text()) == doc
    with pytest.raises(ValueError, match="no e3-lr5e-4-r8-b16 adapter"):
        quality_sweep.pooled(files, "e3-lr5e-4-r8-b16", "4bit", 2, None)


def test_pooled_keeps_one_stop_token_weight_and_records_item_3_under_the_stages_rule_in_the_sweep(tmp_path):
    """Adapters trained at another `train.stop_token_weight` are another recipe: `pooled` refuses to average them
    together unless one weight is asked for; with `sweep` it records the stage rule's means, their spread over the
    adapters and the verdict under `item_3`, leaving what the sweep wrote there as it was."""
    def run(seed: int, stage: dict, weight: float | None) -> dict:
        row = _decoded_row(stage, {"2.0:16": stage}) | {"training": {"stop_token_weight": weight and {"weight": weight}}}
        return {"seed": seed, "output": {"train_set": {"seed": seed}, "rows": [row]}}

    good, bad = _summary(0.010, 0.015, 0.055, 0.03), _summary(0.040, 0.030, 0.060, 0.03)
    merged = tmp_path / "quality_training_z.json"
    merged.write_text(json.dumps({"card": "NVIDIA H200", "runs": [run(1, good, 3.0), run(2, good, 3.0), run(3, bad, 3.0), run(4, bad, None)]}))
    with pytest.raises(ValueError, match="stop_token_weight 1, 3: pass --stop-token-weight"):
        quality_sweep.pooled([str(merged)], "e3-lr5e-4-r16-b16", "4bit", 1, None)
    with pytest.raises(ValueError, match="with stop_token_weight 5"):
        quality_sweep.pooled([str(merged)], "e3-lr5e-4-r16-b16", "4bit", 1, None, stop_token_weight=5.0)

    sweep = tmp_path / "quality_sweep.json"
    sweep.write_text(json.dumps({"chosen_by_validation": "e2-lr5e-4-r16"}, indent=1))
    doc = quality_sweep.pooled([str(merged)], "e3-lr5e-4-r16-b16", "4bit", 1, str(tmp_path / "pooled.json"), 3.0, str(sweep))
    assert doc["adapters"] == 3 and doc["stop_token_weight"] == 3.0 and doc["cards"] == ["NVIDIA H200"]
    record = json.loads(sweep.read_text())
    item = record["item_3"]
    assert record["chosen_by_validation"] == "e2-lr5e-4-r16"
    assert item["decoding_rule"] == "1.4:16" and item["adapters"] == 3 and item["stop_token_weight"] == 3.0
    assert item["test_checks"]["any"] == pytest.approx(0.02, abs=1e-4) and item["meets_item_3"] is True
    # Two of three adapters meet item 3 alone; the mean's interval over adapters spans the bad one's pull.
    assert item["adapters_meeting_item_3_alone"] == "2 of 3"
    assert item["test_checks_any_ci"][0] >= 0.015 and item["test_checks_any_ci"][1] <= 0.03
    assert item["test_checks_any_ci"][0] < 0.02 < item["test_checks_any_ci"][1]
    # Only adapters at weight 1 (trained before the field, or at 1): one adapter, its own figures.
    one = quality_sweep.pooled([str(merged)], "e3-lr5e-4-r16-b16", "4bit", 1, None, stop_token_weight=1.0)
    assert one["adapters"] == 1 and one["by_rule"]["1.4:16"]["test_checks"]["any"] == 0.03
