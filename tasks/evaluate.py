"""evaluate-gate stage: title the test split, score it against baselines, and decide whether to ship.

`evaluate` generates titles for the test split (and the validation split) with the fine-tuned
adapter, and for the test split with the un-tuned base model, in one child process
(`titlegen.generate`) so GPU memory is freed when it ends. It scores them with character
ROUGE-1/2/L and BLEU-1 (`titlegen.metrics`), with 95% bootstrap intervals, next to the Lead
baseline (the article's first sentence cut to the title budget) and the model now served (the
champion, found by `titlegen.champion`): its titles are regenerated on this same test split in a
second child, from its kept adapter and base (or its final-hf), so the two are compared example by
example (paired bootstrap difference). It runs the headline checks on every prediction and writes

    <run>/eval/metrics.json              everything below, the gate's only input
    <run>/eval/predictions.test.jsonl    per article: reference, candidate, Lead, base, champion, checks, scores
    <run>/eval/predictions.validation.jsonl
    <run>/eval/generate.json             the generation config the child ran (generate.champion.json: the champion's)
    <adapter_dir>/eval_metrics.json      a copy of metrics.json for the model card

The folder is written whole or not at all. `evaluate_task` is cached by `titlegen.caching.StageCache`
(inputs, the code it runs, the content of the adapter, splits and champion metrics, while the
folder is complete): a re-run of the same inputs reuses it instead of generating again.

`gate` is a pure function of those metrics and the thresholds, returning every rule with its
verdict; `gate_task` publishes a Prefect table and a markdown report (`titlegen.eval_report`),
the candidate beside every baseline, and returns the decision,
on which the flow returns `Failed(name="GateBlocked")`.

Ties pass: a value equal to its threshold (within 1e-9, so 0.2 + 0.1 counts as equal to 0.3)
satisfies a minimum, and a rate equal to its maximum satisfies the maximum.
"""

import random
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from titlegen.caching import STAMP_SUFFIX, StageCache, stamped
from titlegen.eval_report import METRIC_NAMES, metrics_table, pick_samples, report_markdown
from titlegen.params import EvalParams, GateParams
from titlegen.records import MetricsRecord
from titlegen.runs import atomic_dir, atomic_write_json, file_sha256, fingerprint, read_jsonl, write_jsonl

EPS = 1e-9
FIELD_PAIRS = (("input", "target"), ("content", "title"))


# ---- inputs ----------------------------------------------------------------------------------

def split_file(split_dir: str | Path, name: str) -> Path:
    path = Path(split_dir) / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: split_dir must be the split stage's folder holding {name}.jsonl.")
    return path


def load_rows(path: Path, max_rows: int | None, seed: int) -> list[dict]:
    """`{id, content, title}` rows of a split file; at most `max_rows`, a seeded subset kept in file order."""
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} has no rows: nothing to evaluate.")
    keys = next((p for p in FIELD_PAIRS if all(k in rows[0] for k in p)), None)
    if keys is None:
        raise ValueError(f"{path}: rows need keys input/target or content/title; found {sorted(rows[0])}.")
    picked = range(len(rows))
    if max_rows is not None and max_rows < len(rows):
        picked = sorted(random.Random(seed).sample(range(len(rows)), max_rows))
    return [{"id": rows[i].get("id", i), "content": rows[i][keys[0]], "title": rows[i][keys[1]]} for i in picked]


def load_champion(path: str | None, test_sha256: str) -> dict | None:
    """The champion's candidate metrics from its metrics.json, marked comparable or not (same test split)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"evaluation.champion_metrics={path!r} does not exist; pass the deployed run's eval/metrics.json or null.")
    import json

    data = json.loads(p.read_text(encoding="utf-8"))
    if "candidate" not in data:
        raise ValueError(f"{path} is not a titlegen metrics.json (no `candidate` key).")
    same = data.get("test_sha256") == test_sha256
    return {**_headline(data["candidate"]), "source": str(p), "same_test_split": same}


def _headline(summary: dict) -> dict:
    """The small part of a system's summary: four metrics, their intervals, the check failure rate."""
    out = {k: summary[k] for k in METRIC_NAMES}
    out["ci"] = summary.get("ci", {})
    if "checks" in summary:
        out["check_failure_rate"] = summary["checks"]["any"]
    return out


def plan_champion(record: dict | None, adapter_sha: str | None, evaluation: EvalParams, test_sha: str) -> dict:
    """How the champion enters this evaluation: `status` is `scored` (its titles are generated here, from
    `weights`), `same_model` (this run's adapter is the champion's), `gone` (recorded, but its weights are not on
    this worker), `metrics_file` (no record; `evaluation.champion_metrics` given) or `none`."""
    from titlegen.champion import champion_weights, record_summary

    if record is None:
        if evaluation.champion_metrics:
            return {"status": "metrics_file", "message": f"champion metrics from {evaluation.champion_metrics}",
                    "baseline": load_champion(evaluation.champion_metrics, test_sha)}
        return {"status": "none", "message": "no champion is recorded for this serving tag"}
    summary = record_summary(record)
    if adapter_sha and adapter_sha == record.get("adapter_sha256"):
        return {"status": "same_model", "record": summary, "message": f"this run's adapter is the champion's ({adapter_sha[:12]})"}
    weights, note = champion_weights(record)
    if weights is None:
        return {"status": "gone", "record": summary, "message": f"champion {record.get('run_name')}: {note}"}
    return {"status": "scored", "record": summary, "weights": weights,
            "message": f"champion {record.get('run_name')} regenerated on this test split from its {note}"}


# ---- evaluate --------------------------------------------------------------------------------

def evaluate(
    adapter_dir: str | None,
    base_model_dir: str,
    split_dir: str,
    run_dir: str,
    max_title_chars: int,
    min_title_chars: int,
    evaluation: EvalParams,
    logger=None,
    champion: dict | None = None,
) -> dict:
    """Generate, score and record; returns `{metrics_path, predictions_path, metrics}` (small).

    `adapter_dir=None` evaluates the base model itself as the candidate (no base baseline then).
    `champion` is the record of the model now served (`titlegen.champion.find_champion`): its titles are
    generated on the same test split and scored beside the candidate's (`plan_champion`).
    """
    import logging

    from titlegen.generate import GenerateConfig, GenerateJob, max_new_tokens_for, run_in_child

    logger = logger or logging.getLogger(__name__)
    if evaluation.batch_size is None:
        raise ValueError("evaluation.batch_size is unset: pass parameters resolved by TitlegenParams.resolve().")
    eval_dir = Path(run_dir) / "eval"
    test_path = split_file(split_dir, "test")
    val_path = split_file(split_dir, "validation") if evaluation.score_validation else None
    test_sha = file_sha256(test_path)
    adapter_sha = file_sha256(Path(adapter_dir) / "adapter_model.safetensors") if adapter_dir and (Path(adapter_dir) / "adapter_model.safetensors").exists() else None
    champ = plan_champion(champion, adapter_sha, evaluation, test_sha)
    inputs = {
        "adapter_dir": adapter_dir, "adapter_sha256": adapter_sha, "base_model_dir": base_model_dir,
        "test_sha256": test_sha, "validation_sha256": file_sha256(val_path) if val_path else None,
        "max_title_chars": max_title_chars, "min_title_chars": min_title_chars,
        "evaluation": evaluation.model_dump(mode="json"),
        "champion": {"status": champ["status"], **(champ.get("weights") or {}).get("identity", {})},
    }
    key = fingerprint(inputs, 16)
    metrics_path, predictions_path = eval_dir / "metrics.json", eval_dir / "predictions.test.jsonl"
    test_rows = load_rows(test_path, evaluation.max_eval_rows, evaluation.seed)
    val_rows = load_rows(val_path, evaluation.max_eval_rows, evaluation.seed) if val_path else []
    run_base = evaluation.run_base_baseline and adapter_dir is not None
    budget = evaluation.max_new_tokens or max_new_tokens_for(max_title_chars)
    with atomic_dir(eval_dir) as tmp:
        write_jsonl(tmp / "test.input.jsonl", [{"content": r["content"]} for r in test_rows])
        jobs = [GenerateJob(name="candidate/test", input=str(tmp / "test.input.jsonl"), output=str(tmp / "candidate.test.jsonl"), use_adapter=adapter_dir is not None)]
        if val_rows:
            write_jsonl(tmp / "validation.input.jsonl", [{"content": r["content"]} for r in val_rows])
            jobs.append(GenerateJob(name="candidate/validation", input=str(tmp / "validation.input.jsonl"), output=str(tmp / "candidate.validation.jsonl"), use_adapter=adapter_dir is not None))
        if run_base:
            jobs.append(GenerateJob(name="base/test", input=str(tmp / "test.input.jsonl"), output=str(tmp / "base.test.jsonl"), use_adapter=False))
        cfg = GenerateConfig(model=base_model_dir, adapter=adapter_dir, jobs=jobs, max_title_chars=max_title_chars,
                             max_new_tokens=budget, batch_size=None if evaluation.batch_size == "auto" else evaluation.batch_size,
                             cache=evaluation.cache or "dynamic", repeat_penalty=evaluation.repeat_penalty,
                             repeat_last_n=evaluation.repeat_last_n, decode_attention=evaluation.decode_attention)
        t0 = time.perf_counter()
        run_in_child(cfg, tmp / "generate.json", logger)
        if champ["status"] == "scored":
            w = champ["weights"]
            logger.info("Scoring the %s", champ["message"])
            job = GenerateJob(name="champion/test", input=str(tmp / "test.input.jsonl"), output=str(tmp / "champion.test.jsonl"),
                              use_adapter=w["adapter"] is not None)
            run_in_child(cfg.model_copy(update={"model": w["model"], "adapter": w["adapter"], "jobs": [job]}),
                         tmp / "generate.champion.json", logger)
        seconds = time.perf_counter() - t0
        n_titles = len(test_rows) * (1 + run_base + (champ["status"] == "scored")) + len(val_rows)
        # The child wrote into tmp; paths recorded in the outputs must be the final ones.
        metrics = score_run(
            tmp, test_rows, val_rows, run_base, champ, max_title_chars, min_title_chars, evaluation,
            final_predictions=predictions_path,
        )
        metrics.update(
            inputs_fingerprint=key, inputs=inputs, test_sha256=test_sha, metrics_path=str(metrics_path),
            generation={"max_new_tokens": budget, "batch_size": evaluation.batch_size, "titles": n_titles,
                        "seconds": round(seconds, 2), "titles_per_s": round(n_titles / seconds, 3) if seconds else None},
        )
        MetricsRecord(**metrics).write(tmp / "metrics.json")
        for name in ("test.input.jsonl", "validation.input.jsonl"):
            (tmp / name).unlink(missing_ok=True)
    _copy_beside_adapter(adapter_dir, metrics)
    logger.info("Candidate ROUGE-L %.4f (Lead %.4f) on %d test articles; %s", metrics["candidate"]["rouge_l"],
                metrics["baselines"]["lead"]["rouge_l"], metrics["n"], metrics_path)
    return {"metrics_path": str(metrics_path), "predictions_path": str(predictions_path), "metrics": _small(metrics)}


def _copy_beside_adapter(adapter_dir: str | None, metrics: dict) -> None:
    if adapter_dir and Path(adapter_dir).is_dir():
        MetricsRecord(**metrics).write(Path(adapter_dir) / "eval_metrics.json")


def _small(metrics: dict) -> dict:
    """What a task returns: four candidate metrics, the check failure rate, the baselines' ROUGE-L."""
    c = metrics["candidate"]
    out = {k: round(c[k], 4) for k in METRIC_NAMES}
    out["check_failure_rate"] = round(c["checks"]["any"], 4)
    out["n"] = metrics["n"]
    out["champion_status"] = (metrics.get("champion") or {}).get("status")
    for name, b in metrics["baselines"].items():
        if b is not None:
            out[f"{name}_rouge_l"] = round(b["rouge_l"], 4)
    return out


def score_system(predictions: list[str], rows: list[dict], stopped: list[bool], evaluation: EvalParams, min_chars: int, max_chars: int):
    """(summary, per-example scores, per-example checks) of one system on `rows`."""
    from titlegen.metrics import check_rates, headline_checks, score_examples, summarize

    per = score_examples(predictions, [r["title"] for r in rows])
    checks = [headline_checks(p, r["content"], min_chars, max_chars, s) for p, r, s in zip(predictions, rows, stopped, strict=True)]
    summary = summarize(per, evaluation.bootstrap_samples, evaluation.seed)
    summary["checks"] = check_rates(checks)
    return summary, per, checks


def score_run(folder: Path, test_rows, val_rows, run_base, champion, max_chars, min_chars, evaluation, final_predictions: Path) -> dict:
    """Score every system from the generation outputs in `folder`; writes the prediction files there."""
    from titlegen.metrics import lead_title, paired_difference

    cand = read_jsonl(folder / "candidate.test.jsonl")
    c_sum, c_per, c_checks = score_system([g["prediction"] for g in cand], test_rows, [g["stopped"] for g in cand], evaluation, min_chars, max_chars)
    leads = [lead_title(r["content"], max_chars) for r in test_rows]
    l_sum, l_per, l_checks = score_system(leads, test_rows, [True] * len(leads), evaluation, min_chars, max_chars)
    baselines: dict = {"lead": l_sum, "base": None, "champion": champion.get("baseline")}
    differences = {"lead": paired_difference(c_per, l_per, evaluation.bootstrap_samples, evaluation.seed)}
    champ = h_per = None
    if champion["status"] in ("scored", "same_model"):
        champ = read_jsonl(folder / "champion.test.jsonl") if champion["status"] == "scored" else cand
        h_sum, h_per, _ = score_system([g["prediction"] for g in champ], test_rows, [g["stopped"] for g in champ], evaluation, min_chars, max_chars)
        baselines["champion"] = {**h_sum, "same_test_split": True, "source": champion["message"]}
        differences["champion"] = paired_difference(c_per, h_per, evaluation.bootstrap_samples, evaluation.seed)
    base = b_per = b_checks = None
    if run_base:
        base = read_jsonl(folder / "base.test.jsonl")
        b_sum, b_per, b_checks = score_system([g["prediction"] for g in base], test_rows, [g["stopped"] for g in base], evaluation, min_chars, max_chars)
        baselines["base"] = b_sum
        differences["base"] = paired_difference(c_per, b_per, evaluation.bootstrap_samples, evaluation.seed)

    out_rows = []
    for i, (r, g) in enumerate(zip(test_rows, cand, strict=True)):
        row = {
            "id": r["id"], "content": r["content"], "reference": r["title"],
            "prediction": g["prediction"], "raw": g["raw"], "stopped": g["stopped"], "new_tokens": g["new_tokens"],
            "rouge_l": round(float(c_per["rouge_l"][i]), 4),
            "failed_checks": [k for k, v in c_checks[i].items() if v],
            "lead": leads[i], "lead_rouge_l": round(float(l_per["rouge_l"][i]), 4),
        }
        if base is not None:
            row |= {"base": base[i]["prediction"], "base_rouge_l": round(float(b_per["rouge_l"][i]), 4),
                    "base_failed_checks": [k for k, v in b_checks[i].items() if v]}
        if champ is not None:
            row |= {"champion": champ[i]["prediction"], "champion_rouge_l": round(float(h_per["rouge_l"][i]), 4)}
        out_rows.append(row)
    write_jsonl(folder / final_predictions.name, out_rows)

    validation = None
    if val_rows:
        v = read_jsonl(folder / "candidate.validation.jsonl")
        validation, _, v_checks = score_system([g["prediction"] for g in v], val_rows, [g["stopped"] for g in v], evaluation, min_chars, max_chars)
        write_jsonl(folder / "predictions.validation.jsonl", [
            {"id": r["id"], "reference": r["title"], "prediction": g["prediction"], "stopped": g["stopped"],
             "failed_checks": [k for k, val in ch.items() if val]}
            for r, g, ch in zip(val_rows, v, v_checks, strict=True)
        ])
    return {
        "split": "test", "n": len(test_rows), "max_title_chars": max_chars, "min_title_chars": min_chars,
        "tokenization": "character (CJK per character, ASCII letter/digit runs as one token; punctuation and spaces ignored)",
        "rouge_averaging": "mean of per-example F1", "bleu_averaging": "corpus BLEU-1 with brevity penalty",
        "candidate": c_sum, "baselines": baselines, "differences": differences, "validation": validation,
        "champion": {k: v for k, v in champion.items() if k in ("status", "message", "record")},
        "predictions_path": str(final_predictions),
    }


# ---- gate ------------------------------------------------------------------------------------

def _rule(rule: str, metric: str, value, required: float, kind: str = "min", baseline: str | None = None) -> dict:
    """One gate rule. `kind` min: value >= required; max: value <= required; ties (within EPS) pass."""
    ok_number = isinstance(value, (int, float)) and value == value  # NaN != NaN
    if not ok_number:
        passed, msg = False, f"{rule}: candidate {metric} is missing or not a number"
    elif kind == "min":
        passed = value >= required - EPS
        msg = f"{rule}: {value:.4f} {'≥' if passed else '<'} required {required:.4f}"
    else:
        passed = value <= required + EPS
        msg = f"{rule}: {value:.4f} {'≤' if passed else '>'} allowed {required:.4f}"
    return {"rule": rule, "metric": metric, "value": value if ok_number else None, "required": required,
            "kind": kind, "baseline": baseline, "status": "pass" if passed else "fail", "message": msg}


def gate(metrics: dict, min_rouge_l: float, params: GateParams) -> dict:
    """The quality gate: `{passed, reasons (failed rules), notes (skipped rules), checks (every rule)}`.

    Rules, all on the test split: minimum ROUGE-L (`min_rouge_l`), ROUGE-1, ROUGE-2 and BLEU-1;
    maximum share of predictions failing any headline check; candidate ROUGE-L at least Lead's,
    the base model's and (when `margin_over_champion` is not None) the champion's, each plus a margin.
    A margin rule whose baseline is absent (not measured, or the champion was scored on another
    test split) fails, or is skipped with a note when `missing_baseline="skip"`. With no champion at
    all (none recorded, or its weights gone from this worker) the champion rule is skipped with a
    note saying so: the first model, or one that cannot be compared, is gated on the other rules.
    """
    cand = metrics.get("candidate") or {}
    base_lines = metrics.get("baselines") or {}
    checks = [
        _rule("ROUGE-L ≥ min_rouge_l", "rouge_l", cand.get("rouge_l"), min_rouge_l),
        _rule("ROUGE-1 ≥ gate.min_rouge_1", "rouge_1", cand.get("rouge_1"), params.min_rouge_1),
        _rule("ROUGE-2 ≥ gate.min_rouge_2", "rouge_2", cand.get("rouge_2"), params.min_rouge_2),
        _rule("BLEU-1 ≥ gate.min_bleu_1", "bleu_1", cand.get("bleu_1"), params.min_bleu_1),
        _rule("headline check failures ≤ gate.max_check_failure_rate", "check_failure_rate",
              (cand.get("checks") or {}).get("any"), params.max_check_failure_rate, kind="max"),
    ]
    margins = [("lead", "Lead", params.margin_over_lead, "gate.margin_over_lead"),
               ("base", "base model", params.margin_over_base, "gate.margin_over_base")]
    if params.margin_over_champion is not None:
        margins.append(("champion", "champion", params.margin_over_champion, "gate.margin_over_champion"))
    for key, label, margin, field in margins:
        rule = f"ROUGE-L ≥ {label} + {field}"
        b = base_lines.get(key)
        if key == "champion" and b is None:
            why = (metrics.get("champion") or {}).get("message") or "no champion was given"
            checks.append({"rule": rule, "metric": "rouge_l", "value": cand.get("rouge_l"), "required": None, "kind": "min",
                           "baseline": key, "status": "skipped", "message": f"{rule}: not applied, {why}; gated on the other rules"})
            continue
        problem = None
        if b is None or not isinstance(b.get("rouge_l"), (int, float)) or b["rouge_l"] != b["rouge_l"]:
            problem = f"{label} baseline was not measured"
        elif key == "champion" and not b.get("same_test_split", False):
            problem = "champion was scored on a different test split, so its ROUGE-L is not comparable"
        if problem:
            status = "skipped" if params.missing_baseline == "skip" else "fail"
            checks.append({"rule": rule, "metric": "rouge_l", "value": cand.get("rouge_l"), "required": None, "kind": "min",
                           "baseline": key, "status": status,
                           "message": f"{rule}: {problem} (gate.missing_baseline={params.missing_baseline!r})"})
            continue
        checks.append(_rule(rule, "rouge_l", cand.get("rouge_l"), b["rouge_l"] + margin, baseline=key))
    reasons = [c["message"] for c in checks if c["status"] == "fail"]
    notes = [c["message"] for c in checks if c["status"] == "skipped"]
    return {"passed": not reasons, "reasons": reasons, "notes": notes, "checks": checks}


_decide = gate  # gate_task's parameter `gate` (the thresholds, as the flow names it) hides the function


# ---- Prefect tasks ---------------------------------------------------------------------------

def _stamp(inputs: dict) -> Path:
    return Path(inputs["run_dir"]) / f".evaluate{STAMP_SUFFIX}"


def _inputs_fingerprint(inputs: dict) -> dict:
    """The content behind the path inputs: adapter weights, the test and validation splits, the champion's metrics."""
    def sha(path) -> str | None:
        return file_sha256(Path(path)) if path and Path(path).is_file() else None

    evaluation = inputs.get("evaluation")
    adapter = inputs.get("adapter_dir")
    return {
        "adapter": sha(Path(adapter) / "adapter_model.safetensors") if adapter else None,
        "splits": {name: sha(Path(inputs["split_dir"]) / f"{name}.jsonl") for name in ("test", "validation")},
        "champion": sha(evaluation.champion_metrics) if isinstance(evaluation, EvalParams) else None,
    }


@task(
    name="evaluate",
    cache_policy=StageCache(
        code_of=__name__,
        fingerprint=_inputs_fingerprint,
        outputs=lambda inputs: [Path(inputs["run_dir"]) / "eval" / ".complete", Path(inputs["run_dir"]) / "eval" / "metrics.json"],
        stamp=_stamp,
    ),
)
def evaluate_task(
    adapter_dir: str | None,
    base_model_dir: str,
    split_dir: str,
    run_dir: str,
    max_title_chars: int,
    min_title_chars: int,
    evaluation: EvalParams,
    champion: dict | None = None,
) -> dict:
    """Title and score the test split (and the champion's titles of it); returns `metrics_path`, `predictions_path`, `metrics` (small).

    Cached (`StageCache`) on the inputs (the champion's record included), the code it runs and the
    content of the adapter, the splits and the champion's metrics, while `<run>/eval` is complete.
    """
    with stamped(_stamp({"run_dir": run_dir})):
        return evaluate(adapter_dir, base_model_dir, split_dir, run_dir, max_title_chars, min_title_chars, evaluation,
                        logger=get_run_logger(), champion=champion)


@task(name="gate")
def gate_task(metrics_path: str, min_rouge_l: float, gate: GateParams) -> dict:
    """Apply the gate to `metrics_path`; publish the table and report; returns `passed`, `reasons`, `notes`, `metrics`."""
    metrics = MetricsRecord.read(metrics_path).model_dump(exclude_unset=True)
    decision = _decide(metrics, min_rouge_l, gate)
    atomic_write_json(Path(metrics_path).with_name("gate.json"), {**decision, "min_rouge_l": min_rouge_l, "gate": gate.model_dump()})
    create_table_artifact(key="titlegen-eval-metrics", table=metrics_table(metrics, decision),
                          description="Candidate vs baselines on the test split, with the gate's rules")
    samples = pick_samples(metrics.get("predictions_path", ""), metrics.get("inputs", {}).get("evaluation", {}).get("report_samples", 10))
    create_markdown_artifact(key="titlegen-eval-report", markdown=report_markdown(metrics, decision, samples),
                             description="Quality gate verdict and sample titles")
    logger = get_run_logger()
    for c in decision["checks"]:
        (logger.info if c["status"] != "fail" else logger.warning)(c["message"])
    return {"passed": decision["passed"], "reasons": decision["reasons"], "notes": decision["notes"], "metrics": _small(metrics)}
