"""ollama-create: source choice, the REST contract (`tests/ollama_fake.py` stands in for Ollama's
transport and records every request), and the real Ollama 0.5.4 CPU server (`ollama` marker)."""

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from titlegen.decoding import TITLE_STOPS
from titlegen.modelfile import num_predict_for
from titlegen.params import OllamaParams
from titlegen.prompt import ollama_template
from titlegen.runs import write_jsonl
from titlegen.ollama_client import OllamaClient, OllamaUnreachable
from titlegen.tasks import ollama as stage
from titlegen.ollama_names import run_tags
from titlegen.tasks.ollama import DeployBlocked, choose_source, load_articles, ollama_create
from tests.ollama_fake import GOOD_ANSWER, fake_ollama  # noqa: F401  (fixture)

ARTICLES = [
    {"input": "行政院今天通過明年度總預算案，總額約二兆九千億元，將送立法院審議。", "target": "政院通過明年度總預算"},
    {"input": "中央氣象局表示，颱風預計明天清晨登陸，北部地區將有豪雨，請民眾注意防範。", "target": "颱風明晨登陸 北部防豪雨"},
    {"input": "台北市立動物園今天宣布，園內新生的貓熊寶寶將於下個月起與民眾見面。", "target": "貓熊寶寶下月與民眾見面"},
]


@pytest.fixture
def split_dir(tmp_path) -> Path:
    folder = tmp_path / "split"
    write_jsonl(folder / "test.jsonl", ARTICLES)
    return folder


@pytest.fixture
def gguf(tmp_path) -> Path:
    path = tmp_path / "gguf" / "model-q8_0.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF-not-really-a-model")
    return path


# --- pure functions -------------------------------------------------------------------------


def test_choose_source(gguf):
    files = {"q8_0": str(gguf)}
    assert choose_source(files, None, OllamaParams()) == (str(gguf.resolve()), "local GGUF")
    hub = {"repo": "acme/titlegen", "gguf_repo": "acme/titlegen-GGUF", "dry_run": False}
    assert choose_source(files, hub, OllamaParams(from_hub=True))[0] == "hf.co/acme/titlegen-GGUF:Q8_0"
    refs = {**hub, "ollama_refs": {"q8_0": "hf.co/acme/titlegen-GGUF:Q8_0", "f16": "hf.co/acme/titlegen-GGUF:F16"}}
    assert choose_source(files, refs, OllamaParams(from_hub=True, gguf_type="f16"))[0] == "hf.co/acme/titlegen-GGUF:F16"
    source, note = choose_source(files, {**hub, "dry_run": True}, OllamaParams(from_hub=True))
    assert source == str(gguf.resolve()) and "dry run" in note
    with pytest.raises(ValueError, match="add 'f16' to publish.gguf_types"):
        choose_source(files, None, OllamaParams(gguf_type="f16"))


def test_load_articles_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="split stage"):
        load_articles(tmp_path)
    write_jsonl(tmp_path / "test.jsonl", [{"input": " ", "target": "x"}])
    with pytest.raises(ValueError, match="non-empty `input`"):
        load_articles(tmp_path)


def test_quantize_needs_an_f16_source(gguf, split_dir, tmp_path):
    with pytest.raises(ValueError, match="needs an f16/bf16 source"):
        ollama_create({"q8_0": str(gguf)}, None, str(split_dir), str(tmp_path), "tg", 20, 4, OllamaParams(quantize="q4_K_M"))


def test_hostile_values_fail_before_any_request(fake_ollama, gguf, split_dir, tmp_path):
    params = OllamaParams(host=fake_ollama.url)
    with pytest.raises(ValueError, match="not a valid Ollama model name"):
        ollama_create({"q8_0": str(gguf)}, None, str(split_dir), str(tmp_path), 'tg\nSYSTEM "x"', 20, 4, params)
    odd = tmp_path / 'r1\nSYSTEM "x"'
    odd.mkdir()
    (odd / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="control characters"):
        ollama_create({"q8_0": str(odd / "m.gguf")}, None, str(split_dir), str(tmp_path), "tg", 20, 4, params)
    assert fake_ollama.requests == []


# --- REST contract against a recording stand-in server --------------------------------------


TAGS = run_tags("tg", "run-1")  # tg:latest, tg:candidate-<id>, tg:rollback-<id>


def _run(fake, gguf, split_dir, run_dir, **params):
    defaults = {"host": fake.url, "smoke_articles": 2, "latency_requests": 3}
    return ollama_create({"q8_0": str(gguf), "f16": str(gguf)}, None, str(split_dir), str(run_dir), "tg", 20, 4,
                         OllamaParams(**{**defaults, **params}), run_id="run-1")


def test_current_rest_create_request_shape(fake_ollama, gguf, split_dir, tmp_path):
    report = _run(fake_ollama, gguf, split_dir, tmp_path)
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert [m for m, p, _ in fake_ollama.requests if p.startswith("/api/blobs/")] == ["HEAD", "POST"]
    (create,) = fake_ollama.bodies("POST", "/api/create")
    assert create == {
        "model": TAGS.candidate,
        "stream": False,
        "files": {"model.gguf": digest},
        "template": ollama_template(20),
        "parameters": {"stop": ["<end_of_turn>", *TITLE_STOPS], "temperature": 0, "repeat_penalty": 1.4, "repeat_last_n": 16, "num_ctx": 2048, "num_predict": num_predict_for(20)},
    }
    generate = fake_ollama.bodies("POST", "/api/generate")
    assert len(generate) == 2 + 1 + 3  # smoke, warm-up, timed
    assert generate[0] == {"model": TAGS.candidate, "prompt": ARTICLES[0]["input"], "stream": False, "keep_alive": "10m"}
    assert fake_ollama.bodies("POST", "/api/copy") == [{"source": TAGS.candidate, "destination": "tg:latest"}]  # nothing to keep
    assert fake_ollama.bodies("DELETE", "/api/delete") == [{"model": TAGS.candidate}]
    assert set(fake_ollama.models) == {"tg:latest"}
    assert report["promoted"] and report["create_via"] == "rest-current" and report["model"] == "tg:latest"
    assert report["smoke"] == {"passed": True, "articles": 2, "failed": 0}
    assert report["latency"]["total_ms"]["p50"] == 120.0
    assert report["latency"]["tokens_per_s"]["p50"] == 240.0
    saved = tmp_path / "ollama"
    assert (saved / "Modelfile").read_text().startswith("# titlegen")
    assert json.loads((saved / "deploy.json").read_text())["digest"] == report["digest"]
    assert len(json.loads((saved / "latency.json").read_text())["requests"]) == 3


def test_current_rest_quantize_and_known_blob(fake_ollama, gguf, split_dir, tmp_path):
    fake_ollama.blobs.add("sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest())
    _run(fake_ollama, gguf, split_dir, tmp_path, gguf_type="f16", quantize="q4_K_M")
    assert [m for m, p, _ in fake_ollama.requests if p.startswith("/api/blobs/")] == ["HEAD"]  # not re-uploaded
    (create,) = fake_ollama.bodies("POST", "/api/create")
    assert create["quantize"] == "q4_K_M"


def test_current_rest_create_from_hub_reference(fake_ollama, gguf, split_dir, tmp_path):
    hub = {"repo": "acme/tg", "gguf_repo": "acme/tg", "dry_run": False, "ollama_refs": {"q8_0": "hf.co/acme/tg:Q8_0"}}
    ollama_create({"q8_0": str(gguf)}, hub, str(split_dir), str(tmp_path), "tg", 20, 4,
                  OllamaParams(host=fake_ollama.url, from_hub=True, smoke_articles=1, latency_requests=1))
    (create,) = fake_ollama.bodies("POST", "/api/create")
    assert create["from"] == "hf.co/acme/tg:Q8_0" and "files" not in create
    assert not [p for _, p, _ in fake_ollama.requests if p.startswith("/api/blobs/")]


@pytest.mark.parametrize("fake_ollama", [("0.5.4-ipexllm-20250407", GOOD_ANSWER)], indirect=True)
def test_legacy_rest_create_request_shape(fake_ollama, gguf, split_dir, tmp_path):
    report = _run(fake_ollama, gguf, split_dir, tmp_path)
    (create,) = fake_ollama.bodies("POST", "/api/create")
    assert set(create) == {"name", "modelfile", "stream"} and create["name"] == TAGS.candidate
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    saved = (tmp_path / "ollama" / "Modelfile").read_text()
    assert create["modelfile"] == saved.replace(f"FROM {gguf.resolve()}", f"FROM @{digest}")
    assert report["create_via"] == "rest-legacy"


def test_latency_gate_failure_keeps_serving_model(fake_ollama, gguf, split_dir, tmp_path):
    fake_ollama.models["tg:latest"] = "previous"
    with pytest.raises(DeployBlocked, match="Latency gate failed.*tg:latest keeps its previous model"):
        _run(fake_ollama, gguf, split_dir, tmp_path, max_p50_ms=0.001, max_p95_ms=0.001)
    assert fake_ollama.models == {"tg:latest": "previous"}
    assert not fake_ollama.bodies("POST", "/api/copy")
    gate = json.loads((tmp_path / "ollama" / "latency.json").read_text())["gate"]
    assert gate["passed"] is False and gate["max_p50_ms"] == 0.001


@pytest.mark.parametrize("fake_ollama", [("0.9.6", {**GOOD_ANSWER, "done_reason": "length"})], indirect=True)
def test_smoke_failure_deletes_candidate(fake_ollama, gguf, split_dir, tmp_path):
    fake_ollama.models["tg:latest"] = "previous"
    with pytest.raises(DeployBlocked, match="Smoke test failed on 2/2"):
        _run(fake_ollama, gguf, split_dir, tmp_path)
    assert fake_ollama.models == {"tg:latest": "previous"}
    assert len(fake_ollama.bodies("POST", "/api/generate")) == 2  # no latency run for a failed candidate
    report = json.loads((tmp_path / "ollama" / "deploy.json").read_text())
    assert report["promoted"] is False and report["smoke"]["failed"] == 2


# --- unreachable server ---------------------------------------------------------------------


def _closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_host_names_ollama_host(gguf, split_dir, tmp_path, monkeypatch):
    """One attempt per call: retrying is the task's job (Prefect retries), not a loop in the stage."""
    monkeypatch.setenv("OLLAMA_HOST", _closed_port())
    attempts = []
    monkeypatch.setattr(OllamaClient, "version", _counting(OllamaClient.version, attempts))
    with pytest.raises(OllamaUnreachable, match=r"taken from OLLAMA_HOST\): .*set OLLAMA_HOST"):
        ollama_create({"q8_0": str(gguf)}, None, str(split_dir), str(tmp_path), "tg", 20, 4, OllamaParams())
    assert len(attempts) == 1


@pytest.mark.slow  # starts a Prefect test server (15-40 s here)
def test_unreachable_task_fails_after_retries_naming_ollama_host(gguf, split_dir, tmp_path, monkeypatch):
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    monkeypatch.setenv("OLLAMA_HOST", _closed_port())
    attempts = []
    monkeypatch.setattr(OllamaClient, "version", _counting(OllamaClient.version, attempts))

    states = []

    @flow
    def deploy():
        states.append(stage.ollama_create_task.with_options(retry_delay_seconds=0)(
            {"q8_0": str(gguf)}, None, str(split_dir), str(tmp_path), "tg", 20, 4, OllamaParams(), return_state=True
        ))

    with prefect_test_harness(server_startup_timeout=120):
        deploy()
    (state,) = states
    assert state.is_failed()
    assert "OllamaUnreachable" in state.message and "OLLAMA_HOST" in state.message
    assert len(attempts) == 3  # first try + 2 retries, only because the error is a lost connection


def _counting(fn, calls):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapper


# --- the real Ollama server (0.5.4 CPU build from ../shared/tools/ollama-cpu) ----------------


@pytest.fixture
def real_split(tmp_path):
    """Short real articles keep each CPU generation to a few seconds."""
    import pyarrow.parquet as pq

    from tests.conftest import shared_data

    folder = shared_data("zh-tw-news-2017")
    table = pq.read_table(sorted((folder / "data").glob("*.parquet"))[0], columns=["title", "content"]).slice(0, 6)
    rows = [{"input": c[:150], "target": t} for c, t in zip(table["content"].to_pylist(), table["title"].to_pylist())]
    path = tmp_path / "split"
    write_jsonl(path / "test.jsonl", rows)
    return path


def _ollama_cli_on_path(monkeypatch):
    env_sh = os.environ.get("TITLEGEN_OLLAMA_ENV_SH")
    if not env_sh:
        pytest.skip("TITLEGEN_OLLAMA_ENV_SH is unset: the ollama_host fixture did not install the CLI")
    bin_dir = str(Path(env_sh).parent / "bin")
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("LD_LIBRARY_PATH", os.pathsep.join([bin_dir, str(Path(env_sh).parent / "lib"), os.environ.get("LD_LIBRARY_PATH", "")]))


@pytest.mark.ollama
@pytest.mark.slow
def test_real_promotion_then_rollback(ollama_host, gemma270m_gguf, real_split, tmp_path, monkeypatch):
    """Gemma 3 270M *base* does not follow the prompt, so v1 is served with extra stops and loose
    length limits (the mechanics are what is tested); v2, made through the CLI with the real
    limits but a minimum length (15 characters) that its first line (10, 「請勿抄襲，請勿模仿。」, cut at the line break
    as every served title is) misses, fails its smoke test and must leave v1 serving."""
    tags = lambda: {m["name"]: m["digest"] for m in httpx.get(f"{ollama_host}/api/tags").json()["models"]}  # noqa: E731
    relaxed = OllamaParams(host=ollama_host, extra_stop=["。", "，", "？", ":", "："], smoke_articles=2,
                           latency_requests=2, max_p50_ms=120_000, max_p95_ms=120_000)
    v1 = ollama_create({"q8_0": str(gemma270m_gguf)}, None, str(real_split), str(tmp_path / "v1"),
                       "titlegen-test", 60, 1, relaxed)
    assert v1["promoted"] and v1["create_via"] == "rest-legacy"
    assert tags().get("titlegen-test:latest") == v1["digest"]
    assert not [t for t in tags() if t.startswith("titlegen-test:") and t != "titlegen-test:latest"]
    assert v1["latency"]["requests"] == 2 and v1["latency"]["tokens_per_s"]["p50"] > 0
    assert v1["latency"]["wall_ms"]["p50"] >= v1["latency"]["total_ms"]["p50"] * 0.9

    _ollama_cli_on_path(monkeypatch)
    strict = OllamaParams(host=ollama_host, use_cli=True, smoke_articles=1, latency_requests=1)
    with pytest.raises(DeployBlocked, match="Smoke test failed"):
        ollama_create({"q8_0": str(gemma270m_gguf)}, None, str(real_split), str(tmp_path / "v2"),
                      "titlegen-test", 20, 15, strict)
    report = json.loads((tmp_path / "v2" / "ollama" / "deploy.json").read_text())
    assert report["create_via"] == "cli" and report["digest"] != v1["digest"]
    assert tags().get("titlegen-test:latest") == v1["digest"]
    assert not [t for t in tags() if t.startswith("titlegen-test:") and t != "titlegen-test:latest"]
