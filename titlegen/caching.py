"""The one caching mechanism of titlegen's stages: `StageCache`, a Prefect cache policy.

A stage task declares `cache_policy=StageCache(...)` and wraps its work in `with stamped(...)`;
the flow passes no cache options. Which stages use it: ingest, clean, split, fine-tune and
evaluate. Merge, upload and ollama-create have none on purpose: merge's GGUF check depends on
whether an Ollama server answers now, and upload and ollama-create act on outside services whose
state a local key cannot see (each is idempotent by itself: an unchanged upload makes no commit).

A cache key from Prefect's `INPUTS` alone would be wrong twice over: a file changed in place at
the same path would still hit, and a hit would hand back paths to files someone deleted.
`StageCache` therefore keys on

- the task's inputs (`INPUTS`),
- the code the stage runs: the source of the stage module and of every titlegen module it
  imports, directly or through others, at module level or inside a function, plus the worker
  modules it starts by name (`python -m titlegen.train_worker`); editing a cleaning rule in
  `titlegen/neardup.py` re-runs cleaning (`code_hash`),
- a fingerprint of the input data (sha256 of the input files, or the Hub commit), and
- the files on disk: the task writes its own cache key into a stamp file after its outputs.
  When the stamp matches this call's inputs and every output exists, the key is the stamped one
  and Prefect serves the stored result; otherwise the key gets a fresh suffix, which is a miss,
  and the run stamps that new key. The key can only be named before the task runs, which is why
  the stamp holds it rather than anything derived from the outputs.

Retries are Prefect's too: `retries` + `retry_condition_fn` on the task, never a loop inside.
"""

import ast
import contextlib
import functools
import hashlib
import importlib.util
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, CachePolicy

from titlegen.runs import file_sha256

STAMP_SUFFIX = ".cachekey"


_MODULE_NAME = re.compile(r"^titlegen(\.\w+)+$")


def _source_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _titlegen_imports(module: str, tree: ast.AST) -> set[str]:
    """Names of the titlegen modules `module` imports anywhere (or names as a string, e.g. a worker)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("titlegen")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("titlegen") and not node.level:
            found.add(node.module)
            # `from titlegen import prompt` / `from titlegen.tasks import clean` import modules too.
            found |= {f"{node.module}.{a.name}" for a in node.names if _source_file(f"{node.module}.{a.name}")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.match(node.value):
            found.add(node.value)
    return {name for name in found if name != module}


@functools.lru_cache(maxsize=None)
def code_modules(module: str) -> tuple[str, ...]:
    """`module` and every titlegen module it runs (the import closure), sorted."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or (path := _source_file(name)) is None:
            continue
        seen[name] = path
        todo.extend(_titlegen_imports(name, ast.parse(path.read_bytes())))
    if module not in seen:
        raise ModuleNotFoundError(f"StageCache(code_of={module!r}): no such module; name the stage's module (__name__).")
    return tuple(sorted(seen))


@functools.lru_cache(maxsize=None)
def code_hash(module: str) -> str:
    """sha256 over the sources of `code_modules(module)`: changes when any code the stage runs changes."""
    digest = hashlib.sha256()
    for name in code_modules(module):
        digest.update(name.encode() + b"\0" + _source_file(name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class StageCache(CachePolicy):
    """Cache policy of a file-writing stage (see the module docstring).

    `code_of`: the stage module (`__name__`); its code and that of every titlegen module it runs are part of the key. `fingerprint`: call inputs -> a value that
    changes when the input data change. `outputs`: call inputs -> files that must exist for a hit.
    `stamp`: call inputs -> the stamp file the task body wraps its work in (`stamped`).
    """

    code_of: str = ""
    fingerprint: Callable[[dict[str, Any]], Any] = lambda inputs: None
    outputs: Callable[[dict[str, Any]], Iterable[Path]] = lambda inputs: ()
    stamp: Callable[[dict[str, Any]], Path] = lambda inputs: Path("/nonexistent")
    extra: dict[str, Any] = field(default_factory=dict)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        parts = [
            INPUTS.compute_key(task_ctx, inputs, flow_parameters) or "",
            code_hash(self.code_of),
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


@contextlib.contextmanager
def stamped(path: Path) -> Iterator[None]:
    """Wrap a cached task's work: the stamp goes before anything is touched and the running task's
    key is written to `path` only after the work returned (see `StageCache`)."""
    clear_stamp(path)
    yield
    record_cache_key(path)
