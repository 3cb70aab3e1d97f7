"""The one Ollama client of titlegen: every stage and check talks to Ollama through `OllamaClient`.

It wraps the official `ollama` package for what that covers (generate, list, show, copy, delete,
ps, blob upload, and create on servers >= 0.5.5) and adds a thin httpx shim for what it does not:

- `GET /api/version` (the package has no call for it);
- `HEAD /api/blobs/<digest>`, so a multi-GB GGUF the server already holds is not uploaded again
  (`ollama.Client.create_blob` always uploads);
- the pre-0.5.5 create form `POST /api/create {"name", "modelfile"}` (the CPU server the tests run
  is 0.5.4; the package only speaks the current `{"model", "files" | "from", ...}` form).

One host rule (`resolve_host`: `OllamaParams.host`, else `$OLLAMA_HOST`, else the default; the
default port is added as Ollama itself does) and one version rule (`parse_version`, `create_form`).

Errors: `OllamaUnreachable` when the server does not answer (the only one worth retrying: tasks
retry it through Prefect's `retries` + `retry_on_unreachable`, never with a loop here) and
`OllamaError` when it answers with an error.
"""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import ollama

from titlegen.modelfile import parse_modelfile
from titlegen.retries import retry_on
from titlegen.runs import file_sha256

DEFAULT_HOST = "http://127.0.0.1:11434"
CURRENT_CREATE_SINCE = (0, 5, 5)  # first release taking {"model", "files", "template", ...}
LOCAL_GGUF_NAME = "model.gguf"
# What counts as "no answer": the package turns httpx.ConnectError into ConnectionError; the shim's
# own calls and a server dying mid-request raise these httpx errors.
_NO_ANSWER = (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class OllamaUnreachable(ConnectionError):
    """No answer from the server: the only error worth retrying."""


class OllamaError(RuntimeError):
    """The server answered with an error (bad request, failed create, unknown model)."""


def resolve_host(host: str | None) -> tuple[str, str]:
    """(base URL, where it came from) for `host`, else $OLLAMA_HOST, else the default.

    Accepts Ollama's own forms: `127.0.0.1:11434`, `:11434`, `example.com`, `http(s)://...`.
    Like Ollama: no scheme means http on 11434; an explicit scheme defaults to 80/443.
    """
    if host:
        raw, origin = host, "OllamaParams.host"
    elif os.environ.get("OLLAMA_HOST"):
        raw, origin = os.environ["OLLAMA_HOST"], "OLLAMA_HOST"
    else:
        return DEFAULT_HOST, "the default (OLLAMA_HOST unset)"
    raw = raw.strip().rstrip("/")
    scheme, rest, port = "http", raw, "11434"
    if "://" in raw:
        scheme, rest = raw.split("://", 1)
        port = "443" if scheme == "https" else "80"
    hostport, _, path = rest.partition("/")
    if hostport.startswith(":"):
        hostport = "127.0.0.1" + hostport
    if not re.search(r":\d+$", hostport) or hostport.endswith("]"):
        hostport += f":{port}"
    return f"{scheme}://{hostport}" + (f"/{path}" if path else ""), origin


def parse_version(text: str) -> tuple[int, int, int]:
    """`0.5.4-ipexllm-20250407` -> (0, 5, 4); an unparsable version counts as current."""
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(m[1]), int(m[2]), int(m[3])) if m else (99, 0, 0)


def create_form(version: str) -> str:
    """`current` (>= 0.5.5: `{"model", "files" | "from", ...}`) or `legacy` (`{"name", "modelfile"}`)."""
    return "current" if parse_version(version) >= CURRENT_CREATE_SINCE else "legacy"


def create_request(form: str, model: str, modelfile: str, digest: str | None, quantize: str | None) -> dict:
    """The body of `POST /api/create` for `form` `current` (>= 0.5.5) or `legacy` (< 0.5.5).

    `digest` is the uploaded GGUF blob (`sha256:<hex>`), or None when `FROM` is an hf.co reference
    that the server pulls itself. The current form's fields are read back from the Modelfile, so
    every create path serves the same template and parameters.
    """
    parts = parse_modelfile(modelfile)
    if form == "legacy":
        text = modelfile if digest is None else re.sub(r"(?m)^FROM .*$", f"FROM @{digest}", modelfile, count=1)
        body: dict[str, Any] = {"name": model, "modelfile": text, "stream": False}
    elif form == "current":
        body = {"model": model, "stream": False}
        if digest is None:
            body["from"] = parts.source
        else:
            body["files"] = {LOCAL_GGUF_NAME: digest}
        if parts.template is not None:
            body["template"] = parts.template
        if parts.system is not None:
            body["system"] = parts.system
        body["parameters"] = parts.parameters
    else:
        raise ValueError(f"create form {form!r}: expected 'current' or 'legacy'")
    if quantize:
        body["quantize"] = quantize
    return body


def gguf_only_request(form: str, model: str, digest: str) -> dict:
    """The body of `POST /api/create` for a model of the GGUF blob alone (no template, no parameters):
    what GGUF verification generates from with `raw: true`."""
    if form == "legacy":
        return {"name": model, "modelfile": f"FROM @{digest}\n", "stream": False}
    return {"model": model, "files": {LOCAL_GGUF_NAME: digest}, "stream": False}


# Prefect `retry_condition_fn`: retry a lost connection; a failed check or a bad request would only fail again.
retry_on_unreachable = retry_on(OllamaUnreachable)


class OllamaClient:
    """The Ollama calls titlegen makes, with errors that say what to do. Use as a context manager."""

    def __init__(self, host: str | None = None, timeout: float = 600.0):
        self.base, self.origin = resolve_host(host)
        limits = httpx.Timeout(timeout, connect=5.0)
        self.api = ollama.Client(host=self.base, timeout=limits)
        self._shim = httpx.Client(base_url=self.base, timeout=limits)

    def __enter__(self) -> "OllamaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.api.close()
        self._shim.close()

    def unreachable(self, err: BaseException) -> OllamaUnreachable:
        return OllamaUnreachable(
            f"Ollama is unreachable at {self.base} (taken from {self.origin}): {type(err).__name__}: {err}. "
            "Start `ollama serve` there, or set OLLAMA_HOST (or the flow parameter ollama.host) to a running Ollama server."
        )

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except OllamaError:
            raise
        except ollama.ResponseError as err:
            raise OllamaError(f"Ollama {what} answered {err.status_code}: {err.error}") from err
        except _NO_ANSWER as err:
            raise self.unreachable(err) from err

    def _shim_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._errors(f"{method} {path}"):
            response = self._shim.request(method, path, **kwargs)
        if response.status_code >= 400 and method != "HEAD":
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise OllamaError(f"Ollama {method} {path} answered {response.status_code}: {detail}")
        return response

    # ------------------------------------------------------------ the shim

    def version(self) -> str:
        return self._shim_call("GET", "/api/version", timeout=10.0).json()["version"]

    def has_blob(self, digest: str) -> bool:
        return self._shim_call("HEAD", f"/api/blobs/{digest}").status_code == 200

    def create(self, body: dict) -> None:
        """Send a `create_request` body: the legacy form through the shim, the current one through
        `ollama.Client.create`."""
        name = body.get("model") or body.get("name")
        if "modelfile" in body:
            answer = self._shim_call("POST", "/api/create", json=body).json()
        else:
            fields = {("from_" if k == "from" else k): v for k, v in body.items()}
            with self._errors(f"create of {name}"):
                answer = self.api.create(**fields).model_dump(exclude_none=True)
        if answer.get("status") != "success":
            raise OllamaError(f"Ollama create of {name} did not succeed: {answer}")

    # ------------------------------------------------------------ the official client

    def push_blob(self, path: str | Path) -> str:
        """Upload `path` as a blob unless the server already holds it; returns `sha256:<hex>`."""
        digest = f"sha256:{file_sha256(path)}"
        if not self.has_blob(digest):
            with self._errors(f"blob upload of {path}"):
                uploaded = self.api.create_blob(path)
            if uploaded != digest:
                raise OllamaError(f"{path} changed while it was uploaded ({digest} before, {uploaded} after).")
        return digest

    def generate(self, model: str, prompt: str, keep_alive: str | None = None, raw: bool | None = None,
                 options: dict | None = None) -> dict:
        """One non-streamed `/api/generate`, as a dict (`response`, `done_reason`, the durations in ns, ...)."""
        with self._errors(f"generate with {model}"):
            answer = self.api.generate(model=model, prompt=prompt, stream=False, keep_alive=keep_alive, raw=raw, options=options)
        return answer.model_dump()

    def digests(self) -> dict[str, str]:
        """Installed model name -> manifest digest (`/api/tags`)."""
        with self._errors("GET /api/tags"):
            models = self.api.list().models
        return {m.model: m.digest for m in models if m.model}

    def copy(self, source: str, destination: str) -> None:
        with self._errors(f"copy {source} -> {destination}"):
            self.api.copy(source, destination)

    def delete(self, model: str) -> None:
        with self._errors(f"delete of {model}"):
            self.api.delete(model)

    def show(self, model: str) -> dict:
        with self._errors(f"show of {model}"):
            return self.api.show(model).model_dump(exclude_none=True)

    def running(self) -> list[dict]:
        """`/api/ps`: the loaded models."""
        with self._errors("GET /api/ps"):
            return [m.model_dump(exclude_none=True) for m in self.api.ps().models]
