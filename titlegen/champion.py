"""The champion: the model a titlegen run last promoted to an Ollama serving tag, found again by the next run.

When the ollama-create stage promotes a model, the flow records what now serves (`record_champion`):

    run folder and flow run, base model (id and resolved folder), adapter (sha256 and a kept copy),
    final-hf folder, Hub repo + commit (GGUF repo + commit), Ollama serving tag, host and digest,
    the test split's sha256 and the headline metrics it was promoted with.

The record is written twice, keyed by the serving tag (`titlegen:latest` for `ollama_model=titlegen`):

- a Prefect Variable `titlegen-champion-<tag>` (`champion_key`), so a run on another worker, or
  from another checkout, finds it through the Prefect API (UI: *Variables*);
- `<output_root>/champions/<key>.json`, beside a copy of the adapter in
  `<output_root>/champions/<key>/<sha12>/`: the next scheduled run usually trains in the same run
  folder (its name derives from the parameters, not the data), so the champion's own adapter
  folder is overwritten by the challenger before the evaluate stage could score it.

`find_champion` reads both and takes the newer. `champion_weights` says how the evaluate stage
can regenerate the champion's titles on this worker (the kept adapter + its base, else its
final-hf folder, else its merged model at the recorded Hub commit, e.g. on another worker), or
why it cannot (then the run says so and gates on the other rules only).
`nothing_changed` is the scheduled run's no-op test: this run's adapter is the champion's and
the serving tag still holds the recorded digest.
"""

import datetime as dt
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from prefect import task

from titlegen.runs import atomic_dir, atomic_write_json, file_sha256, fingerprint, is_complete

VARIABLE_PREFIX = "titlegen-champion-"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEEP_COPIES = 2  # the champion's adapter copy and the one before it (a rollback target)
log = logging.getLogger(__name__)


def serving_tag(ollama_model: str) -> str:
    from titlegen.ollama_names import run_tags

    return run_tags(ollama_model, "champion").serving


def champion_key(ollama_model: str) -> str:
    """`titlegen` -> `titlegen-champion-titlegen--latest`: a valid Prefect Variable name (lowercase letters,
    digits, `-`, `_`), with `--` for the `:`. Tags with other characters (uppercase, `/`, `.`) or their own `--`
    are lowercased, those characters become `-`, and a short hash of the tag keeps two tags from sharing a name."""
    tag = serving_tag(ollama_model)
    name = tag.replace(":", "--")
    if re.fullmatch(r"[a-z0-9_-]+", name) and name.count("--") == 1:
        return VARIABLE_PREFIX + name
    return VARIABLE_PREFIX + re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") + "-" + fingerprint(tag, 6)


def local_record_path(output_root: str | Path, ollama_model: str) -> Path:
    return Path(output_root) / "champions" / f"{champion_key(ollama_model)}.json"


def adapter_sha256(adapter_dir: str | Path | None) -> str | None:
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS if adapter_dir else None
    return file_sha256(weights) if weights and weights.is_file() else None


# ---- find ------------------------------------------------------------------------------------

def read_variable(name: str) -> dict | None:
    """The Prefect Variable's value (None when absent, or when the Prefect API cannot be reached: logged)."""
    try:
        from prefect.variables import Variable

        value = Variable.get(name, default=None)
    except Exception as err:  # noqa: BLE001 - an unreachable API must not stop a run; the local record remains
        log.warning("Could not read the Prefect Variable %s (%s); using the local champion record only.", name, err)
        return None
    return value if isinstance(value, dict) else None


def find_champion(ollama_model: str, output_root: str | Path) -> dict | None:
    """The newer of the Prefect Variable and the local record of `ollama_model`'s serving tag, or None."""
    key = champion_key(ollama_model)
    found = []
    if (remote := read_variable(key)) is not None:
        found.append({**remote, "found_in": f"Prefect Variable {key}"})
    path = local_record_path(output_root, ollama_model)
    if path.is_file():
        try:
            found.append({**json.loads(path.read_text(encoding="utf-8")), "found_in": str(path)})
        except (OSError, json.JSONDecodeError) as err:
            log.warning("Ignoring the unreadable champion record %s: %s", path, err)
    found = [r for r in found if r.get("adapter_sha256") or r.get("final_hf")]
    return max(found, key=lambda r: r.get("promoted_at") or "") if found else None


def describe(record: dict | None, ollama_model: str) -> str:
    if record is None:
        return (f"No champion recorded for {serving_tag(ollama_model)} (no Prefect Variable {champion_key(ollama_model)}, "
                "no local record): this run is gated on the thresholds only, and becomes the champion if promoted.")
    hub = record.get("hub") or {}
    return (f"Champion of {record.get('ollama', {}).get('tag')}: run {record.get('run_name')} promoted {record.get('promoted_at')}, "
            f"Ollama digest {str(record.get('ollama', {}).get('digest'))[:12]}, "
            f"Hub {hub.get('repo') or '(dry run)'}@{str(hub.get('commit'))[:12]}, adapter {str(record.get('adapter_sha256'))[:12]} "
            f"(found in {record.get('found_in')}).")


# ---- weights to score it with ----------------------------------------------------------------

def champion_weights(record: dict) -> tuple[dict | None, str]:
    """(`{model, adapter, identity}` for `titlegen.generate`, note) to regenerate the champion's titles on this
    worker, or (None, why not). Tried in order: the kept adapter copy (sha256-checked) on its base model, the
    run's adapter folder, the champion's final-hf folder, its merged model at the recorded Hub commit."""
    sha = record.get("adapter_sha256")
    for folder in (record.get("adapter_dir"), record.get("run_adapter_dir")):
        if sha and folder and adapter_sha256(folder) == sha:
            try:
                from titlegen.models import resolve_base_model

                base = resolve_base_model(record["base_model"])
            except Exception as err:  # noqa: BLE001 - any failure means: cannot score it here
                return None, f"the champion's base model {record.get('base_model')!r} cannot be loaded here ({err})"
            return {"model": base, "adapter": str(folder), "identity": {"adapter_sha256": sha, "base_model": record["base_model"]}}, \
                f"adapter {folder} on {record['base_model']}"
    final_hf = record.get("final_hf")
    if final_hf and is_complete(final_hf):
        return {"model": str(final_hf), "adapter": None, "identity": {"final_hf": str(final_hf), "adapter_sha256": sha}}, \
            f"merged folder {final_hf}"
    where = ", ".join(str(p) for p in (record.get("adapter_dir"), record.get("run_adapter_dir"), final_hf) if p)
    hub = record.get("hub") or {}
    if hub.get("repo") and hub.get("commit") and not hub.get("dry_run"):
        try:
            folder = hub_snapshot(hub["repo"], hub["commit"])
        except Exception as err:  # noqa: BLE001 - no token, no network, repo gone: cannot score it here
            return None, f"the champion's weights are gone from this worker (none of {where}) and {hub['repo']}@{hub['commit'][:12]} could not be downloaded ({type(err).__name__}: {err})"
        return {"model": folder, "adapter": None, "identity": {"hub": f"{hub['repo']}@{hub['commit']}", "adapter_sha256": sha}}, \
            f"merged model {hub['repo']}@{hub['commit'][:12]} on the Hub (not on this worker)"
    return None, f"the champion's weights are gone from this worker (none of {where} holds them) and it was not uploaded"


def hub_snapshot(repo: str, commit: str, token_block: str = "hf-token") -> str:
    """The merged model of a champion uploaded at `commit` (safetensors, config, tokenizer; no GGUF), from the
    Hugging Face cache or downloaded into it. The token ($HF_TOKEN or the Prefect Secret block) reaches only
    huggingface_hub."""
    from huggingface_hub import snapshot_download

    from titlegen.hub import resolve_token

    token, _ = resolve_token(token_block)
    log.info("Champion weights not on this worker: fetching %s@%s from the Hub", repo, commit[:12])
    return snapshot_download(repo, revision=commit, token=token,
                             allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model"])


# ---- the no-op test --------------------------------------------------------------------------

def served_digest(host: str | None, tag: str) -> tuple[str | None, bool]:
    """(digest the Ollama serving tag holds now, whether the server answered)."""
    from titlegen.ollama_client import OllamaClient, OllamaError, OllamaUnreachable

    try:
        with OllamaClient(host, timeout=10.0) as api:
            return api.digests().get(tag), True
    except (OllamaError, OllamaUnreachable):
        return None, False


def nothing_changed(record: dict | None, adapter_dir: str, base_model: str, ollama_host: str | None) -> tuple[bool, str]:
    """Whether this run would publish exactly what already serves: its adapter is the champion's, on the same
    base, and the serving tag still holds the recorded digest (an unreachable server is taken as unchanged)."""
    if record is None:
        return False, "no champion recorded"
    sha = adapter_sha256(adapter_dir)
    if sha is None or sha != record.get("adapter_sha256") or base_model != record.get("base_model"):
        return False, "this run's adapter differs from the champion's"
    tag, digest = record["ollama"]["tag"], record["ollama"]["digest"]
    now, reachable = served_digest(ollama_host, tag)
    if not reachable:
        return True, (f"the adapter is the champion's ({sha[:12]}); Ollama did not answer, so {tag} is assumed to "
                      f"still serve {digest[:12]}")
    if now != digest:
        return False, f"{tag} now holds {str(now)[:12]} instead of the champion's {digest[:12]}: publishing again"
    return True, f"{tag} already serves this run's model (adapter {sha[:12]}, digest {digest[:12]})"


# ---- record ----------------------------------------------------------------------------------

def build_record(*, ollama_model: str, run_dir: str, adapter_dir: str, base_model: str, base_model_dir: str,
                 final_hf: str | None, hub: dict | None, served: dict, test_sha256: str | None, metrics: dict | None,
                 flow_run_id: str | None = None) -> dict:
    """The champion record of a promoted model (small: a Prefect Variable holds at most 5,000 characters)."""
    hub = hub or {}
    return {
        "version": 1,
        "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "flow_run_id": flow_run_id,
        "run_name": Path(run_dir).name,
        "run_dir": str(Path(run_dir).resolve()),
        "base_model": base_model,
        "base_model_dir": base_model_dir,
        "run_adapter_dir": str(Path(adapter_dir).resolve()),
        "adapter_dir": None,  # the kept copy, set by record_champion
        "adapter_sha256": adapter_sha256(adapter_dir),
        "final_hf": final_hf,
        "hub": {k: hub.get(k) for k in ("repo", "commit", "gguf_repo", "gguf_commit", "dry_run")},
        "ollama": {"tag": served.get("model") or serving_tag(ollama_model), "digest": served.get("digest"), "host": served.get("host")},
        "test_sha256": test_sha256,
        "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
    }


def record_champion(record: dict, ollama_model: str, output_root: str | Path, logger=None) -> dict:
    """Keep a copy of the adapter, write the local record, set the Prefect Variable; returns the record written."""
    logger = logger or log
    key = champion_key(ollama_model)
    store = Path(output_root) / "champions" / key
    if record.get("adapter_sha256"):
        copy = store / record["adapter_sha256"][:12]
        if adapter_sha256(copy) != record["adapter_sha256"]:
            with atomic_dir(copy) as tmp:
                for f in Path(record["run_adapter_dir"]).iterdir():
                    if f.is_file() and f.name != ".complete":
                        shutil.copy2(f, tmp / f.name)
        record = {**record, "adapter_dir": str(copy.resolve())}
        copies = sorted((p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        for old in copies[KEEP_COPIES:]:
            if old != copy:
                shutil.rmtree(old, ignore_errors=True)
    atomic_write_json(local_record_path(output_root, ollama_model), record)
    try:
        from prefect.variables import Variable

        Variable.set(key, record, overwrite=True)
        logger.info("Champion recorded: Prefect Variable %s and %s", key, local_record_path(output_root, ollama_model))
    except Exception as err:  # noqa: BLE001 - the local record stands; the next run on this worker still finds it
        logger.warning("Champion recorded locally (%s) but not as Prefect Variable %s: %s",
                       local_record_path(output_root, ollama_model), key, err)
    return record


def record_summary(record: dict) -> dict[str, Any]:
    """What the flow returns about the champion (no paths beyond the run's)."""
    return {k: record.get(k) for k in ("run_name", "promoted_at", "adapter_sha256", "hub", "ollama")}


# ---- Prefect tasks ---------------------------------------------------------------------------

def _run_logger():
    from prefect import get_run_logger

    return get_run_logger()


@task(name="find-champion")
def find_champion_task(ollama_model: str, output_root: str) -> dict | None:
    """The champion record of `ollama_model`'s serving tag, or None; logs which (or why none)."""
    record = find_champion(ollama_model, output_root)
    _run_logger().info(describe(record, ollama_model))
    return record


@task(name="compare-with-champion")
def nothing_changed_task(champion: dict | None, adapter_dir: str, base_model: str, ollama_host: str | None) -> dict:
    """`{nothing_changed, reason}`: whether this run's model is the one already served (`nothing_changed`)."""
    same, reason = nothing_changed(champion, adapter_dir, base_model, ollama_host)
    _run_logger().info("%s: %s", "Nothing changed" if same else "Publishing when the gate passes", reason)
    return {"nothing_changed": same, "reason": reason}


@task(name="record-champion")
def record_champion_task(ollama_model: str, output_root: str, run_dir: str, adapter_dir: str, base_model: str,
                         base_model_dir: str, metrics_path: str, final_hf: str | None, hub: dict | None, served: dict) -> dict:
    """Record the promoted model as the champion (Prefect Variable, local record, adapter copy, markdown artifact)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    small = {k: metrics["candidate"][k] for k in ("rouge_1", "rouge_2", "rouge_l", "bleu_1")}
    record = build_record(ollama_model=ollama_model, run_dir=run_dir, adapter_dir=adapter_dir, base_model=base_model,
                          base_model_dir=base_model_dir, final_hf=final_hf, hub=hub, served=served,
                          test_sha256=metrics.get("test_sha256"), metrics=small, flow_run_id=flow_run.id)
    record = record_champion(record, ollama_model, output_root, _run_logger())
    create_markdown_artifact(key="titlegen-champion", description=f"The model {record['ollama']['tag']} serves now",
                             markdown=f"# Champion of `{record['ollama']['tag']}`\n\n{describe(record, ollama_model)}\n\n"
                                      f"```json\n{json.dumps(record, indent=2, ensure_ascii=False)}\n```")
    return record_summary(record)
