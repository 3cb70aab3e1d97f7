"""ingest stage (placeholder: being built)."""

from prefect import task


@task
def ingest_task(*args, **kwargs) -> dict:
    """Contract: (dataset: str, revision: str | None, columns, out_dir) -> dict: keys path (raw rows file), provenance (small dict), rows."""
    raise NotImplementedError("ingest stage not built yet")
