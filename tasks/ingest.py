"""ingest: load the dataset, check its columns, and write the raw rows and their provenance.

`dataset` is either a Hugging Face Hub id (`AWeirdDev/zh-tw-pts-articles-sm`, loaded with
`datasets.load_dataset` at `revision`, default `main`, whose commit sha is recorded when the Hub
answers) or a local path: a parquet, JSONL/JSON or CSV file, or a folder. A folder laid out like a
Hub dataset (`data/*.parquet`) is read that way; any other folder is read from the supported files
inside it, which must all be of one format. The column mapping is checked before anything is
written. Outputs in `out_dir`: `raw.parquet` (every row and column as loaded) and
`provenance.json` (source, revision or per-file sha256, row count, columns), both written atomically.

Only transient network failures (timeouts, connection resets, HTTP 429/5xx) are retried by the
task; an unknown id, a closed or unreachable Hub, or offline mode without a cached copy fail at once.
"""

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect import task

from titlegen.caching import STAMP_SUFFIX, StageCache, stamped
from titlegen.ingest_checks import IngestError, check_jsonl, check_parquet_columns, check_path, diagnose, sniff_delimiter
from titlegen.params import ColumnMap
from titlegen.retries import retry_on
from titlegen.runs import atomic_write_json, file_sha256, honor_umask

RAW_FILE = "raw.parquet"
PROVENANCE_FILE = "provenance.json"
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
STRING_TYPES = ("string", "large_string", "null")
# The column that carries each row's publisher split (test rows stay test; see `tasks/split.py`).
PUBLISHER_SPLIT = "publisher_split"
SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "testing": "test",
               "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation"}
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class TransientNetworkError(ConnectionError):
    """A network failure worth retrying (timeout, reset connection, HTTP 429 or 5xx)."""


def local_files(path: Path) -> tuple[str, list[Path]]:
    """`(builder, files)` for a local dataset file or folder; a clear error when none is usable."""
    check_path(path)
    if path.is_file():
        fmt = FORMATS.get(path.suffix.lower())
        if not fmt:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use parquet, JSONL/JSON or CSV.")
        return fmt, [path]
    hub_layout = sorted(p for p in (path / "data").glob("*.parquet") if not p.name.startswith("."))
    if hub_layout:
        return "parquet", hub_layout
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in FORMATS and not p.name.startswith(".") and not p.is_dir())
    for p in found:
        check_path(p)  # a FIFO or a link loop named like data is an error, not silently skipped
    kinds = {FORMATS[p.suffix.lower()] for p in found}
    if not found:
        raise ValueError(f"{path} holds no parquet, JSONL/JSON or CSV file (looked in data/*.parquet and every subfolder).")
    if len(kinds) > 1:
        raise ValueError(f"{path} mixes file formats {sorted(kinds)}; point `dataset` at one file or a folder of one format.")
    return kinds.pop(), found


def looks_like_path(dataset: str) -> bool:
    """True for anything that cannot be a Hub id (`name` or `org/name`): it is meant as a path."""
    return (
        dataset.startswith((".", "/", "~"))
        or Path(dataset).suffix.lower() in FORMATS
        or not _HUB_ID_RE.match(dataset)
    )


def publisher_splits(root: Path, files: list[Path]) -> dict[str, list[Path]]:
    """Files by the split their publisher gave them, from the first or last word of the file name
    (`test-00000-of-00001.parquet`, `news_validation.jsonl`) or a folder name (`test/part-0.csv`);
    unnamed files train. `{"train": files}` unless there are both training and evaluation files."""
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(_split_of(root, f) or "train", []).append(f)
    # Only a dataset with training files and evaluation files has splits to keep; a lone `test.jsonl`
    # is all the data there is.
    return by_split if "train" in by_split and len(by_split) > 1 else {"train": list(files)}


def _split_of(root: Path, file: Path) -> str | None:
    tokens = re.split(r"[-_.]", file.name.lower().split(".")[0])
    for token in (tokens[0], tokens[-1]):  # train-00000-of-00001.parquet, news_test.jsonl
        if token in SPLIT_NAMES:
            return SPLIT_NAMES[token]
    parts = file.relative_to(root).parts[:-1] if root.is_dir() else ()
    return next((SPLIT_NAMES[p.lower()] for p in reversed(parts) if p.lower() in SPLIT_NAMES), None)


def load_local(path: Path) -> tuple[Any, dict]:
    import datasets

    fmt, files = local_files(path)
    if _row_count_hint(fmt, files) == 0:
        raise ValueError(f"{path} has no rows; point `dataset` at a non-empty dataset.")
    options = {}
    if fmt == "parquet":
        check_parquet_columns(files)
    elif fmt == "json":
        check_jsonl(files)
    elif fmt == "csv":
        seps = {f.name: sniff_delimiter(f) for f in files}
        if len(set(seps.values())) > 1:
            raise IngestError(f"The CSV files use different separators {seps}; save them all with one separator (a comma).")
        options["sep"] = next(iter(seps.values()))
    splits = publisher_splits(path, files)
    tables = {}
    for name, group in splits.items():
        try:
            tables[name] = datasets.load_dataset(fmt, data_files=[str(f) for f in group], split="train", **options).data.table
        except Exception as exc:  # pyarrow/datasets parse errors come in many types: find the real cause
            raise diagnose(fmt, group, exc) from exc
    provenance = {
        "source": str(path.resolve()),
        "kind": "local",
        "format": fmt,
        "files": {str(f.resolve()): file_sha256(f) for f in files},
    }
    if options.get("sep", ",") != ",":
        provenance["csv_separator"] = options["sep"]
    if len(splits) > 1:
        provenance["splits"] = {name: [str(f.resolve()) for f in group] for name, group in splits.items()}
    return _with_split_column(tables), provenance


def _with_split_column(tables: dict[str, Any]) -> Any:
    """One table; with several publisher splits, each row's split in the column `PUBLISHER_SPLIT`."""
    import pyarrow as pa

    if len(tables) == 1:
        return next(iter(tables.values()))
    for name, table in tables.items():
        if PUBLISHER_SPLIT in table.column_names:
            raise IngestError(f"The dataset already has a column {PUBLISHER_SPLIT!r}, which titlegen uses for the publisher's splits; rename it.")
    parts = [t.append_column(PUBLISHER_SPLIT, pa.array([name] * t.num_rows, pa.string())) for name, t in tables.items()]
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except pa.ArrowInvalid as exc:
        raise IngestError(f"The splits {list(tables)} have columns of different types ({exc}); give them the same columns.") from None


def _row_count_hint(fmt: str, files: list[Path]) -> int | None:
    """Rows in the files when cheap to know (parquet footers, empty files); None otherwise.
    `datasets` fails obscurely on a 0-row parquet file, so this is checked first."""
    if all(f.stat().st_size == 0 for f in files):
        return 0
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        except Exception:  # not parquet after all: let `datasets` report it
            return None
    return None


def hub_commit(dataset: str, revision: str) -> str | None:
    """The commit sha `revision` resolves to on the Hub; None offline (the cached copy is used)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    return HfApi().dataset_info(dataset, revision=revision, timeout=20).sha


def load_hub(dataset: str, revision: str | None) -> tuple[Any, dict]:
    import datasets

    revision = revision or "main"
    try:
        sha = hub_commit(dataset, revision)
        loaded = datasets.load_dataset(dataset, revision=sha or revision)
    except Exception as exc:
        raise classify_hub_error(dataset, revision, exc) from exc
    provenance = {"source": dataset, "kind": "hub", "revision": revision, "commit": sha}
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded.data.table, provenance
    named = {SPLIT_NAMES.get(name.lower(), name): ds for name, ds in loaded.items()}
    if len(named) == 1:
        return next(iter(named.values())).data.table, provenance
    if "train" not in named:
        raise ValueError(f"{dataset} has splits {list(loaded)} and no `train`; export the one to use to a file and pass its path.")
    # The publisher's test (and validation) rows stay out of training: see `tasks/split.py`.
    kept = {name: named[name].data.table for name in ("train", "validation", "test") if name in named}
    provenance["splits"] = {name: f"{dataset}@{sha or revision} split {name!r} ({t.num_rows} rows)" for name, t in kept.items()}
    ignored = sorted(set(loaded) - {n for n in loaded if SPLIT_NAMES.get(n.lower(), n) in kept})
    if ignored:
        provenance["ignored_splits"] = ignored
    return _with_split_column(kept), provenance


def classify_hub_error(dataset: str, revision: str, exc: Exception) -> Exception:
    """Turn a Hub/datasets failure into a clear error; `TransientNetworkError` only when a retry may help."""
    import httpx
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import errors

    chain = [exc]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for e in chain:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError)) or status in (429, 500, 502, 503, 504):
            return TransientNetworkError(f"Transient network error loading {dataset}@{revision} from the Hub: {e}")
    for e in chain:
        if isinstance(e, errors.RevisionNotFoundError):
            return ValueError(f"Revision {revision!r} of {dataset} does not exist on the Hub; fix `dataset_revision`.")
        if isinstance(e, (errors.RepositoryNotFoundError, DatasetNotFoundError)):
            return ValueError(f"Dataset {dataset!r} was not found on the Hub (or is private: set HF_TOKEN); check `dataset`.")
    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
    why = "offline mode (HF_HUB_OFFLINE) is on and it is not in the local cache" if offline else "the Hub could not be reached"
    return ValueError(
        f"Could not load {dataset!r} (revision {revision!r}): {why} ({type(exc).__name__}: {str(exc)[:300]}). "
        "Connect to the Hub, or pass a local parquet/JSONL/CSV file or folder as `dataset`."
    )


def check_columns(columns_found: list[str], types: dict[str, str], columns: ColumnMap, source: str) -> None:
    """Raise, naming the parameter to set, unless both mapped columns exist and hold strings."""
    missing = [f"{role}={name!r}" for role, name in (("input", columns.input), ("target", columns.target)) if name not in columns_found]
    if missing:
        raise ValueError(
            f"{source} lacks the column(s) {', '.join(missing)}; columns found: {columns_found}. "
            "Set the flow parameter `columns` to map them, e.g. --param columns='{\"input\": \"body\", \"target\": \"headline\"}'."
        )
    wrong = [f"{name!r} is {types[name]}" for name in (columns.input, columns.target) if types[name] not in STRING_TYPES]
    if wrong:
        raise ValueError(f"{source}: the mapped columns must hold text, but {', '.join(wrong)}; check `columns`.")


def ingest(dataset: str, revision: str | None, columns: ColumnMap, out_dir: str | Path, stale: Iterable[str | Path] = ()) -> dict:
    """Load `dataset`, validate it against `columns`, write `raw.parquet` and `provenance.json`.

    `stale`: outputs of later stages (files or folders) made from the previous raw data; they are
    removed when the new raw data differ from what `out_dir` held, so a run that fails later never
    leaves a clean file or split of other data beside the new raw file.
    Returns `path` (raw.parquet), `provenance` (small dict for the model card) and `rows`.
    """
    path = Path(dataset).expanduser()
    if path.exists() or path.is_symlink():
        table, provenance = load_local(path)
    elif looks_like_path(dataset):
        raise FileNotFoundError(f"Dataset path {dataset!r} does not exist (resolved to {path.absolute()}); fix `dataset`.")
    else:
        table, provenance = load_hub(dataset, revision)
    types = {f.name: str(f.type) for f in table.schema}
    check_columns(table.column_names, types, columns, provenance["source"])
    if table.num_rows == 0:
        raise ValueError(f"{provenance['source']} has no rows; point `dataset` at a non-empty dataset.")
    provenance.update(rows=table.num_rows, columns=table.column_names, column_map=columns.model_dump())
    out = Path(out_dir)
    raw = out / RAW_FILE
    previous = file_sha256(raw) if raw.is_file() else None
    _write_parquet_atomic(table, raw, before_replace=lambda tmp: previous != file_sha256(tmp) and remove_stale(stale))
    atomic_write_json(out / PROVENANCE_FILE, provenance)
    return {"path": str(raw), "provenance": provenance, "rows": table.num_rows}


def remove_stale(paths: Iterable[str | Path]) -> None:
    """Remove later stages' outputs (files or folders) that new raw data make stale."""
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _write_parquet_atomic(table: Any, path: Path, before_replace: Callable[[Path], Any] = lambda tmp: None) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        honor_umask(tmp)
        pq.write_table(table, tmp)
        before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Retry condition of the task: only `TransientNetworkError` is worth another try.
is_transient = retry_on(TransientNetworkError)


def data_fingerprint(inputs: dict) -> Any:
    """What identifies the input data: per-file sha256 locally, the resolved commit on the Hub."""
    path = Path(inputs["dataset"]).expanduser()
    if path.exists():
        try:
            return {str(f): file_sha256(f) for f in local_files(path)[1]}
        except ValueError:
            return None
    revision = inputs.get("revision") or "main"
    try:
        return hub_commit(inputs["dataset"], revision) or revision
    except Exception:  # unreachable Hub: key on the revision name; the task itself reports the error
        return revision


def _stamp(inputs: dict) -> Path:
    return Path(inputs["out_dir"]) / f".ingest{STAMP_SUFFIX}"


@task(
    name="ingest",
    retries=3,
    retry_delay_seconds=[5, 20, 60],
    retry_condition_fn=is_transient,
    cache_policy=StageCache(
        code_of=__name__,
        fingerprint=data_fingerprint,
        outputs=lambda inputs: [Path(inputs["out_dir"]) / RAW_FILE, Path(inputs["out_dir"]) / PROVENANCE_FILE],
        stamp=_stamp,
    ),
)
def ingest_task(
    dataset: str, revision: str | None, columns: ColumnMap, out_dir: str | Path, stale: list[str] | None = None
) -> dict:
    """Prefect task around `ingest`: retried on transient network errors only; cached on the
    inputs, the code it runs and the data's hashes/commit while the outputs exist. `stale`: later
    stages' outputs to remove when the raw data change (see `ingest`)."""
    with stamped(_stamp({"out_dir": out_dir})):
        return ingest(dataset, revision, columns, out_dir, stale or ())
