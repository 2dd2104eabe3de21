"""Atomic, hash-checked writes and the files a working tree syncs."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from gitcli import git

from collab.disk.files import PathFilter, Raced, remove_file, write_atomically
from collab.disk.replaced import ReplacedFiles
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


def test_filter_skips_git_ignored_and_scratch_files_and_other_repositories(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("*.log\nbuild/\n")
    scratch = ["a.py.swp", "a.py~", "4913", "b___jb_tmp___", "#a.py#", ".#a.py"]
    for name in ["a.py", "x.log", "build/o.txt", *scratch]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("x")
    # another repository inside the tree, and a submodule's checkout (a .git file)
    git(tmp_path, "init", "-q", "vendor/lib")
    (tmp_path / "vendor" / "lib" / "x.py").write_text("x")
    (tmp_path / "vendor" / "mod" / "deep").mkdir(parents=True)
    (tmp_path / "vendor" / "mod" / ".git").write_text("gitdir: ../../.git/modules/mod\n")
    (tmp_path / "vendor" / "mod" / "deep" / "y.py").write_text("y")
    paths = PathFilter(tmp_path)
    try:
        assert paths.walk() == [".gitignore", "a.py", "src/m.py"]
        assert paths.relative(tmp_path / ".git" / "HEAD") is None
        assert paths.relative(tmp_path / "src" / "m.py") == "src/m.py"
        assert paths.relative(tmp_path / "vendor" / "lib" / "x.py") is None
        assert paths.relative(tmp_path / "vendor" / "mod" / "deep" / "y.py") is None
    finally:
        paths.close()


async def test_what_a_writer_puts_in_the_file_a_write_replaced_is_handed_back(
    tmp_path: Path,
) -> None:
    """A program has the file open and writes the rest of its save after the syncer's write
    replaced the file: the replaced file is kept open, and once the writing stops what it
    holds is handed back with what it held when it was replaced."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"first half ")
    late: list[tuple[str, bytes, bytes]] = []
    files = ReplacedFiles(lambda *args: late.append(args), hold=0.5)
    try:
        with open(path, "ab") as writer:
            replaced = write_atomically(path, b"the syncer's\n", digest(b"first half "), keep=True)
            assert replaced is not None and replaced.data == b"first half "
            files.add("a.txt", replaced)
            writer.write(b"and the rest\n")
        async with asyncio.timeout(5):
            while not late:
                await asyncio.sleep(0.01)
        assert late == [("a.txt", b"first half and the rest\n", b"first half ")]
        assert path.read_bytes() == b"the syncer's\n"
    finally:
        await files.close()
    assert replaced.handle.closed
