"""Run folders: safe names and roots, and one run per folder (`lock_run_folder`), with real processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from titlegen.runs import (
    LOCK_FILE,
    RunFolderBusy,
    acquire_run_lock,
    build_lock,
    build_once,
    default_run_name,
    lock_run_folder,
    releases_run_locks,
    run_dir,
)

ROOT = Path(__file__).resolve().parents[2]

# A process that takes the lock of argv[1] the way a flow run does, says so, and holds it until killed.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from titlegen.runs import acquire_run_lock
    lock = acquire_run_lock(sys.argv[1], flow_run_id="11111111-2222-3333-4444-555555555555")
    print("locked", flush=True)
    time.sleep(600)
    """
)
# A second process that tries the same folder and reports what happened.
CONTENDER = textwrap.dedent(
    """
    import sys
    from titlegen.runs import RunFolderBusy, acquire_run_lock
    try:
        lock = acquire_run_lock(sys.argv[1])
    except RunFolderBusy as e:
        print(e)
        sys.exit(3)
    print("took", lock.previous)
    """
)


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def holder(tmp_path):
    """A live process holding the lock of tmp_path/run; killed (SIGKILL) at the end if still alive."""
    folder = tmp_path / "run"
    proc = _python(HOLDER, str(folder))
    assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_second_process_fails_fast_naming_the_holder(holder):
    folder, proc = holder
    done = _python(CONTENDER, str(folder))
    out, err = done.communicate(timeout=60)
    assert done.returncode == 3, out + err
    assert f"pid {proc.pid} on host {socket.gethostname()}" in out
    assert "flow run 11111111-2222-3333-4444-555555555555" in out
    assert "another run_name" in out  # the fix


def test_the_lock_of_a_killed_holder_is_taken_over(holder):
    folder, proc = holder
    os.kill(proc.pid, signal.SIGKILL)  # no chance to release: the record stays in the lock file
    proc.wait()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == proc.pid
    done = _python(CONTENDER, str(folder))
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, out + err
    assert f"'pid': {proc.pid}" in out  # it saw the dead holder's record and took over
    # The new holder exited without releasing too; its own record is now the stale one.
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == done.pid


def test_the_same_process_cannot_lock_a_folder_twice_and_release_frees_it(tmp_path):
    first = acquire_run_lock(tmp_path / "run")
    with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
        acquire_run_lock(tmp_path / "run")
    first.release()
    second = acquire_run_lock(tmp_path / "run")
    assert second.previous == {}, "a clean release leaves no holder record"
    second.release()


def test_locks_taken_in_a_decorated_call_are_released_when_it_ends(tmp_path):
    @releases_run_locks
    def flow_body(fail: bool):
        lock_run_folder(tmp_path / "run")
        with pytest.raises(RunFolderBusy):
            acquire_run_lock(tmp_path / "run")
        if fail:
            raise RuntimeError("stage failed")
        return "done"

    assert flow_body(False) == "done"
    with pytest.raises(RuntimeError, match="stage failed"):
        flow_body(True)
    acquire_run_lock(tmp_path / "run").release()  # free again after both


def test_lock_run_folder_needs_the_decorator(tmp_path):
    with pytest.raises(RuntimeError, match="releases_run_locks"):
        lock_run_folder(tmp_path / "run")


@pytest.mark.parametrize("name", ["../../tmp/x", "/etc/cron.d/x", "a/b", "..", ".hidden", "r1\nSYSTEM x", "a" * 101, ""])
def test_run_dir_rejects_names_that_are_not_one_plain_folder(tmp_path, name):
    with pytest.raises(ValueError, match="plain folder name"):
        run_dir(tmp_path, name)


def test_run_dir_rejects_a_link_that_leads_outside_the_root(tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "r1").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="outside output_root"):
        run_dir(tmp_path / "outputs", "r1")
    assert run_dir(tmp_path / "outputs", "r2") == (tmp_path / "outputs" / "r2").resolve()


@pytest.mark.parametrize("root", ["/", "//", "/etc", "/usr/local/out", "/tmp/../etc", "~"])
def test_run_dir_rejects_dangerous_roots(root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    if root == "~":
        root = str(Path.home())
    with pytest.raises(ValueError, match="use a folder of its own"):
        run_dir(root, "r1")


def test_default_run_names_are_valid_run_names():
    name = default_run_name("org/" + "x" * 300, "_" + "d" * 300, {"k": 1})
    assert run_dir("outputs", name).name == name


@pytest.mark.slow
def test_a_flow_run_on_a_locked_folder_fails_before_writing_anything(holder, tmp_path):
    """A real `titlegen` flow run (own process, temporary Prefect server) against a folder another
    process holds: it fails at its start naming the holder, and writes nothing into the folder."""
    folder, proc = holder
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # passes the base-model check; never loaded
    params = {"dataset": str(tmp_path / "no-data.jsonl"), "base_model": str(model), "preset": "cpu",
              "output_root": str(folder.parent), "run_name": folder.name}
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    for var in ("PREFECT_API_URL", "PREFECT_PROFILES_PATH"):
        env.pop(var, None)
    done = subprocess.run([sys.executable, "-m", "titlegen.flows.titlegen", json.dumps(params)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "RunFolderBusy" in out and f"pid {proc.pid} on host" in out, out
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE], "nothing may be written into a busy folder"


def test_build_lock_lets_one_builder_of_a_cache_entry_in_at_a_time(tmp_path):
    import fcntl

    target = tmp_path / "models" / "hf" / "entry"
    lock_file = target.with_name(".entry.lock")

    def try_lock() -> bool:  # another open file description, as another process would have
        with open(lock_file, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

    with build_lock(target):
        assert lock_file.exists() and not try_lock()
    assert try_lock() and not target.exists()  # released; the lock never creates the entry itself


def test_build_once_builds_a_cache_folder_once_and_leaves_nothing_after_a_failed_build(tmp_path):
    target, calls = tmp_path / "cache" / "entry", []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "weights").write_text("w")

    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        build_once(target, broken)
    assert not target.exists() and [p.name for p in target.parent.iterdir()] == [".entry.lock"]
    assert build_once(target, build) == build_once(target, build) == target
    assert len(calls) == 1 and (target / "weights").read_text() == "w"
