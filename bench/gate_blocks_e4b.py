"""The flow's GPU stages on the Gemma 3n E4B architecture with random weights: the gate must block it.

Runs the `titlegen` flow itself (a temporary local Prefect server, as `python -m` gives it) with a
randomly initialised `Gemma3nForConditionalGeneration(Gemma3nConfig())` as the base model, a short
fine-tune and evaluation on real articles, and records what a user would check: the final state is
`GateBlocked`, its message gives the reasons, and no merge, upload or Ollama folder exists.

    python3 bench/gate_blocks_e4b.py DATASET RANDOM_E4B_DIR --out bench/results/gate_blocks_e4b.json
"""

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("base_model")
    ap.add_argument("--output-root", default="/tmp/titlegen-e4b")
    ap.add_argument("--max-steps", type=int, default=10)
    ap.add_argument("--eval-rows", type=int, default=64)
    ap.add_argument("--unsloth-compile", choices=["on", "off"], default="on")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gate_blocks_e4b.json"))
    args = ap.parse_args()

    from titlegen.flows.titlegen import titlegen

    t = time.time()
    state = titlegen(
        dataset=args.dataset, base_model=args.base_model, preset="gpu", output_root=args.output_root,
        max_steps=args.max_steps,
        train={"unsloth_compile": args.unsloth_compile == "on", "logging_steps": 1},
        evaluation={"max_eval_rows": args.eval_rows, "score_validation": False},
        return_state=True,
    )
    wall = time.time() - t
    runs = sorted(Path(args.output_root).iterdir())
    run = runs[-1] if runs else None
    present = sorted(p.name for p in run.iterdir()) if run else []
    metrics = json.loads((run / "eval" / "metrics.json").read_text()) if run and (run / "eval" / "metrics.json").exists() else {}
    training = next(run.glob("*-lora/training.json"), None) if run else None
    record = {
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "state_type": state.type.value, "state_name": state.name, "message": state.message,
        "wall_s": round(wall, 1), "run_folder": str(run), "run_folder_entries": present,
        "downstream_outputs": [n for n in present if n in ("final-hf", "gguf", "upload", "ollama")],
        "candidate_rouge_l": (metrics.get("candidate") or {}).get("rouge_l"),
        "lead_rouge_l": ((metrics.get("baselines") or {}).get("lead") or {}).get("rouge_l"),
        "base_rouge_l": ((metrics.get("baselines") or {}).get("base") or {}).get("rouge_l"),
        "generation": metrics.get("generation"),
        "training": json.loads(training.read_text()) if training else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1, ensure_ascii=False, default=str))
    print(json.dumps({k: record[k] for k in ("state_name", "message", "wall_s", "downstream_outputs", "candidate_rouge_l", "lead_rouge_l")}, ensure_ascii=False))


if __name__ == "__main__":
    main()
