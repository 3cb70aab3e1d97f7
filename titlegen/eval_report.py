"""The evaluate-gate stage's report: the rules table (Prefect table artifact) and the markdown report.

Both put the candidate beside every baseline (Lead, the base model, the champion) on the same test
split; the report adds the paired bootstrap differences, the headline check rates and sample titles.
"""

from pathlib import Path

from titlegen.runs import read_jsonl

METRIC_NAMES = {"rouge_1": "ROUGE-1", "rouge_2": "ROUGE-2", "rouge_l": "ROUGE-L", "bleu_1": "BLEU-1"}


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.4f}"


def _pct(x) -> str:
    return "—" if x is None else f"{x:.1%}"


def metrics_table(metrics: dict, decision: dict) -> list[dict]:
    """One row per gate rule: candidate (95% CI), each baseline, the requirement, and the verdict."""
    cand = metrics["candidate"]
    bl = metrics["baselines"]
    rows = []
    for c in decision["checks"]:
        m = c["metric"]
        if m == "check_failure_rate":
            cand_s = _fmt(cand["checks"]["any"])
            per = {k: (_fmt(b["checks"]["any"]) if b and "checks" in b else "—") for k, b in bl.items()}
        else:
            lo, hi = cand.get("ci", {}).get(m, [None, None])
            cand_s = f"{_fmt(cand.get(m))} [{_fmt(lo)}, {_fmt(hi)}]"
            per = {k: (_fmt(b.get(m)) if b else "—") for k, b in bl.items()}
        # Verdict and requirement first: the Prefect UI cuts wide tables off on the right.
        rows.append({
            "rule": c["rule"], "result": c["status"].upper(),
            "required": ("—" if c["required"] is None else f"{'≥' if c['kind'] == 'min' else '≤'} {c['required']:.4f}"),
            "candidate [95% CI]": cand_s, "Lead": per.get("lead", "—"),
            "base model": per.get("base", "—"), "champion": per.get("champion", "—"),
        })
    return rows


def report_markdown(metrics: dict, decision: dict, samples: list[dict]) -> str:
    """The verdict, the table, paired differences, check rates, and sample titles."""
    verdict = "PASSED: the model may be published" if decision["passed"] else "BLOCKED (GateBlocked)"
    lines = [f"# Quality gate: {verdict}", "", f"Test split: {metrics['n']} articles. {metrics['tokenization']}; "
             f"ROUGE: {metrics['rouge_averaging']}; BLEU-1: {metrics['bleu_averaging']}.", ""]
    if decision["reasons"]:
        lines += ["## Why it was blocked", "", *[f"- {r}" for r in decision["reasons"]], ""]
    if decision["notes"]:
        lines += ["## Skipped rules", "", *[f"- {r}" for r in decision["notes"]], ""]
    lines += champion_section(metrics)
    table = metrics_table(metrics, decision)
    head = list(table[0])
    lines += ["## Rules", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in table]
    lines += ["", "## Candidate minus baseline (paired bootstrap, 95% CI)", "", "| baseline | " + " | ".join(METRIC_NAMES.values()) + " |", "|" + " --- |" * 5]
    for name, d in metrics["differences"].items():
        lines.append(f"| {name} | " + " | ".join(f"{d[k]['diff']:+.4f} [{d[k]['ci'][0]:+.4f}, {d[k]['ci'][1]:+.4f}]" for k in METRIC_NAMES) + " |")
    from titlegen.metrics import CHECKS

    systems = {"candidate": metrics["candidate"], **{k: v for k, v in metrics["baselines"].items() if v and "checks" in v}}
    lines += ["", "## Headline check failure rates", "", "| check | " + " | ".join(systems) + " |", "|" + " --- |" * (len(systems) + 1)]
    for c in (*CHECKS, "any"):
        lines.append(f"| {c} | " + " | ".join(_pct(s["checks"].get(c)) for s in systems.values()) + " |")
    if metrics.get("validation"):
        v = metrics["validation"]
        lines += ["", f"Validation split ({v['n']} articles, not gated): " + ", ".join(f"{METRIC_NAMES[k]} {v[k]:.4f}" for k in METRIC_NAMES)]
    if samples:
        lines += ["", f"## {len(samples)} test articles", ""]
        for i, s in enumerate(samples, 1):
            article = s["content"].replace("\n", " ")
            lines += [f"**{i}.** {article[:160]}{'…' if len(article) > 160 else ''}", "",
                      f"- reference: {s['reference']}", f"- candidate: {s['prediction'] or '(empty)'}"
                      + (f" — failed: {', '.join(s['failed_checks'])}" if s["failed_checks"] else ""),
                      f"- Lead: {s['lead']}"]
            if "base" in s:
                lines.append(f"- base model: {s['base'] or '(empty)'}")
            if "champion" in s:
                lines.append(f"- champion: {s['champion'] or '(empty)'}")
            lines.append("")
    return "\n".join(lines)


def champion_section(metrics: dict) -> list[str]:
    """Challenger and champion side by side on this test split: which champion, how it was scored, the difference."""
    info = metrics.get("champion")
    if not info:
        return []
    lines = ["## Challenger vs champion", "", f"Champion: {info['message']}."]
    record = info.get("record") or {}
    if record:
        hub, served = record.get("hub") or {}, record.get("ollama") or {}
        lines.append(f"Serving `{served.get('tag')}` (digest `{str(served.get('digest'))[:12]}`) since {record.get('promoted_at')}, "
                     f"from run `{record.get('run_name')}`; Hub: " + (f"`{hub['repo']}` at `{str(hub.get('commit'))[:12]}`" if hub.get("repo") and not hub.get("dry_run") else "not uploaded") + ".")
    champ, diff = metrics["baselines"].get("champion"), metrics["differences"].get("champion")
    if champ is None:
        return [*lines, "", "Not compared: the champion rule is skipped and the other rules decide.", ""]
    lines += ["", "| metric | challenger | champion | challenger − champion [95% CI] |", "| --- | --- | --- | --- |"]
    for k, name in METRIC_NAMES.items():
        d = f"{diff[k]['diff']:+.4f} [{diff[k]['ci'][0]:+.4f}, {diff[k]['ci'][1]:+.4f}]" if diff else "—"
        lines.append(f"| {name} | {_fmt(metrics['candidate'].get(k))} | {_fmt(champ.get(k))} | {d} |")
    return [*lines, ""]


def pick_samples(predictions_path: str | Path, k: int) -> list[dict]:
    """`k` test rows spread evenly over the file (deterministic)."""
    if k <= 0 or not Path(predictions_path).exists():
        return []
    rows = read_jsonl(predictions_path)
    if len(rows) <= k:
        return rows
    return [rows[i * len(rows) // k] for i in range(k)]
