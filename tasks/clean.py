"""clean stage (placeholder: being built)."""

from prefect import task


@task
def clean_task(*args, **kwargs) -> dict:
    """Contract: (raw_path: str, columns, clean, out_dir) -> dict: keys path (clean JSONL with input/target), counts."""
    raise NotImplementedError("clean stage not built yet")
