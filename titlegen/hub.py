"""The Hub side of the upload stage: which repo, which token, and how a failed Hub call is explained.

`resolve_repo` and `resolve_token` say where each came from (never the token itself). `hub_call`
makes one Hub step: timeouts, dropped connections, 408/429 and 5xx become a `TransientHubError`,
which the upload task's Prefect retries try again (`retry_on_transient_hub`, `titlegen.retries`);
401/403/404 and offline mode become an `UploadError` that names the variable to set. Used by
`tasks/upload.py`.
"""

import logging
import os
from collections.abc import Callable
from typing import Any

from titlegen.retries import retry_on

ENV_TOKEN = "HF_TOKEN"
ENV_ORG = "HF_ORG"
ENV_REPO = "HF_REPO"


class UploadError(RuntimeError):
    """A Hub upload failure that retrying cannot fix; the message names what to change."""


class TransientHubError(UploadError):
    """A Hub call that may succeed when tried again; `attempts` is the run's budget (`publish.upload_attempts`)."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message)
        self.attempts = attempts



def logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("titlegen.upload")


def in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def resolve_repo(hf_repo: str | None) -> tuple[str | None, str]:
    """`org/name` from the parameter, else `$HF_ORG` + `$HF_REPO` (or `$HF_REPO` as `org/name`).

    Returns the repo id, or None and the reason it is missing.
    """

    org, name = os.environ.get(ENV_ORG, "").strip(), os.environ.get(ENV_REPO, "").strip()
    if hf_repo:
        repo, origin = hf_repo.strip(), "the hf_repo parameter"
    elif "/" in name:
        repo, origin = name, f"${ENV_REPO}"
    elif org and name:
        repo, origin = f"{org}/{name}", f"${ENV_ORG}/${ENV_REPO}"
    else:
        missing = " and ".join(v for v, val in ((ENV_ORG, org), (ENV_REPO, name)) if not val)
        return None, f"no Hub repo: set the hf_repo parameter (`org/name`) or {missing}"
    from titlegen.params import check_hf_repo  # the one rule, also enforced when a run is created

    try:
        check_hf_repo(repo)
    except ValueError as e:
        raise UploadError(f"{origin}: {e} (or set ${ENV_ORG} and ${ENV_REPO}).") from None
    return repo, origin


def resolve_token(block_name: str | None) -> tuple[str | None, str]:
    """The Hub token and where it came from (never the token in the second value).

    `$HF_TOKEN` or a saved `hf auth login` first (what huggingface_hub itself reads), then the
    Prefect Secret block, read only where a Prefect API is at hand (a run, or `PREFECT_API_URL`).
    """
    from huggingface_hub import get_token

    token = get_token()
    if token:
        return token, f"${ENV_TOKEN}" if os.environ.get(ENV_TOKEN) else "the saved Hugging Face login"
    if block_name and (in_prefect_run() or os.environ.get("PREFECT_API_URL")):
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(block_name).get()
        except ValueError:
            return None, f"${ENV_TOKEN} is not set and there is no Prefect Secret block {block_name!r}"
        except Exception as e:  # API down or misconfigured: the upload becomes a dry run, and says why
            return None, f"${ENV_TOKEN} is not set and the Prefect Secret block {block_name!r} could not be read ({type(e).__name__})"
        if isinstance(value, str) and value.strip():
            return value.strip(), f"the Prefect Secret block {block_name!r}"
    where = f" nor the Prefect Secret block {block_name!r}" if block_name else ""
    return None, f"no Hub token: neither ${ENV_TOKEN}{where} is set"



def is_transient(exc: BaseException) -> bool:
    """Worth retrying: timeouts, dropped connections, 408/429 and 5xx. Never 401/403/404."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return False
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return True
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        code = exc.response.status_code
        return code >= 500 or code in (408, 429)
    return False


def explain(exc: BaseException, repo_id: str, block_name: str | None) -> UploadError | None:
    """A permanent Hub error as an `UploadError` naming the variable to set, or None."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    block = f" (or the Prefect Secret block {block_name!r})" if block_name else ""
    if isinstance(exc, OfflineModeIsEnabled):
        return UploadError("HF_HUB_OFFLINE is set, which blocks every Hub request: unset it for the upload.")
    if not isinstance(exc, HfHubHTTPError) or exc.response is None:
        return None
    code, namespace = exc.response.status_code, repo_id.split("/")[0]
    if code == 401:
        return UploadError(
            f"The Hub rejected the token (401 Unauthorized) for {repo_id}: set {ENV_TOKEN}{block} to a valid "
            "token with write access (https://huggingface.co/settings/tokens)."
        )
    if code == 403:
        return UploadError(
            f"The token may not write to {repo_id} (403 Forbidden): set {ENV_TOKEN}{block} to a token with write "
            f"access to {namespace!r}, or point {ENV_ORG}/{ENV_REPO} (or the hf_repo parameter) at a namespace you own."
        )
    if code == 404:
        return UploadError(
            f"{repo_id} was not found (404 Not Found): check {ENV_ORG}/{ENV_REPO} or the hf_repo parameter. A namespace "
            f"that does not exist, or a private repo the token cannot see, also reads as 404: then set {ENV_TOKEN}{block}."
        )
    return None


def _attempt() -> int:
    """This task run's attempt (1 outside Prefect)."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    return ctx.task_run.run_count if ctx else 1


def hub_call(step: str, fn: Callable[[], Any], *, attempts: int, repo_id: str, block: str | None) -> Any:
    """One attempt at a Hub step; a transient failure is a `TransientHubError` for the task's retries."""
    try:
        return fn()
    except Exception as exc:
        if (explained := explain(exc, repo_id, block)) is not None:
            raise explained from exc
        if not is_transient(exc):
            raise
        attempt = _attempt()
        then = "the upload task retries it" if attempt < attempts else "no attempts left"
        logger().warning("Hub %s for %s failed (%s: %s) on attempt %d of %d; %s",
                         step, repo_id, type(exc).__name__, short(exc), attempt, attempts, then)
        raise TransientHubError(
            f"Hub {step} for {repo_id} failed on attempt {attempt} of {attempts}: {type(exc).__name__}: {short(exc)}", attempts
        ) from exc


retry_on_transient_hub = retry_on(TransientHubError)


def short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
