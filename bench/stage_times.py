"""Wall time per stage of a `titlegen` flow run, read from the Prefect API.

    PREFECT_API_URL=http://127.0.0.1:4200/api python bench/stage_times.py            # latest run
    PREFECT_API_URL=http://127.0.0.1:4200/api python bench/stage_times.py brass-dragonfly

Prints a table (stage, state, seconds, cached) and writes bench/results/stage_times.json
(keyed by flow-run name, so several runs can be kept side by side).
"""

import argparse
import asyncio
import datetime as dt
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["ingest", "clean", "split", "fine-tune", "evaluate", "gate", "merge", "upload", "ollama-create"]


async def collect(name: str | None) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["titlegen"])),
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])) if name else None,
            sort=FlowRunSort.START_TIME_DESC, limit=1,
        )
        if not runs:
            raise SystemExit(f"no titlegen flow run{' named ' + name if name else ''} on {client.api_url}")
        run = runs[0]
        tasks = await client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
    rows = []
    for t in sorted(tasks, key=lambda t: t.start_time or t.expected_start_time or dt.datetime.max.replace(tzinfo=dt.timezone.utc)):
        stage = t.name.rsplit("-", 1)[0]
        seconds = (t.end_time - t.start_time).total_seconds() if t.start_time and t.end_time else None
        rows.append({"stage": stage, "state": t.state_name, "seconds": round(seconds, 1) if seconds is not None else None,
                     "cached": t.state_name == "Cached"})
    total = (run.end_time - run.start_time).total_seconds() if run.start_time and run.end_time else None
    return {"flow_run": run.name, "state": run.state_name, "message": run.state.message if run.state else None,
            "started": run.start_time.isoformat() if run.start_time else None,
            "flow_run_seconds": round(total, 1) if total else None, "parameters": run.parameters, "stages": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("flow_run", nargs="?", help="flow-run name (default: the latest titlegen run)")
    ap.add_argument("--note", default="", help="free text stored with the record (machine, load, command)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "stage_times.json"))
    args = ap.parse_args()
    record = asyncio.run(collect(args.flow_run))
    record["note"] = args.note
    print(f"flow run {record['flow_run']}: {record['state']} in {record['flow_run_seconds']} s")
    print(f"{'stage':14} {'state':12} {'seconds':>8}")
    for r in record["stages"]:
        print(f"{r['stage']:14} {r['state']:12} {r['seconds'] if r['seconds'] is not None else '-':>8}")
    from titlegen.runs import atomic_write_json

    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[record["flow_run"]] = record
    atomic_write_json(out, data)


if __name__ == "__main__":
    main()
