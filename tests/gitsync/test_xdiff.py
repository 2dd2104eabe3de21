"""Line diffs against git's own: the same changed lines, hunk for hunk, as ``git diff``
finds with the histogram algorithm (what ``git merge`` uses) and with Myers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from dulwich.repo import Repo
from gitmerge import commit, git_diff_hunks, lines

from gitsync.merge.xdiff import Algorithm, diff


def as_hunks(old: bytes, new: bytes, algorithm: Algorithm) -> list[tuple[int, int, int, int]]:
    """Our changes in the form of git's ``-U0`` hunk headers."""
    return [
        (i1 + 1 if n1 else i1, n1, i2 + 1 if n2 else i2, n2)
        for i1, i2, n1, n2 in diff(lines(old), lines(new), algorithm)
    ]


def edited(rng: random.Random, base: list[str], alphabet: str, edits: int, width: int) -> list[str]:
    out = list(base)
    for _ in range(edits):
        at = rng.randint(0, len(out))
        out[at : at + rng.randint(0, width)] = [
            rng.choice(alphabet + "XYZ") for _ in range(rng.randint(0, width))
        ]
    return out


def random_pairs(
    seed: int, count: int, size: tuple[int, int], edits: int, width: int
) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        alphabet = rng.choice(["ab", "abc", "abcdefgh", "abcdefghijklmnopqrstuvwxyz0123456789"])
        base = [rng.choice(alphabet) for _ in range(rng.randint(*size))]
        other = (
            [rng.choice(alphabet) for _ in range(rng.randint(*size))]
            if rng.random() < 0.2
            else edited(rng, base, alphabet, rng.randint(0, edits), width)
        )
        old = "".join(x + "\n" for x in base).encode()
        new = "".join(x + "\n" for x in other).encode()
        if new and rng.random() < 0.1:
            new = new[:-1]  # no newline at the end
        pairs.append((old, new))
    return pairs


def compare_with_git(
    repo: Repo, path: Path, pairs: list[tuple[bytes, bytes]], algorithm: Algorithm
) -> int:
    """How many of ``pairs`` we diff otherwise than git (all of them in one ``git diff``)."""
    old = commit(repo, {f"f{i}": a for i, (a, _) in enumerate(pairs)})
    new = commit(repo, {f"f{i}": b for i, (_, b) in enumerate(pairs)})
    hunks = git_diff_hunks(path, old, new, algorithm)
    wrong = [
        i for i, (a, b) in enumerate(pairs) if as_hunks(a, b, algorithm) != hunks.get(f"f{i}", [])
    ]
    assert not wrong, [pairs[i] for i in wrong[:3]]
    return len(pairs)


@pytest.mark.parametrize("algorithm", ["histogram", "myers"])
def test_small_diffs_match_git(repo: Repo, repo_path: Path, algorithm: Algorithm) -> None:
    pairs = random_pairs(1, 400, (0, 60), 6, 4)
    assert compare_with_git(repo, repo_path, pairs, algorithm) == 400


@pytest.mark.parametrize("algorithm", ["histogram", "myers"])
def test_large_diffs_match_git(repo: Repo, repo_path: Path, algorithm: Algorithm) -> None:
    """Files of hundreds to thousands of lines over a few symbols: histogram falls back to
    Myers where every shared line occurs more than 64 times, and Myers gives up on the
    minimal diff past its cost limit, as xdiff's heuristics do."""
    pairs = random_pairs(2, 12, (300, 2500), 150, 20)
    assert compare_with_git(repo, repo_path, pairs, algorithm) == 12


def test_histogram_anchors_on_rare_lines(repo: Repo, repo_path: Path) -> None:
    """Where Myers pairs the frequent lines, histogram anchors on the unique ones."""
    old = b"".join([b"}\n", b"a\n", b"}\n", b"b\n", b"}\n"] * 3)
    new = b"".join([b"}\n", b"b\n", b"}\n", b"a\n", b"}\n"] * 3)
    assert compare_with_git(repo, repo_path, [(old, new)], "histogram") == 1
    assert as_hunks(old, new, "histogram") != as_hunks(old, new, "myers")


def test_frequent_lines_fall_back_to_myers(repo: Repo, repo_path: Path) -> None:
    old = b"x\n" * 70 + b"}\n" * 70
    new = b"}\n" * 70 + b"x\n" * 70
    assert (
        compare_with_git(repo, repo_path, [(old, new), (old + b"y\n", b"y\n" + new)], "histogram")
        == 2
    )


def test_identical_and_empty() -> None:
    assert diff([], []) == []
    assert diff([b"a\n"], [b"a\n"]) == []
    assert diff([], [b"a\n", b"b\n"]) == [(0, 0, 0, 2)]
    assert diff([b"a\n"], []) == [(0, 0, 1, 0)]
    assert diff([b"a\n", b"b"], [b"a\n", b"b\n"]) == [(1, 1, 1, 1)]  # a last line's LF counts
