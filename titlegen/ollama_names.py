"""Ollama model names: the check of `ollama_model`, and the tags one deployment uses.

`validate_model_name` is the one check of a name titlegen will create or serve (the parameters
model calls it, so a bad `ollama_model` fails when the run is created, not hours later at the last
stage). It follows Ollama's own rules (`[host/][namespace/]model[:tag]`, each part letters, digits,
`_`, `.`, `-`, starting with a letter, digit or `_`; no `.` in a namespace; at most 80 characters a
part) and two of titlegen's: the tag leaves room for the per-run suffixes below, and it cannot be one
of them.

Tags of one deployment (`run_tags`): the serving tag is the name's tag (`latest` when none); the
candidate that is created and tested is `<tag>-candidate-<run>` (`candidate-<run>` for `latest`), and
the copy of the previously served model kept during promotion is `<tag>-rollback-<run>`, where
`<run>` is a short id of the run, so two runs never share a candidate.
"""

import hashlib
import re
import uuid
from dataclasses import dataclass

MAX_PART = 80  # Ollama's limit for a namespace, model or tag
RUN_ID_CHARS = 12
ROLES = ("candidate", "rollback")
MAX_TAG = MAX_PART - len("-candidate-") - RUN_ID_CHARS
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_NAME = re.compile(rf"(?P<prefix>(?:{_PART}/){{0,2}})(?P<model>{_PART})(?::(?P<tag>{_PART}))?")
# Case-insensitive, like the parameter schema's pattern (`:.*candidate` in any case) that the server enforces.
_RESERVED_TAG = re.compile(rf"(^|-)({'|'.join(ROLES)})(-|$)", re.IGNORECASE)
HOW = ("Use [namespace/]name[:tag] made of letters, digits, '_', '.' and '-', each part starting with a "
       "letter, digit or '_' (e.g. 'titlegen' or 'acme/titlegen:prod').")


def validate_model_name(name: str) -> str:
    """`name` unchanged when it is a valid `ollama_model`; else ValueError naming the problem and the fix."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"ollama_model {name!r} is empty or not a string. {HOW}")
    m = _NAME.fullmatch(name)
    if m is None:
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "_.-:/"))})
        why = f"it holds {''.join(bad)!r}" if bad else "its parts are misplaced or start with '.' or '-'"
        raise ValueError(f"ollama_model {name!r} is not a valid Ollama model name: {why}. {HOW}")
    prefix = [p for p in m["prefix"].split("/") if p]
    namespace = prefix[-1] if prefix else ""
    tag = m["tag"] or "latest"
    problems = []
    if "." in namespace:
        problems.append(f"the namespace {namespace!r} holds '.' (Ollama allows it only in a host)")
    if ".." in name:
        problems.append("it holds '..'")
    long_parts = [p for p in [*prefix, m["model"]] if len(p) > MAX_PART]
    if long_parts:
        problems.append(f"{long_parts[0][:20]!r}... is longer than {MAX_PART} characters")
    if len(tag) > MAX_TAG:
        problems.append(f"the tag is {len(tag)} characters; at most {MAX_TAG} leave room for '-candidate-<run>'")
    if _RESERVED_TAG.search(tag):
        problems.append(f"the tag {tag!r} looks like the candidate/rollback tags titlegen creates and deletes; choose another tag")
    if problems:
        raise ValueError(f"ollama_model {name!r} is not a valid Ollama model name: {'; '.join(problems)}. {HOW}")
    return name


@dataclass(frozen=True)
class RunTags:
    """The tags one deployment touches: it creates and deletes `candidate` and `rollback`, and
    promotes into `serving`."""

    serving: str
    candidate: str
    rollback: str
    run_id: str


def run_id_for(run: str | None = None) -> str:
    """A short id for a deployment's tags: stable for a given `run` (e.g. the Prefect flow run id, so a
    retried task reuses its own tags), random without one."""
    return hashlib.sha256((run or uuid.uuid4().hex).encode()).hexdigest()[:RUN_ID_CHARS]


def run_tags(model_name: str, run: str | None = None) -> RunTags:
    """`titlegen` -> serving `titlegen:latest`, candidate `titlegen:candidate-<id>`, rollback
    `titlegen:rollback-<id>`; `t:prod` -> `t:prod`, `t:prod-candidate-<id>`, `t:prod-rollback-<id>`."""
    name, _, tag = validate_model_name(model_name).partition(":")
    tag = tag or "latest"
    run_id = run_id_for(run)
    role = (lambda r: f"{name}:{r}-{run_id}") if tag == "latest" else (lambda r: f"{name}:{tag}-{r}-{run_id}")
    return RunTags(serving=f"{name}:{tag}", candidate=role("candidate"), rollback=role("rollback"), run_id=run_id)
