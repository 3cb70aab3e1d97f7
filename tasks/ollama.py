"""ollama stage (placeholder: being built)."""

from prefect import task


@task
def ollama_create_task(*args, **kwargs) -> dict:
    """Contract: (gguf_files, hub, split_dir, run_dir, model_name, max_title_chars, min_title_chars, ollama) -> dict: keys model, modelfile, smoke, latency."""
    raise NotImplementedError("ollama stage not built yet")
