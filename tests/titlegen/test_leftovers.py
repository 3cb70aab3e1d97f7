"""Crash leftovers (titlegen.leftovers): the sweep removes only the stage's own temporary names; the lock is exclusive."""

import os

import pytest

from titlegen.leftovers import StageBusy, stage_lock, sweep


def test_sweep_removes_only_matching_leftovers(tmp_path):
    (tmp_path / ".gguf.abc123.tmp" / ".convert-x").mkdir(parents=True)
    (tmp_path / ".gguf.abc123.tmp" / "model-F16.gguf").write_bytes(b"GGUF" + bytes(1000))
    (tmp_path / ".merge-spec.77.x.json").write_text("{}")
    (tmp_path / "final-hf").mkdir()
    (tmp_path / ".eval.zz.tmp").mkdir()  # another stage's: not in the patterns
    removed = sweep(tmp_path, (".gguf.*.tmp", ".merge-spec.*.json"))
    assert removed == [".gguf.abc123.tmp", ".merge-spec.77.x.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".eval.zz.tmp", "final-hf"]
    assert sweep(tmp_path / "missing", ("*",)) == []


def test_stage_lock_is_exclusive_names_the_holder_and_leaves_no_file(tmp_path):
    with stage_lock(tmp_path, "merge") as path:
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(StageBusy, match=rf"process {os.getpid()} holds"):
            with stage_lock(tmp_path, "merge"):
                pass
        with stage_lock(tmp_path, "upload"):  # another stage's lock is independent
            pass
    assert list(tmp_path.iterdir()) == []
    with stage_lock(tmp_path, "merge"):  # free again
        pass
