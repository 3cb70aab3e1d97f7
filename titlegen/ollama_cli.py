"""`python -m titlegen.tasks.ollama`: the ollama-create stage outside the flow (the compose `tools` service).

    python -m titlegen.tasks.ollama --run-dir outputs/<run> --gguf outputs/<run>/gguf/<file>.gguf \
        --model titlegen --params '{"max_p50_ms": 5000, "max_p95_ms": 10000}'

Prints the stage's report as JSON and exits 0, or prints why it failed and exits 1. Outside Prefect
nothing retries an unreachable server: run it again once Ollama answers.
"""

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from titlegen.ollama_client import OllamaError, OllamaUnreachable
from titlegen.params import OllamaParams


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ollama-create stage once; returns the exit status."""
    import argparse

    from titlegen.tasks.ollama import DeployBlocked, ollama_create

    parser = argparse.ArgumentParser(prog="python -m titlegen.tasks.ollama", description=main.__doc__)
    parser.add_argument("--run-dir", required=True, help="Run folder; the Modelfile and reports go to <run-dir>/ollama/.")
    parser.add_argument("--gguf", help="GGUF to serve (default: FROM hf.co when --params sets from_hub).")
    parser.add_argument("--split-dir", help="Folder with test.jsonl (default: <run-dir>/split).")
    parser.add_argument("--model", default="titlegen", help="Ollama model name; serving tag <name>:latest.")
    parser.add_argument("--max-title-chars", type=int, default=40)
    parser.add_argument("--min-title-chars", type=int, default=6)
    parser.add_argument("--hub", default="{}", help="The upload stage's result as JSON (repo, gguf_repo, ollama_refs, dry_run).")
    parser.add_argument("--params", default="{}", help='OllamaParams as JSON, e.g. \'{"max_p50_ms": 5000, "use_cli": true}\'.')
    args = parser.parse_args(argv)
    params = OllamaParams(**json.loads(args.params))
    gguf_files = {params.gguf_type: args.gguf} if args.gguf else {}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = ollama_create(gguf_files, json.loads(args.hub) or None, args.split_dir or str(Path(args.run_dir) / "split"),
                               args.run_dir, args.model, args.max_title_chars, args.min_title_chars, params)
    except (DeployBlocked, OllamaUnreachable, OllamaError, ValueError, FileNotFoundError) as err:
        print(f"ollama-create failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0
