"""GGUF export of the merge stage: convert final-hf to each `publish.gguf_types`, then check them on Ollama.

`export_gguf` writes `<run>/gguf/` (one file per type and `export.json` with sizes, sha256 and
conversion times) through a temporary folder renamed into place; a complete gguf/ made from the
same final-hf, types and converter is reused. `verify_export` generates with each file on an
Ollama server and compares with final-hf's titles (see `titlegen.gguf.verify_gguf_files`); its
result goes to `gguf/verification.json`, where a passed result for the same files is reused. With
no server, or `publish.verify_gguf` false, the check is `skipped`, never `passed`.
"""

import json
import logging
from pathlib import Path
from typing import Any

from titlegen import gguf as gguf_lib
from titlegen.merge_checks import MergeVerificationError
from titlegen.params import PublishParams
from titlegen.prompt import END_OF_TURN
from titlegen.records import GgufExportRecord, SourcedRecord
from titlegen.runs import atomic_dir, atomic_write_json, file_sha256, fingerprint, is_complete


def readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders; final-hf and gguf/ are read by other users (containers, the upload CLI)."""
    folder.chmod(0o755)
    for p in folder.iterdir():
        if p.is_file():
            p.chmod(0o644)


def reusable(folder: Path, source: str) -> dict | None:
    """The folder's `export.json` (final-hf's `ExportRecord` or gguf/'s `GgufExportRecord`, as a dict) when the
    folder is complete and was made from `source`; else None."""
    if not is_complete(folder):
        return None
    record = SourcedRecord.read_optional(folder / "export.json")
    if record is None or record.source_fingerprint != source:
        return None
    return record.model_dump(exclude_unset=True)


def gguf_fingerprint(final_hf_source: str, publish: PublishParams) -> str:
    """What gguf/ is a function of: final-hf's source, the types and the converter version."""
    return fingerprint({"final_hf": final_hf_source, "types": sorted(publish.gguf_types), "converter": gguf_lib.CONVERTER_REQUIREMENT}, 16)


def export_gguf(final: Path, gguf_dir: Path, stem: str, source: str, publish: PublishParams, logger) -> dict[str, Any]:
    """Convert `final` into `gguf_dir` (one file per type); returns gguf/export.json's content."""
    meta: dict[str, Any] = {"source_fingerprint": source, "converter": gguf_lib.CONVERTER_REQUIREMENT, "files": {}, "convert_s": {}}
    with atomic_dir(gguf_dir) as tmp:
        for gguf_type in publish.gguf_types:
            name = gguf_lib.gguf_file_name(stem, gguf_type)
            logger.info("Converting final-hf to %s", name)
            meta["convert_s"][gguf_type] = round(gguf_lib.convert(final, tmp / name, gguf_type, logger), 2)
            meta["files"][gguf_type] = {"name": name, "bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
        GgufExportRecord(**meta).write(tmp / "export.json")
        readable(tmp)
    return meta


def verify_export(
    gguf_files: dict[str, str], gguf_dir: Path, source: str, references: list[dict], publish: PublishParams,
    ollama_host: str | None, max_new_tokens: int, stem: str, logger: logging.Logger | logging.LoggerAdapter,
) -> dict[str, Any]:
    """Each GGUF's greedy titles on Ollama vs final-hf's (`references`); raises MergeVerificationError when one fails."""
    vpath = gguf_dir / "verification.json"
    result = None
    if vpath.exists():
        previous = json.loads(vpath.read_text())
        if previous.get("source_fingerprint") == source and previous.get("status") == "passed":
            result = previous
    if result is None:
        if publish.verify_gguf:
            result = gguf_lib.verify_gguf_files(
                gguf_files, references, ollama_host, publish.verify_tie_margin, publish.min_q8_0_agreement,
                max_new_tokens, [END_OF_TURN], stem, logger,
            )
        else:
            result = {"status": "skipped", "reason": "publish.verify_gguf is false", "types": {}}
        result["source_fingerprint"] = source
        atomic_write_json(vpath, result)
    if result["status"] == "failed":
        bad = {t: e for t, e in result["types"].items() if e.get("status") == "failed"}
        entry = next(iter(bad.values()))
        why = entry.get("tokenization_differs") or entry["mismatches"][:1]
        raise MergeVerificationError(
            f"GGUF verification failed for {', '.join(bad)} on {result['server']}: "
            f"{entry['equal']}/{entry['n']} titles equal final-hf; {why}. Details in {vpath}."
        )
    return result
