"""Atomic, hash-checked writes and the files a working tree syncs."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from gitcli import git

from collab.disk import files
from collab.disk.files import PathFilter, Raced, remove_file, write_atomically
from collab.disk.leases import allow_lease_checks
from collab.disk.replaced import Replaced, ReplacedFiles
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


def _rename_save(path: Path, data: bytes) -> None:
    """Save as most editors do: a new file, renamed over the old one."""
    (path.parent / "editor-scratch").write_bytes(data)
    os.replace(path.parent / "editor-scratch", path)


def _in_place_save(path: Path, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.write(data)


def _delete(path: Path, _data: bytes) -> None:
    path.unlink()


def _after_the_check(
    monkeypatch: pytest.MonkeyPatch, save: Callable[[Path, bytes], None], data: bytes
) -> None:
    """Have ``save`` land in the moment between write_atomically's check and its rename."""
    check = files._open_current

    def checked_then_saved(path: Path) -> Replaced | None:
        current = check(path)
        save(path, data)
        return current

    monkeypatch.setattr(files, "_open_current", checked_then_saved)


@pytest.mark.parametrize("save", [_rename_save, _in_place_save, _delete])
def test_a_save_between_the_check_and_the_rename_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save: Callable[[Path, bytes], None]
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"read by the syncer\n")
    _after_the_check(monkeypatch, save, b"saved in that moment\n")
    with pytest.raises(Raced):
        write_atomically(path, b"the syncer's text\n", digest(b"read by the syncer\n"))
    if save is _delete:
        assert not path.exists()
    else:
        assert path.read_bytes() == b"saved in that moment\n"
    assert [p.name for p in tmp_path.iterdir()] == ([] if save is _delete else ["a.txt"])


def test_a_file_created_between_the_check_and_the_rename_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _after_the_check(monkeypatch, lambda path, data: path.write_bytes(data), b"created\n")
    with pytest.raises(Raced):
        write_atomically(tmp_path / "new.txt", b"the syncer's text\n", None)
    assert (tmp_path / "new.txt").read_bytes() == b"created\n"
    assert [p.name for p in tmp_path.iterdir()] == ["new.txt"]


def test_saves_that_land_while_a_raced_write_is_undone_leave_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"read by the syncer\n")
    _after_the_check(monkeypatch, _rename_save, b"first save\n")
    swap = files.exchange
    swaps: list[bytes] = []

    def swap_with_a_save_before_the_second(first: Path, second: Path) -> bool:
        swaps.append(second.read_bytes())
        if len(swaps) == 2:  # the first swap back: a newer save replaces the syncer's file
            _rename_save(path, b"second save\n")
        return swap(first, second)

    monkeypatch.setattr(files, "exchange", swap_with_a_save_before_the_second)
    with pytest.raises(Raced):
        write_atomically(path, b"the syncer's text\n", digest(b"read by the syncer\n"))
    assert path.read_bytes() == b"second save\n"
    assert swaps == [b"first save\n", b"the syncer's text\n", b"first save\n"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_where_files_cannot_be_swapped_a_write_renames_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "exchange", lambda first, second: False)
    monkeypatch.setattr(files, "rename_new", lambda source, target: False)
    path = tmp_path / "a.txt"
    path.write_bytes(b"old\n")
    write_atomically(path, b"new\n", digest(b"old\n"))
    write_atomically(tmp_path / "b.txt", b"created\n", None)
    assert path.read_bytes() == b"new\n"
    assert (tmp_path / "b.txt").read_bytes() == b"created\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


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


def test_filter_takes_the_files_the_branch_has_whatever_gitignore_says(tmp_path: Path) -> None:
    """As git tracks them: ``.gitignore`` and scratch names count for the other files only."""
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("*.lock\nvendor/\n")
    for name in ["poetry.lock", "other.lock", "vendor/lib/a.py", "vendor/lib/b.py", "x.py~"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    paths = PathFilter(tmp_path)
    try:
        assert paths.walk() == [".gitignore"]
        paths.track(["poetry.lock", "vendor/lib/a.py", "x.py~", "gone.lock"])
        assert paths.walk() == [".gitignore", "poetry.lock", "vendor/lib/a.py", "x.py~"]
        assert paths.relative(tmp_path / "vendor" / "lib" / "a.py") == "vendor/lib/a.py"
        assert paths.relative(tmp_path / "vendor" / "lib" / "b.py") is None
        assert paths.wanted("gone.lock") and not paths.wanted("other.lock")
        assert paths.wanted("other.lock", tracked=True)  # (the branch had it)
        paths.track([])
        assert paths.walk() == [".gitignore"]
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


async def test_a_replaced_file_a_program_holds_open_is_watched_until_it_lets_it_go(
    tmp_path: Path,
) -> None:
    """The program pauses far longer than ``hold`` before it writes the rest: the replaced
    file is held while the program has it open for writing, and handed back once it lets it
    go (not before: what it writes last would be missed)."""
    assert allow_lease_checks()
    path = tmp_path / "a.txt"
    path.write_bytes(b"first half ")
    late: list[tuple[str, bytes, bytes]] = []
    files = ReplacedFiles(lambda *args: late.append(args), hold=0.1)
    try:
        with open(path, "ab") as writer:
            replaced = write_atomically(path, b"the syncer's\n", digest(b"first half "), keep=True)
            assert replaced is not None
            files.add("a.txt", replaced)
            await asyncio.sleep(0.5)
            writer.write(b"and the rest")
            writer.flush()
            await asyncio.sleep(0.5)
            assert not late  # (still open for writing: more may come)
            writer.write(b", and more\n")
        async with asyncio.timeout(5):
            while not late:
                await asyncio.sleep(0.01)
        assert late == [("a.txt", b"first half and the rest, and more\n", b"first half ")]
    finally:
        await files.close()
