"""Merge planning, case by case, each checked against ``git merge-tree --write-tree``: the same
conflicted paths and the same tree, conflict markers included."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from dulwich.graph import find_merge_base
from dulwich.objects import Blob, ObjectID
from dulwich.repo import Repo

from gitsync.merge.plan import (
    CHARACTER_MERGE_MAX,
    MergeConflict,
    MergePlan,
    UnrelatedHistories,
    merge_base,
    merge_text,
    plan_merge,
    resolve_plan,
)
from gitsync.objects.commits import BlobEntry, commit_changes, create_branch, read_ref

Git = Callable[..., str]
AUTHOR = "Tester <t@example.com>"
BASE = {
    "a.txt": b"one\ntwo\nthree\nfour\nfive\nsix\nseven\n",
    "b.txt": b"keep me\n",
    "src/deep/c.py": b"def f():\n    return 1\n",
    "img.bin": b"\x89PNG\x00\x01\x02",
    "gone.txt": b"to be deleted\n",
}


def put(repo: Repo, branch: str, changes: Mapping[str, bytes | tuple[int, bytes] | None]) -> bytes:
    """Commit ``changes`` (content, (mode, content), or None) on ``branch``."""
    current = read_ref(repo, b"refs/heads/" + branch.encode())
    entries = {
        path: BlobEntry.of(*change) if isinstance(change, tuple) else change
        for path, change in changes.items()
    }
    return commit_changes(
        repo, branch, entries, message=f"on {branch}\n", author=AUTHOR, expected=current
    )


def fork(repo: Repo, files: dict[str, bytes | None] = BASE) -> bytes:
    base = put(repo, "main", dict(files))
    create_branch(repo, "topic", base)
    return base


def git_merge_tree(git: Git, repo_path: Path, target: str, source: str) -> tuple[str, set[str]]:
    out = git(
        repo_path,
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        target,
        source,
        check=False,
    )
    tree, *names = out.split("\n")
    return tree.strip(), {n for n in names if n}


def contents(repo: Repo, changes: Mapping[str, BlobEntry | None]) -> dict[str, bytes | None]:
    """The content each resolved change gives its path (None: deleted)."""
    out: dict[str, bytes | None] = {}
    for path, entry in changes.items():
        if entry is None:
            out[path] = None
        else:
            data = (
                entry.data if entry.data is not None else repo[ObjectID(entry.sha)].as_raw_string()
            )
            assert Blob.from_string(data).id == entry.sha
            out[path] = data
    return out


def apply_and_compare(repo: Repo, repo_path: Path, git: Git, plan: MergePlan) -> None:
    """Commit the plan with markers and check its tree and conflicts are git's."""
    git_tree, git_conflicts = git_merge_tree(git, repo_path, "main", "topic")
    merged = commit_changes(
        repo,
        "main",
        resolve_plan(plan, markers=True),
        message="merge\n",
        author=AUTHOR,
        expected=plan.target,
        extra_parents=[plan.source],
        allow_empty=True,
    )
    assert set(plan.conflicts) == git_conflicts
    assert git(repo_path, "rev-parse", f"{merged.decode()}^{{tree}}").strip() == git_tree
    assert git(repo_path, "rev-parse", f"{merged.decode()}^2").strip() == plan.source.decode()


def test_clean_merge_keeps_both_sides(repo: Repo, repo_path: Path, git: Git) -> None:
    base = fork(repo)
    theirs = put(
        repo,
        "topic",
        {
            "a.txt": b"one\ntwo\nthree\nfour\nfive\nsix\nSEVEN\n",
            "gone.txt": None,
            "new/dir/n.txt": b"new\n",
            "src/deep/c.py": b"def f():\n    return 2\n",
        },
    )
    ours = put(
        repo, "main", {"a.txt": b"ONE\ntwo\nthree\nfour\nfive\nsix\nseven\n", "b2.txt": b"x\n"}
    )
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert (plan.source, plan.target, plan.base) == (theirs, ours, base)
    assert not plan.up_to_date and not plan.fast_forward and plan.conflicts == []
    by_path = {f.path: f for f in plan.files}
    assert {p: f.status for p, f in by_path.items()} == {
        "a.txt": "modified",
        "gone.txt": "deleted",
        "new/dir/n.txt": "added",
        "src/deep/c.py": "modified",
    }
    assert by_path["a.txt"].merged == b"ONE\ntwo\nthree\nfour\nfive\nsix\nSEVEN\n"
    assert by_path["a.txt"].ours == b"ONE\ntwo\nthree\nfour\nfive\nsix\nseven\n"
    assert by_path["gone.txt"].merged is None and by_path["new/dir/n.txt"].base is None
    diff = by_path["a.txt"].diff()
    assert "-seven\n" in diff and "+SEVEN\n" in diff and "ONE" not in diff.replace(" ONE", "")
    assert "+new\n" in by_path["new/dir/n.txt"].diff()
    assert "-to be deleted\n" in by_path["gone.txt"].diff()
    changes = contents(repo, resolve_plan(plan, markers=False))
    assert changes == {
        "a.txt": b"ONE\ntwo\nthree\nfour\nfive\nsix\nSEVEN\n",
        "gone.txt": None,
        "new/dir/n.txt": b"new\n",
        "src/deep/c.py": b"def f():\n    return 2\n",
    }
    apply_and_compare(repo, repo_path, git, plan)


def test_text_conflict_gets_markers_like_git(repo: Repo, repo_path: Path, git: Git) -> None:
    fork(repo)
    theirs = put(
        repo, "topic", {"a.txt": b"one\ntwo\nTHREE from topic\nfour\nfive\nsix\nseven\nend\n"}
    )
    ours = put(repo, "main", {"a.txt": b"one\ntwo\nthree from main\nfour\nfive\nsix\nseven\n"})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == ["a.txt"]
    (conflict,) = plan.files
    assert conflict.status == "conflict" and not conflict.binary
    assert conflict.merged == (
        b"one\ntwo\n<<<<<<< main\nthree from main\n=======\nTHREE from topic\n>>>>>>> topic\n"
        b"four\nfive\nsix\nseven\nend\n"
    )
    with pytest.raises(MergeConflict) as refused:
        resolve_plan(plan, markers=False)
    assert refused.value.paths == ["a.txt"]
    assert contents(repo, resolve_plan(plan, markers=True)) == {"a.txt": conflict.merged}
    apply_and_compare(repo, repo_path, git, plan)


def test_binary_conflict_keeps_ours_without_markers(repo: Repo, repo_path: Path, git: Git) -> None:
    fork(repo)
    theirs = put(repo, "topic", {"img.bin": b"\x89PNG\x00theirs"})
    ours = put(repo, "main", {"img.bin": b"\x89PNG\x00ours"})
    plan = plan_merge(repo, theirs, ours)
    (conflict,) = plan.files
    assert (conflict.path, conflict.status, conflict.binary) == ("img.bin", "conflict", True)
    assert conflict.merged == b"\x89PNG\x00ours" and conflict.keeps_ours  # what git records
    assert conflict.diff() == "Binary files a/img.bin and b/img.bin differ\n"
    assert resolve_plan(plan, markers=True) == {}
    apply_and_compare(repo, repo_path, git, plan)


def test_text_that_is_not_utf8_is_merged_by_line_as_git_does(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    """git merges any file without a NUL in its first 8000 bytes line by line (it cannot
    be edited live, but its merge is git's)."""
    fork(repo, {"latin1.txt": "café\nau\nlait\n".encode("latin-1")})
    theirs = put(repo, "topic", {"latin1.txt": "café\nau\nlait écrémé\n".encode("latin-1")})
    ours = put(repo, "main", {"latin1.txt": "caffè\nau\nlait\n".encode("latin-1")})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    (merged,) = plan.files
    assert merged.status == "modified" and not merged.binary
    assert merged.merged == "caffè\nau\nlait écrémé\n".encode("latin-1")
    apply_and_compare(repo, repo_path, git, plan)


def test_modify_delete_conflicts_keep_the_modified_file(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    fork(repo)
    theirs = put(repo, "topic", {"b.txt": None, "gone.txt": b"changed on topic\n"})
    ours = put(repo, "main", {"b.txt": b"changed on main\n", "gone.txt": None})
    plan = plan_merge(repo, theirs, ours)
    assert sorted(plan.conflicts) == ["b.txt", "gone.txt"]
    by_path = {f.path: f for f in plan.files}
    assert by_path["b.txt"].merged == b"changed on main\n" and by_path["b.txt"].theirs is None
    assert by_path["gone.txt"].merged == b"changed on topic\n" and by_path["gone.txt"].ours is None
    assert contents(repo, resolve_plan(plan, markers=True)) == {"gone.txt": b"changed on topic\n"}
    apply_and_compare(repo, repo_path, git, plan)


def test_add_add(repo: Repo, repo_path: Path, git: Git) -> None:
    fork(repo)
    theirs = put(repo, "topic", {"same.txt": b"identical\n", "diff.txt": b"topic\n"})
    ours = put(repo, "main", {"same.txt": b"identical\n", "diff.txt": b"main\n"})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == ["diff.txt"]
    assert [f.path for f in plan.files] == ["diff.txt"]
    assert plan.files[0].merged == b"<<<<<<< main\nmain\n=======\ntopic\n>>>>>>> topic\n"
    apply_and_compare(repo, repo_path, git, plan)


def test_file_in_the_way_of_a_directory_moves_aside_as_git_does(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    """git keeps both sides of a file/directory clash: the directory in place, the file
    renamed to ``path~branch`` (the one conflicted path)."""
    fork(repo)
    theirs = put(repo, "topic", {"x/y.txt": b"dir on topic\n"})
    ours = put(repo, "main", {"x": b"file on main\n"})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == ["x~main"]
    assert contents(repo, resolve_plan(plan, markers=True)) == {
        "x": None,
        "x/y.txt": b"dir on topic\n",
        "x~main": b"file on main\n",
    }
    apply_and_compare(repo, repo_path, git, plan)


def test_changed_file_where_the_target_made_a_directory_moves_aside(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    fork(repo, {"x": b"file\n", "other.txt": b"o\n"})
    theirs = put(repo, "topic", {"x": b"file changed on topic\n"})
    ours = put(repo, "main", {"x": None, "x/inside.txt": b"now a directory\n"})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == ["x~topic"]
    assert contents(repo, resolve_plan(plan, markers=True)) == {
        "x~topic": b"file changed on topic\n"
    }
    apply_and_compare(repo, repo_path, git, plan)


FILE_DIRECTORY_CLASHES: dict[str, tuple[dict[str, bytes | None], ...]] = {
    # name: (base, topic's changes, main's changes)
    "a file on main where topic adds a directory": (
        BASE,
        {"x/y.txt": b"dir on topic\n"},
        {"x": b"file on main\n"},
    ),
    "a file on topic where main adds a directory": (
        BASE,
        {"x": b"file on topic\n"},
        {"x/y.txt": b"dir on main\n"},
    ),
    "a file changed on topic where main made a directory": (
        {"x": b"file\n", "other.txt": b"o\n"},
        {"x": b"file changed on topic\n"},
        {"x": None, "x/inside.txt": b"now a directory\n"},
    ),
    "a directory topic made a file, with a file main added in it": (
        {"x/a.txt": b"a\n", "other.txt": b"o\n"},
        {"x/a.txt": None, "x": b"a file now\n"},
        {"x/b.txt": b"added on main\n"},
    ),
    "a directory topic made a file, main changed a file in it": (
        {"x/a.txt": b"a\n", "other.txt": b"o\n"},
        {"x/a.txt": None, "x": b"a file now\n"},
        {"x/a.txt": b"a changed on main\n"},
    ),
    "both made different files of one directory": (
        {"x/a.txt": b"a\n", "other.txt": b"o\n"},
        {"x/a.txt": None, "x": b"topic's file\n"},
        {"x/a.txt": None, "x": b"main's file\n"},
    ),
    "the path x~main is taken": (
        {"x~main": b"taken\n", "other.txt": b"o\n"},
        {"x/y.txt": b"dir on topic\n"},
        {"x": b"file on main\n"},
    ),
}


@pytest.mark.parametrize("case", FILE_DIRECTORY_CLASHES)
def test_file_directory_clash_matches_git(repo: Repo, repo_path: Path, git: Git, case: str) -> None:
    base, topic, main = FILE_DIRECTORY_CLASHES[case]
    fork(repo, base)
    theirs = put(repo, "topic", topic)
    ours = put(repo, "main", main)
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts
    apply_and_compare(repo, repo_path, git, plan)


FILE_DIRECTORY_CHANGES: dict[str, tuple[dict[str, bytes | None], ...]] = {
    # a path changes between file and directory on one side only: no clash, as in git
    "topic turns a file into a directory": (
        {"x": b"file\n", "other.txt": b"o\n"},
        {"x": None, "x/inside.txt": b"in a directory\n"},
        {"other.txt": b"changed on main\n"},
    ),
    "topic turns a directory into a file": (
        {"x/a.txt": b"a\n", "x/b/c.txt": b"c\n", "other.txt": b"o\n"},
        {"x/a.txt": None, "x/b/c.txt": None, "x": b"a file now\n"},
        {"other.txt": b"changed on main\n"},
    ),
    "main turns a file into a directory, topic changes another": (
        {"x": b"file\n", "other.txt": b"o\n"},
        {"other.txt": b"changed on topic\n"},
        {"x": None, "x/inside.txt": b"in a directory\n"},
    ),
    "both turn the same file into the same directory": (
        {"x": b"file\n", "other.txt": b"o\n"},
        {"x": None, "x/inside.txt": b"in a directory\n"},
        {"x": None, "x/inside.txt": b"in a directory\n", "other.txt": b"o2\n"},
    ),
}


@pytest.mark.parametrize("case", FILE_DIRECTORY_CHANGES)
def test_file_directory_change_on_one_side_matches_git(
    repo: Repo, repo_path: Path, git: Git, case: str
) -> None:
    base, topic, main = FILE_DIRECTORY_CHANGES[case]
    fork(repo, base)
    theirs = put(repo, "topic", topic)
    ours = put(repo, "main", main)
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == []
    apply_and_compare(repo, repo_path, git, plan)


STORY = "".join(f"line {i} of the story\n" for i in range(20)).encode()


def story(**lines: str) -> bytes:
    """STORY with some of its lines (``l3="..."``) replaced."""
    out = STORY.decode().split("\n")
    for key, text in lines.items():
        out[int(key[1:])] = text
    return "\n".join(out).encode()


def rename_case(
    repo: Repo, topic: dict[str, bytes | None], main: dict[str, bytes | None]
) -> MergePlan:
    """``story.txt`` (20 lines) on a base, then topic's and main's changes; the plan of
    merging topic into main."""
    fork(repo, {"story.txt": STORY, "b.txt": b"keep me\n"})
    theirs = put(repo, "topic", topic)
    ours = put(repo, "main", main)
    return plan_merge(repo, theirs, ours, labels=("main", "topic"))


def test_rename_on_one_side_alone_matches_git(repo: Repo, repo_path: Path, git: Git) -> None:
    plan = rename_case(
        repo, {"story.txt": None, "moved/story.txt": story(l9="NINE")}, {"b.txt": b"main\n"}
    )
    assert {f.path: f.status for f in plan.files} == {
        "story.txt": "deleted",
        "moved/story.txt": "added",
    }
    apply_and_compare(repo, repo_path, git, plan)


def test_same_rename_on_both_sides_matches_git(repo: Repo, repo_path: Path, git: Git) -> None:
    plan = rename_case(
        repo,
        {"story.txt": None, "renamed.txt": STORY},
        {"story.txt": None, "renamed.txt": STORY, "b.txt": b"main\n"},
    )
    assert plan.files == []
    apply_and_compare(repo, repo_path, git, plan)


def test_an_edit_follows_the_rename(repo: Repo, repo_path: Path, git: Git) -> None:
    """Renamed on topic, edited on main: main's edit lands in the renamed file, the old
    path goes, and the plan says where the target's file went."""
    plan = rename_case(
        repo,
        {"story.txt": None, "moved/renamed.txt": story(l9="NINE")},
        {"story.txt": story(l3="X")},
    )
    assert plan.conflicts == []
    by_path = {f.path: f for f in plan.files}
    assert {p: f.status for p, f in by_path.items()} == {
        "moved/renamed.txt": "added",
        "story.txt": "deleted",
    }
    renamed = by_path["moved/renamed.txt"]
    assert renamed.renamed_from == "story.txt" and renamed.ours is None
    assert renamed.merged == story(l3="X", l9="NINE")
    diff = renamed.diff()
    assert diff.startswith("--- a/story.txt\n+++ b/moved/renamed.txt\n")
    assert "-line 9 of the story\n+NINE\n" in diff and "X" not in diff.replace("+X", "")
    apply_and_compare(repo, repo_path, git, plan)


def test_a_rename_on_the_target_takes_the_source_edit(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    plan = rename_case(
        repo,
        {"story.txt": story(l3="TOPIC")},
        {"story.txt": None, "renamed.txt": story(l15="MAIN")},
    )
    (merged,) = plan.files
    assert (merged.path, merged.status, merged.renamed_from) == ("renamed.txt", "modified", None)
    assert merged.ours == story(l15="MAIN") and merged.merged == story(l3="TOPIC", l15="MAIN")
    apply_and_compare(repo, repo_path, git, plan)


RENAMES: dict[str, tuple[dict[str, bytes | None], dict[str, bytes | None]]] = {
    # name: (topic's changes, main's changes)
    "renamed on topic, edited on main": (
        {"story.txt": None, "renamed.txt": STORY},
        {"story.txt": story(l3="EDITED ON MAIN")},
    ),
    "renamed and edited on topic, edited on main": (
        {"story.txt": None, "dir/renamed.txt": story(l15="EDITED ON TOPIC")},
        {"story.txt": story(l3="EDITED ON MAIN")},
    ),
    "renamed and edited on topic, the same line edited on main": (
        {"story.txt": None, "dir/renamed.txt": story(l3="EDITED ON TOPIC")},
        {"story.txt": story(l3="EDITED ON MAIN")},
    ),
    "edited on topic, renamed on main": (
        {"story.txt": story(l3="EDITED ON TOPIC")},
        {"story.txt": None, "renamed.txt": STORY},
    ),
    "renamed alike on both sides, edited on different lines": (
        {"story.txt": None, "renamed.txt": story(l2="TOPIC")},
        {"story.txt": None, "renamed.txt": story(l15="MAIN")},
    ),
    "renamed to two names (rename/rename)": (
        {"story.txt": None, "one.txt": STORY},
        {"story.txt": None, "two.txt": STORY},
    ),
    "renamed to two names and edited (rename/rename with a content conflict)": (
        {"story.txt": None, "one.txt": story(l3="TOPIC")},
        {"story.txt": None, "two.txt": story(l3="MAIN")},
    ),
    "renamed on topic, deleted on main (rename/delete)": (
        {"story.txt": None, "renamed.txt": STORY},
        {"story.txt": None},
    ),
    "deleted on topic, renamed on main (rename/delete)": (
        {"story.txt": None},
        {"story.txt": None, "renamed.txt": STORY},
    ),
    "renamed onto a file the other side added (rename/add)": (
        {"story.txt": None, "new.txt": story(l1="TOPIC")},
        {"new.txt": b"added on main\n" + STORY[:40]},
    ),
    "two files renamed onto one path (rename/rename 2to1)": (
        {"story.txt": None, "b.txt": None, "both.txt": STORY},
        {"story.txt": None, "b.txt": None, "both.txt": b"keep me\nand more\n"},
    ),
    "a rename below the similarity threshold is a delete and an add": (
        {"story.txt": None, "renamed.txt": STORY[: len(STORY) // 3] + b"new\n" * 15},
        {"story.txt": story(l3="EDITED ON MAIN")},
    ),
    "renamed and made executable": (
        {"story.txt": None, "run.sh": (0o100755, story(l1="#!/bin/sh"))},  # type: ignore[dict-item]
        {"story.txt": story(l12="MAIN")},
    ),
    "a directory renamed on topic, a file added in it on main": (
        {"story.txt": None, "b.txt": None, "new/story.txt": STORY, "new/b.txt": b"keep me\n"},
        {"story.txt": story(l3="MAIN"), "added.txt": b"added on main\n"},
    ),
}


@pytest.mark.parametrize("case", RENAMES)
def test_renames_are_followed_as_git_does(repo: Repo, repo_path: Path, git: Git, case: str) -> None:
    topic, main = RENAMES[case]
    apply_and_compare(repo, repo_path, git, rename_case(repo, topic, main))


def test_directory_rename_moves_what_the_other_side_added(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    """A directory renamed on one side carries along a file the other side added in it, and
    git reports the move as a conflict (``merge.directoryRenames=conflict``)."""
    fork(repo, {"src/a.py": STORY, "src/b.py": story(l1="b"), "top.txt": b"t\n"})
    theirs = put(
        repo,
        "topic",
        {"src/a.py": None, "src/b.py": None, "lib/a.py": STORY, "lib/b.py": story(l1="b")},
    )
    ours = put(repo, "main", {"src/c.py": b"new on main\n"})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == ["lib/c.py"]
    changes = contents(repo, resolve_plan(plan, markers=True))
    assert changes["lib/c.py"] == b"new on main\n" and changes["src/c.py"] is None
    apply_and_compare(repo, repo_path, git, plan)


def test_different_kinds_at_one_path_are_kept_apart(repo: Repo, repo_path: Path, git: Git) -> None:
    """A symlink on one side, a regular file on the other: git keeps both, the file moved
    to ``path~branch``."""
    fork(repo, {"other.txt": b"o\n"})
    theirs = commit_changes(
        repo,
        "topic",
        {"link": BlobEntry(0o120000, bytes(Blob.from_string(b"other.txt").id), b"other.txt")},
        message="link\n",
        author=AUTHOR,
        expected=read_ref(repo, b"refs/heads/topic"),
    )
    ours = put(repo, "main", {"link": b"a regular file\n"})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == ["link", "link~main"]
    apply_and_compare(repo, repo_path, git, plan)


def test_both_added_with_different_modes(repo: Repo, repo_path: Path, git: Git) -> None:
    fork(repo, {"other.txt": b"o\n"})
    theirs = commit_changes(
        repo,
        "topic",
        {"tool": BlobEntry.of(0o100755, b"#!/bin/sh\necho topic\n")},
        message="tool\n",
        author=AUTHOR,
        expected=read_ref(repo, b"refs/heads/topic"),
    )
    ours = put(repo, "main", {"tool": b"#!/bin/sh\necho main\n"})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == ["tool"]
    apply_and_compare(repo, repo_path, git, plan)


def test_up_to_date_and_fast_forward(repo: Repo) -> None:
    base = fork(repo)
    ahead = put(repo, "main", {"b.txt": b"main moved on\n", "gone.txt": None})
    plan = plan_merge(repo, base, ahead)  # topic (at base) is already in main
    assert plan.up_to_date and plan.files == [] and plan.base == base
    assert plan_merge(repo, ahead, ahead).up_to_date
    forward = plan_merge(repo, ahead, base)  # main is ahead of topic: topic fast-forwards
    assert forward.fast_forward and not forward.up_to_date and forward.conflicts == []
    assert {f.path: f.status for f in forward.files} == {"b.txt": "modified", "gone.txt": "deleted"}
    assert contents(repo, resolve_plan(forward, markers=False)) == {
        "b.txt": b"main moved on\n",
        "gone.txt": None,
    }


def test_unrelated_histories(repo: Repo) -> None:
    one = put(repo, "main", {"a": b"1"})
    other = put(repo, "island", {"a": b"2"})
    assert merge_base(repo, one, other) is None
    with pytest.raises(UnrelatedHistories) as refused:
        plan_merge(repo, other, one)
    assert str(refused.value) == f"{other[:12].decode()} and {one[:12].decode()} share no history"


def test_many_files_on_both_sides_match_git(repo: Repo, repo_path: Path, git: Git) -> None:
    files = {
        f"d{i % 7}/sub{i % 3}/f{i}.txt": f"line 1 of {i}\nline 2\nline 3\nline 4\n".encode()
        for i in range(120)
    }
    fork(repo, files)
    both = [p for i, p in enumerate(files) if i % 4 == 0]
    theirs = put(
        repo,
        "topic",
        {
            **{p: files[p].replace(b"line 1", b"LINE 1") for p in both},
            "d1/sub1/f1.txt": None,
            "t/new.txt": b"t\n",
        },
    )
    ours = put(
        repo,
        "main",
        {
            **{p: files[p].replace(b"line 4", b"LINE 4") for p in both},
            "d2/sub2/f2.txt": b"main only\n",
        },
    )
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    assert plan.conflicts == []
    assert len(plan.files) == len(both) + 2
    apply_and_compare(repo, repo_path, git, plan)


def test_merge_text_conflicts_where_both_sides_insert_at_one_place() -> None:
    """What live edits and a git change get when they meet (``merge_text``): git's rule."""
    base = "class A:\n    def a(self):\n        pass\n"
    ours = base + "\n    def b(self):\n        pass\n"
    theirs = base + "\n    def c(self):\n        pass\n"
    text, conflict = merge_text(base, ours, theirs, labels=("live", "git"))
    assert conflict and "<<<<<<< live\n    def b(self):\n=======\n" in text


def test_merge_text_basics() -> None:
    base = "a\nb\nc\nd\ne\n"
    assert merge_text(base, "A\nb\nc\nd\ne\n", "a\nb\nc\nd\nE\n") == ("A\nb\nc\nd\nE\n", False)
    assert merge_text(base, base, base) == (base, False)
    assert merge_text("", "héllo 世界 🎉\n", "") == ("héllo 世界 🎉\n", False)
    text, conflict = merge_text("x\ny\nz", "x\nY1\nz", "x\nY2\nz", labels=("live", "git"))
    assert conflict and text == "x\n<<<<<<< live\nY1\n=======\nY2\n>>>>>>> git\nz"
    assert merge_text("x", "x1", "x2")[0] == "<<<<<<< ours\nx1\n=======\nx2\n>>>>>>> theirs\n"
    assert merge_text("a\nb\n", "a\nsame\n", "a\nsame\n") == ("a\nsame\n", False)


def test_merge_text_keeps_lone_carriage_returns() -> None:
    assert merge_text("a\rb\nc\n", "a\rb\nC\n", "A\rb\nc\n")[1]  # one line changed twice
    merged_text, conflict = merge_text("1\n2\r\n3\n4\n", "1!\n2\r\n3\n4\n", "1\n2\r\n3\n4!\n")
    assert (merged_text, conflict) == ("1!\n2\r\n3\n4!\n", False)


def git_merge_file(tmp_path: Path, base: str, ours: str, theirs: str) -> tuple[str, bool]:
    """``git merge-file -p`` of the three texts: the merged text, and whether it conflicts."""
    for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
        (tmp_path / name).write_bytes(text.encode())
    labels = ("-L", "ours", "-L", "base", "-L", "theirs")
    done = subprocess.run(
        ["git", "merge-file", "-p", *labels, "ours", "base", "theirs"],
        cwd=tmp_path,
        capture_output=True,
    )
    assert done.returncode >= 0, done.stderr
    return done.stdout.decode(), done.returncode != 0


def test_conflicts_apart_by_lines_without_letters_are_kept_apart_as_git_merge_does(
    repo: Repo, repo_path: Path, git: Git, tmp_path: Path
) -> None:
    """git merge joins conflicts at most three lines apart; git merge-file also joins those
    apart by lines with no letter or digit. The engine does what git merge does."""
    base, ours, theirs = "a\n}\n}\n}\n}\nf\n", "A\n}\n}\n}\n}\nF\n", "A2\n}\n}\n}\n}\nF2\n"
    fork(repo, {"f.txt": base.encode()})
    source = put(repo, "topic", {"f.txt": theirs.encode()})
    target = put(repo, "main", {"f.txt": ours.encode()})
    plan = plan_merge(repo, source, target, labels=("main", "topic"))
    (conflict,) = plan.files
    assert conflict.merged is not None and conflict.merged.count(b"<<<<<<< main\n") == 2
    apply_and_compare(repo, repo_path, git, plan)
    merged, _ = git_merge_file(tmp_path, base, ours, theirs)
    assert merged.count("<<<<<<<") == 1


def test_crlf_conflict_in_a_tree_matches_git(repo: Repo, repo_path: Path, git: Git) -> None:
    fork(repo, {"win.txt": b"a\r\nb\r\nc\r\nd\r\n", "unix.txt": b"a\nb\n"})
    source = put(repo, "topic", {"win.txt": b"a\r\nB2\r\nc\r\nd", "unix.txt": b"a\nB2\n"})
    target = put(repo, "main", {"win.txt": b"a\r\nB1\r\nc\r\nd\r\n", "unix.txt": b"a\nB1\n"})
    plan = plan_merge(repo, source, target, labels=("main", "topic"))
    assert sorted(plan.conflicts) == ["unix.txt", "win.txt"]
    merged = {f.path: f.merged for f in plan.files}
    assert merged["win.txt"] is not None and b">>>>>>> topic\r\n" in merged["win.txt"]
    apply_and_compare(repo, repo_path, git, plan)


def test_merge_of_packed_history_with_mode_changes_matches_git(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    files = {
        f"p{i % 5}/f{i}.txt": "".join(f"{n} of {i}\n" for n in range(40)).encode()
        for i in range(60)
    }
    fork(repo, files)
    paths = list(files)
    theirs = put(repo, "topic", {p: files[p].replace(b"0 of", b"ZERO of", 1) for p in paths[::2]})
    theirs = commit_changes(
        repo,
        "topic",
        {paths[1]: BlobEntry(0o100755, bytes(Blob.from_string(files[paths[1]]).id))},
        message="make it executable\n",
        author=AUTHOR,
        expected=theirs,
    )
    ours = put(repo, "main", {p: files[p].replace(b"39 of", b"LAST of") for p in paths[::3]})
    git(repo_path, "repack", "-adf", "-q")  # every object packed, most as deltas
    packed = Repo(str(repo_path))
    try:
        plan = plan_merge(packed, theirs, ours, labels=("main", "topic"))
        assert plan.conflicts == []
        executable = next(f for f in plan.files if f.path == paths[1])
        assert (executable.status, executable.mode, executable.diff()) == ("modified", 0o100755, "")
        apply_and_compare(packed, repo_path, git, plan)
    finally:
        packed.close()


def merge_commit(repo: Repo, branch: str, changes: dict[str, bytes | None], other: bytes) -> bytes:
    """A merge of ``other`` into ``branch`` whose result the caller gives."""
    current = read_ref(repo, b"refs/heads/" + branch.encode())
    return commit_changes(
        repo,
        branch,
        changes,
        message=f"merge into {branch}\n",
        author=AUTHOR,
        expected=current,
        extra_parents=[other],
    )


def test_criss_cross_conflict_is_found_from_a_virtual_base(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    """Each side merged the other and resolved one line its own way: a merge from either
    common ancestor alone would silently take one side; git (and the virtual base) see a
    conflict."""
    fork(repo)
    lines = BASE["a.txt"].split(b"\n")
    main_line = b"\n".join([lines[0], b"TWO from main", *lines[2:]])
    topic_line = b"\n".join([lines[0], b"TWO from topic", *lines[2:]])
    a1 = put(repo, "main", {"a.txt": main_line})
    b1 = put(repo, "topic", {"a.txt": topic_line})
    merge_commit(repo, "main", {}, b1)  # keeps main's line
    b2 = merge_commit(repo, "topic", {}, a1)  # keeps topic's line
    assert len(find_merge_base(repo, [read_ref(repo, b"refs/heads/main"), b2])) == 2

    plan = plan_merge(repo, b2, read_ref(repo, b"refs/heads/main") or b"", labels=("main", "topic"))
    assert plan.base is None  # virtual
    assert plan.conflicts == ["a.txt"]
    (conflict,) = plan.files
    assert conflict.merged is not None
    assert b"TWO from main" in conflict.merged and b"TWO from topic" in conflict.merged
    _, git_conflicts = git_merge_tree(git, repo_path, "main", "topic")
    assert git_conflicts == {"a.txt"}


def test_criss_cross_clean_merge_matches_git(repo: Repo, repo_path: Path, git: Git) -> None:
    fork(repo)
    lines = BASE["a.txt"].split(b"\n")

    def text(**changed: bytes) -> bytes:
        return b"\n".join(changed.get(f"l{i}", line) for i, line in enumerate(lines))

    a1 = put(repo, "main", {"a.txt": text(l0=b"ONE"), "gone.txt": None})
    b1 = put(repo, "topic", {"a.txt": text(l6=b"SEVEN"), "src/new/x.txt": b"added on topic\n"})
    both = {"a.txt": text(l0=b"ONE", l6=b"SEVEN"), "gone.txt": None}
    merge_commit(repo, "main", {**both, "src/new/x.txt": b"added on topic\n"}, b1)
    merge_commit(repo, "topic", both, a1)
    put(repo, "main", {"a.txt": text(l0=b"ONE", l2=b"THREE", l6=b"SEVEN")})
    source = put(repo, "topic", {"a.txt": text(l0=b"ONE", l4=b"FIVE", l6=b"SEVEN")})
    target = read_ref(repo, b"refs/heads/main") or b""
    assert len(find_merge_base(repo, [target, source])) == 2

    plan = plan_merge(repo, source, target, labels=("main", "topic"))
    assert plan.base is None and not plan.conflicts
    merged = contents(repo, resolve_plan(plan, markers=False))
    assert merged == {"a.txt": text(l0=b"ONE", l2=b"THREE", l4=b"FIVE", l6=b"SEVEN")}
    apply_and_compare(repo, repo_path, git, plan)


def test_criss_cross_with_modify_delete_between_the_ancestors_matches_git(
    repo: Repo, repo_path: Path, git: Git
) -> None:
    """One side deleted a file the other edited, and each merged the other (keeping the
    file): the virtual base takes the common ancestor's version of it, as git does."""
    fork(repo, {"f.txt": b"l0\nl1\nl2\nl3\n", "keep.txt": b"k\n"})
    x1 = put(repo, "main", {"f.txt": None})
    y1 = put(repo, "topic", {"f.txt": b"Y0\nl1\nl2\nl3\n"})
    merge_commit(repo, "main", {"f.txt": b"l0\nl1\nl2\nX3\n"}, y1)
    source = merge_commit(repo, "topic", {"keep.txt": b"k2\n"}, x1)
    target = read_ref(repo, b"refs/heads/main") or b""
    plan = plan_merge(repo, source, target, labels=("main", "topic"))
    assert plan.base is None and not plan.conflicts
    assert contents(repo, resolve_plan(plan, markers=False))["f.txt"] == b"Y0\nl1\nl2\nX3\n"
    apply_and_compare(repo, repo_path, git, plan)


def test_merge_attributes_are_git_s(repo: Repo, repo_path: Path, git: Git, tmp_path: Path) -> None:
    """``merge=union`` takes both sides' lines; ``-merge`` and ``binary`` keep ours and
    conflict, text or not; a directory's ``.gitattributes`` overrides the root's. Compared
    with ``git merge`` in a checkout of the target (which reads them from there)."""
    attributes = {
        ".gitattributes": b"*.u merge=union\n*.cfg -merge\n*.tb binary\n"
        # later attributes win; a quoted pattern; a macro of the top-level file
        b'*.a merge=union binary\n*.c binary\n*.c !merge\n"a b.k" merge=union\n'
        b"[attr]keep -merge\n*.d keep\n",
        "sub/.gitattributes": b"*.u -merge\nplain.txt merge=union\n",
    }
    names = ("f.u", "c.cfg", "t.tb", "sub/g.u", "p.txt", "f.a", "f.c", "a b.k", "f.d")
    files = {name: b"one\ntwo\nthree\n" for name in names}
    fork(repo, {**attributes, **files, "sub/plain.txt": b"one\ntwo\n"})
    changed = [*files, "sub/plain.txt"]
    theirs = put(repo, "topic", {path: b"one\ntwo (topic)\nthree\n" for path in changed})
    ours = put(repo, "main", {path: b"one\ntwo (main)\nthree\n" for path in changed})
    plan = plan_merge(repo, theirs, ours, labels=("main", "topic"))
    merged = contents(repo, resolve_plan(plan, markers=True))

    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", "-b", "main", str(repo_path), str(work))
    ident = ["-c", "user.name=T", "-c", "user.email=t@example.com"]
    git(work, *ident, "merge", "-q", "origin/topic", check=False)
    conflicts = set(git(work, "diff", "--name-only", "--diff-filter=U").split())
    expected = {"c.cfg", "p.txt", "sub/g.u", "t.tb", "f.a", "f.c", "f.d"}
    assert set(plan.conflicts) == conflicts == expected
    for path in changed:
        if path not in ("p.txt", "f.c"):  # (their markers name the sides as the commands do)
            kept = b"one\ntwo (main)\nthree\n"  # ours, where the merge does not change it
            assert merged.get(path, kept) == (work / path).read_bytes(), path
    assert merged["f.u"] == merged["a b.k"] == b"one\ntwo (main)\ntwo (topic)\nthree\n"
    assert b"<<<<<<< main" in merged["f.c"]
    assert merged["sub/plain.txt"] == b"one\ntwo (main)\ntwo (topic)\nthree\n"


def test_merge_text_by_characters_keeps_both_edits_of_a_line() -> None:
    """As live typing merges: a line both sides changed, apart, keeps both changes, and
    what both inserted at one place is kept; where the characters conflict otherwise, or
    the lines are too long to merge so, git's markers."""
    base = "title\nbody\n"
    assert merge_text(base, "title typed\nbody\n", "NEW title\nbody\n", characters=True) == (
        "NEW title typed\nbody\n",
        False,
    )
    # what both inserted at one place is kept, ours first, lines or characters
    both = merge_text(base, "title\nours\nbody\n", "title\ntheirs\nbody\n", characters=True)
    assert both == ("title\nours\ntheirs\nbody\n", False)
    assert merge_text(base, "titleX\nbody\n", "titleY\nbody\n", characters=True) == (
        "titleXY\nbody\n",
        False,
    )
    conflict = merge_text(base, "tile\nbody\n", "tit\nbody\n", characters=True)
    assert conflict == merge_text(base, "tile\nbody\n", "tit\nbody\n") and conflict[1]
    long = "x" * CHARACTER_MERGE_MAX + "\n"
    ours, theirs = "a" + long, long[:-1] + "b\n"
    assert merge_text(long, ours, theirs, characters=True) == merge_text(long, ours, theirs)
    assert merge_text(long[:200], "a" + long[:200], long[:199] + "b", characters=True) == (
        "a" + long[:199] + "b",
        False,
    )
