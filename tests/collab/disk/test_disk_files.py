"""Atomic, hash-checked writes and the files a working tree syncs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from gitcli import git

from collab.disk.files import PathFilter, Raced, remove_file, write_atomically
from collab.disk.state import digest


def test_write_keeps_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "run.sh"
    path.write_bytes(b"old\n")
    os.chmod(path, 0o755)
    write_atomically(path, b"new\n", digest(b"old\n"))
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sh"]


def test_a_save_that_raced_the_write_wins(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"read by the syncer\n")
    expected = digest(path.read_bytes())
    path.write_bytes(b"saved by an editor meanwhile\n")
    with pytest.raises(Raced):
        write_atomically(path, b"the syncer's text\n", expected)
    assert path.read_bytes() == b"saved by an editor meanwhile\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    (tmp_path / "new.txt").write_text("created meanwhile")
    with pytest.raises(Raced):  # the syncer thought the file absent
        write_atomically(tmp_path / "new.txt", b"x", None)
    assert (tmp_path / "new.txt").read_text() == "created meanwhile"
    with pytest.raises(Raced):
        remove_file(path, expected)
    assert path.exists()


def test_filter_skips_git_ignored_and_scratch_files(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("*.log\nbuild/\n")
    for name in ["a.py", "x.log", "build/o.txt", "a.py.swp", "a.py~", "4913", "b___jb_tmp___"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("x")
    paths = PathFilter(tmp_path)
    try:
        assert paths.walk() == [".gitignore", "a.py", "src/m.py"]
        assert paths.relative(tmp_path / ".git" / "HEAD") is None
        assert paths.relative(tmp_path / "src" / "m.py") == "src/m.py"
    finally:
        paths.close()
