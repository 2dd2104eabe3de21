"""A node held up in the middle of a commit (a process stopped, a disk stalled) keeps the
other nodes of a cluster from its branch only while it moves the ref: its objects are written
outside the branch's fence, so another node commits once the lease has expired; the late
node's move is still refused. Two nodes in this process, one real ``redis-server``, one
repositories' directory."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from gitcli import until
from redisproc import RedisProcess
from servers import make_config

from collab import Client, ClientError, CollabServer
from collab.bus.lease import Grant
from gitsync import fence
from gitsync.objects import commits
from protocol.errors import ErrorCode

ROOM = "demo/main:README.md"


@pytest.fixture
async def two_nodes(repos: Path, tmp_path: Path) -> AsyncIterator[list[CollabServer]]:
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    servers = [
        CollabServer(
            make_config(
                repos,
                tmp_path / f"node{i}",
                redis=redis.url,
                node_id=f"n{i}",
                commit_idle=60.0,  # the test commits itself
                commit_max_lag=60.0,
                ref_poll=3600.0,
            )
        )
        for i in range(2)
    ]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.stop()
        redis.stop()


def git(repos: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(repos / "demo"), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_a_node_stalled_while_it_writes_a_commit_keeps_no_other_node_waiting(
    two_nodes: list[CollabServer],
    repos: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Node a's commit stalls while it writes its objects, and a renews nothing meanwhile
    (a stopped process): once its lease expires, node b takes it and commits the shared
    text, a still stalled. When a goes on, its late move is refused (the ref stays at b's
    commit), logged as a warning without a traceback, and its next commit goes through."""
    a, b = two_nodes
    assert a.cluster is not None
    monkeypatch.setattr(fence, "FENCE_WAIT", 1.0)  # (a write held up past it: FenceBusy)
    monkeypatch.setattr(a.cluster.leases, "ttl", 0.5)

    async def stopped(_grant: Grant) -> bool:
        await asyncio.sleep(3600)
        return False

    monkeypatch.setattr(a.cluster.leases, "renew", stopped)
    writing, go_on = threading.Event(), threading.Event()
    write_pack = commits.write_pack

    def stalled(store: object, objects: Sequence[object]) -> str:
        if not writing.is_set():  # the first write: node a's commit
            writing.set()
            go_on.wait(60)
        return write_pack(store, objects)  # type: ignore[arg-type]

    monkeypatch.setattr(commits, "write_pack", stalled)
    caplog.set_level(logging.INFO, logger="collab")
    try:
        async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
            doc_a, doc_b = await ann.open(ROOM), await bob.open(ROOM)
            # their own branches made (from main: a commit of it) before anyone types
            await until(lambda: git(repos, "branch", "--list", "people/*").count("\n") == 1)
            doc_a.insert(0, "ann typed;")
            await ann.flush()
            sync_a, sync_b = await a.git.branch("demo", "main"), await b.git.branch("demo", "main")
            late = asyncio.create_task(sync_a._background_flush())
            await until(writing.is_set)
            doc_b.insert(0, "bob typed;")
            await bob.flush()
            await until(lambda: str(doc_a) == str(doc_b))
            committed = await sync_b.flush_everywhere()  # a's lease expires meanwhile
            assert not go_on.is_set() and not late.done()  # a is still writing
            assert git(repos, "show", "main:README.md").startswith("bob typed;ann typed;")
            go_on.set()
            await late
            assert git(repos, "rev-parse", "main") == committed.decode()  # a's move refused
            refused = [r for r in caplog.records if "lease over" in r.getMessage()]
            assert refused and all(r.levelno == logging.WARNING for r in refused)
            assert all(r.exc_info is None for r in refused)
            assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            doc_a.insert(0, "again;")
            await ann.flush()
            await sync_a.flush()
            assert git(repos, "show", "main:README.md") + "\n" == str(doc_a) == str(doc_b)
    finally:
        go_on.set()


async def test_a_write_held_up_by_a_stopped_fence_holder_is_refused_as_retryable(
    two_nodes: list[CollabServer], repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped while it holds main's fence (inside a ref move): a commit asked of
    a node meanwhile is refused with CONFLICT, to be tried again, not with INTERNAL; once
    the holder goes on, it is made."""
    monkeypatch.setattr(fence, "FENCE_WAIT", 0.5)
    _a, b = two_nodes
    async with Client(b.url, user="bob") as bob:
        doc = await bob.open(ROOM)
        await until(lambda: "people/bob-" in git(repos, "branch", "--list", "people/*"))
        doc.insert(0, "bob typed;")
        await bob.flush()
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys\n"
                "from gitsync.fence import current_fence, fenced\n"
                f"repo = {str(repos / 'demo')!r}\n"
                "with fenced(repo, 'main', current_fence(repo, 'main')):\n"
                "    print('held', flush=True)\n"
                "    sys.stdin.readline()\n",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(ClientError) as refused:
                await bob.commit("demo", "main")
            assert refused.value.code == ErrorCode.CONFLICT, refused.value
            assert "try again" in refused.value.message
        finally:
            holder.stdin.write("go on\n")
            holder.stdin.close()
            holder.wait()
            holder.stdout.close()
        await bob.commit("demo", "main")
        assert git(repos, "show", "main:README.md").startswith("bob typed;")
