"""What `deployments/local_stack.sh up` refuses before it starts anything (no server needed).

- A server on a non-loopback address without `PREFECT_SERVER_API_AUTH_STRING`.
- A `.env` whose variable names are not plain names: the worker's environment is built as `export`
  lines, and a crafted name (`X;touch${IFS}/tmp/pwned;Y=1`) used to run as a command.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deployments" / "local_stack.sh"


@pytest.fixture
def env(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "TITLEGEN_PORT": "1",  # nothing may start
           "TITLEGEN_VENV": sys.prefix, "TITLEGEN_SKIP_SETUP": "1", "TITLEGEN_ENV_FILE": str(tmp_path / "absent.env")}
    for var in ("PREFECT_API_URL", "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING", "TITLEGEN_HOST"):
        env.pop(var, None)
    return env


def _up(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(STACK), "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "gpu-server.example"])
def test_a_non_loopback_server_without_auth_is_refused_with_the_fix(env, host, tmp_path):
    result = _up({**env, "TITLEGEN_HOST": host})
    assert result.returncode == 1, result.stderr
    assert f"refusing to start a Prefect server on {host} without authentication" in result.stderr
    assert "PREFECT_SERVER_API_AUTH_STRING=admin:" in result.stderr and "SSH tunnel" in result.stderr
    assert not (tmp_path / "home" / "stack" / "server.pid").exists(), "no server may be started"


def test_run_refuses_the_same_way(env, tmp_path):
    result = subprocess.run(["bash", str(STACK), "run", "--param", "epochs=1"], env={**env, "TITLEGEN_HOST": "0.0.0.0"},
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "without authentication" in result.stderr


def test_a_crafted_env_key_is_refused_and_never_runs(env, tmp_path):
    marker = tmp_path / "pwned"
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"HF_ORG=me\nX;touch${{IFS}}{marker};Y=1\nHF_TOKEN=hf_secret_value\n")
    result = _up({**env, "TITLEGEN_ENV_FILE": str(dotenv)})
    assert result.returncode == 1, result.stderr
    assert "not a variable name" in result.stderr and "X;touch" in result.stderr
    assert "hf_secret_value" not in result.stdout + result.stderr
    assert not marker.exists(), "the crafted key ran as a command"
    assert not (tmp_path / "home" / "stack" / "server.pid").exists()


def test_auth_from_env_file_reaches_the_server_and_the_clients(env, tmp_path):
    """`.env` may hold the auth string: a non-loopback `up` then passes the guard and starts the server
    with it, clients getting it as PREFECT_API_AUTH_STRING. A stub `prefect` records its environment."""
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    seen = tmp_path / "server-env"
    (venv / "prefect").write_text(f"#!/bin/sh\nenv > {seen}\nexit 1\n")
    for exe in venv.iterdir():
        exe.chmod(0o755)
    dotenv = tmp_path / ".env"
    dotenv.write_text("PREFECT_SERVER_API_AUTH_STRING=admin:s3cret\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _up({**env, "TITLEGEN_HOST": "0.0.0.0", "TITLEGEN_PORT": str(port), "TITLEGEN_VENV": str(venv.parent),
                  "TITLEGEN_ENV_FILE": str(dotenv)})
    assert "without authentication" not in result.stderr
    assert result.returncode == 1 and "server exited" in result.stderr  # the stub server
    server_env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"] == "admin:s3cret"
    assert server_env["PREFECT_API_AUTH_STRING"] == "admin:s3cret"


def _docker_worker(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "deployments" / "docker_worker.sh")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_docker_worker_refuses_a_remote_server_without_a_password(env, tmp_path):
    """Before it builds anything or talks to the server (the URL's host does not even resolve)."""
    worker_env = {**env, "TITLEGEN_WORKER_VENV": sys.prefix, "PREFECT_API_URL": "https://prefect.invalid/api"}
    result = _docker_worker(worker_env)
    assert result.returncode == 1, result.stderr
    assert "refusing to join https://prefect.invalid/api without a password" in result.stderr
    assert "PREFECT_API_AUTH_STRING" in result.stderr


def test_the_docker_worker_warns_about_plain_http_and_checks_env_names(env, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("PREFECT_API_AUTH_STRING=admin:pw\n")
    worker_env = {**env, "TITLEGEN_WORKER_VENV": sys.prefix, "PREFECT_API_URL": "http://prefect.invalid:4200/api",
                  "TITLEGEN_ENV_FILE": str(dotenv), "PATH": f"{tmp_path}/no-docker:/usr/bin:/bin"}
    result = _docker_worker(worker_env)
    assert "without a password" not in result.stderr
    assert "WARNING: http://prefect.invalid:4200/api is plain http" in result.stderr and "SSH tunnel" in result.stderr
    assert result.returncode != 0  # then `docker build` is missing here
    dotenv.write_text("A$(id)=1\n")
    result = _docker_worker(worker_env)
    assert result.returncode == 1 and "not a variable name" in result.stderr


def _stack_test(env: dict, tmp_path: Path, *pytest_args: str) -> subprocess.CompletedProcess:
    """`local_stack.sh test ARGS` with a venv that wraps this interpreter and whose converter install
    (`python -m titlegen.gguf install`, from ci_setup.sh) is a no-op."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "titlegen.gguf" ]; then exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    return subprocess.run(
        ["bash", str(STACK), "test", *pytest_args, "-p", "no:cacheprovider"],
        env={**env, "TITLEGEN_VENV": str(venv)}, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_test_command_fails_when_pytest_collects_no_tests(env, tmp_path):
    """`local_stack.sh test` with a selection that matches nothing (pytest exit 5) fails, so a typo in
    a CI selection cannot pass."""
    result = _stack_test(env, tmp_path, "tests/test_fixtures_smoke.py", "-k", "no_test_has_this_name")
    assert result.returncode == 5, result.stdout + result.stderr
    assert "collected no tests" in result.stderr


def test_test_command_lists_the_slowest_tests(env, tmp_path):
    """`make test` (what CI runs) ends its log with the 30 slowest tests, so a slow CI run shows where its time went."""
    result = _stack_test(env, tmp_path, "tests/titlegen/test_params.py", "-k", "test_every_field_is_documented")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "slowest 30 durations" in result.stdout
