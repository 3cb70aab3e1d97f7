"""ollama-create: serve the merged model from Ollama, smoke-tested and latency-gated, promoted safely.

    python -m titlegen.tasks.ollama --run-dir outputs/<run> --gguf <file>.gguf   # see titlegen.ollama_cli

The stage renders `serving/ollama/Modelfile.template` (see `titlegen.modelfile`) into
`<run>/ollama/Modelfile`, creates the model on the server at `OLLAMA_HOST` under this run's own
candidate tag (`<name>:candidate-<run>`, see `titlegen.ollama_names`), asks it to title held-out
test articles (the smoke test), times it (warm-up, then `latency_requests` requests with
`keep_alive`; both in `titlegen.ollama_checks`), and only when both pass promotes it to the
serving tag (`<name>:latest`, or the tag `ollama_model` names; `titlegen.ollama_promote`: the served
model is kept and put back if the serving tag does not end up holding the tested digest). A
candidate that fails anything is deleted and the serving tag keeps whatever model it held before;
a run deletes no tag but its own.

Create paths, chosen by `OllamaParams.use_cli` and the server's `/api/version`, all through
`titlegen.ollama_client.OllamaClient` except the CLI:
- REST, current (>= 0.5.5): upload the GGUF blob (skipped when the server has it), then
  `POST /api/create {"model", "files" | "from", "template", "parameters", "quantize"}`.
- REST, pre-0.5.5 (the CPU server used in tests is 0.5.4): upload the blob, then
  `POST /api/create {"name", "modelfile"}` with `FROM @sha256:<digest>`.
- CLI: `ollama create <name> -f Modelfile [--quantize q]`, which works on every version.

An unreachable server fails the attempt at once with `OllamaUnreachable` naming `OLLAMA_HOST`; the
task's Prefect retries (only for that error) try again.
"""

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import task

from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY
from titlegen.modelfile import ModelfileValues, check_source, render_modelfile
from titlegen.ollama_checks import latency_problems, latency_table, measure_latency, smoke_test
from titlegen.ollama_client import OllamaClient, OllamaError, OllamaUnreachable, create_form, create_request, retry_on_unreachable
from titlegen.ollama_names import run_tags
from titlegen.ollama_promote import promote
from titlegen.params import OllamaParams
from titlegen.runs import atomic_write_json, atomic_write_text, read_jsonl
from titlegen.subproc import run_captured

# The brief's serving targets (GPU); OllamaParams.max_p50_ms / max_p95_ms override.
DEFAULT_MAX_P50_MS = 500.0
DEFAULT_MAX_P95_MS = 1000.0


class DeployBlocked(RuntimeError):
    """The candidate failed its smoke test or latency gate; it was deleted, serving is unchanged."""


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def create_with_cli(model: str, modelfile_path: Path, base_url: str, quantize: str | None) -> None:
    exe = shutil.which("ollama")
    if exe is None:
        raise FileNotFoundError("ollama.use_cli is true but no `ollama` executable is on PATH; install Ollama or set use_cli=false (REST).")
    argv = [exe, "create", model, "-f", str(modelfile_path)] + (["--quantize", quantize] if quantize else [])
    # No Hub token in the child, and it dies with this process (titlegen.subproc).
    done = run_captured(argv, env={"OLLAMA_HOST": base_url}, timeout=3600)
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
    run_id: str | None = None,
    repeat_penalty: float = REPEAT_PENALTY,
    repeat_last_n: int = REPEAT_LAST_N,
) -> dict:
    """Create, smoke-test, time and promote the model; see the module docstring.

    Returns the serving tag, the Modelfile path, the smoke and latency summaries and how the model
    was created. Raises `DeployBlocked` (candidate deleted, serving unchanged) when the smoke test
    or latency gate fails, `OllamaUnreachable` when the server does not answer.
    `publish` adds Prefect artifacts (the task sets it; plain calls need no Prefect API).
    `run_id` names this run's candidate and rollback tags (the task passes the flow run id, so a
    retry reuses its own tags); None picks a random one.
    """
    log = _logger()
    out = Path(run_dir) / "ollama"
    tags = run_tags(model_name, run_id)
    serving, candidate = tags.serving, tags.candidate
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
        repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
    ))
    modelfile_path = atomic_write_text(out / "Modelfile", modelfile)
    log.info("Modelfile for %s written to %s (FROM %s: %s)", serving, modelfile_path, source, source_note)
    if publish:
        _publish_markdown("ollama-modelfile", f"# Ollama Modelfile of `{serving}`\n\n`{modelfile_path}`\n\n```\n{modelfile}```\n",
                          "Modelfile the model was created from")

    with OllamaClient(ollama.host) as api:
        version = api.version()
        form = create_form(version)
        via = "cli" if ollama.use_cli else f"rest-{form}"
        previous = api.digests().get(serving)
        log.info("Ollama %s at %s; creating %s via %s (serving tag %s currently %s)",
                 version, api.base, candidate, via, serving, previous[:12] if previous else "absent")

        start = time.perf_counter()
        if ollama.use_cli:
            create_with_cli(candidate, modelfile_path, api.base, ollama.quantize)
        else:
            digest = api.push_blob(Path(source)) if local else None
            api.create(create_request(form, candidate, modelfile, digest, ollama.quantize))
        create_s = round(time.perf_counter() - start, 2)
        candidate_digest = api.digests().get(candidate)
        if candidate_digest is None:
            raise OllamaError(f"Ollama reported success but {candidate} is not listed by /api/tags.")

        report: dict[str, Any] = {
            "model": serving, "candidate": candidate, "rollback": tags.rollback, "host": api.base, "server_version": version,
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

            report.update(promote(api, tags, candidate_digest))
            report["promoted"] = True
            log.info("Promoted %s -> %s (digest %s)", candidate, serving, candidate_digest[:12])
        finally:
            # This run's candidate only: an alias of the served manifest once promoted, garbage when not.
            try:
                api.delete(candidate)
            except (OllamaError, OllamaUnreachable) as err:
                log.warning("Could not delete %s: %s", candidate, err)
            atomic_write_json(out / "deploy.json", report)
    return report


@task(name="ollama-create", retries=2, retry_delay_seconds=[15, 60], retry_condition_fn=retry_on_unreachable)
def ollama_create_task(
    gguf_files: dict[str, str],
    hub: dict | None,
    split_dir: str,
    run_dir: str,
    model_name: str,
    max_title_chars: int,
    min_title_chars: int,
    ollama: OllamaParams,
    repeat_penalty: float = REPEAT_PENALTY,
    repeat_last_n: int = REPEAT_LAST_N,
) -> dict:
    """Create, smoke-test, latency-gate and promote the Ollama model (artifacts: Modelfile, smoke, latency)."""
    from prefect.runtime import flow_run

    return ollama_create(gguf_files, hub, split_dir, run_dir, model_name, max_title_chars, min_title_chars, ollama,
                         publish=True, run_id=flow_run.id, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n)


if __name__ == "__main__":
    from titlegen.ollama_cli import main

    raise SystemExit(main())
