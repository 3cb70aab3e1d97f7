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
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from titlegen.caching import STAMP_SUFFIX, StageCache, stamped
from titlegen.params import ColumnMap
from titlegen.retries import retry_on
from titlegen.runs import atomic_write_json, file_sha256

RAW_FILE = "raw.parquet"
PROVENANCE_FILE = "provenance.json"
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
STRING_TYPES = ("string", "large_string", "null")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class TransientNetworkError(ConnectionError):
    """A network failure worth retrying (timeout, reset connection, HTTP 429 or 5xx)."""


def local_files(path: Path) -> tuple[str, list[Path]]:
    """`(builder, files)` for a local dataset file or folder; a clear error when none is usable."""
    if path.is_file():
        fmt = FORMATS.get(path.suffix.lower())
        if not fmt:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use parquet, JSONL/JSON or CSV.")
        return fmt, [path]
    hub_layout = sorted((path / "data").glob("*.parquet"))
    if hub_layout:
        return "parquet", hub_layout
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS and not p.name.startswith("."))
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


def load_local(path: Path) -> tuple[Any, dict]:
    import datasets

    fmt, files = local_files(path)
    if _row_count_hint(fmt, files) == 0:
        raise ValueError(f"{path} has no rows; point `dataset` at a non-empty dataset.")
    try:
        ds = datasets.load_dataset(fmt, data_files=[str(f) for f in files], split="train")
    except Exception as exc:  # pyarrow/datasets parse errors come in many types
        raise ValueError(f"Could not read {path} as {fmt}: {type(exc).__name__}: {exc}".strip()) from exc
    provenance = {
        "source": str(path.resolve()),
        "kind": "local",
        "format": fmt,
        "files": {str(f.resolve()): file_sha256(f) for f in files},
    }
    return ds, provenance


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
    if isinstance(loaded, datasets.DatasetDict):
        if "train" in loaded:
            ds = loaded["train"]
        elif len(loaded) == 1:
            ds = next(iter(loaded.values()))
        else:
            raise ValueError(f"{dataset} has splits {list(loaded)} and no `train`; export the one to use to a file and pass its path.")
    else:
        ds = loaded
    return ds, {"source": dataset, "kind": "hub", "revision": revision, "commit": sha}


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


def ingest(dataset: str, revision: str | None, columns: ColumnMap, out_dir: str | Path) -> dict:
    """Load `dataset`, validate it against `columns`, write `raw.parquet` and `provenance.json`.

    Returns `path` (raw.parquet), `provenance` (small dict for the model card) and `rows`.
    """
    path = Path(dataset).expanduser()
    if path.exists():
        ds, provenance = load_local(path)
    elif looks_like_path(dataset):
        raise FileNotFoundError(f"Dataset path {dataset!r} does not exist (resolved to {path.resolve()}); fix `dataset`.")
    else:
        ds, provenance = load_hub(dataset, revision)
    table = ds.data.table
    types = {f.name: str(f.type) for f in table.schema}
    check_columns(table.column_names, types, columns, provenance["source"])
    if table.num_rows == 0:
        raise ValueError(f"{provenance['source']} has no rows; point `dataset` at a non-empty dataset.")
    provenance.update(rows=table.num_rows, columns=table.column_names, column_map=columns.model_dump())
    out = Path(out_dir)
    raw = out / RAW_FILE
    _write_parquet_atomic(table, raw)
    atomic_write_json(out / PROVENANCE_FILE, provenance)
    return {"path": str(raw), "provenance": provenance, "rows": table.num_rows}


def _write_parquet_atomic(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
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
def ingest_task(dataset: str, revision: str | None, columns: ColumnMap, out_dir: str | Path) -> dict:
    """Prefect task around `ingest`: retried on transient network errors only; cached on the
    inputs, the code it runs and the data's hashes/commit while the outputs exist."""
    with stamped(_stamp({"out_dir": out_dir})):
        return ingest(dataset, revision, columns, out_dir)
