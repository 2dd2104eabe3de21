"""Trees nested deeper than git takes them (``core.maxTreeDepth``, 4096 since git 2.45) are
refused at push time with a reason ``git push`` prints for each ref; and a merge preview of a
branch whose trees nest deep (below that limit) is answered, not a ``RecursionError``."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gitcli import require_git
from test_git_push import GIT_ENV, clone, git, head, object_files, run_git, start

from collab import Client, ClientError, CollabServer
from gitsync.naming import participant_branch
from protocol.errors import ErrorCode


@pytest.fixture(autouse=True)
def _git_cli() -> None:
    require_git()


@pytest.fixture
async def server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    srv = await start(repos, tmp_path)
    try:
        yield srv
    finally:
        await srv.stop()


def _nest(work: Path, depth: int, text: str = "deep\n", parent: str = "HEAD") -> str:
    """A commit on ``parent`` whose tree holds ``deep/d/d/.../f.txt`` (``text``), the file
    ``depth`` directories below ``deep``, built with git's plumbing (one ``mktree --batch``)."""
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=work,
        env=GIT_ENV,
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout.decode()
    with subprocess.Popen(
        ["git", "mktree", "--batch"],
        cwd=work,
        env=GIT_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as mktree:
        assert mktree.stdin is not None and mktree.stdout is not None
        pipe_in, pipe_out = mktree.stdin, mktree.stdout

        def tree(entries: str) -> str:
            pipe_in.write(entries + "\n\n")
            pipe_in.flush()
            return pipe_out.readline().strip()

        nested = tree(f"100644 blob {blob.strip()}\tf.txt")
        for _ in range(depth):
            nested = tree(f"040000 tree {nested}\td")
        top = "".join(
            line + "\n"
            for line in run_git(work, "ls-tree", parent).stdout.splitlines()
            if not line.endswith("\tdeep")
        )
        top += f"040000 tree {nested}\tdeep"
        root = tree(top)
        pipe_in.close()
    return run_git(work, "commit-tree", root, "-p", parent, "-m", f"deep {depth}").stdout.strip()


async def _own_branch_clone(server: CollabServer, tmp_path: Path) -> tuple[Path, str]:
    """A clone of ``demo`` on alice's own branch (made by ``branch.join``), and its name."""
    async with Client(server.url, user="alice") as alice:
        branch = await alice.join("demo")
    assert branch == participant_branch("alice")
    work = await clone(server, tmp_path)
    await git(work, "checkout", "-q", branch)
    return work, branch


async def test_a_tree_deeper_than_git_takes_is_refused_at_push(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    work, branch = await _own_branch_clone(server, tmp_path)
    demo = repos / "demo"
    before, objects = head(demo, f"refs/heads/{branch}"), object_files(demo)
    deep = _nest(work, 5000)
    refused = await git(work, "push", "origin", f"{deep}:refs/heads/{branch}", check=False)
    assert refused.returncode != 0
    assert f"[remote rejected] {deep} -> {branch} (tree " in refused.stderr, refused.stderr
    assert "nests more than 4096 trees deep (git's core.maxTreeDepth)" in refused.stderr
    assert head(demo, f"refs/heads/{branch}") == before
    assert object_files(demo) == objects  # nothing of the push was kept


async def test_merges_of_deep_trees_are_answered(server: CollabServer, tmp_path: Path) -> None:
    """Both sides change a file 1,500 directories down (within git's limit: taken): the
    merge walks down to it on both, and says where they conflict. Before, the preview and the
    merge failed with 4500 INTERNAL: maximum recursion depth exceeded."""

    work, branch = await _own_branch_clone(server, tmp_path)
    depth = 1500  # past the interpreter's recursion limit
    base = _nest(work, depth)
    theirs = _nest(work, depth, "alice\n", base)
    ours = _nest(work, depth, "main\n", base)
    await git(work, "push", "origin", f"{theirs}:refs/heads/{branch}", f"{ours}:refs/heads/main")
    deep_file = "deep/" + "d/" * depth + "f.txt"
    async with Client(server.url, user="alice") as alice:
        preview = await alice.call("merge.preview", repo="demo", source=branch, target="main")
        assert preview["conflicts"] == [deep_file]
        with pytest.raises(ClientError) as refused:
            await alice.merge("demo", branch, "main")
    assert refused.value.code == ErrorCode.CONFLICT, refused.value
