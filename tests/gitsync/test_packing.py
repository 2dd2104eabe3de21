"""One pack per commit and their geometric combination: bounded, nothing lost, git reads it all."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.objects import Blob, ShaFile, Tree
from dulwich.pack import write_pack_index_v2, write_pack_objects
from dulwich.repo import Repo

import gitsync.packs.write as packing
from gitsync.objects.commits import commit_changes, create_branch, read_ref
from gitsync.packs.write import (
    combine_small_packs,
    encode_index,
    encode_pack,
    geometric_cut,
    pack_count,
    write_pack,
)

Git = Callable[..., str]
AUTHOR = "Tester <t@example.com>"


def commits(repo: Repo, branch: str, count: int, seed: int) -> dict[str, bytes]:
    """``count`` commits of one changed file each on ``branch``; return the files they left."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for step in range(count):
        path = f"d{rng.randrange(4)}/f{rng.randrange(20)}.txt"
        lines = [f"{branch} line {n} of {path}\n" for n in range(60)]
        lines[rng.randrange(60)] = f"{branch} step {step}\n"
        files[path] = "".join(lines).encode()
        commit_changes(
            repo,
            branch,
            {path: files[path]},
            message=f"step {step}\n",
            author=AUTHOR,
            expected=read_ref(repo, f"refs/heads/{branch}".encode()),
        )
    return files


def packs(repo_path: Path) -> set[str]:
    return {p.stem for p in (repo_path / "objects" / "pack").glob("*.pack")}


def all_objects(repo_path: Path, git: Git) -> set[str]:
    return set(git(repo_path, "rev-list", "--objects", "--all").split())


@pytest.mark.parametrize(
    ("sizes", "cut"),
    [
        ([5, 5, 5, 5], 4),  # equal packs: all rolled up
        ([1, 3, 9, 27, 81], 0),  # each at least twice all smaller ones: left as is
        ([1, 2, 4, 8, 16], 5),  # 16 < 2 * 15: not yet geometric
        ([5, 5, 5, 1000], 3),  # the large pack stays
        ([5, 5, 5, 20, 1000], 4),  # 20 < 2 * 15: rolled up with the small ones
        ([7], 0),
        ([], 0),
    ],
)
def test_geometric_cut(sizes: list[int], cut: int) -> None:
    assert geometric_cut(sizes) == cut


def test_packs_stay_bounded_and_every_commit_stays_readable(
    repo: Repo, repo_path: Path, git: Git, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packing, "PACK_LIMIT", 4)
    files = commits(repo, "main", 60, seed=1)
    assert pack_count(repo.object_store) <= 5
    assert git(repo_path, "rev-list", "--count", "main").strip() == "60"
    for path, data in files.items():
        assert git(repo_path, "show", f"main:{path}").encode() == data
    git(repo_path, "fsck", "--full", "--strict")
    leftovers = [p.name for p in (repo_path / "objects" / "pack").iterdir()]
    assert all(name.startswith("pack-") for name in leftovers), leftovers


def test_a_combination_keeps_git_deltas(repo: Repo, repo_path: Path, git: Git) -> None:
    commits(repo, "main", 40, seed=2)
    git(repo_path, "repack", "-adq")  # one pack of deltas, as git leaves it
    first = packs(repo_path)
    commits(repo, "main", 40, seed=3)
    git(repo_path, "repack", "-dq", "--geometric=2")  # git rolls our packs into a second
    assert len(packs(repo_path)) >= 2
    sizes_before = sum(p.stat().st_size for p in (repo_path / "objects/pack").glob("*.pack"))
    objects = all_objects(repo_path, git)

    count = len(packs(repo_path))
    # (a factor no pack reaches: all are combined, whatever their sizes came to)
    assert combine_small_packs(repo.object_store, limit=0, factor=1 << 30) == count
    (combined,) = packs(repo_path)
    assert combined not in first
    verify = git(repo_path, "verify-pack", "-v", f"objects/pack/{combined}.idx")
    assert "chain length = 1" in verify  # stored as deltas, not inflated
    size = (repo_path / "objects" / "pack" / f"{combined}.pack").stat().st_size
    assert size <= sizes_before * 1.1
    git(repo_path, "fsck", "--full", "--strict")
    assert all_objects(repo_path, git) == objects


def test_kept_packs_and_a_multi_pack_index_are_respected(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    commits(repo, "main", 6, seed=4)
    before = sorted(packs(repo_path))
    kept = before[0]
    (repo_path / "objects" / "pack" / f"{kept}.keep").write_text("")
    assert combine_small_packs(repo.object_store, limit=0) == len(before) - 1
    after = packs(repo_path)
    assert kept in after and len(after) == 2

    commits(repo, "main", 3, seed=5)
    git(repo_path, "multi-pack-index", "write")
    held = packs(repo_path)
    assert combine_small_packs(repo.object_store, limit=0) == 0
    assert packs(repo_path) == held
    git(repo_path, "fsck", "--full", "--strict")


def test_a_failure_while_removing_old_packs_loses_nothing(
    repo: Repo, repo_path: Path, git: Git, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packing, "PACK_LIMIT", 3)
    real_remove = packing._remove_pack
    failures = 0

    def crash_once(base: str) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise OSError(5, "Input/output error")
        real_remove(base)

    monkeypatch.setattr(packing, "_remove_pack", crash_once)
    files = commits(repo, "main", 12, seed=6)  # the failed combination does not fail a commit
    assert failures == 1
    assert git(repo_path, "rev-list", "--count", "main").strip() == "12"
    for path, data in files.items():
        assert git(repo_path, "show", f"main:{path}").encode() == data
    git(repo_path, "fsck", "--full", "--strict")
    assert not (repo_path / "objects" / "pack" / "collab-combine.lock").exists()
    assert pack_count(repo.object_store) <= 4


def test_committers_on_two_branches_combine_concurrently_without_loss(
    repo: Repo, repo_path: Path, git: Git, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packing, "PACK_LIMIT", 2)
    commits(repo, "main", 1, seed=7)
    create_branch(repo, "other", read_ref(repo, b"refs/heads/main") or b"")
    results: dict[str, dict[str, bytes]] = {}
    errors: list[BaseException] = []

    def run(branch: str, seed: int) -> None:
        own = Repo(str(repo_path))  # each committer its own, as separate processes would be
        try:
            results[branch] = commits(own, branch, 30, seed)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=run, args=(b, s)) for b, s in (("main", 8), ("other", 9))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert git(repo_path, "rev-list", "--count", "main").strip() == "31"
    assert git(repo_path, "rev-list", "--count", "other").strip() == "31"
    for branch, files in results.items():
        for path, data in files.items():
            assert git(repo_path, "show", f"{branch}:{path}").encode() == data
    git(repo_path, "fsck", "--full", "--strict")


def test_encoded_packs_and_indexes_are_what_dulwich_and_git_read(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    rng = random.Random(12)
    objects: list[ShaFile] = [Blob.from_string(rng.randbytes(n)) for n in (0, 1, 15, 16, 2000)]
    objects.append(Blob.from_string(b"text\n" * 40_000))  # a size needing three header bytes
    tree = Tree()
    for i, blob in enumerate(objects):
        tree[f"f{i}".encode()] = (0o100644, blob.id)
    objects.append(tree)
    data, rows, checksum = encode_pack(objects, repo.object_store.object_format)

    expected = io.BytesIO()
    entries, dulwich_checksum = write_pack_objects(
        expected.write, objects, repo.object_store.object_format, compression_level=1
    )
    assert checksum == dulwich_checksum
    assert data == expected.getvalue()
    assert rows == sorted((sha, offset, crc) for sha, (offset, crc) in entries.items())
    index = io.BytesIO()
    write_pack_index_v2(index, rows, checksum)
    assert encode_index(rows, checksum) == index.getvalue()
    # an offset past 2 GiB goes to the large-offset table, as dulwich writes it
    far = [(rows[0][0], 1 << 33, 7), *rows[1:]]
    index = io.BytesIO()
    write_pack_index_v2(index, far, checksum)
    assert encode_index(far, checksum) == index.getvalue()

    base = write_pack(repo.object_store, objects)
    git(repo_path, "verify-pack", base + ".idx")
    for obj in objects:
        assert git(repo_path, "cat-file", "-t", obj.id.decode()).strip() == obj.type_name.decode()
