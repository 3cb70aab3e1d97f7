"""Promotion under concurrency: per-run candidate tags, the served model kept and restored.

The real-server tests (`ollama` marker) run the whole stage twice on the CPU Ollama 0.5.4 server and
force the interleaving that broke the shared `name:candidate` tag, with hooks on `OllamaClient`.
"""

import fcntl
import json
import threading

import pytest

from tests.ollama_fake import fake_ollama  # noqa: F401  (fixture)
from titlegen.modelfile import ModelfileValues, render_modelfile
from titlegen.ollama_client import OllamaClient, OllamaError, create_form, create_request
from titlegen.ollama_names import run_tags
from titlegen.ollama_promote import PromotionFailed, lock_path, promote
from titlegen.params import OllamaParams
from titlegen.runs import write_jsonl
from titlegen.tasks.ollama import DeployBlocked, ollama_create

WAIT_S = 600  # a bound so a broken interleaving fails instead of hanging; never reached when it works
TAGS = run_tags("tg", "run-1")


# --- promote() against tests/ollama_fake.py ---------------------------------------------------


def _moved_after_copy(monkeypatch, fake, rogue_digest="rogue", fail_restore=False):
    """A foreign writer: right after the candidate lands on the serving tag, the tag moves."""
    real_copy = OllamaClient.copy

    def copy(self, source, destination):
        if fail_restore and source == TAGS.rollback:
            return
        real_copy(self, source, destination)
        if source == TAGS.candidate:
            fake.models[TAGS.serving] = rogue_digest

    monkeypatch.setattr(OllamaClient, "copy", copy)


def test_promote_keeps_then_drops_the_previous_model(fake_ollama):
    fake_ollama.models.update({TAGS.serving: "old", TAGS.candidate: "new"})
    with OllamaClient(fake_ollama.url) as client:
        assert promote(client, TAGS, "new") == {"previous_digest": "old"}
    assert fake_ollama.bodies("POST", "/api/copy") == [
        {"source": TAGS.serving, "destination": TAGS.rollback},
        {"source": TAGS.candidate, "destination": TAGS.serving},
    ]
    assert fake_ollama.models == {TAGS.serving: "new", TAGS.candidate: "new"}  # the stage deletes its candidate


def test_serving_tag_moved_after_the_copy_is_restored(fake_ollama, monkeypatch):
    fake_ollama.models.update({TAGS.serving: "old", TAGS.candidate: "new"})
    _moved_after_copy(monkeypatch, fake_ollama)
    with OllamaClient(fake_ollama.url) as client, pytest.raises(PromotionFailed, match="holds rogue, not the tested new.*restored to its previous model old"):
        promote(client, TAGS, "new")
    assert fake_ollama.models == {TAGS.serving: "old", TAGS.candidate: "new"}


def test_nothing_served_before_means_nothing_served_after_a_failed_promotion(fake_ollama, monkeypatch):
    fake_ollama.models[TAGS.candidate] = "new"
    _moved_after_copy(monkeypatch, fake_ollama)
    with OllamaClient(fake_ollama.url) as client, pytest.raises(PromotionFailed, match="served nothing before, so it was removed"):
        promote(client, TAGS, "new")
    assert fake_ollama.models == {TAGS.candidate: "new"}


def test_a_failed_restore_keeps_the_rollback_tag_for_the_operator(fake_ollama, monkeypatch):
    fake_ollama.models.update({TAGS.serving: "old", TAGS.candidate: "new"})
    _moved_after_copy(monkeypatch, fake_ollama, fail_restore=True)
    with OllamaClient(fake_ollama.url) as client, pytest.raises(PromotionFailed, match=f"ollama cp {TAGS.rollback} {TAGS.serving}"):
        promote(client, TAGS, "new")
    assert fake_ollama.models[TAGS.rollback] == "old"


def test_promotion_holds_the_machine_wide_lock(fake_ollama, monkeypatch):
    """While one run promotes, another process (another open file) cannot take the lock."""
    fake_ollama.models.update({TAGS.serving: "old", TAGS.candidate: "new"})
    held = []
    real_copy = OllamaClient.copy

    def copy(self, source, destination):
        with open(lock_path(self.base, TAGS.serving), "a+") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(other, fcntl.LOCK_UN)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        real_copy(self, source, destination)

    monkeypatch.setattr(OllamaClient, "copy", copy)
    with OllamaClient(fake_ollama.url) as client:
        promote(client, TAGS, "new")
    assert held == [True, True]


# --- the real server --------------------------------------------------------------------------


@pytest.fixture
def real_split(tmp_path):
    """Short real articles keep each CPU generation to a few seconds."""
    import pyarrow.parquet as pq

    from tests.conftest import shared_data

    folder = shared_data("zh-tw-news-2017")
    table = pq.read_table(sorted((folder / "data").glob("*.parquet"))[0], columns=["title", "content"]).slice(0, 4)
    rows = [{"input": c[:150], "target": t} for c, t in zip(table["content"].to_pylist(), table["title"].to_pylist())]
    write_jsonl(tmp_path / "split" / "test.jsonl", rows)
    return tmp_path / "split"


def _relaxed(host: str) -> OllamaParams:
    """Gemma 3 270M *base* does not follow the prompt: extra stops and loose limits let it pass."""
    return OllamaParams(host=host, extra_stop=["。", "，", "？", ":", "："], smoke_articles=1, latency_requests=1,
                        max_p50_ms=120_000, max_p95_ms=120_000)


def _tags(host: str, prefix: str) -> dict[str, str]:
    with OllamaClient(host) as client:
        return {name: digest for name, digest in client.digests().items() if name.startswith(prefix)}


@pytest.mark.ollama
@pytest.mark.slow
def test_real_racing_runs_promote_only_the_tested_model(ollama_host, gemma270m_gguf, real_split, tmp_path, monkeypatch):
    """Run B (which will fail its smoke test: its base model's first line, 10 characters, is under its 15-character
    minimum) creates its candidate of the same model after run A
    created its own and before A promotes. With one shared `name:candidate` tag, A copied B's untested
    model to the serving tag (and left it there), and A's cleanup deleted B's candidate under B."""
    a_created, b_created, a_done = threading.Event(), threading.Event(), threading.Event()
    real_copy, real_create = OllamaClient.copy, OllamaClient.create

    def copy(self, source, destination):
        if threading.current_thread().name == "run-a" and not b_created.wait(WAIT_S):
            raise TimeoutError("run B never created its candidate")
        real_copy(self, source, destination)

    def create(self, body):
        if threading.current_thread().name == "run-b" and not a_created.wait(WAIT_S):
            raise TimeoutError("run A never created its candidate")
        real_create(self, body)
        if threading.current_thread().name == "run-a":
            a_created.set()
        if threading.current_thread().name == "run-b":
            b_created.set()
            if not a_done.wait(WAIT_S):
                raise TimeoutError("run A never finished")

    monkeypatch.setattr(OllamaClient, "copy", copy)
    monkeypatch.setattr(OllamaClient, "create", create)
    gguf = {"q8_0": str(gemma270m_gguf)}
    strict = OllamaParams(host=ollama_host, smoke_articles=1, latency_requests=1)
    outcome: dict[str, object] = {}

    def run(name: str, params: OllamaParams, max_chars: int, min_chars: int, done: threading.Event) -> None:
        try:
            outcome[name] = ollama_create(gguf, None, str(real_split), str(tmp_path / name), "titlegen-race", max_chars, min_chars, params)
        except Exception as err:  # noqa: BLE001  (the test inspects it)
            outcome[name] = err
        finally:
            a_created.set()  # never leave the other thread waiting on a run that failed early
            done.set()

    threads = [threading.Thread(target=run, name="run-a", args=("run-a", _relaxed(ollama_host), 60, 1, a_done)),
               threading.Thread(target=run, name="run-b", args=("run-b", strict, 20, 15, b_created))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    tested = json.loads((tmp_path / "run-a" / "ollama" / "deploy.json").read_text())["digest"]
    assert _tags(ollama_host, "titlegen-race") == {"titlegen-race:latest": tested}  # A's tested model, no leftovers
    a, b = outcome["run-a"], outcome["run-b"]
    assert isinstance(a, dict) and a["promoted"], repr(a)
    assert isinstance(b, DeployBlocked) and "Smoke test failed" in str(b), repr(b)


@pytest.mark.ollama
@pytest.mark.slow
def test_real_serving_tag_moved_during_promotion_is_restored(ollama_host, gemma270m_gguf, real_split, tmp_path, monkeypatch):
    """Another writer copies a different model onto the serving tag right after this run's copy:
    the post-copy digest check fails and the model served before the promotion is put back."""
    serving, rogue = "titlegen-restore:latest", "titlegen-restore-rogue:latest"
    with OllamaClient(ollama_host) as client:
        digest = client.push_blob(gemma270m_gguf)
        form = create_form(client.version())
        for name, num_ctx in ((serving, 1024), (rogue, 1536)):  # two small, distinct manifests
            modelfile = render_modelfile(ModelfileValues(source=str(gemma270m_gguf), max_title_chars=40, num_ctx=num_ctx))
            client.create(create_request(form, name, modelfile, digest, None))
        before = client.digests()[serving]
    real_copy = OllamaClient.copy

    def copy(self, source, destination):
        real_copy(self, source, destination)
        if destination == serving and source.startswith("titlegen-restore:candidate"):
            real_copy(self, rogue, serving)  # the foreign writer

    monkeypatch.setattr(OllamaClient, "copy", copy)
    with pytest.raises(OllamaError, match="restored to its previous model"):
        ollama_create({"q8_0": str(gemma270m_gguf)}, None, str(real_split), str(tmp_path), "titlegen-restore", 60, 1,
                      _relaxed(ollama_host))
    assert _tags(ollama_host, "titlegen-restore:") == {serving: before}
