"""Boilerplate left after cleaning, and rows kept, on the stand-in datasets.

Cleans each dataset with the default `clean` parameters (the plain `clean` function, no Prefect)
and runs the family detectors of `titlegen.boilerplate_check` (written apart from the cleaner) on
every cleaned row. Reports, per dataset: rows in and kept (share kept), the share of cleaned rows
carrying any family and each family, the same detectors on the raw rows for comparison, the
rows each cleaning rule changed or dropped, and the share of simplified-Chinese rows. Goals
(issue 16): at most 2 % of cleaned rows carry any family, at least 95 % of rows kept (rows that
are too long or too short for the length limits are not a boilerplate loss, so "kept" is also
given against the rows that pass the length limits).

    python bench/data_boilerplate.py                     # both sets in ../shared/data
    python bench/data_boilerplate.py --show byline       # print a few carrying rows per family
"""

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("zh-tw-news-2017", "president-news")
LENGTH_DROPS = ("title_too_short", "title_too_long", "content_too_short", "content_too_long")


def measure(folder: Path, show: str | None = None) -> dict:
    import pyarrow.parquet as pq

    from titlegen.boilerplate_check import carry_rates, families_in
    from titlegen.params import CleanParams, ColumnMap
    from titlegen.runs import read_jsonl
    from titlegen.tasks.clean import clean

    files = sorted((folder / "data").glob("*.parquet"))
    raw_rows = [r for f in files for r in pq.read_table(f, columns=["title", "content"]).to_pylist()]
    with tempfile.TemporaryDirectory(prefix="titlegen-bp-") as tmp:
        pq.write_table(pq.read_table(files[0]) if len(files) == 1 else _concat(files), f"{tmp}/raw.parquet")
        started = time.perf_counter()
        result = clean(f"{tmp}/raw.parquet", ColumnMap(), CleanParams(), tmp)
        seconds = time.perf_counter() - started
        rows = read_jsonl(result["path"])
        report = json.loads(Path(result["report_path"]).read_text())
    rows_in = len(raw_rows)
    length_dropped = sum(report["counts"].get(k, 0) for k in LENGTH_DROPS)
    after = carry_rates(rows)
    before = carry_rates({"target": r["title"] or "", "input": r["content"] or ""} for r in raw_rows)
    if show:
        shown = [r for r in rows if show in families_in(r["target"], r["input"])][:8]
        for r in shown:
            print(f"--- {r['id']} | {r['target']}\n{r['input'][:400]}\n")
    return {
        "rows_in": rows_in,
        "rows_kept": len(rows),
        "kept_share": round(len(rows) / rows_in, 4),
        "kept_share_within_length_limits": round(len(rows) / max(1, rows_in - length_dropped), 4),
        "carrying_after_clean": {"any": after["any"], "per_family": after["per_family"]},
        "carrying_raw": {"any": before["any"], "per_family": before["per_family"]},
        "example_ids_after_clean": after["examples"],
        "clean_counts": report["counts"],
        "simplified_rows_share": report.get("script", {}).get("simplified_share"),
        "clean_seconds": round(seconds, 2),
    }


def _concat(files: list[Path]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--show", help="Print a few cleaned rows that still carry this family.")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "data_boilerplate.json"))
    args = parser.parse_args(argv)
    results = {}
    for name in DATASETS:
        folder = Path(args.data) / name
        if not folder.exists():
            sys.exit(f"{folder} does not exist (the stand-in datasets live in ../shared/data)")
        results[name] = measure(folder, args.show)
        r = results[name]
        print(f"{name}: kept {r['rows_kept']}/{r['rows_in']} ({r['kept_share']:.1%}; "
              f"{r['kept_share_within_length_limits']:.1%} of rows within the length limits); carrying any family "
              f"{r['carrying_after_clean']['any']:.2%} (raw {r['carrying_raw']['any']:.2%})")
        for family, share in r["carrying_after_clean"]["per_family"].items():
            print(f"  {family:<18} {share:.2%}  (raw {r['carrying_raw']['per_family'][family]:.2%})")
    if not args.show:
        from titlegen.runs import atomic_write_json

        atomic_write_json(args.out, {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/data_boilerplate.py",
            "goals": {"carrying_any_max": 0.02, "kept_share_min": 0.95},
            "datasets": results,
        })
    return results


if __name__ == "__main__":
    main()
