"""Data-stage throughput: ingest -> clean -> split through the real Prefect tasks, cold and cached.

Runs the three tasks of the `titlegen` flow in a small flow on a stand-in dataset (default
`../shared/data/president-news`, 12,353 rows) into a fresh temporary folder, then runs them again
unchanged. Task time is the wall time of each task call inside the flow (Prefect's own
orchestration included, the flow and API start-up excluded); rows/s is input rows over the summed
task time of the cold run. CPU seconds of the whole process are reported beside it, since the
wall time depends on what else the machine's 2 cores run (the 1-minute load average is recorded).

    python bench/data_stages.py                                   # president-news
    python bench/data_stages.py ../shared/data/zh-tw-news-2017 --name zh-tw-news-2017

With `PREFECT_API_URL` unset Prefect starts a temporary local server for the run (not timed).
Goals (issue 2): the three stages under 10 s of task time on 2 cores; a cached re-run under 2 s.
"""

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "clean", "split")


# The temporary server Prefect starts when no API is configured can take over 20 s to come up on a
# busy 2-core machine (its default wait).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def run_stages(dataset: str, out: str) -> dict:
    """One pass of the three tasks in a flow; per-task wall seconds, state names, and results."""
    from prefect import flow

    from titlegen.params import CleanParams, ColumnMap, SplitParams
    from titlegen.tasks.clean import clean_task
    from titlegen.tasks.ingest import ingest_task
    from titlegen.tasks.split import split_task

    @flow(name="bench-data-stages")
    def stages() -> dict:
        timing, states = {}, {}
        t = time.perf_counter()
        raw = ingest_task(dataset, None, ColumnMap(), f"{out}/data", return_state=True)
        timing["ingest"], states["ingest"] = time.perf_counter() - t, raw.name
        t = time.perf_counter()
        cleaned = clean_task(raw.result()["path"], ColumnMap(), CleanParams(), f"{out}/data", return_state=True)
        timing["clean"], states["clean"] = time.perf_counter() - t, cleaned.name
        t = time.perf_counter()
        splits = split_task(cleaned.result()["path"], SplitParams(), f"{out}/split", return_state=True)
        timing["split"], states["split"] = time.perf_counter() - t, splits.name
        return {"seconds": timing, "states": states, "rows_in": raw.result()["rows"],
                "rows_clean": cleaned.result()["rows"], "sizes": splits.result()["sizes"]}

    cpu = time.process_time()
    result = stages()
    result["cpu_seconds"] = time.process_time() - cpu
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", default=str(ROOT.parent / "shared" / "data" / "president-news"))
    parser.add_argument("--name", default="president-news", help="Dataset label in the results.")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "data_stages.json"))
    args = parser.parse_args(argv)
    if not Path(args.dataset).exists():
        sys.exit(f"{args.dataset} does not exist (the stand-in datasets live in ../shared/data)")
    with tempfile.TemporaryDirectory(prefix="titlegen-bench-") as tmp:
        run_stages(args.dataset, f"{tmp}/warmup")  # imports and the API client, not timed
        cold = run_stages(args.dataset, f"{tmp}/run")
        cached = run_stages(args.dataset, f"{tmp}/run")
    cold_total, cached_total = sum(cold["seconds"].values()), sum(cached["seconds"].values())
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": args.name,
        "command": "python bench/data_stages.py" + (f" {args.dataset} --name {args.name}" if args.name != "president-news" else ""),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "rows_in": cold["rows_in"],
        "rows_clean": cold["rows_clean"],
        "split_sizes": cold["sizes"],
        "cold": {"seconds": {k: round(v, 3) for k, v in cold["seconds"].items()}, "total_seconds": round(cold_total, 3),
                 "states": cold["states"], "process_cpu_seconds": round(cold["cpu_seconds"], 2),
                 "rows_per_second": round(cold["rows_in"] / cold_total, 1)},
        "cached": {"seconds": {k: round(v, 3) for k, v in cached["seconds"].items()}, "total_seconds": round(cached_total, 3),
                   "states": cached["states"], "process_cpu_seconds": round(cached["cpu_seconds"], 2)},
        "goals": {"cold_total_seconds": 10, "cached_total_seconds": 2},
    }
    print(f"{args.name}: {result['rows_in']} rows in, {result['rows_clean']} clean, split {result['split_sizes']}")
    print(f"{'stage':<8} {'cold s':>8} {'state':<10} {'cached s':>9} {'state':<8}")
    for s in STAGES:
        print(f"{s:<8} {cold['seconds'][s]:>8.2f} {cold['states'][s]:<10} {cached['seconds'][s]:>9.3f} {cached['states'][s]:<8}")
    print(f"{'total':<8} {cold_total:>8.2f} {'':<10} {cached_total:>9.3f}")
    print(f"cold: {result['cold']['rows_per_second']} rows/s, process CPU {result['cold']['process_cpu_seconds']} s; "
          f"load average {result['load_average_1m']} on {result['cpus']} CPUs")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[args.name] = result
    out.write_text(json.dumps(existing, ensure_ascii=False, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
