"""Prefect caching for stages that write files: a hit only while the files it names are on disk.

A cache key from Prefect's `INPUTS` alone would be wrong twice over for the data stages: a file
changed in place at the same path would still hit, and a hit would hand back paths to files
someone deleted. `StageCache` therefore keys on

- the task's inputs (`INPUTS`),
- the source of the whole stage module (not just the thin task: the work lives in the plain
  functions beside it, and editing a cleaning rule must re-run cleaning),
- a fingerprint of the input data (sha256 of the input files, or the Hub commit), and
- the files on disk: the task writes its own cache key into a stamp file after its outputs.
  When the stamp matches this call's inputs and every output exists, the key is the stamped one
  and Prefect serves the stored result; otherwise the key gets a fresh suffix, which is a miss,
  and the run stamps that new key. The key can only be named before the task runs, which is why
  the stamp holds it rather than anything derived from the outputs.
"""

import hashlib
import importlib
import inspect
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, CachePolicy

from titlegen.runs import file_sha256

STAMP_SUFFIX = ".cachekey"


def _module_source_hash(module: str) -> str:
    return hashlib.sha256(inspect.getsource(importlib.import_module(module)).encode()).hexdigest()[:16]


@dataclass
class StageCache(CachePolicy):
    """Cache policy of a file-writing stage (see the module docstring).

    `code_of`: module whose source is part of the key. `fingerprint`: call inputs -> a value that
    changes when the input data change. `outputs`: call inputs -> files that must exist for a hit.
    `stamp`: call inputs -> the stamp file the task writes with `record_cache_key`.
    """

    code_of: str = ""
    fingerprint: Callable[[dict[str, Any]], Any] = lambda inputs: None
    outputs: Callable[[dict[str, Any]], Iterable[Path]] = lambda inputs: ()
    stamp: Callable[[dict[str, Any]], Path] = lambda inputs: Path("/nonexistent")
    extra: dict[str, Any] = field(default_factory=dict)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        parts = [
            INPUTS.compute_key(task_ctx, inputs, flow_parameters) or "",
            _module_source_hash(self.code_of),
            repr(self.fingerprint(inputs)),
        ]
        base = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
        recorded = read_stamp(self.stamp(inputs))
        if recorded and recorded.startswith(base + "-") and all(Path(p).exists() for p in self.outputs(inputs)):
            return recorded
        return f"{base}-{uuid.uuid4().hex[:12]}"


def file_input_sha256(argument: str) -> Callable[[dict[str, Any]], str | None]:
    """A `StageCache.fingerprint` for a stage whose input is one file named by the call argument
    `argument`: its sha256, so a changed file at the same path is a cache miss (None if absent)."""

    def fingerprint(inputs: dict[str, Any]) -> str | None:
        path = Path(inputs[argument])
        return file_sha256(path) if path.is_file() else None

    return fingerprint


def read_stamp(path: Path) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def clear_stamp(path: Path) -> None:
    """Called before a stage touches its outputs: a run that dies halfway must not leave a stamp
    that vouches for outputs it may have replaced."""
    Path(path).unlink(missing_ok=True)


def record_cache_key(path: Path) -> str | None:
    """Write the running task's cache key (None outside a cached Prefect task) to `path`, last."""
    from prefect.transactions import get_transaction

    from titlegen.runs import atomic_write_text

    txn = get_transaction()
    key = getattr(txn, "key", None)
    if key:
        atomic_write_text(path, key + "\n")
    return key
