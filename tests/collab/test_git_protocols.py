"""The git CLI against a live server's bridge, protocol v0 (``-c protocol.version=0``) and v2
(git's default), each result compared with what git's own ``upload-pack`` gives for the same
repository (a ``file://`` clone): ``ls-remote``, clone, fetch; shallow clones deepened by
depth, by date, by excluded ref, and unshallowed; partial clones (``blob:none``, ``tree:0``)
whose later checkouts and ``git log -p`` fetch what they lack. Pushes are in ``test_git_push``
and ``test_git_force``."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from servers import make_config

from collab import CollabServer

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "Git CLI",
    "GIT_AUTHOR_EMAIL": "cli@example.com",
    "GIT_COMMITTER_NAME": "Git CLI",
    "GIT_COMMITTER_EMAIL": "cli@example.com",
}
PROTOCOLS = ["0", "2"]


def run_git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


async def git(cwd: Path, *args: str) -> str:
    """The git CLI in a thread: the server under test runs on this event loop."""
    return await asyncio.to_thread(run_git, cwd, *args)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository: ``main`` of 12 commits a day apart (files in directories, a rename),
    ``topic`` forked from it, an annotated tag ``v1`` on ``main~4``, a lightweight ``light``."""
    root = tmp_path_factory.mktemp("built")
    work = root / "work"
    run_git(root, "init", "-q", "-b", "main", str(work))
    day = 86_400
    for i in range(12):
        for d in range(3):
            path = work / f"dir{d}" / f"file{i % 4}.txt"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(f"{d}:{i}:{k}\n" for k in range(10 + i)))
        if i == 6:
            run_git(work, "mv", "dir0/file0.txt", "moved.txt")
        when = f"{1_600_000_000 + i * day} +0000"
        run_git(work, "add", "-A")
        run_git(
            work,
            "commit",
            "-qm",
            f"commit {i}",
            env={"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when},
        )
    run_git(work, "tag", "-a", "v1", "-m", "one", "main~4")
    run_git(work, "tag", "light", "main~2")
    run_git(work, "branch", "topic", "main~6")
    run_git(work, "checkout", "-q", "topic")
    (work / "topic.txt").write_text("on topic\n")
    run_git(work, "add", "topic.txt")
    run_git(work, "commit", "-qm", "topic work")
    run_git(work, "checkout", "-q", "main")
    bare = root / "hist.git"
    run_git(root, "clone", "-q", "--bare", str(work), str(bare))
    run_git(bare, "gc", "-q")
    run_git(bare, "config", "uploadpack.allowFilter", "true")  # (for the file:// reference)
    return bare


@pytest.fixture
async def served(built: Path, tmp_path: Path) -> AsyncIterator[tuple[CollabServer, Path]]:
    """A dev-mode server whose repository ``hist`` is a copy of ``built``."""
    repos = tmp_path / "repos"
    shutil.copytree(built, repos / "hist.git")
    server = CollabServer(make_config(repos, tmp_path / "data", commit_idle=60.0))
    await server.start()
    try:
        yield server, repos / "hist.git"
    finally:
        await server.stop()


def url(server: CollabServer) -> str:
    return server.url.replace("ws://", "http://alice:dev@") + "/git/hist.git"


def shallow_file(repo: Path) -> list[str]:
    path = repo / ".git" / "shallow"
    return sorted(path.read_text().split()) if path.exists() else []


def history(repo: Path) -> str:
    return run_git(repo, "rev-list", "--all", "--objects", "--no-object-names")


def branches(repo: Path) -> str:
    """The objects the remote-tracking branches reach (over stateless HTTP, v0 clients follow
    tags in a way of their own, whoever serves them)."""
    return run_git(repo, "rev-list", "--remotes", "--objects", "--no-object-names")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_ls_remote_clone_and_fetch(
    served: tuple[CollabServer, Path], tmp_path: Path, protocol: str
) -> None:
    server, bare = served
    v = ("-c", f"protocol.version={protocol}")
    ours = await git(tmp_path, *v, "ls-remote", url(server))
    theirs = run_git(tmp_path, *v, "ls-remote", f"file://{bare}")
    assert ours == theirs and "refs/tags/v1^{}" in ours
    assert "HEAD" in await git(tmp_path, *v, "ls-remote", "--symref", url(server), "HEAD")
    work = tmp_path / "work"
    await git(tmp_path, *v, "clone", "-q", url(server), str(work))
    reference = tmp_path / "reference"
    run_git(tmp_path, *v, "clone", "-q", "--no-local", str(bare), str(reference))
    assert history(work) == history(reference)
    run_git(work, "fsck", "--strict", "--no-dangling")

    # new commits on the server (another clone pushes them straight to the repository)
    run_git(reference, "checkout", "-q", "topic")
    for i in range(3):
        (reference / "topic.txt").write_text(f"more {i}\n")
        run_git(reference, "commit", "-qam", f"more {i}")
    run_git(reference, "push", "-q", "origin", "topic")
    await git(work, *v, "fetch", "-q", "origin")
    assert run_git(work, "rev-parse", "origin/topic") == run_git(reference, "rev-parse", "topic")
    run_git(work, "fsck", "--strict", "--no-dangling")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_shallow_clones_deepen_as_with_git(
    served: tuple[CollabServer, Path], tmp_path: Path, protocol: str
) -> None:
    """Each step on a clone through the bridge and on one from git's own upload-pack gives
    the same shallow boundary and the same objects."""
    server, bare = served
    v = ("-c", f"protocol.version={protocol}")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    await git(tmp_path, *v, "clone", "-q", "--depth", "1", url(server), str(ours))
    run_git(tmp_path, *v, "clone", "-q", "--depth", "1", f"file://{bare}", str(theirs))
    assert len(shallow_file(ours)) == 1
    steps = [
        ("fetch", "-q", "--deepen=3"),
        ("fetch", "-q", "--shallow-since=1600500000"),
        ("fetch", "-q", "--shallow-exclude=v1", "origin", "main"),
        ("fetch", "-q", "--depth=2", "origin", "topic"),
        ("fetch", "-q", "--unshallow"),
    ]
    for step in [(), *steps]:
        if step:
            await git(ours, *v, *step)
            run_git(theirs, *v, *step)
        assert shallow_file(ours) == shallow_file(theirs), step
        assert branches(ours) == branches(theirs), step
    assert shallow_file(ours) == []
    run_git(ours, "fsck", "--strict", "--no-dangling")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("spec", ["blob:none", "tree:0", "blob:limit=1k"])
async def test_partial_clones_fetch_what_they_lack_later(
    served: tuple[CollabServer, Path], tmp_path: Path, protocol: str, spec: str
) -> None:
    server, bare = served
    v = ("-c", f"protocol.version={protocol}")
    work = tmp_path / "partial"
    await git(tmp_path, *v, "clone", "-q", f"--filter={spec}", url(server), str(work))
    full = tmp_path / "full"
    run_git(tmp_path, "clone", "-q", "--no-local", str(bare), str(full))
    assert (work / "moved.txt").read_text() == (full / "moved.txt").read_text()
    await git(work, *v, "checkout", "-q", "topic")
    assert (work / "topic.txt").read_text() == "on topic\n"
    log = ("log", "-p", "--stat", "--format=%H %s", "origin/main")
    assert await git(work, *v, *log) == run_git(full, *log)
    await git(work, *v, "checkout", "-q", "v1")
    run_git(work, *v, "fsck", "--no-dangling")
    assert run_git(work, "config", "remote.origin.promisor") == "true\n"
