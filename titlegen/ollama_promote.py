"""Promotion of a tested candidate to the serving tag, safe when several runs deploy to one server.

Each run creates and tests its own candidate tag (`titlegen.ollama_names.run_tags`), so no run can
promote or delete another run's model. Ollama has no compare-and-swap (`/api/copy` overwrites its
destination), so `promote`:

1. keeps the model the serving tag holds now under this run's rollback tag (a copy of a small
   manifest; the blobs are shared) and records its digest;
2. copies this run's candidate to the serving tag;
3. reads the serving tag back. When it does not hold the digest that passed the checks (another
   writer moved a tag in between), it puts the kept model back (or removes the serving tag when
   nothing was served before) and raises `PromotionFailed`;
4. deletes the rollback tag (kept only when putting the model back failed, for the operator).

Steps 1-3 hold an exclusive lock per server and serving tag (a file lock in the temp folder), so
runs on one machine promote one at a time and cannot undo each other's promotion. Writers on other
machines are not covered by the lock; the read-back in step 3 still catches them.
"""

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from titlegen.ollama_client import OllamaClient, OllamaError
from titlegen.ollama_names import RunTags
from titlegen.runs import file_lock


class PromotionFailed(OllamaError):
    """The serving tag did not hold the tested model after the copy; the previous model was put back."""


def lock_path(base: str, serving: str) -> Path:
    key = hashlib.sha256(f"{base}|{serving.lower()}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"titlegen-promote-{key}.lock"


@contextmanager
def promotion_lock(base: str, serving: str) -> Iterator[None]:
    """Hold the machine-wide lock of `serving` on the server at `base` (blocks while another run holds it)."""
    with file_lock(lock_path(base, serving)):
        yield


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "none"


def promote(client: OllamaClient, tags: RunTags, tested_digest: str) -> dict:
    """Copy `tags.candidate` (which passed its checks with `tested_digest`) to `tags.serving`.

    Returns `{"previous_digest"}` (what the serving tag held just before, or None). Raises
    `PromotionFailed` after restoring that model when the serving tag ends up holding anything else.
    """
    with promotion_lock(client.base, tags.serving):
        previous, keep_rollback = None, False
        try:
            if tags.serving in client.digests():
                client.copy(tags.serving, tags.rollback)
                previous = client.digests().get(tags.rollback)
            client.copy(tags.candidate, tags.serving)
            served = client.digests().get(tags.serving)
            if served != tested_digest:
                outcome, keep_rollback = _put_back(client, tags, previous)
                raise PromotionFailed(
                    f"After copying {tags.candidate} to {tags.serving}, {tags.serving} holds {_short(served)}, not the "
                    f"tested {_short(tested_digest)}: another writer changed a tag in between. {outcome}"
                )
        finally:
            if previous is not None and not keep_rollback:
                client.delete(tags.rollback)
    return {"previous_digest": previous}


def _put_back(client: OllamaClient, tags: RunTags, previous: str | None) -> tuple[str, bool]:
    """Serve again what was served before the copy: (a sentence saying what happened, keep the rollback tag)."""
    if previous is None:
        client.delete(tags.serving)
        return f"{tags.serving} served nothing before, so it was removed rather than left serving an untested model.", False
    client.copy(tags.rollback, tags.serving)
    now = client.digests().get(tags.serving)
    if now != previous:
        return (f"Restoring {tags.serving} to its previous model {_short(previous)} did not take (it holds {_short(now)}); "
                f"that model is kept as {tags.rollback}: `ollama cp {tags.rollback} {tags.serving}` restores it.", True)
    return f"{tags.serving} was restored to its previous model {_short(previous)}.", False
