"""Merge one GPU lease's results into bench/results: what `bash bench/gpu_session.sh collect` brought back
(results.tgz, extracted), under the lease's key (e.g. 2026-12-01w).

    python bench/merge_lease.py 2026-12-01w /tmp/w --where "2026-12-01 10:02-10:24 UTC, 2 x NVIDIA H200 \
        (nvidia-h200-x2, 143,771 MiB, driver 580.159.04), bash bench/gpu_session.sh boot stream-w at 1a2b3c4" \
        --train train_270m_w.json --train train_270m_w2.json:2026-12-01w2 --quality quality_window_seed:1

* `--train FILE[:KEY]`: a `bench/train_throughput.py run` output; each row's case (and raw_case) gets `@KEY` (the
  lease's key unless given) and goes to `train_throughput.json`, or to `train_full_pts.json` when it ran whole
  (`full_pts_run`; the raw loop of such an invocation goes with it). A case already there is an error: give the
  invocation its own key.
* `--quality PREFIX:GPU[:SEEDS]`: the `bench/quality_sweep.py run` outputs RESULTS/PREFIX<seed>.json of one
  `qseeds` call (all its seeds at once on GPU GPU; SEEDS, FIRST-LAST or a comma list such as 84,88,90-92, picks that
  call's seeds where two calls shared a prefix): their runs, every test title kept, go to `quality_training_<LEASE>.json`, one summary each to
  `quality_training.json`, and, when the adapters were decoded under more rules, each rule's means over the seeds to
  `quality_rules_<LEASE>.json` (`quality_sweep.py rules`; with several prefixes, one file each, named after the
  prefix and seeds: quality_rules16_seed -> `quality_rules_<LEASE>-rules16.json`, with 62-71 `…-rules16-62-71.json`).
* RESULTS/queue.log goes to `profiles/lease-<LEASE>-queue.log`, unless an earlier call merged the same log under another key.

Nothing is written unless every input reads; each file is written whole (temp file, then rename).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality_sweep import rules_over_seeds, stop_weight_of  # noqa: E402

from titlegen.decoding import TITLE_STOPS  # noqa: E402
from titlegen.params import TrainParams  # noqa: E402
from titlegen.runs import atomic_write_text  # noqa: E402

MAX_TRACKED_BYTES = 2_000_000  # keep every tracked file under 2 MB
_TITLE = re.compile(r'\{\n\s+"id": [^{}]*?\n\s*\}')


def dump(doc: dict) -> str:
    """The results files' layout: one key a line, but each title dict (`id`, `raw`, …) on one line."""
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    return _TITLE.sub(lambda m: json.dumps(json.loads(m.group(0)), ensure_ascii=False), text)


def keyed_rows(path: Path, key: str) -> list[dict]:
    """A training-bench output's rows, each case (and the raw loop it is compared with) suffixed `@key`."""
    rows = []
    for row in json.loads(path.read_text())["rows"]:
        row = {**row, "case": f"{row['case']}@{key}"}
        if row.get("raw_case"):
            row["raw_case"] = f"{row['raw_case']}@{key}"
        rows.append(row)
    return rows


def training_text(train_set: dict) -> str:
    """How a quality run trained, in words, from its `--train-set` over the sweep's GPU preset."""
    default = TrainParams()
    quant = train_set.get("quantization", default.quantization)
    compile_ = {None: "Unsloth's compile by the default rule", True: "Unsloth's compile on", False: "Unsloth's compile off"}
    return ", ".join([
        "QLoRA" if quant == "4bit" else "16-bit LoRA", compile_[train_set.get("unsloth_compile", default.unsloth_compile)],
        f"optimizer {train_set.get('optimizer') or 'the preset default'}",
        f"keep_adapter {train_set.get('keep_adapter', default.keep_adapter)}"])


def decoding_text(row: dict) -> str:
    """The stage's decoding rule a quality run was scored under, and the rules it was decoded under again."""
    ev = row["metrics"]["inputs"]["evaluation"]
    stops = " or ".join(repr(s) for s in TITLE_STOPS)
    text = f"the evaluate stage's: repeat penalty {ev['repeat_penalty']:g} over {ev['repeat_last_n']} tokens, titles cut at {stops}"
    more = sorted(row.get("decoding", {}))
    return text + (f"; each adapter decoded again under {', '.join(more)} (row `decoding`)" if more else "")


def summary(row: dict, seed: int, train_set: dict, lease: str) -> dict:
    """One quality run as `quality_training.json`'s `summary` lists it (the stage's rule)."""
    m, tr = row["metrics"], row["training"]
    d = m["differences"]["lead"]["rouge_l"]
    default = TrainParams()
    return {
        "config": row["config"], "seed": seed, "train_set": train_set,
        "quantization": train_set.get("quantization", default.quantization),
        "keep_adapter": train_set.get("keep_adapter", default.keep_adapter),
        "unsloth_compile": train_set.get("unsloth_compile", default.unsloth_compile),
        "stop_token_weight": stop_weight_of(row),  # what trained (the default changed from 1 to 3 on 2026-12-01)
        "val_rouge_l": round(m["validation"]["rouge_l"], 4), "val_checks_any": round(m["validation"]["checks"]["any"], 4),
        "test_rouge_l": round(m["candidate"]["rouge_l"], 4), "minus_lead": round(d["diff"], 4),
        "minus_lead_ci": [round(x, 4) for x in d["ci"]], "test_checks_any": round(m["candidate"]["checks"]["any"], 4),
        "test_no_stop": round(m["candidate"]["checks"]["no_stop"], 4),
        "test_failures": dict(collections.Counter(c for t in row["failed_titles"] for c in t["failed_checks"]).most_common()),
        "kept_adapter": tr.get("kept_adapter"), "optimizer_steps": tr.get("global_step"), "test_sha256": m["test_sha256"],
        "train_seconds": tr.get("train_seconds"), "steady_tokens_per_second": tr.get("steady_tokens_per_second"),
        "first_step_seconds": tr.get("first_step_seconds"), "lease": lease, "title_stops_in_stage": list(TITLE_STOPS),
        "decoded_under_more_rules": sorted(row.get("decoding", {})),
    }


def seed_set(prefix: str, seeds: str) -> set[int]:
    """The seeds of a `--quality` spec's last part: FIRST-LAST, single seeds, or both, comma-separated (62-71 or 84,88,90-92)."""
    picked: set[int] = set()
    for item in seeds.split(","):
        first, sep, last = item.partition("-")
        if not (first.isdigit() and (last.isdigit() if sep else True)):
            raise SystemExit(f"--quality {prefix}:…:{seeds}: give the seeds as FIRST-LAST or a comma list, e.g. 62-71 or 84,88,90-92")
        picked.update(range(int(first), int(last or first) + 1))
    return picked


def quality_outputs(results: Path, prefix: str, seeds: str = "") -> list[tuple[int, Path]]:
    """(seed, file) of RESULTS/PREFIX<seed>.json, by seed; with `seeds` (see `seed_set`), those seeds only."""
    found = sorted((int(p.name[len(prefix):-len(".json")]), p) for p in results.glob(f"{prefix}*.json")
                   if p.name[len(prefix):-len(".json")].isdigit())
    if seeds:
        picked = seed_set(prefix, seeds)
        found = [(s, p) for s, p in found if s in picked]
    if not found:
        raise SystemExit(f"--quality {prefix}: no {prefix}<seed>.json{' for seeds ' + seeds if seeds else ''} in {results}; "
                         "give the prefix of the qseeds call (e.g. quality_window_seed)")
    return found


def merge(lease: str, results: Path, where: str, train: list[str], quality: list[str], into: Path) -> dict[str, str]:
    """Everything the lease brought back, merged into `into` (bench/results); returns {file: what changed}."""
    writes: dict[Path, str] = {}
    changed: dict[str, str] = {}
    for name in ("train_throughput.json", "train_full_pts.json"):
        target = into / name
        doc = json.loads(target.read_text()) if target.exists() else {"description": "", "rows": []}
        have = {r["case"] for r in doc["rows"]}
        added = []
        for spec in train:
            file, _, key = spec.partition(":")
            rows = keyed_rows(results / file, key or lease)
            whole = any(r.get("full_pts_run") for r in rows)  # a --full-pts invocation: its raw loop goes with its runs
            for row in rows:
                if bool(row.get("full_pts_run", whole)) != (name == "train_full_pts.json"):
                    continue
                if row["case"] in have:
                    raise SystemExit(f"{name} already has case {row['case']!r}: give {file} its own key (--train {file}:{lease}2)")
                have.add(row["case"])
                added.append({**row, "lease": where})
        if added:
            doc["rows"] += added
            writes[target] = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
            changed[name] = f"{len(added)} rows"

    runs, summaries, rules = [], [], []
    for spec in quality:
        prefix, _, rest = spec.partition(":")
        gpu, _, seeds = rest.partition(":")
        outputs = quality_outputs(results, prefix, seeds)
        for seed, path in outputs:
            out = json.loads(path.read_text())
            scored = [r for r in out["rows"] if "metrics" in r]
            if not scored:
                raise SystemExit(f"{path}: no row was scored ({[r.get('exit') for r in out['rows']]}); look at {path.with_suffix('.out')}")
            first = scored[0]
            m = first["metrics"]
            runs.append({
                "seed": seed, "prefix": prefix,
                "split": f"quality-split (test sha256 {m['test_sha256'][:8]}..., Lead ROUGE-L {m['baselines']['lead']['rouge_l']:.4f})",
                "lease": where, "gpu_index": int(gpu) if gpu else None, "decoding": decoding_text(first),
                "training": training_text(out.get("train_set", {})), "concurrent_trainings_on_gpu": len(outputs),
                "output": out})
            summaries += [summary(r, seed, out.get("train_set", {}), lease) for r in scored]
        if any(r.get("decoding") for run in runs[-len(outputs):] for r in run["output"]["rows"]):
            rules.append((prefix, seeds, outputs))
    if runs:
        target = into / f"quality_training_{lease}.json"
        if target.exists():
            raise SystemExit(f"{target} exists: this lease's quality runs were merged already (remove it to merge again)")
        writes[target] = dump({"description": f"The quality runs of lease {lease}, every test title kept (quality_training.json "
                                              f"holds their summaries; quality_rules_{lease}*.json the means by decoding rule).",
                               "card": next((r["output"].get("card") for r in runs if r["output"].get("card")), None), "runs": runs})
        changed[target.name] = f"{len(runs)} runs"
        total = into / "quality_training.json"
        doc = json.loads(total.read_text()) if total.exists() else {"description": "", "summary": [], "runs": []}
        doc["summary"] += summaries
        writes[total] = dump(doc)
        changed[total.name] = f"{len(summaries)} summaries"
    for prefix, seeds, outputs in rules:
        short = prefix.removeprefix("quality_").removesuffix("_seed")  # quality_rules16_seed -> rules16
        name = f"quality_rules_{lease}{'' if len(rules) == 1 else '-' + short + ('-' + seeds if seeds else '')}.json"
        if into / name in writes:
            raise SystemExit(f"--quality {prefix} twice: give each call its seeds (PREFIX:GPU:FIRST-LAST) so their rules files differ")
        doc = rules_over_seeds([str(p) for _, p in outputs], None)
        doc["results"] = [f"bench/results/quality_training_{lease}.json (runs[].output, {prefix}, seed {s})" for s, _ in outputs]
        writes[into / name] = json.dumps({"description": f"Each decoding rule's means over the seeds of {prefix}* (quality_sweep.py rules), lease {lease}.",
                                          "lease": lease, **doc}, indent=1, ensure_ascii=False) + "\n"
        changed[name] = f"{len(doc['by_rule'])} rules"
    log = results / "queue.log"
    if log.exists():
        text = log.read_text(errors="replace")
        # A lease merged in several calls (one key each) keeps its log once: under the first key.
        same = next((f for f in sorted((into / "profiles").glob("lease-*-queue.log")) if f.read_text(errors="replace") == text), None)
        if same is None:
            writes[into / "profiles" / f"lease-{lease}-queue.log"] = text
            changed[f"profiles/lease-{lease}-queue.log"] = "copied"
        else:
            changed[f"profiles/{same.name}"] = "already holds this queue.log"
    big = [f"{p.name} ({len(t.encode()) / 1e6:.2f} MB)" for p, t in writes.items() if len(t.encode()) > MAX_TRACKED_BYTES]
    if big:
        raise SystemExit(f"these would pass 2 MB, the limit for a tracked file: {', '.join(big)}; split the lease's runs "
                         "into more files (merge its --quality prefixes in separate calls under keys of their own)")
    for path, text in writes.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lease", help="the lease's key, e.g. 2026-12-01w")
    ap.add_argument("results", type=Path, help="the extracted results.tgz")
    ap.add_argument("--where", required=True, help="when, on what machine and card, which queue at which commit")
    ap.add_argument("--train", action="append", default=[], help="a train_throughput.py output, FILE[:KEY]; repeatable")
    ap.add_argument("--quality", action="append", default=[], help="a qseeds call's PREFIX:GPU[:SEEDS], SEEDS as 62-71 or 84,88,90-92; repeatable")
    ap.add_argument("--into", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    for name, what in merge(args.lease, args.results, args.where, args.train, args.quality, args.into).items():
        print(f"{name}: {what}")


if __name__ == "__main__":
    main()
