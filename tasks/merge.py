"""merge stage (placeholder: being built)."""

from prefect import task


@task
def merge_task(*args, **kwargs) -> dict:
    """Contract: (adapter_dir, base_model_dir, split_dir, run_dir, max_title_chars, publish) -> dict: keys final_hf, gguf ({type: path})."""
    raise NotImplementedError("merge stage not built yet")
