"""The one retry mechanism of titlegen's stages: Prefect's task `retries` with a `retry_condition_fn`.

A stage that talks to a flaky service declares, on its `@task`, how many attempts it gets, the
delays between them and which errors are worth another try; nothing loops inside a stage. The
plain stage functions (and the CLIs around them) make one attempt: run them again.

| stage | retried on | attempts |
| --- | --- | --- |
| ingest | `TransientNetworkError` (the Hub or a dataset URL timed out, 5xx) | 4 |
| upload | `TransientHubError` (timeout, dropped connection, 408/429/5xx) | `publish.upload_attempts` |
| ollama-create | `OllamaUnreachable` (a lost connection to the server) | 3 |
"""

from collections.abc import Callable
from typing import Any


def retry_on(*errors: type[BaseException]) -> Callable[[Any, Any, Any], bool]:
    """A Prefect `retry_condition_fn` that retries only when the task raised one of `errors`; any
    other failure (a bad parameter, a failed check) would only fail again."""

    def condition(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except errors as exc:
            # An error may carry its own budget (`attempts`): e.g. a parameter of the run.
            limit = getattr(exc, "attempts", None)
            return limit is None or task_run.run_count < limit
        except BaseException:
            return False
        return False

    condition.__name__ = f"retry_on_{'_'.join(e.__name__ for e in errors)}"
    return condition


def backoff(first_s: float, retries: int, cap_s: float) -> list[float]:
    """Exponential delays for Prefect's `retry_delay_seconds`: first_s, 2*first_s, ... at most cap_s."""
    return [min(first_s * 2**i, cap_s) for i in range(retries)]
