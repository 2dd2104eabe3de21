"""Line merges against git's own, byte for byte: ``merge_text`` as ``git merge`` merges a file
(histogram diff, checked with ``git merge-tree``), and the same merge over Myers diffs as
``git merge-file`` makes it."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from dulwich.repo import Repo
from gitmerge import GIT_ENV, git_merge_files, lines

from gitsync.merge.xmerge import merge_lines


def random_case(rng: random.Random, size: int = 40, edits: int = 4) -> tuple[bytes, bytes, bytes]:
    alphabet = rng.choice(["ab", "abc", "abcdefgh", "abcdefghijklmnop", "a}{ \t"])
    base = [rng.choice(alphabet) for _ in range(rng.randint(0, size))]
    sides = []
    for _ in range(2):
        side = list(base)
        for _ in range(rng.randint(0, edits)):
            at = rng.randint(0, len(side))
            side[at : at + rng.randint(0, 3)] = [
                rng.choice(alphabet + "XYZ") + rng.choice(["", "1", "2"])
                for _ in range(rng.randint(0, 3))
            ]
        sides.append(side)
    newline = "\r\n" if rng.random() < 0.15 else "\n"
    texts = ["".join(x + newline for x in text).encode() for text in [base, *sides]]
    return tuple(t[:-1] if t and rng.random() < 0.1 else t for t in texts)  # type: ignore[return-value]


def merged(base: bytes, ours: bytes, theirs: bytes) -> tuple[bytes, bool]:
    out, conflicts = merge_lines(
        lines(base), lines(ours), lines(theirs), (b"ours", b"theirs"), b"\n"
    )
    return b"".join(out), conflicts > 0


def test_random_merges_match_git_merge(repo: Repo, repo_path: Path) -> None:
    """Up to four edits a side, apart, touching or overlapping, CRLF or LF, with or without
    a last newline: git's merged text, conflict markers included."""
    rng = random.Random(7)
    cases = [random_case(rng) for _ in range(600)]
    expected = git_merge_files(repo, repo_path, cases)
    wrong = [i for i, case in enumerate(cases) if merged(*case) != expected[i]]
    assert not wrong, [(cases[i], expected[i]) for i in wrong[:2]]
    assert sum(conflict for _, conflict in expected) > 150  # conflicts compared too


def test_large_merges_match_git_merge(repo: Repo, repo_path: Path) -> None:
    rng = random.Random(8)
    cases = [random_case(rng, size=400, edits=30) for _ in range(60)]
    expected = git_merge_files(repo, repo_path, cases)
    assert [merged(*case) for case in cases] == expected


NAMED = {
    "both insert at the same place: a conflict, as in git": (
        "class A:\n    def a(self):\n        pass\n",
        "class A:\n    def a(self):\n        pass\n\n    def b(self):\n        pass\n",
        "class A:\n    def a(self):\n        pass\n\n    def c(self):\n        pass\n",
    ),
    "the same insertion on both sides is taken once": ("a\nb\n", "a\nX\nb\n", "a\nX\nb\n"),
    "insertions next to a change of the other side": ("a\nb\nc\n", "a\nX\nb\nc\n", "a\nb\nC\n"),
    "conflicts one common line apart are one": (
        "a\nb\nc\nd\ne\n",
        "a\nB\nc\nD\ne\n",
        "a\nb2\nc\nd2\ne\n",
    ),
    "conflicts three common lines apart are one": (
        "a\nb\nc\nd\ne\nf\n",
        "A\nb\nc\nd\nE\nf\n",
        "A2\nb\nc\nd\nE2\nf\n",
    ),
    "conflicts four common lines apart stay two": (
        "a\nb\nc\nd\ne\nf\ng\n",
        "A\nb\nc\nd\ne\nF\ng\n",
        "A2\nb\nc\nd\ne\nF2\ng\n",
    ),
    "a line both sides share inside a conflict splits it": ("a\nb\nc\n", "1\nS\n2\n", "3\nS\n4\n"),
    "both sides added the file": ("", "a\nb\nc\n", "a\nB\nc\n"),
    "no newline at the end on either side": ("a\nb\nc", "a\nb\nC1", "a\nb\nC2"),
    "no newline at the end on one side": ("a\nb\nc\n", "a\nb\nC1", "a\nb\nC2\n"),
    "CRLF lines get CRLF markers": ("a\r\nb\r\nc\r\n", "a\r\nB1\r\nc\r\n", "a\r\nB2\r\nc\r\n"),
    "CRLF sides of an LF base get LF markers": (
        "a\nb\nc\n",
        "a\r\nB1\r\nc\r\n",
        "a\r\nB2\r\nc\r\n",
    ),
    "an LF line before the conflict": ("a\r\nb\r\nc\r\n", "a\nB1\r\nc\r\n", "a\r\nB2\r\nc\r\n"),
    "accents, CJK and emoji": ("é\n世\n🎉\n", "é\n世界\n🎉\n", "é\nせかい\n🎉\n"),
    # merge3 over difflib paired these otherwise than git (a wider conflict; a conflict
    # where git merges cleanly): the histogram diff pairs them as git does
    "a conflict as narrow as git's": (
        "b\nf\ne\ne\ne\nc\nb\nc\nh\na\nh\nh\nf\nf\nc\n",
        "Z0\ne\ne\nc\nh\na\nh\nh\nf\nf\nc",
        "b\ne\ne\nc\nb\nc\nh\na\nX3\nb2\nb0\nh\nf\nf\nc\n",
    ),
    "a clean merge where merge3 saw a conflict": (
        "a\ne\ng\nd\nf\ng\nd\nc\nc\na\nh\ng\nb\nc\na\na\n",
        "a\ne\ng\nd\nf\ng\nd\nc\nc\na\nh\ng\nb\nc\nZ1\nb0\nZ3\na\na\n",
        "a\ne\ng\nd\nf\ng\nd\na\nc\na\na",
    ),
}


def test_named_cases_match_git_merge(repo: Repo, repo_path: Path) -> None:
    cases = [tuple(t.encode() for t in case) for case in NAMED.values()]
    expected = git_merge_files(repo, repo_path, cases)  # type: ignore[arg-type]
    for name, case, result in zip(NAMED, cases, expected, strict=True):
        assert merged(*case) == result, name


def test_same_place_insertions_conflict() -> None:
    base, ours, theirs = NAMED["both insert at the same place: a conflict, as in git"]
    out, conflicts = merge_lines(
        lines(base.encode()),
        lines(ours.encode()),
        lines(theirs.encode()),
        (b"main", b"topic"),
        b"\n",
    )
    assert conflicts == 1
    assert b"".join(out) == (
        b"class A:\n    def a(self):\n        pass\n\n<<<<<<< main\n    def b(self):\n"
        b"=======\n    def c(self):\n>>>>>>> topic\n        pass\n"
    )


def test_text_lines_merge_like_bytes() -> None:
    """Lines of ``str`` merge as those of ``bytes`` do (the live documents' text)."""
    out, conflicts = merge_lines(["x\n", "y\n"], ["x\n", "Y1\n"], ["x\n", "Y2\n"], ("a", "b"), "\n")
    assert (out, conflicts) == (
        ["x\n", "<<<<<<< a\n", "Y1\n", "=======\n", "Y2\n", ">>>>>>> b\n"],
        1,
    )


def git_merge_file(tmp_path: Path, base: bytes, ours: bytes, theirs: bytes) -> tuple[bytes, bool]:
    for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
        (tmp_path / name).write_bytes(text)
    labels = ("-L", "ours", "-L", "base", "-L", "theirs")
    done = subprocess.run(
        ["git", "merge-file", "-p", *labels, "ours", "base", "theirs"],
        cwd=tmp_path,
        env=GIT_ENV,
        capture_output=True,
    )
    assert done.returncode >= 0, done.stderr
    return done.stdout, done.returncode != 0


@pytest.mark.parametrize("seed", [1, 2])
def test_myers_merges_match_git_merge_file(tmp_path: Path, seed: int) -> None:
    """The same merge rules over Myers diffs (``git merge-file``'s default): the merge
    layer checked apart from the histogram diff. (merge-file also joins conflicts apart
    by lines without letters or digits; the cases here have none.)"""
    rng = random.Random(seed)
    for case in range(150):
        base, ours, theirs = random_case(rng)
        if b"}" in base + ours + theirs or b" " in base + ours + theirs:
            continue
        out, conflicts = merge_lines(
            lines(base), lines(ours), lines(theirs), (b"ours", b"theirs"), b"\n", algorithm="myers"
        )
        expected = git_merge_file(tmp_path, base, ours, theirs)
        assert (b"".join(out), conflicts > 0) == expected, (case, base, ours, theirs)


def test_longer_markers_for_nested_merges() -> None:
    out, _ = merge_lines([b"a\n"], [b"b\n"], [b"c\n"], (b"x", b"y"), b"\n", marker_size=9)
    assert out == [b"<<<<<<<<< x\n", b"b\n", b"=========\n", b"c\n", b">>>>>>>>> y\n"]
