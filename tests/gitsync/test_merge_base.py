"""Merge bases against ``git merge-base --all``: the same commits, in the same order (newest
first; git merges several into a virtual base oldest first, so the order shows)."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from dulwich.repo import Repo
from gitmerge import GIT_ENV, commit

from gitsync.merge.merge_base import CommitGraph, merge_bases
from gitsync.packs.read import ObjectReader


def git_bases(path: Path, one: bytes, two: bytes) -> list[bytes]:
    out = subprocess.run(
        ["git", "merge-base", "--all", one.decode(), two.decode()],
        cwd=path,
        env=GIT_ENV,
        capture_output=True,
        text=True,
    ).stdout
    return [line.encode() for line in out.split()]


def test_random_histories_match_git(repo: Repo, repo_path: Path) -> None:
    """Random DAGs with many merges, commit dates often equal (ties keep git's order)."""
    rng = random.Random(4)
    commits = [commit(repo, {"f": b"0\n"}, when=1)]
    for i in range(120):
        parents = rng.sample(commits[-12:], k=min(len(commits), rng.choice([1, 1, 2, 2, 3])))
        commits.append(commit(repo, {"f": f"{i}\n".encode()}, parents, when=rng.randint(1, 40)))
    objects = ObjectReader(repo.object_store)
    graph = CommitGraph(objects.raw)
    several = 0
    for _ in range(150):
        one, two = rng.sample(commits, 2)
        expected = git_bases(repo_path, one, two)
        assert merge_bases(graph, one, [two]) == expected, (one, two)
        several += len(expected) > 1
    objects.close()
    assert several > 10


def test_unrelated_and_ancestors(repo: Repo) -> None:
    root = commit(repo, {"f": b"a\n"})
    child = commit(repo, {"f": b"b\n"}, [root], when=2)
    island = commit(repo, {"f": b"c\n"})
    objects = ObjectReader(repo.object_store)
    graph = CommitGraph(objects.raw)
    assert merge_bases(graph, child, [island]) == []
    assert merge_bases(graph, child, [root]) == [root]
    assert merge_bases(graph, root, [root]) == [root]
    virtual = graph.add_virtual([child, island])
    assert merge_bases(graph, virtual, [root]) == [root]
    objects.close()
