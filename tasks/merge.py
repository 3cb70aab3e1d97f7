"""merge stage: fold the LoRA adapter into the 16-bit base weights, verify, and export GGUF files.

`merge()` writes `<run>/final-hf/`, the standard Hugging Face layout (config, generation config whose
eos includes `<end_of_turn>`, tokenizer with titlegen's chat template, sharded safetensors,
`export.json`), through a temporary folder that is renamed into place only after verification:
plain transformers (no PEFT, no Unsloth) loads the written folder, renders the first
`publish.verify_articles` validation articles with the folder's own chat template, and its greedy
titles must equal those of base+adapter (a differing title passes only as a stated near-tie, see
`PublishParams.verify_tie_margin`), and its tensors must equal the merged model's bit for bit. A
mismatch fails the stage and leaves no final-hf. The one exception is a `rounding-sensitive` title:
where it differs, final-hf's token lies within twice the adapter model's own bf16-vs-float32 |Δlogit|
of its top token, so rounding decides it, not the weights (near-uniform logits of random weights:
`bench/merge_numerics.py`); it passes only with the tensors identical.

Then `<run>/gguf/` gets one GGUF per `publish.gguf_types` (see `titlegen.gguf`), each generated
from on an Ollama server and compared with final-hf's titles; with no server the check is
reported as `skipped`, in the return value and in `gguf/verification.json`.

A complete final-hf (or gguf/) made from the same adapter, base and settings is reused. The stage
holds `<run>/.merge.lock` while it runs and starts by removing what a killed merge left behind
(`LEFTOVERS`, see `titlegen.leftovers`). On CUDA the heavy part runs in a child process so its GPU
memory is freed when it ends (like every child, it gets no Hub token and dies with the stage):

    python -m titlegen.merge_worker SPEC.json       # what the task runs; SPEC as in `build_spec`
"""

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from titlegen.disk import NotEnoughDiskSpace, check_disk_space, disk_needed, local_checkpoint
from titlegen.generate import max_new_tokens_for
from titlegen.gguf_export import export_gguf, gguf_fingerprint, readable, reusable, verify_export
from titlegen.leftovers import stage_lock, sweep
from titlegen.merge_checks import MergeVerificationError, raise_on_failure
from titlegen.merge_worker import build_final_hf
from titlegen.params import PublishParams
from titlegen.prompt import chat_template
from titlegen.records import ExportRecord, MergeSpec
from titlegen.runs import atomic_dir, atomic_write_json, file_sha256, fingerprint, read_jsonl, slug
from titlegen.subproc import python_module, run_logged

log = logging.getLogger(__name__)

# What a killed merge leaves in the run folder (temporary final-hf / gguf folders of `atomic_dir`, the
# worker's spec and result files, half-written records), removed at the next start (titlegen.leftovers).
LEFTOVERS = (".final-hf.*.tmp", ".final-hf.old", ".gguf.*.tmp", ".gguf.old", ".merge-spec.*.json", ".merge-verification.json.*.tmp")

__all__ = ["MergeVerificationError", "NotEnoughDiskSpace", "merge", "merge_task"]


# ---------------------------------------------------------------- inputs

def verification_articles(split_dir: str | Path, n: int) -> list[str]:
    """The first `n` article bodies of `validation.jsonl` (file order: fixed by the split's seed)."""
    path = Path(split_dir) / "validation.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the split stage writes it; re-run the flow from the split stage.")
    rows = read_jsonl(path)[:n]
    if not rows:
        raise ValueError(f"{path} is empty: merge verification needs at least one validation article.")
    articles = []
    for i, row in enumerate(rows):
        text = row.get("input", row.get("content"))
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path} row {i} has no article text under `input` (or `content`).")
        articles.append(text)
    return articles


def source_fingerprint(adapter_dir: str | Path, base_model_dir: str, publish: PublishParams) -> str:
    """What final-hf is a function of: the adapter's bytes, the base, the dtype and the chat template."""
    adapter_dir = Path(adapter_dir)
    files = {}
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        if not (adapter_dir / name).exists():
            raise FileNotFoundError(f"{adapter_dir / name} is missing: adapter_dir must be a PEFT save_pretrained folder (the fine-tune stage's output).")
        files[name] = file_sha256(adapter_dir / name)
    return fingerprint({
        "adapter": files, "base": str(base_model_dir), "dtype": publish.merged_dtype,
        "shard": publish.max_shard_size, "chat_template": hashlib.sha256(chat_template().encode()).hexdigest(),
    }, 16)


def build_spec(adapter_dir, base_model_dir, out_dir, articles, max_title_chars, publish, source) -> MergeSpec:
    """The worker's input (titlegen.merge_worker). `base_model_dir` is the base's local folder where it has one (a Hub
    id's snapshot in the Hugging Face cache), so the worker, which gets no Hub token, reads even a gated base from
    disk; `base_model` keeps the name as given, for the records."""
    local = local_checkpoint(base_model_dir)
    return MergeSpec(
        adapter_dir=str(adapter_dir), base_model_dir=str(local or base_model_dir), base_model=str(base_model_dir),
        out_dir=str(out_dir), articles=articles, max_title_chars=max_title_chars,
        max_new_tokens=max_new_tokens_for(max_title_chars), merged_dtype=publish.merged_dtype,
        max_shard_size=publish.max_shard_size, tie_margin=publish.verify_tie_margin, source=source,
    )


# ---------------------------------------------------------------- orchestration


def _files_report(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _write_final_hf(spec: MergeSpec, final: Path, run: Path, logger) -> dict:
    import torch

    with atomic_dir(final) as tmp:
        spec = spec.model_copy(update={"out_dir": str(tmp)})
        if torch.cuda.is_available():
            # Named after this process and the temporary folder, so two processes never share one.
            spec_path = run / f".merge-spec.{os.getpid()}.{tmp.name.strip('.')}.json"
            result_path = spec_path.with_suffix(".result.json")
            try:
                spec.write(spec_path)
                run_logged(python_module("titlegen.merge_worker", str(spec_path)), logger)
                report = json.loads(result_path.read_text())
            finally:
                spec_path.unlink(missing_ok=True)
                result_path.unlink(missing_ok=True)
            if "error" in report:
                raise MergeVerificationError(report["error"])
        else:
            report = build_final_hf(spec)
        verification = report["verification"]
        atomic_write_json(run / "merge-verification.json", verification)
        raise_on_failure(verification, run / "merge-verification.json")
        report["files"] = _files_report(tmp)
        ExportRecord(**{k: v for k, v in report.items() if k != "final_hf_titles"}).write(tmp / "export.json")
        atomic_write_json(tmp / "verification-titles.json", report["final_hf_titles"])
        readable(tmp)
    return report


def merge(
    adapter_dir: str,
    base_model_dir: str,
    split_dir: str,
    run_dir: str,
    max_title_chars: int,
    publish: PublishParams | None = None,
    ollama_host: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> dict[str, Any]:
    """Write and verify `<run>/final-hf` and `<run>/gguf/*.gguf`; returns paths and verification results.

    Keys: `final_hf` (folder), `gguf` ({type: file}), `verification` (final-hf vs adapter model),
    `gguf_verification` (`status` passed/failed/skipped, per type), `reused` ({final_hf, gguf}).
    """
    publish = publish or PublishParams()
    logger = logger or log
    run = Path(run_dir)
    with stage_lock(run, "merge"):
        sweep(run, LEFTOVERS, logger)
        sweep(run / "gguf", (".*.tmp",), logger)
        return _merge(run, adapter_dir, base_model_dir, split_dir, max_title_chars, publish, ollama_host, logger)


def _merge(run: Path, adapter_dir: str, base_model_dir: str, split_dir: str, max_title_chars: int, publish: PublishParams,
           ollama_host: str | None, logger) -> dict[str, Any]:
    final = run / "final-hf"
    source = source_fingerprint(adapter_dir, base_model_dir, publish)
    articles = verification_articles(split_dir, publish.verify_articles)

    meta = reusable(final, source)
    reused_final = meta is not None
    gguf_dir = run / "gguf"
    stem = f"titlegen-{slug(str(base_model_dir))}"
    gguf_source = gguf_fingerprint(source, publish)
    gmeta = reusable(gguf_dir, gguf_source)
    reused_gguf = gmeta is not None
    check_disk_space(run, disk_needed(base_model_dir, publish, final_hf=not reused_final, gguf=not reused_gguf))
    if reused_final:
        logger.info("final-hf for this adapter is complete at %s: reusing it", final)
    else:
        spec = build_spec(adapter_dir, base_model_dir, final, articles, max_title_chars, publish, source)
        meta = _write_final_hf(spec, final, run, logger)
        v = meta["verification"]
        logger.info("final-hf written and verified: %d/%d titles equal, %d near-ties, %d rounding-sensitive, in %s",
                    v["equal"], v["n"], v["near_ties"], v.get("rounding_sensitive", 0), final)
        if v.get("rounding_sensitive"):
            logger.warning(
                "%d/%d verification titles differ from the adapter model's only within its own float32-vs-bf16 rounding "
                "noise: its logits are near-uniform (random or untrained weights?), so there final-hf is verified by its "
                "tensors alone. A trained adapter's titles do not do that.", v["rounding_sensitive"], v["n"])
    references = json.loads((final / "verification-titles.json").read_text())

    if not reused_gguf:
        gmeta = export_gguf(final, gguf_dir, stem, gguf_source, publish, logger)
    gguf_files = {t: str(gguf_dir / f["name"]) for t, f in gmeta["files"].items()}
    gver = verify_export(gguf_files, gguf_dir, gguf_source, references, publish, ollama_host, max_new_tokens_for(max_title_chars), stem, logger)
    return {
        "final_hf": str(final),
        "gguf": gguf_files,
        "export_json": str(final / "export.json"),
        "verification": {k: v for k, v in meta["verification"].items() if k != "articles"},
        "gguf_verification": gver,
        "reused": {"final_hf": reused_final, "gguf": reused_gguf},
    }


def _artifact(result: dict) -> str:
    v, g = result["verification"], result["gguf_verification"]
    lines = [
        "# merge + GGUF export", "",
        f"final-hf: `{result['final_hf']}` ({'reused' if result['reused']['final_hf'] else 'written'})", "",
        f"final-hf vs adapter model: **{'passed' if v['passed'] else 'FAILED'}**: {v['equal']}/{v['n']} greedy titles equal, "
        f"{v['near_ties']} near-ties, {v.get('rounding_sensitive', 0)} rounding-sensitive; max first-token |Δlogit| "
        f"{v['max_first_token_abs_logit_diff']:.4f}", "",
        f"GGUF on Ollama: **{g['status'].upper()}**" + (f" ({g.get('reason')})" if g["status"] == "skipped" else ""), "",
        "| type | file | status | equal to final-hf |", "| --- | --- | --- | --- |",
    ]
    for t, path in result["gguf"].items():
        e = g.get("types", {}).get(t, {})
        agree = f"{e['equal']}/{e['n']}" if "n" in e else "-"
        lines.append(f"| {t} | `{Path(path).name}` | {e.get('status', g['status'])} | {agree} |")
    return "\n".join(lines)


@task(name="merge", task_run_name="merge-export")
def merge_task(
    adapter_dir: str,
    base_model_dir: str,
    split_dir: str,
    run_dir: str,
    max_title_chars: int,
    publish: PublishParams,
    ollama_host: str | None = None,
) -> dict:
    """Merge the adapter into `final-hf`, export GGUFs, verify both (see `merge`)."""
    result = merge(adapter_dir, base_model_dir, split_dir, run_dir, max_title_chars, publish, ollama_host, get_run_logger())
    create_markdown_artifact(key="titlegen-merge", markdown=_artifact(result), description="Merge and GGUF verification")
    return result
