"""The checks a served candidate must pass before promotion: the smoke test and the latency gate.

Smoke test: `/api/generate` on held-out test articles; each answer must be non-empty, end with
`done_reason: "stop"`, be `min_title_chars`..`max_title_chars` long and hold no template residue.
Latency: one warm-up request, then timed requests; p50/p95/mean of the wall time (measured here)
and of Ollama's own durations (reported in nanoseconds), gated on the wall time.
"""

import re
import time
from typing import Any

import numpy as np

from titlegen.ollama_client import OllamaClient
from titlegen.prompt import TEMPLATE_MARKERS, instruction_template


def _residue_fragments() -> list[str]:
    """Template markers plus lines of the instruction, whose echo means the prompt leaked out."""
    lines = [ln.strip() for ln in re.split(r"\{content\}|\{max_title_chars\}|\n", instruction_template())]
    return list(TEMPLATE_MARKERS) + [ln for ln in lines if len(ln) >= 5]


def title_problems(response: dict, min_title_chars: int, max_title_chars: int) -> list[str]:
    """What is wrong with one `/api/generate` answer as a headline; empty when it passes."""
    title = str(response.get("response", "")).strip()
    problems = []
    if not title:
        problems.append("empty title")
    if response.get("done_reason") != "stop":
        problems.append(f"done_reason {response.get('done_reason')!r}, not 'stop' (the model did not end its turn)")
    if title and not (min_title_chars <= len(title) <= max_title_chars):
        problems.append(f"{len(title)} characters, outside [{min_title_chars}, {max_title_chars}]")
    residue = [frag for frag in _residue_fragments() if frag in title]
    if residue:
        problems.append(f"template residue {residue[:3]}")
    return problems


def smoke_test(client: OllamaClient, model: str, articles: list[dict], min_title_chars: int, max_title_chars: int, keep_alive: str) -> dict:
    rows = []
    for row in articles:
        answer = client.generate(model, row["input"], keep_alive)
        problems = title_problems(answer, min_title_chars, max_title_chars)
        rows.append({
            "article_chars": len(row["input"]),
            "reference": row.get("target"),
            "title": str(answer.get("response", "")).strip(),
            "done_reason": answer.get("done_reason"),
            "eval_count": answer.get("eval_count"),
            "passed": not problems,
            "problems": "; ".join(problems),
        })
    failed = sum(not r["passed"] for r in rows)
    return {"passed": failed == 0, "articles": len(rows), "failed": failed, "rows": rows}


def _ms(ns: Any) -> float | None:
    return None if ns is None else ns / 1e6


def summarize_latency(requests: list[dict]) -> dict:
    """p50/p95/mean of each timing over the timed requests (wall time measured here, the rest
    reported by Ollama in nanoseconds), and decode speed in tokens/s."""
    summary: dict[str, Any] = {"requests": len(requests)}
    for key in ("wall_ms", "total_ms", "load_ms", "prompt_eval_ms", "eval_ms", "tokens_per_s", "prompt_tokens", "eval_tokens"):
        values = np.array([r[key] for r in requests if r.get(key) is not None], dtype=float)
        if values.size:
            summary[key] = {
                "p50": round(float(np.percentile(values, 50)), 2),
                "p95": round(float(np.percentile(values, 95)), 2),
                "mean": round(float(values.mean()), 2),
            }
    return summary


def measure_latency(client: OllamaClient, model: str, prompts: list[str], n: int, keep_alive: str) -> dict:
    """One warm-up request (loads the model), then `n` timed requests cycling through `prompts`."""
    warm = client.generate(model, prompts[0], keep_alive)
    requests = []
    for i in range(n):
        start = time.perf_counter()
        answer = client.generate(model, prompts[i % len(prompts)], keep_alive)
        wall = (time.perf_counter() - start) * 1000
        eval_count, eval_ns = answer.get("eval_count"), answer.get("eval_duration")
        requests.append({
            "wall_ms": round(wall, 2),
            "total_ms": _ms(answer.get("total_duration")),
            "load_ms": _ms(answer.get("load_duration")),
            "prompt_eval_ms": _ms(answer.get("prompt_eval_duration")),
            "eval_ms": _ms(eval_ns),
            "prompt_tokens": answer.get("prompt_eval_count"),
            "eval_tokens": eval_count,
            "tokens_per_s": round(eval_count / (eval_ns / 1e9), 2) if eval_count and eval_ns else None,
            "done_reason": answer.get("done_reason"),
        })
    return {"warmup_load_ms": _ms(warm.get("load_duration")), "summary": summarize_latency(requests), "requests": requests}


def latency_problems(summary: dict, max_p50_ms: float, max_p95_ms: float) -> list[str]:
    wall = summary["wall_ms"]
    problems = []
    if wall["p50"] > max_p50_ms:
        problems.append(f"p50 {wall['p50']:.0f} ms > {max_p50_ms:.0f} ms")
    if wall["p95"] > max_p95_ms:
        problems.append(f"p95 {wall['p95']:.0f} ms > {max_p95_ms:.0f} ms")
    return problems


def latency_table(summary: dict) -> list[dict]:
    return [{"metric": k, **v} for k, v in summary.items() if isinstance(v, dict)]
