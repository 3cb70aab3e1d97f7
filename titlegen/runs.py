"""Run folders and atomic writes.

A run folder `<output_root>/<run_name>/` holds every stage's output:
`data/` (ingest, clean), `split/` (train/validation/test JSONL + manifest),
`<model>-lora/` (adapter), `eval/`, `final-hf/`, `gguf/`, `ollama/`.
Nothing is ever half-written: files and folders are written under a temporary name beside the
target and renamed into place, and a folder counts as complete only when its marker file exists.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COMPLETE_MARKER = ".complete"


def slug(text: str) -> str:
    """A filesystem-safe short name: `unsloth/gemma-3n-E4B-it` -> `gemma-3n-E4B-it`."""
    last = text.rstrip("/").split("/")[-1].split(":")[-1]
    last = re.sub(r"\.gguf$", "", last)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-.") or "model"


def fingerprint(obj: Any, length: int = 10) -> str:
    """A short stable hash of any JSON-serialisable value (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Atomically write rows as UTF-8 JSON lines."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def is_complete(folder: str | Path) -> bool:
    return (Path(folder) / COMPLETE_MARKER).exists()


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target` whole.

    On any error the temporary folder is removed and `target` is left as it was.
    The completion marker is written last, inside the temporary folder, before the rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_dir(output_root: str | Path, run_name: str) -> Path:
    return Path(output_root).resolve() / run_name


def default_run_name(base_model: str, dataset: str, identity: Any) -> str:
    """`<model>-<dataset>-<hash>`: the same model, data and training inputs give the same folder,
    so re-running after a crash resumes there instead of starting over."""
    return f"{slug(base_model)}-{slug(dataset)}-{fingerprint(identity, 8)}"
