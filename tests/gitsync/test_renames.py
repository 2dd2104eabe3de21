"""Rename similarity against git's: the same score as ``git diff -M`` reports, for text and
binary files, LF and CRLF, long lines and files without a last newline."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from dulwich.repo import Repo
from gitmerge import GIT_ENV, commit

from gitsync.merge.renames import MAX_SCORE, RENAME_SCORE, similarity, span_counts


def git_scores(repo: Repo, path: Path, pairs: list[tuple[bytes, bytes]]) -> list[int]:
    """git's similarity percentage of each (old, new) pair as a rename (0: not one), from
    one ``git diff-tree --stdin -M1%``."""
    lines = []
    for old, new in pairs:
        before = commit(repo, {"old.txt": old})
        after = commit(repo, {"new.txt": new})
        lines.append(f"{after.decode()} {before.decode()}\n")  # a commit, then its parent
    out = subprocess.run(
        ["git", "diff-tree", "--stdin", "-M1%", "--name-status"],
        cwd=path,
        env=GIT_ENV,
        input="".join(lines).encode(),
        capture_output=True,
        check=True,
    ).stdout.decode()
    scores: list[int] = []
    for line in out.splitlines():
        if len(line) == 40:  # the commit id that starts each diff
            scores.append(0)
        elif line.startswith("R"):
            scores[-1] = int(line[1:4])
    return scores


def test_similarity_matches_git(repo: Repo, repo_path: Path) -> None:
    rng = random.Random(3)
    words = ["alpha", "beta", "x" * 70, "y" * 150, "gamma delta", "", "\r", "}"]
    pairs = []
    for _ in range(250):
        text = [
            " ".join(rng.choice(words) for _ in range(rng.randint(0, 5)))
            for _ in range(rng.randint(1, 40))
        ]
        newline = rng.choice(["\n", "\r\n"])
        other = list(text)
        for _ in range(rng.randint(0, 15)):
            at = rng.randint(0, len(other))
            other[at : at + rng.randint(0, 3)] = [
                rng.choice(words) for _ in range(rng.randint(0, 3))
            ]
        old = newline.join(text).encode() + (newline.encode() if rng.random() < 0.8 else b"")
        new = newline.join(other).encode() + (newline.encode() if rng.random() < 0.8 else b"")
        if rng.random() < 0.1:
            new = new.replace(b"a", b"\0", 1)  # binary: CRs count
        if old and new and old != new:
            pairs.append((old, new))
    expected = git_scores(repo, repo_path, pairs)
    assert len(expected) == len(pairs)
    ours = []
    for old, new in pairs:
        score = similarity(old, new, 600)
        ours.append(score * 100 // MAX_SCORE if score >= 600 else 0)
    assert ours == expected
    assert sum(50 <= s < 100 for s in expected) > 30  # the threshold's side is compared


def test_what_counts() -> None:
    assert span_counts(b"") == {}
    assert span_counts(b"no newline") == {}  # a last chunk without LF or 64 bytes is not counted
    assert sum(span_counts(b"a\r\nb\r\n").values()) == 4  # CR before LF is dropped in text
    assert sum(span_counts(b"a\r\n\0\r\n").values()) == 6  # not in binary
    assert sum(span_counts(b"x" * 130 + b"\n").values()) == 131  # 64 + 64 + 3
    assert similarity(b"a\nb\nc\nd\n", b"a\nb\nc\nd\n") == MAX_SCORE
    assert similarity(b"a\n" * 10, b"a\n" * 30, RENAME_SCORE) == 0  # sizes too far apart
