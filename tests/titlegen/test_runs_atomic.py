"""Atomic writes (`titlegen.runs`): what they leave behind has the mode a plain write would give it."""

import os
import stat
from pathlib import Path

from titlegen.runs import atomic_dir, atomic_write_json, atomic_write_text, current_umask


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_changing_it(umask_022):
    assert current_umask() == 0o022
    assert current_umask() == 0o022  # still there after the read


def test_an_atomically_written_file_has_a_plain_files_mode(tmp_path, umask_022):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_json(tmp_path / "metrics.json", {"rouge_l": 0.3})
    assert mode(written) == mode(plain) == 0o644  # mkstemp alone would leave 0600, unreadable by other users
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_stricter_umask_is_honoured_too(tmp_path):
    old = os.umask(0o077)
    try:
        assert mode(atomic_write_text(tmp_path / "card.md", "# card\n")) == 0o600
        with atomic_dir(tmp_path / "private") as tmp:
            (tmp / "a.txt").write_text("a")
    finally:
        os.umask(old)
    assert mode(tmp_path / "private") == 0o700


def test_an_atomically_built_folder_has_a_plain_folders_mode(tmp_path, umask_022):
    plain = tmp_path / "plain"
    plain.mkdir()
    with atomic_dir(tmp_path / "eval") as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert mode(tmp_path / "eval") == mode(plain) == 0o755  # mkdtemp alone would leave 0700
    assert (tmp_path / "eval" / "metrics.json").read_text() == "{}"
