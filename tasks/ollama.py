"""ollama-create: serve the merged model from Ollama, smoke-tested and latency-gated, promoted safely.

    python -c "from titlegen.tasks.ollama import ollama_create; ..."   # or the `tools` compose service

The stage renders `serving/ollama/Modelfile.template` (see `titlegen.modelfile`) into
`<run>/ollama/Modelfile`, creates the model on the server at `OLLAMA_HOST` under a candidate tag
(`<name>:candidate`), asks it to title held-out test articles (the smoke test), times it (warm-up,
then `latency_requests` requests with `keep_alive`), and only when both pass copies it to the
serving tag (`<name>:latest`, or the tag `ollama_model` names). A candidate that fails anything is
deleted and the serving tag keeps whatever model it held before.

Create paths, chosen by `OllamaParams.use_cli` and the server's `/api/version`:
- REST, current (>= 0.5.5): upload the GGUF blob (skipped when the server has it), then
  `POST /api/create {"model", "files" | "from", "template", "parameters", "quantize"}`.
- REST, pre-0.5.5 (the CPU server used in tests is 0.5.4): upload the blob, then
  `POST /api/create {"name", "modelfile"}` with `FROM @sha256:<digest>`.
- CLI: `ollama create <name> -f Modelfile [--quantize q]`, which works on every version.

The REST calls use httpx directly rather than the `ollama` client: the client cannot send the
pre-0.5.5 create form and re-uploads a blob the server already holds (multi-GB for E4B).
An unreachable server is retried with backoff inside the call and then by the task's retries; the
final failure names `OLLAMA_HOST`.
"""

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prefect import task

from titlegen.modelfile import ModelfileValues, check_source, parse_modelfile, render_modelfile
from titlegen.params import OllamaParams
from titlegen.prompt import TEMPLATE_MARKERS, instruction_template
from titlegen.runs import atomic_write_json, atomic_write_text, file_sha256, read_jsonl

DEFAULT_HOST = "http://127.0.0.1:11434"
CURRENT_CREATE_SINCE = (0, 5, 5)  # first release taking {"model", "files", "template", ...}
CONNECT_DELAYS = (1.0, 2.0, 4.0, 8.0)  # seconds between attempts to reach the server
# The brief's serving targets (GPU); OllamaParams.max_p50_ms / max_p95_ms override.
DEFAULT_MAX_P50_MS = 500.0
DEFAULT_MAX_P95_MS = 1000.0
LOCAL_GGUF_NAME = "model.gguf"


class OllamaUnreachable(ConnectionError):
    """No answer from the server: the only error worth retrying."""


class OllamaError(RuntimeError):
    """The server answered with an error (bad request, failed create, unknown model)."""


class DeployBlocked(RuntimeError):
    """The candidate failed its smoke test or latency gate; it was deleted, serving is unchanged."""


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def resolve_host(host: str | None) -> tuple[str, str]:
    """(base URL, where it came from) for `host`, else $OLLAMA_HOST, else the default.

    Accepts Ollama's own forms: `127.0.0.1:11434`, `:11434`, `example.com`, `http(s)://...`.
    """
    if host:
        raw, origin = host, "OllamaParams.host"
    elif os.environ.get("OLLAMA_HOST"):
        raw, origin = os.environ["OLLAMA_HOST"], "OLLAMA_HOST"
    else:
        return DEFAULT_HOST, "the default (OLLAMA_HOST unset)"
    raw = raw.strip().rstrip("/")
    # Like Ollama itself: no scheme means http on 11434; an explicit scheme defaults to 80/443.
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


class OllamaAPI:
    """The few Ollama REST endpoints the stage uses, with errors that say what to do."""

    def __init__(self, host: str | None = None, timeout: float = 600.0):
        self.base, self.origin = resolve_host(host)
        self.http = httpx.Client(base_url=self.base, timeout=httpx.Timeout(timeout, connect=5.0))

    def close(self) -> None:
        self.http.close()

    def unreachable(self, err: Exception, attempts: int = 1) -> OllamaUnreachable:
        return OllamaUnreachable(
            f"Ollama is unreachable at {self.base} (taken from {self.origin}) after {attempts} attempt(s): "
            f"{type(err).__name__}: {err}. Start `ollama serve` there, or set OLLAMA_HOST "
            "(or the flow parameter ollama.host) to a running Ollama server."
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as err:
            raise self.unreachable(err) from err
        if response.status_code >= 400 and method != "HEAD":
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise OllamaError(f"Ollama {method} {path} answered {response.status_code}: {detail}")
        return response

    def wait(self, delays: Sequence[float] = CONNECT_DELAYS) -> str:
        """The server's version, retrying with backoff while it does not answer."""
        last: Exception | None = None
        for attempt in range(len(delays) + 1):
            try:
                return self.call("GET", "/api/version").json()["version"]
            except OllamaUnreachable as err:
                last = err.__cause__ or err
                if attempt < len(delays):
                    time.sleep(delays[attempt])
        raise self.unreachable(last, attempts=len(delays) + 1) from last

    def push_blob(self, path: Path) -> str:
        """Upload `path` as a blob unless the server already holds it; returns `sha256:<hex>`."""
        digest = f"sha256:{file_sha256(path)}"
        if self.call("HEAD", f"/api/blobs/{digest}").status_code != 200:
            with open(path, "rb") as f:
                self.call("POST", f"/api/blobs/{digest}", content=f)
        return digest

    def create(self, payload: dict) -> None:
        body = self.call("POST", "/api/create", json=payload).json()
        if body.get("status") != "success":
            raise OllamaError(f"Ollama create of {payload.get('model') or payload.get('name')} did not succeed: {body}")

    def generate(self, model: str, prompt: str, keep_alive: str) -> dict:
        return self.call(
            "POST", "/api/generate", json={"model": model, "prompt": prompt, "stream": False, "keep_alive": keep_alive}
        ).json()

    def models(self) -> dict[str, str]:
        """Installed model name -> manifest digest."""
        return {m["name"]: m["digest"] for m in self.call("GET", "/api/tags").json().get("models", [])}

    def copy(self, source: str, destination: str) -> None:
        self.call("POST", "/api/copy", json={"source": source, "destination": destination})

    def delete(self, model: str) -> None:
        self.call("DELETE", "/api/delete", json={"model": model})


def serving_and_candidate(model_name: str) -> tuple[str, str]:
    """`titlegen` -> (`titlegen:latest`, `titlegen:candidate`); `t:prod` -> (`t:prod`, `t:prod-candidate`)."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-/]*(:[\w.\-]+)?", model_name):
        raise ValueError(f"ollama_model {model_name!r} is not a valid Ollama model name (letters, digits, . _ - /, optional :tag).")
    name, _, tag = model_name.partition(":")
    tag = tag or "latest"
    return f"{name}:{tag}", f"{name}:{'candidate' if tag == 'latest' else tag + '-candidate'}"


def create_request(form: str, model: str, modelfile: str, digest: str | None, quantize: str | None) -> dict:
    """The body of `POST /api/create` for `form` `current` (>= 0.5.5) or `legacy` (< 0.5.5).

    `digest` is the uploaded GGUF blob (`sha256:<hex>`), or None when `FROM` is an hf.co reference
    that the server pulls itself.
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


def create_with_cli(model: str, modelfile_path: Path, base_url: str, quantize: str | None) -> None:
    exe = shutil.which("ollama")
    if exe is None:
        raise FileNotFoundError("ollama.use_cli is true but no `ollama` executable is on PATH; install Ollama or set use_cli=false (REST).")
    argv = [exe, "create", model, "-f", str(modelfile_path)] + (["--quantize", quantize] if quantize else [])
    done = subprocess.run(argv, env={**os.environ, "OLLAMA_HOST": base_url}, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        if "could not connect" in tail.lower() or "connection refused" in tail.lower():
            raise OllamaUnreachable(f"`ollama create` could not reach {base_url} (OLLAMA_HOST): {tail}")
        raise OllamaError(f"`{' '.join(argv[1:])}` failed ({done.returncode}): {tail}")


def choose_source(gguf_files: dict[str, str], hub: dict | None, ollama: OllamaParams) -> tuple[str, str]:
    """(FROM value, note): the uploaded hf.co reference when asked and real, else the local GGUF."""
    kind = ollama.gguf_type.lower()
    note = "local GGUF"
    if ollama.from_hub:
        if hub and not hub.get("dry_run"):
            refs = {k.lower(): v for k, v in (hub.get("ollama_refs") or {}).items()}
            repo = hub.get("gguf_repo") or hub.get("repo")
            ref = refs.get(kind) or (f"hf.co/{repo}:{kind.upper()}" if repo else None)
            if ref:
                return check_source(ref), "Hub (hf.co) reference"
        note = "local GGUF (ollama.from_hub was set but the upload was a dry run or named no repo)"
    files = {k.lower(): v for k, v in (gguf_files or {}).items()}
    if kind not in files:
        raise ValueError(
            f"ollama.gguf_type={kind!r} but the merge stage wrote only {sorted(files) or 'no GGUF'}; "
            f"add {kind!r} to publish.gguf_types or pick one of those."
        )
    return check_source(files[kind]), note


def load_articles(split_dir: str | Path) -> list[dict]:
    path = Path(split_dir) / "test.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the smoke test needs the held-out split written by the split stage.")
    rows = [r for r in read_jsonl(path) if str(r.get("input", "")).strip()]
    if not rows:
        raise ValueError(f"{path} has no rows with a non-empty `input` (article body) to smoke-test on.")
    return rows


def _residue_fragments() -> list[str]:
    """Template markers plus lines of the instruction, whose echo means the prompt leaked out."""
    lines = [ln.strip() for ln in re.split(r"\{content\}|\{max_title_chars\}|\n", instruction_template())]
    return list(TEMPLATE_MARKERS) + [ln for ln in lines if len(ln) >= 5]


def title_problems(response: dict, min_title_chars: int, max_title_chars: int) -> list[str]:
    """What is wrong with one `/api/generate` answer as a headline; empty when it passes."""
    title = str(response.get("response", "")).strip()
    problems = []
    if not title:
        problems.append("empty title")
    if response.get("done_reason") != "stop":
        problems.append(f"done_reason {response.get('done_reason')!r}, not 'stop' (the model did not end its turn)")
    if title and not (min_title_chars <= len(title) <= max_title_chars):
        problems.append(f"{len(title)} characters, outside [{min_title_chars}, {max_title_chars}]")
    residue = [frag for frag in _residue_fragments() if frag in title]
    if residue:
        problems.append(f"template residue {residue[:3]}")
    return problems


def smoke_test(api: OllamaAPI, model: str, articles: list[dict], min_title_chars: int, max_title_chars: int, keep_alive: str) -> dict:
    rows = []
    for row in articles:
        answer = api.generate(model, row["input"], keep_alive)
        problems = title_problems(answer, min_title_chars, max_title_chars)
        rows.append({
            "article_chars": len(row["input"]),
            "reference": row.get("target"),
            "title": str(answer.get("response", "")).strip(),
            "done_reason": answer.get("done_reason"),
            "eval_count": answer.get("eval_count"),
            "passed": not problems,
            "problems": "; ".join(problems),
        })
    failed = sum(not r["passed"] for r in rows)
    return {"passed": failed == 0, "articles": len(rows), "failed": failed, "rows": rows}


def _ms(ns: Any) -> float | None:
    return None if ns is None else ns / 1e6


def summarize_latency(requests: list[dict]) -> dict:
    """p50/p95/mean of each timing over the timed requests (wall time measured here, the rest
    reported by Ollama in nanoseconds), and decode speed in tokens/s."""
    summary: dict[str, Any] = {"requests": len(requests)}
    for key in ("wall_ms", "total_ms", "load_ms", "prompt_eval_ms", "eval_ms", "tokens_per_s", "prompt_tokens", "eval_tokens"):
        values = np.array([r[key] for r in requests if r.get(key) is not None], dtype=float)
        if values.size:
            summary[key] = {
                "p50": round(float(np.percentile(values, 50)), 2),
                "p95": round(float(np.percentile(values, 95)), 2),
                "mean": round(float(values.mean()), 2),
            }
    return summary


def measure_latency(api: OllamaAPI, model: str, prompts: list[str], n: int, keep_alive: str) -> dict:
    """One warm-up request (loads the model), then `n` timed requests cycling through `prompts`."""
    warm = api.generate(model, prompts[0], keep_alive)
    requests = []
    for i in range(n):
        start = time.perf_counter()
        answer = api.generate(model, prompts[i % len(prompts)], keep_alive)
        wall = (time.perf_counter() - start) * 1000
        eval_count, eval_ns = answer.get("eval_count"), answer.get("eval_duration")
        requests.append({
            "wall_ms": round(wall, 2),
            "total_ms": _ms(answer.get("total_duration")),
            "load_ms": _ms(answer.get("load_duration")),
            "prompt_eval_ms": _ms(answer.get("prompt_eval_duration")),
            "eval_ms": _ms(eval_ns),
            "prompt_tokens": answer.get("prompt_eval_count"),
            "eval_tokens": eval_count,
            "tokens_per_s": round(eval_count / (eval_ns / 1e9), 2) if eval_count and eval_ns else None,
            "done_reason": answer.get("done_reason"),
        })
    return {"warmup_load_ms": _ms(warm.get("load_duration")), "summary": summarize_latency(requests), "requests": requests}


def latency_problems(summary: dict, max_p50_ms: float, max_p95_ms: float) -> list[str]:
    wall = summary["wall_ms"]
    problems = []
    if wall["p50"] > max_p50_ms:
        problems.append(f"p50 {wall['p50']:.0f} ms > {max_p50_ms:.0f} ms")
    if wall["p95"] > max_p95_ms:
        problems.append(f"p95 {wall['p95']:.0f} ms > {max_p95_ms:.0f} ms")
    return problems


def latency_table(summary: dict) -> list[dict]:
    return [{"metric": k, **v} for k, v in summary.items() if isinstance(v, dict)]


def _publish_markdown(key: str, markdown: str, description: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=key, markdown=markdown, description=description)


def _publish_table(key: str, rows: list[dict], description: str) -> None:
    from prefect.artifacts import create_table_artifact

    create_table_artifact(key=key, table=rows, description=description)


def ollama_create(
    gguf_files: dict[str, str],
    hub: dict | None,
    split_dir: str,
    run_dir: str,
    model_name: str,
    max_title_chars: int,
    min_title_chars: int,
    ollama: OllamaParams,
    publish: bool = False,
    connect_delays: Sequence[float] | None = None,
) -> dict:
    """Create, smoke-test, time and promote the model; see the module docstring.

    Returns the serving tag, the Modelfile path, the smoke and latency summaries and how the model
    was created. Raises `DeployBlocked` (candidate deleted, serving unchanged) when the smoke test
    or latency gate fails, `OllamaUnreachable` when the server does not answer.
    `publish` adds Prefect artifacts (the task sets it; plain calls need no Prefect API);
    `connect_delays` are the pauses between attempts to reach the server (default `CONNECT_DELAYS`).
    """
    log = _logger()
    out = Path(run_dir) / "ollama"
    serving, candidate = serving_and_candidate(model_name)
    max_p50 = ollama.max_p50_ms or DEFAULT_MAX_P50_MS
    max_p95 = ollama.max_p95_ms or DEFAULT_MAX_P95_MS
    articles = load_articles(split_dir)
    source, source_note = choose_source(gguf_files, hub, ollama)
    local = not source.startswith(("hf.co/", "huggingface.co/"))
    if ollama.quantize and ollama.gguf_type not in ("f16", "bf16"):
        raise ValueError(f"ollama.quantize={ollama.quantize!r} needs an f16/bf16 source, but ollama.gguf_type={ollama.gguf_type!r}; set gguf_type='f16'.")

    modelfile = render_modelfile(ModelfileValues(
        source=source, max_title_chars=max_title_chars, temperature=ollama.temperature,
        num_ctx=ollama.num_ctx, extra_stop=tuple(ollama.extra_stop),
    ))
    modelfile_path = atomic_write_text(out / "Modelfile", modelfile)
    log.info("Modelfile for %s written to %s (FROM %s: %s)", serving, modelfile_path, source, source_note)
    if publish:
        _publish_markdown("ollama-modelfile", f"# Ollama Modelfile of `{serving}`\n\n`{modelfile_path}`\n\n```\n{modelfile}```\n",
                          "Modelfile the model was created from")

    api = OllamaAPI(ollama.host)
    try:
        version = api.wait(CONNECT_DELAYS if connect_delays is None else connect_delays)
        form = "current" if parse_version(version) >= CURRENT_CREATE_SINCE else "legacy"
        via = "cli" if ollama.use_cli else f"rest-{form}"
        previous = api.models().get(serving)
        log.info("Ollama %s at %s; creating %s via %s (serving tag %s currently %s)",
                 version, api.base, candidate, via, serving, previous[:12] if previous else "absent")

        start = time.perf_counter()
        if ollama.use_cli:
            create_with_cli(candidate, modelfile_path, api.base, ollama.quantize)
        else:
            digest = api.push_blob(Path(source)) if local else None
            api.create(create_request(form, candidate, modelfile, digest, ollama.quantize))
        create_s = round(time.perf_counter() - start, 2)
        candidate_digest = api.models().get(candidate)
        if candidate_digest is None:
            raise OllamaError(f"Ollama reported success but {candidate} is not listed by /api/tags.")

        report: dict[str, Any] = {
            "model": serving, "candidate": candidate, "host": api.base, "server_version": version,
            "create_via": via, "create_s": create_s, "source": source, "source_note": source_note,
            "modelfile": str(modelfile_path), "digest": candidate_digest, "previous_digest": previous,
            "quantize": ollama.quantize, "promoted": False,
        }
        try:
            smoke = smoke_test(api, candidate, articles[: ollama.smoke_articles], min_title_chars, max_title_chars, ollama.keep_alive)
            atomic_write_json(out / "smoke.json", smoke)
            if publish:
                _publish_table("ollama-smoke", smoke["rows"], f"Smoke test of {candidate}: {smoke['articles'] - smoke['failed']}/{smoke['articles']} passed")
            report["smoke"] = {k: smoke[k] for k in ("passed", "articles", "failed")}
            if not smoke["passed"]:
                bad = next(r for r in smoke["rows"] if not r["passed"])
                raise DeployBlocked(
                    f"Smoke test failed on {smoke['failed']}/{smoke['articles']} held-out articles "
                    f"(e.g. {bad['problems']}: {bad['title'][:60]!r}); {serving} keeps its previous model."
                )

            latency = measure_latency(api, candidate, [r["input"] for r in articles], ollama.latency_requests, ollama.keep_alive)
            problems = latency_problems(latency["summary"], max_p50, max_p95)
            latency["gate"] = {"max_p50_ms": max_p50, "max_p95_ms": max_p95, "passed": not problems, "problems": problems}
            atomic_write_json(out / "latency.json", latency)
            if publish:
                _publish_table("ollama-latency", latency_table(latency["summary"]),
                               f"Latency of {candidate} over {ollama.latency_requests} requests after warm-up "
                               f"(gate p50 <= {max_p50:.0f} ms, p95 <= {max_p95:.0f} ms: {'pass' if not problems else 'FAIL'})")
            report["latency"] = {**latency["summary"], "gate": latency["gate"]}
            if problems:
                raise DeployBlocked(
                    f"Latency gate failed ({'; '.join(problems)}); {serving} keeps its previous model. "
                    "On CPU, relax ollama.max_p50_ms / ollama.max_p95_ms."
                )

            api.copy(candidate, serving)
            if api.models().get(serving) != candidate_digest:
                raise OllamaError(f"Copying {candidate} to {serving} did not take: the digests differ.")
            report["promoted"] = True
            log.info("Promoted %s -> %s (digest %s)", candidate, serving, candidate_digest[:12])
        finally:
            # The candidate tag is an alias of the served manifest once promoted, and garbage when not.
            try:
                api.delete(candidate)
            except (OllamaError, OllamaUnreachable) as err:
                log.warning("Could not delete %s: %s", candidate, err)
            atomic_write_json(out / "deploy.json", report)
    finally:
        api.close()
    return report


def _retry_only_unreachable(task, task_run, state) -> bool:
    """Retry a lost connection; a failed smoke test or a bad request would only fail again."""
    try:
        state.result()
    except OllamaUnreachable:
        return True
    except BaseException:
        return False
    return False


@task(name="ollama-create", retries=2, retry_delay_seconds=[15, 60], retry_condition_fn=_retry_only_unreachable)
def ollama_create_task(
    gguf_files: dict[str, str],
    hub: dict | None,
    split_dir: str,
    run_dir: str,
    model_name: str,
    max_title_chars: int,
    min_title_chars: int,
    ollama: OllamaParams,
) -> dict:
    """Create, smoke-test, latency-gate and promote the Ollama model (artifacts: Modelfile, smoke, latency)."""
    return ollama_create(gguf_files, hub, split_dir, run_dir, model_name, max_title_chars, min_title_chars, ollama, publish=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m titlegen.tasks.ollama`: the stage outside the flow (the compose `tools` service)."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m titlegen.tasks.ollama", description=main.__doc__)
    parser.add_argument("--run-dir", required=True, help="Run folder; the Modelfile and reports go to <run-dir>/ollama/.")
    parser.add_argument("--gguf", help="GGUF to serve (default: FROM hf.co when --params sets from_hub).")
    parser.add_argument("--split-dir", help="Folder with test.jsonl (default: <run-dir>/split).")
    parser.add_argument("--model", default="titlegen", help="Ollama model name; serving tag <name>:latest.")
    parser.add_argument("--max-title-chars", type=int, default=40)
    parser.add_argument("--min-title-chars", type=int, default=6)
    parser.add_argument("--hub", default="{}", help="The upload stage's result as JSON (repo, gguf_repo, ollama_refs, dry_run).")
    parser.add_argument("--params", default="{}", help='OllamaParams as JSON, e.g. \'{"max_p50_ms": 5000, "use_cli": true}\'.')
    args = parser.parse_args(argv)
    params = OllamaParams(**json.loads(args.params))
    gguf_files = {params.gguf_type: args.gguf} if args.gguf else {}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = ollama_create(gguf_files, json.loads(args.hub) or None, args.split_dir or str(Path(args.run_dir) / "split"),
                               args.run_dir, args.model, args.max_title_chars, args.min_title_chars, params)
    except (DeployBlocked, OllamaUnreachable, OllamaError, ValueError, FileNotFoundError) as err:
        print(f"ollama-create failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
