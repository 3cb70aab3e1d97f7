"""evaluate stage (placeholder: being built)."""

from prefect import task


@task
def evaluate_task(*args, **kwargs) -> dict:
    """Contract: (adapter_dir, base_model_dir, split_dir, run_dir, max_title_chars, min_title_chars, evaluation) -> dict: keys metrics_path, predictions_path."""
    raise NotImplementedError("evaluate stage not built yet")


@task
def gate_task(metrics_path: str, min_rouge_l: float, gate) -> dict:
    """Contract: -> dict: keys passed (bool), reasons (list[str]), metrics (small dict)."""
    raise NotImplementedError("gate stage not built yet")
