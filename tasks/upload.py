"""upload stage: publish `final-hf`, the GGUF files and a model card to the Hugging Face Hub.

One commit per repo, with a message naming the run. By default everything goes to one repo
(`publish.gguf_companion_repo=False`): the Hub's Ollama registry serves
`ollama pull hf.co/<org>/<repo>:<QUANT>` from whichever `.gguf` file in the repo has the quant tag
in its name (case-insensitive), and ignores the safetensors beside it, while transformers ignores
the `.gguf` files; so one repo, one card and one commit serve both. GGUFs are renamed
`<repo-name>-Q8_0.gguf`, `<repo-name>-F16.gguf`, ... so each tag matches exactly one file, and
the repo root gets the `template` and `params` files the Hub hands to Ollama, so a pulled model
renders the training prompt and stops at `<end_of_turn>`. With the companion option the GGUFs,
`template` and `params` go to `<repo>-GGUF` (its card says `base_model_relation: quantized`).

Through huggingface_hub's own commit API (`HfApi.create_commit`): every planned file is an add
operation, and the library drops those whose content the repo already has (its preupload compares
sha256 / git oids), uploads only the new LFS objects and makes no commit at all when nothing
changed. Weight files in the repo that the run no longer has (`*.safetensors`, `*.gguf`, the shard
index) are deleted in the same commit, so stale shards never linger. One commit per repo, always:
`upload_folder` would split a large folder into several commits when `hf_xet` is installed.
The task is retried by Prefect (`titlegen.retries`) on timeouts, connection errors, 408/429 and
5xx, up to `publish.upload_attempts` attempts with exponential backoff; 401/403/404 fail at once
with the variable to set. Because every attempt re-reads the repo first, a commit whose response
was lost is not repeated, and a repo already committed is unchanged (no new commit). The plain
`upload()` and the CLI make one attempt: run them again.

Visibility is checked, not assumed: with `publish.hf_private` (the default) an existing public repo
is refused before any file is sent (make it private, or choose `--public` / `hf_private=false`),
and the result's `private` is the repo's real visibility as the Hub reports it.

The token comes from `$HF_TOKEN` (or a saved `hf auth login`), else from the Prefect Secret block
`publish.hf_token_block` (`hf-token`). It is passed to `HfApi` only: never logged, returned,
written or put in an artifact. Without a token or a repo the upload is a dry run: an explicit
warning, a markdown artifact and `<run>/upload/report.md` listing every file, size and repo id
and the card, and `dry_run: True` in the result.

Outside the flow, for an existing `final-hf` (also what `docker compose --profile tools up tools` runs):

    HF_TOKEN=hf_... python -m titlegen.tasks.upload --final-hf outputs/<run>/final-hf --repo org/name
    python -m titlegen.tasks.upload --run <run>                 # outputs/<run>/final-hf + outputs/<run>/gguf
    python -m titlegen.tasks.upload                             # newest complete outputs/*/final-hf
    python -m titlegen.tasks.upload --final-hf ... --dry-run    # show what would be uploaded
"""

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import task

from titlegen.hub import (
    ENV_ORG,
    ENV_REPO,
    ENV_TOKEN,
    UploadError,
    hub_call,
    in_prefect_run,
    logger,
    resolve_repo,
    resolve_token,
    retry_on_transient_hub,
)
from titlegen.leftovers import stage_lock, sweep
from titlegen.params import MAX_UPLOAD_ATTEMPTS, PublishParams
from titlegen.retries import backoff
from titlegen.runs import atomic_write_json, atomic_write_text
from titlegen.upload_plan import (
    PLACEHOLDER_REPO,
    QUANT_TAGS,
    PlannedFile,
    check_inputs,
    gguf_files_in,
    plan_upload,
    report_markdown,
)

__all__ = ["UploadError", "gguf_files_in", "main", "plan_upload", "resolve_repo", "resolve_token", "upload", "upload_task"]

# Weight files of an earlier run that this run does not have: deleted in the same commit.
DELETE_PATTERNS = ["*.safetensors", "*.gguf", "*.safetensors.index.json"]


@contextlib.contextmanager
def _hub_timeouts(seconds: float) -> Iterator[None]:
    """huggingface_hub's shared client (`get_session()`) waits forever by default: bound its timeout while we
    upload, so a hung Hub is a retried timeout, and put the previous value back afterwards."""
    import httpx
    from huggingface_hub import get_session

    session = get_session()
    previous = session.timeout
    session.timeout = httpx.Timeout(seconds, connect=min(seconds, 30.0))
    try:
        yield
    finally:
        session.timeout = previous


def _check_visibility(repo_id: str, private: bool, wanted_private: bool) -> None:
    """Refuse to send anything meant to be private to a repo that is public."""
    if wanted_private and not private:
        raise UploadError(
            f"{repo_id} already exists and is PUBLIC, but publish.hf_private is true: nothing was uploaded, so nothing "
            f"meant to be private was published. Either make the repo private first (its Settings page on the Hub, or "
            f"`HfApi().update_repo_settings({repo_id!r}, private=True)`), or publish there on purpose with "
            "publish.hf_private=false (CLI: --public)."
        )


def _files_at(api, repo_id: str, revision: str) -> dict[str, str]:
    """{path: git oid} of the repo's files at `revision` (LFS files: the pointer's oid, which names the content)."""
    from huggingface_hub import RepoFile

    return {e.path: e.blob_id for e in api.list_repo_tree(repo_id, recursive=True, revision=revision) if isinstance(e, RepoFile)}


def _sync_repo(api, repo_id: str, files: list[PlannedFile], adds: list, *, private: bool, message: str, description: str) -> dict:
    """One attempt: create the repo if missing, check its visibility, commit every file (the library skips unchanged ones)
    plus the deletion of stale weight files. `adds` are `files`' operations, hashed once for all attempts."""
    from huggingface_hub import CommitOperationDelete
    from huggingface_hub.utils import filter_repo_objects

    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.repo_info(repo_id)
    _check_visibility(repo_id, bool(info.private), private)
    head = info.sha
    before = _files_at(api, repo_id, head)
    wanted = {f.path_in_repo for f in files}
    stale = sorted(p for p in filter_repo_objects(list(before), allow_patterns=DELETE_PATTERNS) if p not in wanted)
    ops = [*adds, *(CommitOperationDelete(path_in_repo=p) for p in stale)]
    commit = api.create_commit(repo_id, ops, commit_message=message, commit_description=description, parent_commit=head)
    if commit.oid == head:
        return {"commit": head, "new_commit": False, "uploaded": [], "deleted": [], "private": bool(info.private)}
    after = _files_at(api, repo_id, commit.oid)
    return {
        "commit": commit.oid,
        "new_commit": True,
        "uploaded": [f.path_in_repo for f in files if after.get(f.path_in_repo) != before.get(f.path_in_repo)],
        "deleted": [p for p in stale if p not in after],
        "private": bool(info.private),
    }


def _publish_report(run_dir: Path, key: str, markdown: str, description: str) -> Path:
    path = atomic_write_text(run_dir / "upload" / "report.md", markdown)
    if in_prefect_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=key, markdown=markdown, description=description)
    return path


def upload(
    final_hf: str | Path,
    gguf_files: dict[str, str] | None,
    run_dir: str | Path,
    hf_repo: str | None = None,
    publish: PublishParams | None = None,
    *,
    dry_run: bool = False,
) -> dict:
    """Upload `final_hf` and `gguf_files` ({type: path}) with a model card; see the module docstring.

    Returns `repo`, `gguf_repo`, `commit`, `gguf_commit`, `new_commit`, `dry_run`, `url`, `gguf_url`,
    `ollama_refs` ({type: "hf.co/org/repo:Q8_0"}, empty on a dry run), `files`, `private` and `gguf_private` (the
    visibility the Hub reports; on a dry run, the one asked for), `deleted`, `reason` (why it was a dry run) and
    `report` (the markdown report's path). Holds `<run>/.upload.lock` while it runs (a second upload of the run
    fails fast) and first removes what a killed upload left in `<run>/upload/`.
    """
    publish = publish or PublishParams()
    final_hf, run_dir, gguf_files = Path(final_hf).resolve(), Path(run_dir).resolve(), dict(gguf_files or {})
    if problems := check_inputs(final_hf, gguf_files):
        raise UploadError("Cannot upload: " + "; ".join(problems) + ".")
    log = logger()
    # Held while this run's upload runs; what a killed upload left in <run>/upload/ (half-written report, card) goes first.
    with stage_lock(run_dir, "upload"):
        sweep(run_dir / "upload", (".*.tmp",), log)
        return _upload(final_hf, gguf_files, run_dir, hf_repo, publish, dry_run, log)


def _upload(final_hf: Path, gguf_files: dict[str, str], run_dir: Path, hf_repo: str | None, publish: PublishParams,
            dry_run: bool, log) -> dict:
    repo_id, repo_origin = resolve_repo(hf_repo)
    token, token_origin = resolve_token(publish.hf_token_block)
    reasons = [r for r, missing in ((repo_origin, repo_id is None), (token_origin, token is None)) if missing]
    if dry_run:
        reasons.insert(0, "dry run requested")

    files, names, refs, cards = plan_upload(final_hf, gguf_files, run_dir, repo_id or PLACEHOLDER_REPO, publish)
    card_dir = run_dir / "upload"
    for repo, text in cards.items():
        atomic_write_text(card_dir / ("README.md" if repo == (repo_id or PLACEHOLDER_REPO) else "README.gguf.md"), text)
    gguf_repo = next((f.repo_id for f in files if f.path_in_repo in names.values()), repo_id)
    result: dict[str, Any] = {
        "repo": repo_id,
        "gguf_repo": gguf_repo if repo_id else None,
        "private": publish.hf_private,
        "files": [{"repo": f.repo_id, "path": f.path_in_repo, "size": f.size} for f in files],
    }

    if reasons:
        reason = "; ".join(reasons)
        log.warning(
            "Hub upload SKIPPED (dry run): %s. Nothing was uploaded; the report lists the %d files that would be. "
            "Set %s and %s/%s (or hf_repo) to upload.", reason, len(files), ENV_TOKEN, ENV_ORG, ENV_REPO,
        )
        lead = f"**Nothing was uploaded**: {reason}. Set `{ENV_TOKEN}` and `{ENV_ORG}`/`{ENV_REPO}` (or the `hf_repo` parameter) to upload."
        report = _publish_report(run_dir, "titlegen-upload-dry-run", report_markdown("Hub upload skipped (dry run)", lead, files, refs, cards),
                                 "What the Hub upload would have uploaded")
        result.update(dry_run=True, commit=None, gguf_commit=None, new_commit=False, url=None, gguf_url=None,
                      ollama_refs={}, planned_ollama_refs=refs if repo_id else {}, reason=reason, report=str(report))
        atomic_write_json(card_dir / "upload.json", result)
        return result

    from huggingface_hub import HfApi
    from huggingface_hub import constants as hf_constants

    endpoint = (os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    log.info("Uploading run %s to %s (token from %s)", run_dir.name, repo_id, token_origin)
    kinds = ", ".join(QUANT_TAGS[k] for k in names)
    outcomes: dict[str, dict] = {}
    with _hub_timeouts(publish.hf_timeout_s):
        for repo in dict.fromkeys(f.repo_id for f in files):
            repo_files = [f for f in files if f.repo_id == repo]
            if repo != repo_id:
                what = f"GGUF ({kinds}), Ollama template, card"
            elif names and gguf_repo == repo_id:
                what = f"model, GGUF ({kinds}), card"
            else:
                what = "model, card"
            message = f"titlegen run {run_dir.name}: {what}"
            description = f"Uploaded by titlegen from run `{run_dir.name}` ({len(repo_files)} files)."
            adds = [f.operation() for f in repo_files]
            outcomes[repo] = hub_call(
                "upload",
                lambda repo=repo, repo_files=repo_files, adds=adds, message=message, description=description: _sync_repo(
                    api, repo, repo_files, adds, private=publish.hf_private, message=message, description=description
                ),
                attempts=publish.upload_attempts, repo_id=repo, block=publish.hf_token_block,
            )
            out = outcomes[repo]
            if out["new_commit"]:
                log.info("%s: commit %s (%d files uploaded, %d stale deleted)", repo, out["commit"][:12], len(out["uploaded"]), len(out["deleted"]))
            else:
                log.info("%s: unchanged, no new commit (head %s)", repo, (out["commit"] or "")[:12])

    status = {}
    for repo, out in outcomes.items():
        for f in files:
            if f.repo_id == repo:
                status[(repo, f.path_in_repo)] = "uploaded" if f.path_in_repo in out["uploaded"] else "unchanged"
    main, gg = outcomes[repo_id], outcomes.get(gguf_repo, outcomes[repo_id])
    result.update(
        private=main["private"],  # what the Hub reports, not what was asked for
        gguf_private=gg["private"] if names else None,
        dry_run=False,
        commit=main["commit"],
        gguf_commit=gg["commit"] if names else None,
        new_commit=any(o["new_commit"] for o in outcomes.values()),
        url=f"{endpoint}/{repo_id}",
        gguf_url=f"{endpoint}/{gguf_repo}" if names else None,
        ollama_refs=refs,
        deleted=sorted({p for o in outcomes.values() for p in o["deleted"]}),
        reason=None,
    )
    lead = (
        f"Run `{run_dir.name}` → [`{repo_id}`]({result['url']}) ({'private' if main['private'] else 'PUBLIC'}) at `{main['commit']}`"
        + (f"; GGUF in [`{gguf_repo}`]({result['gguf_url']}) ({'private' if gg['private'] else 'PUBLIC'})"
           if gguf_repo != repo_id and names else "")
        + (". New commit." if result["new_commit"] else ". Unchanged: no new commit.")
    )
    result["report"] = str(_publish_report(run_dir, "titlegen-upload", report_markdown("Hub upload", lead, files, refs, cards, status),
                                           "Files, repos and Ollama refs of the Hub upload"))
    atomic_write_json(card_dir / "upload.json", result)
    return result


@task(
    name="upload",
    task_run_name="upload",
    retries=MAX_UPLOAD_ATTEMPTS - 1,  # the run's publish.upload_attempts decides, through the error
    retry_delay_seconds=backoff(2.0, MAX_UPLOAD_ATTEMPTS - 1, 64.0),
    retry_condition_fn=retry_on_transient_hub,
)
def upload_task(
    final_hf: str, gguf_files: dict[str, str], run_dir: str, hf_repo: str | None, publish: PublishParams
) -> dict:
    """Publish the merged model, its GGUFs and the card; retried by Prefect on transient Hub errors only."""
    return upload(final_hf, gguf_files, run_dir, hf_repo, publish)


def _newest_final_hf(output_root: Path) -> Path | None:
    done = [p for p in output_root.glob("*/final-hf") if (p / ".complete").exists()]
    return max(done, key=lambda p: (p / ".complete").stat().st_mtime) if done else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m titlegen.tasks.upload",
        description="Upload an existing final-hf (and its GGUFs) to the Hugging Face Hub with a model card. "
        f"Token: ${ENV_TOKEN}. Repo: --repo, else ${ENV_ORG}/${ENV_REPO}. Without either: a dry run.",
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--final-hf", type=Path, help="The merged model folder (outputs/<run>/final-hf).")
    src.add_argument("--run", default=os.environ.get("TITLEGEN_RUN") or None, help="Run name: <output-root>/<run>/final-hf ($TITLEGEN_RUN).")
    parser.add_argument("--output-root", type=Path, default=Path(os.environ.get("TITLEGEN_OUTPUT_ROOT") or "outputs"),
                        help="Where runs live (default: $TITLEGEN_OUTPUT_ROOT or outputs); "
                        "with neither --final-hf nor --run the newest complete final-hf there is uploaded.")
    parser.add_argument("--gguf-dir", type=Path, help="Folder of *.gguf (default: <run>/gguf when present; names must contain q8_0/f16/bf16).")
    parser.add_argument("--no-gguf", action="store_true", help="Upload final-hf only.")
    parser.add_argument("--repo", help="Hub repo org/name (default: $HF_ORG/$HF_REPO, else the run's hf_repo).")
    vis = parser.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=None, help="Create the repo private.")
    vis.add_argument("--public", dest="private", action="store_false", help="Create the repo public.")
    parser.add_argument("--companion", action="store_true", default=None, help="GGUFs to <repo>-GGUF instead of the same repo.")
    parser.add_argument("--dry-run", action="store_true", help="Only report what would be uploaded.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.final_hf:
        final_hf = args.final_hf
    elif args.run:
        final_hf = args.output_root / args.run / "final-hf"
    else:
        final_hf = _newest_final_hf(args.output_root)
        if final_hf is None:
            parser.error(f"no complete final-hf under {args.output_root}/*/: pass --final-hf or --run")
    run_dir = final_hf.resolve().parent

    # The run's own parameters are the defaults; flags override them.
    recorded = json.loads((run_dir / "params.json").read_text()) if (run_dir / "params.json").is_file() else {}
    publish = PublishParams(**(recorded.get("publish") or {}))
    updates = {k: v for k, v in (("hf_private", args.private), ("gguf_companion_repo", args.companion)) if v is not None}
    publish = publish.model_copy(update=updates)
    hf_repo = args.repo or (None if (os.environ.get(ENV_REPO)) else recorded.get("hf_repo"))

    gguf_dir = args.gguf_dir or (run_dir / "gguf")
    try:
        gguf = {} if args.no_gguf or not gguf_dir.is_dir() else gguf_files_in(gguf_dir)
        result = upload(final_hf, gguf, run_dir, hf_repo, publish, dry_run=args.dry_run)
    except UploadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if result["dry_run"] and not args.dry_run:
        print(f"\nNOT UPLOADED: {result['reason']}. Report: {result['report']}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
