"""The child-process rules of titlegen.subproc: no Hub token in a child's environment, children die with their parent."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from titlegen.subproc import HUB_TOKEN_VARS, child_env, python_module, run_captured, run_logged


def test_child_env_strips_both_token_variables_and_extra_cannot_add_them_back():
    base = {"PATH": "/bin", "HF_TOKEN": "hf_a", "HUGGING_FACE_HUB_TOKEN": "hf_b", "HF_HOME": "/cache"}
    env = child_env({"HF_TOKEN": "hf_c", "X": "1"}, base=base)
    assert env == {"PATH": "/bin", "HF_HOME": "/cache", "X": "1"}
    assert set(HUB_TOKEN_VARS) == {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}


def test_run_logged_child_sees_no_token_but_the_rest_of_the_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretNEVERinCHILD")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_legacy")
    monkeypatch.setenv("TITLEGEN_PROBE", "kept")
    lines: list[str] = []
    probe = "import json, os; print(json.dumps({k: os.environ.get(k) for k in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'TITLEGEN_PROBE', 'EXTRA')}))"
    run_logged([sys.executable, "-c", probe], logging.getLogger("test"), env={"EXTRA": "1"}, on_line=lines.append)
    assert json.loads(lines[-1]) == {"HF_TOKEN": None, "HUGGING_FACE_HUB_TOKEN": None, "TITLEGEN_PROBE": "kept", "EXTRA": "1"}


def test_run_logged_children_share_one_compile_cache_folder_unless_the_environment_names_its_own(monkeypatch, tmp_path):
    monkeypatch.setenv("TITLEGEN_COMPILE_CACHE", str(tmp_path / "cc"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/mine/triton")
    lines: list[str] = []
    probe = "import json, os; print(json.dumps([os.environ.get('TORCHINDUCTOR_CACHE_DIR'), os.environ.get('TRITON_CACHE_DIR')]))"
    run_logged([sys.executable, "-c", probe], logging.getLogger("test"), on_line=lines.append)
    assert json.loads(lines[-1]) == [str(tmp_path / "cc" / "inductor"), "/mine/triton"]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_child_dies_when_its_parent_is_sigkilled(tmp_path):
    """A real parent runs `run_logged` on a child that would sleep for ten minutes; SIGKILL the parent and the
    child goes too, although it has its own session (start_new_session) and nobody runs the parent's `finally`."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    parent_code = (
        "import logging, sys\nfrom titlegen.subproc import run_logged\n"
        f"run_logged([sys.executable, '-c', {child!r}], logging.getLogger('t'))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    pid = None
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert parent.poll() is None and time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"child {pid} outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_failing_child_raises_with_its_last_lines():
    with pytest.raises(RuntimeError, match=r"exited with code 3; last output:\nboom"):
        run_logged([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], logging.getLogger("t"))
    assert python_module("titlegen.merge_worker", "s.json")[1:] == ["-m", "titlegen.merge_worker", "s.json"]


def test_run_captured_applies_the_same_environment_rule(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretNEVERinCHILD")
    done = run_captured([sys.executable, "-c", "import os; print(os.environ.get('HF_TOKEN'), os.environ.get('OLLAMA_HOST'))"],
                        env={"OLLAMA_HOST": "http://127.0.0.1:1"}, check=True)
    assert done.stdout.split() == ["None", "http://127.0.0.1:1"]
