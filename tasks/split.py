"""split stage (placeholder: being built)."""

from prefect import task


@task
def split_task(*args, **kwargs) -> dict:
    """Contract: (clean_path: str, split, out_dir) -> dict: keys dir (train/validation/test JSONL + manifest.json), sizes."""
    raise NotImplementedError("split stage not built yet")
