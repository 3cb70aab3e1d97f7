import httpx
import pytest


@pytest.mark.ollama
def test_ollama_server_answers(ollama_host):
    assert httpx.get(f"{ollama_host}/api/version").json()["version"].startswith("0.")
