"""split: a deterministic, seeded train / validation / test split with no near copies across splits.

Policy:
- Articles whose bodies are similar (character 5-gram Jaccard >= `split.near_duplicate_threshold`,
  0.5 by default, well below cleaning's drop threshold) form one group, and a group never spans
  two splits, so no test article has a near copy in training.
- Groups are ordered by their smallest row id (a content hash, so the order does not depend on
  the file's row order) and shuffled with `random.Random(seed)`; test is filled first, then
  validation, each with whole groups up to its size; everything else trains.
- Sizes: each evaluation split gets `max(min_eval_rows, round(fraction * rows))` rows. On the
  1,400-row PTS dataset that is 140 test and 140 validation rows. A dataset too small to give both
  evaluation splits `min_eval_rows` and still keep at least as many training rows is an error,
  as is any split that would end up empty.
- Publisher splits: when the dataset came with its own `test` (or `validation`) split (a Hub
  dataset's splits, or files named `test-*.parquet`, `validation.jsonl`; ingest marks each row in
  `publisher_split`), those rows are that split, whatever its size, and never train. A training
  row in a near-duplicate group with one of them is dropped (counted in the manifest), and a split
  the publisher did not give is drawn from the training rows as above.

Output: the folder `out_dir` (written whole, atomically) with `train.jsonl`, `validation.jsonl`,
`test.jsonl` and `manifest.json` (sizes, seed, params, groups, sha256 of each file and of the input).
"""

import random
from pathlib import Path

from prefect import task

from titlegen.caching import STAMP_SUFFIX, StageCache, file_input_sha256, stamped
from titlegen.params import SplitParams
from titlegen.runs import atomic_dir, atomic_write_json, file_sha256, read_jsonl, write_jsonl

SPLITS = ("train", "validation", "test")
PUBLISHER_SPLIT = "publisher_split"  # set by ingest on datasets that come with their own splits
MANIFEST = "manifest.json"


def target_sizes(n: int, params: SplitParams) -> dict[str, int]:
    """Rows wanted per split; raises when `n` cannot give a usable split."""
    test = max(params.min_eval_rows, round(params.test_fraction * n))
    validation = max(params.min_eval_rows, round(params.validation_fraction * n))
    train = n - test - validation
    if train < test + validation or train < 1:
        raise ValueError(
            f"{n} clean rows are too few to split: validation and test need {validation} and {test} rows "
            f"(split.min_eval_rows={params.min_eval_rows}) and training must keep at least as many. "
            "Use a larger dataset, or lower split.min_eval_rows."
        )
    return {"train": train, "validation": validation, "test": test}


def group_rows(rows: list[dict], threshold: float) -> list[list[int]]:
    """Row indices grouped by near-duplicate content, in a row-order-independent order."""
    from titlegen.neardup import groups, near_duplicate_pairs

    labels = groups(len(rows), near_duplicate_pairs([r["input"] for r in rows], threshold))
    members: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        members.setdefault(label, []).append(index)
    return sorted(members.values(), key=lambda g: min(rows[i]["id"] for i in g))


def assign(groups: list[list[int]], sizes: dict[str, int], seed: int) -> dict[str, list[int]]:
    """Shuffle the groups with `seed`; fill test, then validation, with whole groups; the rest train."""
    order = list(groups)
    random.Random(seed).shuffle(order)
    chosen: dict[str, list[int]] = {name: [] for name in SPLITS}
    for group in order:
        for name in ("test", "validation"):
            if len(chosen[name]) + len(group) <= sizes[name]:
                chosen[name].extend(group)
                break
        else:
            chosen["train"].extend(group)
    return chosen


def assign_with_publisher(rows: list[dict], groups: list[list[int]], params: SplitParams) -> tuple[dict[str, list[int]], dict, dict]:
    """Keep the publisher's `test`/`validation` rows there; draw a missing evaluation split from
    the training rows; drop training rows that are near copies of a publisher evaluation row.
    Returns the chosen row indices per split, the manifest's summary, and the sizes wanted."""
    fixed = {i: rows[i].get(PUBLISHER_SPLIT) for i in range(len(rows)) if rows[i].get(PUBLISHER_SPLIT) in ("test", "validation")}
    chosen: dict[str, list[int]] = {name: [] for name in SPLITS}
    free, dropped = [], 0
    for group in groups:
        pinned = [i for i in group if i in fixed]
        for i in pinned:
            chosen[fixed[i]].append(i)
        if pinned:
            dropped += len(group) - len(pinned)
        else:
            free.append(group)
    given = {name for name in fixed.values()}
    n_free = sum(len(g) for g in free)
    sizes = {name: 0 if name in given else max(params.min_eval_rows, round(getattr(params, f"{name}_fraction") * len(rows)))
             for name in ("test", "validation")}
    sizes["train"] = n_free - sizes["test"] - sizes["validation"]
    if sizes["train"] < 1:
        raise ValueError(
            f"{n_free} training rows are too few to also draw {sizes['validation']} validation rows from "
            f"(split.min_eval_rows={params.min_eval_rows}); use a larger dataset or lower split.min_eval_rows."
        )
    drawn = assign(free, sizes, params.seed)
    for name in SPLITS:
        chosen[name].extend(drawn[name])
    counts = {name: sum(1 for s in fixed.values() if s == name) for name in sorted(given)}
    info = {"given": counts, "drawn_from_train": sorted({"test", "validation"} - given), "train_rows_dropped_as_near_copies": dropped}
    return chosen, info, {**sizes, **counts}


def split(clean_path: str | Path, split_params: SplitParams, out_dir: str | Path) -> dict:
    """Split the clean JSONL into `out_dir`; returns `dir` and `sizes` (rows per split)."""
    rows = read_jsonl(clean_path)
    publisher = any(r.get(PUBLISHER_SPLIT) in ("test", "validation") for r in rows)
    if not publisher:
        sizes = target_sizes(len(rows), split_params)
    grouped = group_rows(rows, split_params.near_duplicate_threshold)
    if publisher:
        chosen, publisher_info, sizes = assign_with_publisher(rows, grouped, split_params)
    else:
        chosen, publisher_info = assign(grouped, sizes, split_params.seed), None
    actual = {name: len(chosen[name]) for name in SPLITS}
    short = [f"{name} has {actual[name]}" for name in ("validation", "test") if actual[name] < min(split_params.min_eval_rows, sizes[name])]
    if short or not all(actual.values()):
        raise ValueError(
            f"Splitting {len(rows)} rows left a split too small ({', '.join(short) or actual}): near-duplicate "
            f"groups (split.near_duplicate_threshold={split_params.near_duplicate_threshold}) are too large. "
            "Raise split.near_duplicate_threshold or use a larger, more varied dataset."
        )
    with atomic_dir(out_dir) as tmp:
        hashes = {}
        for name in SPLITS:
            # Keep the clean file's row order inside each split: stable and easy to diff.
            path = write_jsonl(tmp / f"{name}.jsonl", [rows[i] for i in sorted(chosen[name])])
            hashes[name] = file_sha256(path)
        atomic_write_json(tmp / MANIFEST, {
            "sizes": actual,
            "seed": split_params.seed,
            "params": split_params.model_dump(),
            "groups": len(grouped),
            "rows_in_multi_row_groups": sum(len(g) for g in grouped if len(g) > 1),
            "input": {"path": str(Path(clean_path).resolve()), "sha256": file_sha256(clean_path)},
            "sha256": hashes,
            # None: one pool, split here; else the publisher's splits were kept (rows per split).
            "publisher_splits": publisher_info,
        })
    return {"dir": str(Path(out_dir)), "sizes": actual}


def _stamp(inputs: dict) -> Path:
    return Path(inputs["out_dir"]) / f".split{STAMP_SUFFIX}"


@task(
    name="split",
    cache_policy=StageCache(
        code_of=__name__,
        fingerprint=file_input_sha256("clean_path"),
        outputs=lambda inputs: [Path(inputs["out_dir"]) / f"{name}.jsonl" for name in SPLITS] + [Path(inputs["out_dir"]) / MANIFEST],
        stamp=_stamp,
    ),
)
def split_task(clean_path: str, split_params: SplitParams, out_dir: str | Path) -> dict:
    """Prefect task around `split`; cached on the inputs, the code it runs and the clean
    file's sha256 while the split files exist."""
    with stamped(_stamp({"out_dir": out_dir})):
        return split(clean_path, split_params, out_dir)
