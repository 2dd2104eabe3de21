"""The sizes and types that the upload side reads from pack entries without inflating whole
objects (``StoredObjects``, for partial clones' size filters) are git's own, for every object:
deltas whose zlib streams open with long block headers, and a real project's whole history."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest
from dulwich.repo import Repo
from gitcli import git, skewed_text

from gitsync.packs.read import inflate_head
from gitsync.packs.source import BLOB, COMMIT, TAG, TREE, StoredObjects

KINDS = {"commit": COMMIT, "tree": TREE, "blob": BLOB, "tag": TAG}
BUNDLE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "git-histories" / "requests.bundle"
)


def assert_git_agrees(repo: Path) -> int:
    """Every object's size and type as ``git cat-file`` gives them; the number checked."""
    listed = git(
        repo,
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objectname) %(objecttype) %(objectsize)",
    )
    rows = [line.split() for line in listed.splitlines()]
    with Repo(str(repo)) as opened:
        objects = StoredObjects(opened.object_store)
        wrong = [
            sha
            for sha, kind, size in rows
            if objects.size(sha.encode()) != int(size) or objects.kind(sha.encode()) != KINDS[kind]
        ]
    assert wrong == [], f"{len(wrong)} of {len(rows)} objects read wrong, e.g. {wrong[:3]}"
    return len(rows)


def test_inflate_head_reads_as_many_chunks_as_the_stream_needs() -> None:
    stream = zlib.compress(b"\x90\x4e\xa0\x5a" + skewed_text(0, 5000))
    assert len(zlib.decompressobj().decompress(stream[:64], 20)) < 4  # a long block header
    one_byte_chunks = (stream[at : at + 1] for at in range(len(stream)))
    assert inflate_head(one_byte_chunks, 20)[:4] == b"\x90\x4e\xa0\x5a"
    assert inflate_head([stream[:10], stream[10:]], 10**9) == zlib.decompress(stream)


def test_delta_sizes_are_read_whatever_their_streams_open_with(tmp_path: Path) -> None:
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    base = skewed_text(1, 20_000)
    for step in range(6):  # each version inserts skewed text: deltas of long-header streams
        cut = 3000 * step
        (work / "f.txt").write_bytes(base[:cut] + skewed_text(10 + step, 2000) + base[cut:])
        git(work, "add", ".")
        git(work, "commit", "-qm", f"step {step}")
    git(work, "repack", "-adfq")
    assert assert_git_agrees(work / ".git") > 12


def test_every_object_of_a_real_history_is_read_as_git_reads_it(tmp_path: Path) -> None:
    if not BUNDLE.exists():
        pytest.skip(f"{BUNDLE} is not here")
    clone = tmp_path / "requests.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(BUNDLE), str(clone)], check=True)
    assert assert_git_agrees(clone) > 20_000
