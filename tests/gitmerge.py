"""Building histories fast and asking git how it merges them, for the merge fidelity tests."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

if TYPE_CHECKING:
    from gitsync.merge.plan import MergePlan


__all__ = [
    "GIT_ENV",
    "Files",
    "GitFailed",
    "commit",
    "git_diff_hunks",
    "git_merge_tree",
    "lines",
    "our_tree",
    "run",
]

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}

Files = Mapping[str, "bytes | tuple[int, bytes]"]
"""path -> content (a regular file), or (mode, content): 0o100755, 0o120000 (a symlink)."""


class GitFailed(AssertionError):
    """git exited with an error (not the 1 of a merge with conflicts)."""


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, timeout=120)
    if check and done.returncode not in (0, 1):
        raise GitFailed(f"git {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done


def _tree(repo: Repo, files: Files) -> bytes:
    nested: dict[str, object] = {}
    for path, content in files.items():
        *dirs, name = path.split("/")
        node = nested
        for part in dirs:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[name] = content
    return _write(repo, nested)


def _write(repo: Repo, node: Mapping[str, object]) -> bytes:
    tree = Tree()
    for name, value in node.items():
        if isinstance(value, dict):
            tree.add(name.encode(), stat.S_IFDIR, _write(repo, value))
            continue
        mode, data = value if isinstance(value, tuple) else (0o100644, value)
        assert isinstance(data, bytes)
        blob = Blob.from_string(data)
        repo.object_store.add_object(blob)
        tree.add(name.encode(), mode, blob.id)
    repo.object_store.add_object(tree)
    return bytes(tree.id)


def commit(repo: Repo, files: Files, parents: Sequence[bytes] = (), when: int = 1) -> bytes:
    """A commit of exactly ``files`` with ``parents`` (nothing written to any ref)."""
    c = Commit()
    c.tree = _tree(repo, files)
    c.parents = list(parents)
    c.author = c.committer = b"Tester <t@example.com>"
    c.author_time = c.commit_time = when
    c.author_timezone = c.commit_timezone = 0
    c.message = b"commit\n"
    repo.object_store.add_object(c)
    return bytes(c.id)


def git_merge_tree(path: Path, ours: str | bytes, theirs: str | bytes) -> tuple[str, set[str]]:
    """git's merge of ``theirs`` into ``ours``: the tree id and the conflicted paths."""
    done = run(
        path,
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        ours if isinstance(ours, str) else ours.decode(),
        theirs if isinstance(theirs, str) else theirs.decode(),
    )
    tree, *names = done.stdout.decode("utf-8", "surrogateescape").split("\n")
    return tree.strip(), {n for n in names if n}


def our_tree(plan: MergePlan) -> str:
    """The tree the engine's merge records (conflict markers included), as a hex id."""
    from gitsync.merge.plan import merged_tree, resolve_plan

    tree, _ = merged_tree(plan, resolve_plan(plan, markers=True))
    return tree.decode()


def git_diff_hunks(
    path: Path, old: bytes, new: bytes, algorithm: str
) -> dict[str, list[tuple[int, int, int, int]]]:
    """Per file, git's diff hunks between two commits (``-U0``, no indent heuristic), as
    (old start, old count, new start, new count)."""
    out = run(
        path,
        "diff",
        f"--diff-algorithm={algorithm}",
        "-U0",
        "--no-indent-heuristic",
        "--no-renames",
        "--no-color",
        old.decode(),
        new.decode(),
    ).stdout.decode("latin-1")
    hunks: dict[str, list[tuple[int, int, int, int]]] = {}
    current: list[tuple[int, int, int, int]] = []
    for line in out.split("\n"):
        if line.startswith("diff --git "):
            current = hunks.setdefault(line.split(" b/", 1)[1], [])
        elif line.startswith("@@ "):
            old_part, new_part = line.split(" ")[1:3]
            current.append((*_range(old_part[1:]), *_range(new_part[1:])))
    return hunks


def _range(text: str) -> tuple[int, int]:
    start, _, count = text.partition(",")
    return int(start), 1 if not count else int(count)


def git_merge_files(
    repo: Repo, path: Path, cases: Sequence[tuple[bytes, bytes, bytes]]
) -> list[tuple[bytes, bool]]:
    """git's merge of each (base, ours, theirs) text, as ``git merge-tree`` merges files
    (histogram diff): the merged text (with markers labelled ``ours`` and ``theirs``) and
    whether it conflicts. One merge of three commits holds every case."""
    base = commit(repo, {f"f{i}": c[0] for i, c in enumerate(cases)})
    ours = commit(repo, {f"f{i}": c[1] for i, c in enumerate(cases)}, [base])
    theirs = commit(repo, {f"f{i}": c[2] for i, c in enumerate(cases)}, [base])
    repo.refs[b"refs/heads/ours"] = ours  # type: ignore[index]
    repo.refs[b"refs/heads/theirs"] = theirs  # type: ignore[index]
    tree, conflicts = git_merge_tree(path, "ours", "theirs")
    names = "".join(f"{tree}:f{i}\n" for i in range(len(cases))).encode()
    out = subprocess.run(
        ["git", "cat-file", "--batch"], cwd=path, env=GIT_ENV, input=names, capture_output=True
    ).stdout
    merged = []
    at = 0
    for i in range(len(cases)):
        header_end = out.index(b"\n", at)
        size = int(out[at:header_end].split()[2])
        merged.append((out[header_end + 1 : header_end + 1 + size], f"f{i}" in conflicts))
        at = header_end + 1 + size + 1
    return merged


def lines(text: bytes) -> list[bytes]:
    """``text``'s lines, each with its LF (the last one possibly without)."""
    parts = text.split(b"\n")
    out = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out
