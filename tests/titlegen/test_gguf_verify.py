"""GGUF verification's Ollama calls (against `tests/ollama_fake.py`); the real check is in test_gguf.py."""

import socket

import pytest

from tests.ollama_fake import fake_ollama  # noqa: F401  (fixture)
from titlegen.gguf_verify import verify_gguf_files

TITLE = "政院通過明年度總預算"
REFERENCE = {"gguf_prompt": "<start_of_turn>user\n...", "title": TITLE, "raw_text": TITLE, "prefix_chars": [2, 5, 10],
             "margins": [3.0, 2.0, 1.0], "prompt_tokens": 80}


def _verify(host, files):
    return verify_gguf_files(files, [REFERENCE], host, 0.5, 0.9, 16, ["<end_of_turn>"], "tg")


@pytest.mark.parametrize("fake_ollama", [("0.5.4", {"response": TITLE, "prompt_eval_count": 80, "done_reason": "stop"})], indirect=True)
def test_verification_creates_generates_and_deletes(fake_ollama, tmp_path):
    gguf = tmp_path / "tg-F16.gguf"
    gguf.write_bytes(b"GGUF-not-really")
    result = _verify(fake_ollama.url, {"f16": str(gguf)})
    assert result["status"] == "passed" and result["types"]["f16"]["equal"] == 1
    (create,) = fake_ollama.bodies("POST", "/api/create")
    assert create["name"] == "tg-verify-f16" and create["modelfile"].startswith("FROM @sha256:")  # 0.5.4: legacy form
    (generate,) = fake_ollama.bodies("POST", "/api/generate")
    assert generate["raw"] is True and generate["options"]["temperature"] == 0 and generate["keep_alive"] == "30s"
    assert fake_ollama.bodies("DELETE", "/api/delete") == [{"model": "tg-verify-f16"}]
    assert fake_ollama.models == {}


def test_unreachable_server_skips_naming_the_host_with_its_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _verify(f"127.0.0.1:{port}", {"f16": "/nowhere.gguf"})
    assert result["status"] == "skipped" and result["server"] == f"http://127.0.0.1:{port}"
    assert "OllamaUnreachable" in result["reason"]
