"""The memory-mapped pack reader returns exactly what dulwich reads, for every kind of object."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.objects import Blob, ObjectID
from dulwich.repo import Repo

from gitsync.objects.commits import commit_changes, read_ref
from gitsync.packs.read import ObjectReader

Git = Callable[..., str]

AUTHOR = "Tester <t@example.com>"


def history(repo: Repo) -> None:
    """Commits whose files change a little each time, so repacking makes delta chains; one
    large file is incompressible, so its zlib stream is longer than its content."""
    rng = random.Random(3)
    noise = rng.randbytes(300_000)
    files = {f"src/f{i}.txt": "".join(f"line {n} of {i}\n" for n in range(200)) for i in range(8)}
    for step in range(12):
        changes: dict[str, bytes | None] = {}
        for path, text in files.items():
            lines = text.splitlines(keepends=True)
            lines[rng.randrange(len(lines))] = f"step {step}\n"
            files[path] = "".join(lines)
            changes[path] = files[path].encode()
        changes["big.bin"] = noise[step:] + bytes([step])
        commit_changes(
            repo,
            "main",
            changes,
            message=f"step {step}\n",
            author=AUTHOR,
            expected=read_ref(repo, b"refs/heads/main"),
        )


@pytest.mark.parametrize("offsets", ["true", "false"], ids=["ofs-delta", "ref-delta"])
def test_reads_every_packed_object_as_dulwich_does(
    repo: Repo, repo_path: Path, git: Git, offsets: str
) -> None:
    history(repo)
    git(repo_path, "-c", f"repack.useDeltaBaseOffset={offsets}", "repack", "-adf", "-q")
    verify = git(repo_path, "verify-pack", "-v", *map(str, repo_path.glob("objects/pack/*.idx")))
    assert "chain length = 2" in verify  # deltas of deltas were made
    fresh = Repo(str(repo_path))
    reader = ObjectReader(fresh.object_store)
    try:
        ids = list(fresh.object_store)
        assert len(ids) > 100
        for sha in ids:
            assert reader.raw(sha) == fresh.object_store[ObjectID(sha)].as_raw_string()
        with pytest.raises(KeyError):
            reader.raw(b"0" * 40)
    finally:
        reader.close()
        fresh.close()


def test_reads_loose_objects_and_packs_written_after_it_started(repo: Repo) -> None:
    history(repo)
    reader = ObjectReader(repo.object_store)
    try:
        head = read_ref(repo, b"refs/heads/main")
        assert head is not None
        assert reader.raw(head) == repo[ObjectID(head)].as_raw_string()
        loose = Blob.from_string(b"a loose object, as git writes them\n")
        repo.object_store.add_object(loose)  # dulwich writes it loose
        assert (Path(repo.object_store.path) / loose.id[:2].decode()).is_dir()
        assert reader.raw(loose.id) == loose.as_raw_string()
        # a merge-sized commit goes into a new pack, unknown to the reader's list
        many = {f"many/{i}.txt": f"{i}\n".encode() for i in range(100)}
        commit_changes(repo, "main", many, message="many\n", author=AUTHOR, expected=head)
        assert reader.raw(Blob.from_string(b"1\n").id) == b"1\n"
    finally:
        reader.close()
