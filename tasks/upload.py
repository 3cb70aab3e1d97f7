"""upload stage (placeholder: being built)."""

from prefect import task


@task
def upload_task(*args, **kwargs) -> dict:
    """Contract: (final_hf, gguf_files, run_dir, hf_repo, publish) -> dict: keys repo, gguf_repo, commit, dry_run, url."""
    raise NotImplementedError("upload stage not built yet")
