"""The champion record: its Prefect Variable name, recording and finding it (Prefect API and local file), the weights
the evaluate stage scores it with, and the no-op test of a scheduled run."""

import json
import re
from pathlib import Path

import pytest

from tests.ollama_fake import fake_ollama  # noqa: F401  (fixture)
from titlegen.champion import (
    build_record,
    champion_key,
    champion_weights,
    find_champion,
    local_record_path,
    nothing_changed,
    record_champion,
)

VARIABLE_NAME = re.compile(r"^[a-z0-9_-]+$")  # Prefect's rule for Variable names


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):  # the 30 s default timed out in CI once
        yield


def _adapter(folder: Path, payload: bytes = b"weights-1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(payload)
    (folder / "adapter_config.json").write_text("{}")
    (folder / ".complete").write_text("ok\n")
    return folder


def _record(tmp_path: Path, adapter: Path, digest: str = "sha256:aaa", host: str | None = None, model: str = "tg") -> dict:
    return build_record(ollama_model=model, run_dir=str(tmp_path / "run"), adapter_dir=str(adapter), base_model="some/base",
                        base_model_dir="some/base", final_hf=str(tmp_path / "run" / "final-hf"),
                        hub={"repo": "org/tg", "commit": "c0ffee", "dry_run": False, "token": "never"},
                        served={"model": "tg:latest", "digest": digest, "host": host}, test_sha256="t" * 64,
                        metrics={"rouge_l": 0.3, "note": "dropped"}, flow_run_id="fr-1")


@pytest.mark.parametrize(("model", "expected"), [("titlegen", "titlegen-champion-titlegen--latest"),
                                                 ("titlegen:prod", "titlegen-champion-titlegen--prod")])
def test_champion_key_is_the_serving_tag(model, expected):
    assert champion_key(model) == expected
    assert champion_key(f"{model.partition(':')[0]}:{model.partition(':')[2] or 'latest'}") == expected


def test_champion_key_of_other_tags_is_valid_and_distinct():
    names = {m: champion_key(m) for m in ("Me/TG:prod", "me/tg:prod", "me-tg:prod", "tg:v1.2", "tg:v1-2", "a--b:c", "a:b--c")}
    assert all(VARIABLE_NAME.fullmatch(n) and len(n) <= 255 for n in names.values()), names
    assert len(set(names.values())) == len(names)


def test_record_is_small_and_holds_no_secret(tmp_path):
    record = _record(tmp_path, _adapter(tmp_path / "run" / "m-lora"))
    assert len(json.dumps(record)) < 5000  # Prefect's limit on a Variable's value
    assert "never" not in json.dumps(record)
    assert record["metrics"] == {"rouge_l": 0.3}
    assert record["ollama"] == {"tag": "tg:latest", "digest": "sha256:aaa", "host": None}


def test_recorded_champion_is_found_through_prefect_from_another_worker(prefect_api, tmp_path):
    adapter = _adapter(tmp_path / "run" / "m-lora")
    written = record_champion(_record(tmp_path, adapter), "tg", tmp_path / "outputs")
    kept = Path(written["adapter_dir"])
    assert kept.parent == tmp_path / "outputs" / "champions" / champion_key("tg")
    assert (kept / "adapter_model.safetensors").read_bytes() == b"weights-1" and (kept / ".complete").exists()
    assert json.loads(local_record_path(tmp_path / "outputs", "tg").read_text())["adapter_dir"] == str(kept)

    elsewhere = find_champion("tg", tmp_path / "other-worker-outputs")  # no local file there: the Prefect Variable
    assert elsewhere["adapter_sha256"] == written["adapter_sha256"]
    assert elsewhere["found_in"] == f"Prefect Variable {champion_key('tg')}"
    assert find_champion("tg:other", tmp_path / "outputs") is None

    from prefect.variables import Variable

    Variable.unset(champion_key("tg"))
    assert find_champion("tg", tmp_path / "outputs")["found_in"] == str(local_record_path(tmp_path / "outputs", "tg"))


def test_the_newer_record_wins_and_old_adapter_copies_are_pruned(prefect_api, tmp_path):
    out = tmp_path / "outputs"
    copies = []
    for i in range(3):
        record = _record(tmp_path, _adapter(tmp_path / f"run{i}" / "m-lora", f"w{i}".encode()), model="tg:newer")
        record["promoted_at"] = f"2026-01-0{i + 1}T00:00:00+00:00"
        copies.append(Path(record_champion(record, "tg:newer", out)["adapter_dir"]))
    assert [c.exists() for c in copies] == [False, True, True]  # the champion and the one before it
    # Another worker promoted later than what this worker's file says: the Variable is newer and wins.
    stale = {**json.loads(local_record_path(out, "tg:newer").read_text()), "promoted_at": "2025-01-01T00:00:00+00:00"}
    local_record_path(out, "tg:newer").write_text(json.dumps(stale))
    assert find_champion("tg:newer", out)["promoted_at"] == "2026-01-03T00:00:00+00:00"


def test_champion_weights_prefer_the_checked_adapter_copy_then_final_hf(tmp_path, monkeypatch):
    import titlegen.models

    monkeypatch.setattr(titlegen.models, "resolve_base_model", lambda name: f"/resolved/{name}")
    kept = _adapter(tmp_path / "kept")
    record = {**_record(tmp_path, kept), "adapter_dir": str(kept), "run_adapter_dir": str(tmp_path / "run" / "m-lora")}
    weights, _ = champion_weights(record)
    assert weights["model"] == "/resolved/some/base" and weights["adapter"] == str(kept)

    (kept / "adapter_model.safetensors").write_bytes(b"tampered")  # not the champion's weights any more
    weights, why = champion_weights({**record, "hub": {**record["hub"], "dry_run": True}})
    assert weights is None and "gone" in why and "not uploaded" in why

    import huggingface_hub

    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, revision, **kw: fetched.append((repo, revision)) or "/hf/snap")
    weights, note = champion_weights(record)  # another worker: the merged model at the recorded commit
    assert fetched == [("org/tg", "c0ffee")] and weights["model"] == "/hf/snap" and weights["adapter"] is None
    assert "on the Hub" in note

    def offline(*args, **kw):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    weights, why = champion_weights(record)
    assert weights is None and "gone" in why and "could not be downloaded" in why and "no network" in why

    _adapter(tmp_path / "run" / "final-hf")  # a complete merged folder
    weights, note = champion_weights(record)
    assert weights == {"model": record["final_hf"], "adapter": None,
                       "identity": {"final_hf": record["final_hf"], "adapter_sha256": record["adapter_sha256"]}}
    assert "merged folder" in note


def test_nothing_changed_only_for_the_served_adapter_and_digest(tmp_path, fake_ollama):  # noqa: F811
    adapter = _adapter(tmp_path / "run" / "m-lora")
    record = _record(tmp_path, adapter, digest="sha256:served")
    fake_ollama.models["tg:latest"] = "sha256:served"
    assert nothing_changed(record, str(adapter), "some/base", fake_ollama.url)[0]
    assert not nothing_changed(None, str(adapter), "some/base", fake_ollama.url)[0]
    assert not nothing_changed(record, str(adapter), "other/base", fake_ollama.url)[0]
    other = _adapter(tmp_path / "run2" / "m-lora", b"weights-2")
    same, why = nothing_changed(record, str(other), "some/base", fake_ollama.url)
    assert not same and "differs" in why
    fake_ollama.models["tg:latest"] = "sha256:someone-else"
    same, why = nothing_changed(record, str(adapter), "some/base", fake_ollama.url)
    assert not same and "publishing again" in why


def test_nothing_changed_when_ollama_does_not_answer(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = _adapter(tmp_path / "run" / "m-lora")
    same, why = nothing_changed(_record(tmp_path, adapter), str(adapter), "some/base", f"http://127.0.0.1:{port}")
    assert same and "did not answer" in why
