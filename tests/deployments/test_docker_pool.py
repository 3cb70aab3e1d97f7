"""deployments/docker_pool.py: `.env` secrets become Secret block references, never values."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def docker_pool():
    spec = importlib.util.spec_from_file_location("docker_pool", ROOT / "deployments" / "docker_pool.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_secrets_become_block_references(docker_pool):
    env = docker_pool.pool_env({"HF_TOKEN": "hf_abc", "WANDB_API_KEY": "k", "HF_ORG": "me", "HF_REPO": "", "OLLAMA_HOST": None,
                                "PREFECT_API_URL": "http://127.0.0.1:4200/api"})
    assert env == {
        "HF_TOKEN": "{{ prefect.blocks.secret.titlegen-hf-token }}",
        "WANDB_API_KEY": "{{ prefect.blocks.secret.titlegen-wandb-api-key }}",
        "HF_ORG": "me",
    }


def test_pool_template_carries_the_env_and_no_secret_value(docker_pool):
    pytest.importorskip("prefect_docker", reason="pip install prefect-docker")
    template = docker_pool.base_job_template(docker_pool.pool_env({"HF_TOKEN": "hf_abc", "HF_ORG": "me"}))
    assert template["job_configuration"]["env"] == "{{ env }}"
    assert template["variables"]["properties"]["env"]["default"]["HF_ORG"] == "me"
    assert "hf_abc" not in str(template)
