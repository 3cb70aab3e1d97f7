"""finetune stage (placeholder: being built)."""

from prefect import task


@task
def finetune_task(*args, **kwargs) -> dict:
    """Contract: (split_dir, run_dir, base_model, epochs, max_steps, learning_rate, lora_rank, max_title_chars, train) -> dict: keys adapter_dir, base_model_dir, training_json."""
    raise NotImplementedError("finetune stage not built yet")
