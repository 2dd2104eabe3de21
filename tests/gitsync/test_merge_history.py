"""The merges of a real project's history (psf/requests, ``../shared/data/git-histories``)
replayed through the engine and through ``git merge-tree --write-tree``: for every merge, the
same conflicted paths and the same tree, conflict markers included.

The default run replays a sample (one merge in twelve, and every merge that once disagreed or
has several merge bases); the ``slow`` run replays all 1,679.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.repo import Repo
from gitmerge import GIT_ENV, git_merge_tree, our_tree

from gitsync.merge.plan import UnrelatedHistories, plan_merge

BUNDLE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "git-histories" / "requests.bundle"
)
ONCE_DISAGREED = {
    # renames not followed, same-place insertions merged silently, a clean merge with
    # another tree: what the engine's merge got wrong before it followed git's rules
    "c3f4a028bfc2",
    "a889b62c5025",
    "ba7c464a03b3",
    "50486cf2befb",
    "b2f6173a3833",
    "ecfb85f85ea1",
    "1eb153529a6a",
    "141db281d1ad",
    "54ad646067a3",
    "ab2e7df8a911",
    "1b6f1b091c93",
    "c48f0d990fe4",
    "e7a7615e0d7d",
}
SAMPLE_EVERY = 12

Merge = tuple[str, str, str]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Merge]]]:
    if not BUNDLE.exists():
        pytest.skip(f"{BUNDLE} is not here")
    clone = tmp_path_factory.mktemp("history") / "requests.git"
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(BUNDLE), str(clone)], env=GIT_ENV, check=True
    )
    listed = subprocess.run(
        ["git", "rev-list", "--all", "--merges", "--parents"],
        cwd=clone,
        env=GIT_ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    merges = [
        (m[0], m[1], m[2]) for m in (line.split() for line in listed.splitlines()) if len(m) == 3
    ]
    yield clone, merges


def replay(clone: Path, merges: list[Merge]) -> list[str]:
    """Each merge's disagreement with git, if any."""
    repo = Repo(str(clone))
    out = []
    try:
        for merge, p1, p2 in merges:
            tree, conflicts = git_merge_tree(clone, p1, p2)
            try:
                plan = plan_merge(repo, p2.encode(), p1.encode(), labels=(p1, p2))
            except UnrelatedHistories:
                out.append(f"{merge[:12]}: unrelated for the engine, not for git")
                continue
            if set(plan.conflicts) != conflicts:
                out.append(
                    f"{merge[:12]}: conflicts {sorted(plan.conflicts)} vs git's {sorted(conflicts)}"
                )
            elif our_tree(plan) != tree:
                out.append(f"{merge[:12]}: another tree than git's {tree}")
    finally:
        repo.close()
    return out


def several_bases(clone: Path, merges: list[Merge]) -> list[Merge]:
    out = []
    for merge in merges:
        bases = subprocess.run(
            ["git", "merge-base", "--all", merge[1], merge[2]],
            cwd=clone,
            env=GIT_ENV,
            capture_output=True,
            text=True,
        ).stdout.split()
        if len(bases) > 1:
            out.append(merge)
    return out


def test_sample_of_real_merges_matches_git(history: tuple[Path, list[Merge]]) -> None:
    clone, merges = history
    assert len(merges) == 1679
    sample = [
        m for i, m in enumerate(merges) if i % SAMPLE_EVERY == 0 or m[0][:12] in ONCE_DISAGREED
    ]
    criss_cross = several_bases(clone, merges[::4])
    assert criss_cross  # the sample includes virtual merge bases
    chosen = list(dict.fromkeys(sample + criss_cross))
    assert replay(clone, chosen) == []


@pytest.mark.slow
def test_every_real_merge_matches_git(history: tuple[Path, list[Merge]]) -> None:
    clone, merges = history
    assert replay(clone, merges) == []
