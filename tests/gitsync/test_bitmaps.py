"""git's reachability bitmaps read by ``gitsync.packs.bitmaps``: each commit's bitmap lists what
``git rev-list --objects`` lists for it, and the reachable set of a repository packed by
``git gc`` is made from them, walking only the commits made since. A damaged or foreign
bitmap is not used."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_git
from dulwich.repo import Repo

from gitsync.packs.bitmaps import BitmapError, PackBitmap, bitmap_for
from gitsync.packs.source import StoredObjects
from gitsync.wire import object_walk, reachable
from gitsync.wire.object_walk import History


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    """A bare repository packed by ``git gc`` (with bitmaps: 30 commits on two branches, a
    tag), then two more commits pushed (not in the bitmapped pack)."""
    work = tmp_path / "work"
    run_git(tmp_path, "init", "-q", "-b", "main", str(work))
    for i in range(30):
        (work / f"d{i % 3}").mkdir(exist_ok=True)
        (work / f"d{i % 3}" / f"f{i % 7}.txt").write_text(f"{i}\n" * (i + 1))
        run_git(work, "add", "-A")
        run_git(work, "commit", "-qm", f"c{i}")
        if i == 20:
            run_git(work, "tag", "-a", "v1", "-m", "v1")
            run_git(work, "branch", "side", "HEAD~5")
    bare = tmp_path / "repo.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    run_git(bare, "repack", "-q", "-a", "-d", "-b")
    for i in range(2):
        (work / "new.txt").write_text(f"new {i}\n")
        run_git(work, "add", "new.txt")
        run_git(work, "commit", "-qm", f"new {i}")
    run_git(work, "push", "-q", str(bare), "main")
    return bare


def rev_list(repo: Path, *args: str) -> set[bytes]:
    out = run_git(repo, "rev-list", "--objects", "--no-object-names", *args)
    return {line.encode() for line in out.split()}


def test_each_bitmap_lists_what_rev_list_lists(packed: Path) -> None:
    with Repo(str(packed)) as repo:
        objects = StoredObjects(repo.object_store)
        try:
            bitmap = bitmap_for(objects.packs)
            assert bitmap is not None and len(bitmap.entries) >= 2
            for commit in bitmap.entries:
                found = bitmap.ids(bitmap.reach(commit))
                got = {sha for ids in found.values() for sha in ids}
                assert got == rev_list(packed, commit.decode()), commit
        finally:
            objects.close()


def test_the_reachable_set_comes_from_the_bitmaps(
    packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walked: list[bytes] = []
    real = object_walk.list_objects

    def counting(history: History, commits: list[bytes], **kwargs: object) -> object:
        walked.extend(commits)
        return real(history, commits, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reachable, "list_objects", counting)
    with Repo(str(packed)) as repo:
        tips = {bytes(sha) for name, sha in repo.get_refs().items() if name.startswith(b"refs/")}
        objects = StoredObjects(repo.object_store)
        try:
            reachable.forget("bitmapped")
            reached = reachable.closure(History(objects), "bitmapped", tips)
        finally:
            objects.close()
    everything = rev_list(packed, "--all")
    assert {*reached.commits, *reached.trees, *reached.blobs, *reached.tags} == everything
    assert len(walked) == 2  # the two commits pushed after the repack


def test_damaged_or_foreign_bitmaps_are_not_used(packed: Path, tmp_path: Path) -> None:
    path = next((packed / "objects" / "pack").glob("*.bitmap"))
    data = path.read_bytes()
    with Repo(str(packed)) as repo:
        objects = StoredObjects(repo.object_store)
        try:
            pack = next(p for p in objects.packs if p.path.endswith(path.stem + ".pack"))
            for bad in (data[:100], data[:12] + b"\0" * 20 + data[32:], b"BITN" + data[4:]):
                with pytest.raises(BitmapError):
                    PackBitmap(pack, bad)
            path.write_bytes(data[:60])
            assert bitmap_for(objects.packs) is None
            reachable.forget("damaged")
            tips = {bytes(sha) for sha in repo.get_refs().values()}
            reached = reachable.closure(History(objects), "damaged", tips)
        finally:
            objects.close()
    assert {*reached.commits, *reached.trees, *reached.blobs, *reached.tags} == rev_list(
        packed, "--all"
    )
