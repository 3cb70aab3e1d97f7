"""The one Ollama client: host and version rules, request bodies, error mapping, and the REST
calls it makes (against `tests/ollama_fake.py`)."""

import hashlib
import socket

import pytest
from ollama._client import _parse_host

from tests.ollama_fake import fake_ollama  # noqa: F401  (fixture)
from titlegen.ollama_client import (
    CURRENT_CREATE_SINCE,
    OllamaClient,
    OllamaError,
    OllamaUnreachable,
    create_form,
    create_request,
    gguf_only_request,
    parse_version,
    resolve_host,
)

MODELFILE = 'FROM /x.gguf\nTEMPLATE """{{ .Prompt }}"""\nPARAMETER stop "<end_of_turn>"\nPARAMETER temperature 0\n'


def test_parse_version_handles_vendor_suffixes():
    assert parse_version("0.5.4-ipexllm-20250407") == (0, 5, 4)
    assert parse_version("0.12.3") >= CURRENT_CREATE_SINCE
    assert parse_version("0.5.4") < CURRENT_CREATE_SINCE


def test_create_form_follows_the_version():
    assert create_form("0.5.4") == "legacy" and create_form("0.5.5") == "current"
    assert create_form("dev-build") == "current"  # an unparsable version counts as current


def test_resolve_host_forms(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_host(None) == ("http://127.0.0.1:11434", "the default (OLLAMA_HOST unset)")
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5:11500")
    assert resolve_host(None) == ("http://10.0.0.5:11500", "OLLAMA_HOST")
    assert resolve_host("ollama")[0] == "http://ollama:11434"
    assert resolve_host(":9")[0] == "http://127.0.0.1:9"
    assert resolve_host("https://gpu.example")[0] == "https://gpu.example:443"


@pytest.mark.parametrize("form", ["127.0.0.1:11500", ":9", "ollama", "https://gpu.example", "http://h:80/p/", "[::1]:5"])
def test_resolve_host_agrees_with_the_ollama_package(form):
    """The official client re-parses the host we give it: our rule and its rule must agree."""
    assert resolve_host(form)[0] == _parse_host(form)


def test_create_request_rejects_unknown_form():
    with pytest.raises(ValueError, match="expected 'current' or 'legacy'"):
        create_request("v2", "m", 'FROM /x\nPARAMETER stop "<end_of_turn>"\n', None, None)


def test_current_create_request_reads_the_modelfile():
    body = create_request("current", "m:c", MODELFILE, "sha256:ab", "q4_K_M")
    assert body == {"model": "m:c", "stream": False, "files": {"model.gguf": "sha256:ab"}, "template": "{{ .Prompt }}",
                    "parameters": {"stop": ["<end_of_turn>"], "temperature": 0}, "quantize": "q4_K_M"}
    legacy = create_request("legacy", "m:c", MODELFILE, "sha256:ab", None)
    assert legacy == {"name": "m:c", "modelfile": MODELFILE.replace("FROM /x.gguf", "FROM @sha256:ab"), "stream": False}


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("call", ["version", "digests", "generate"])
def test_no_answer_is_unreachable_naming_the_host(call):
    """Shim calls (httpx) and official-client calls (ConnectionError) fail the same way."""
    host = _closed_port()
    with OllamaClient(host) as client, pytest.raises(OllamaUnreachable, match=rf"unreachable at http://{host} \(taken from OllamaParams.host\)"):
        getattr(client, call)(*(("m", "p") if call == "generate" else ()))


def test_error_answers_are_ollama_errors(fake_ollama):
    with OllamaClient(fake_ollama.url) as client:
        with pytest.raises(OllamaError, match="answered 404"):
            client.show("absent:latest")
        with pytest.raises(OllamaError, match="create of m:c did not succeed"):
            fake_ollama.create_status = "failed"
            client.create(gguf_only_request("current", "m:c", "sha256:ab"))


def test_blob_upload_skips_what_the_server_holds(fake_ollama, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF-not-really")
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    with OllamaClient(fake_ollama.url) as client:
        assert client.push_blob(gguf) == digest
        assert client.push_blob(gguf) == digest
    blob_calls = [m for m, p, _ in fake_ollama.requests if p.startswith("/api/blobs/")]
    assert blob_calls == ["HEAD", "POST", "HEAD"]


@pytest.mark.parametrize(("version", "form"), [("0.5.4", "legacy"), ("0.9.6", "current")])
def test_gguf_only_create_in_both_forms(fake_ollama, version, form):
    fake_ollama.version = version
    with OllamaClient(fake_ollama.url) as client:
        client.create(gguf_only_request(create_form(client.version()), "v:f16", "sha256:ab"))
        assert "v:f16" in client.digests()
        client.copy("v:f16", "v:copy")
        client.delete("v:f16")
        assert set(client.digests()) == {"v:copy"}
    (body,) = fake_ollama.bodies("POST", "/api/create")
    expected = {"legacy": {"name": "v:f16", "modelfile": "FROM @sha256:ab\n", "stream": False},
                "current": {"model": "v:f16", "files": {"model.gguf": "sha256:ab"}, "stream": False}}[form]
    assert body == expected
