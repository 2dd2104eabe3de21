"""One committer per branch: two nodes of a cluster (in this process, one real
``redis-server``, one repositories' directory) committing the same branch at once never both
move its ref from the same commit, and a node whose lease was taken over cannot move it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redisproc import RedisProcess
from servers import make_config

from collab import Client, CollabServer
from collab.bus.lease import Grant
from gitsync.fence import Fenced

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


def history(repos: Path) -> list[list[str]]:
    """Each commit of main with its parents, newest first (the git CLI's view)."""
    out = subprocess.run(
        ["git", "--git-dir", str(repos / "demo"), "rev-list", "--parents", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split() for line in out.splitlines()]


async def test_two_nodes_committing_one_branch_never_both_move_it(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    clients = [Client(server.url, user=f"u{i}") for i, server in enumerate(two_nodes)]
    try:
        for client in clients:
            await client.connect()
        docs = [await client.open(ROOM) for client in clients]
        made: list[bytes] = []
        for round_ in range(8):
            for i, doc in enumerate(docs):
                doc.insert(0, f"r{round_}n{i};")
            await asyncio.gather(*(client.flush() for client in clients))
            syncs = [await server.git.branch("demo", "main") for server in two_nodes]
            # both nodes commit the branch at the same moment
            heads = await asyncio.gather(*(sync.flush() for sync in syncs))
            made += heads
        commits = history(repos)
        parents = [c[1] for c in commits if len(c) == 2]
        assert len(parents) == len(set(parents))  # no two commits moved it from one head
        assert all(len(c) <= 2 for c in commits)  # and no merge was needed: one line
        on_main = {c[0] for c in commits}
        assert {head.decode() for head in made} <= on_main  # every commit made is on main
        text = subprocess.run(
            ["git", "--git-dir", str(repos / "demo"), "show", "main:README.md"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert text == str(docs[0]) == str(docs[1])
    finally:
        for client in clients:
            await client.close()


async def test_a_late_commit_under_a_lease_taken_over_is_refused(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    a, b = two_nodes
    async with Client(a.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(0, "first;")
        await ann.flush()
        sync_a = await a.git.branch("demo", "main")
        assert a.cluster is not None and b.cluster is not None
        stale = await a.cluster.leases.acquire("demo/main")
        assert stale is not None
        await a.cluster.leases.release(stale)  # as if it expired while node a stalled
        await (await b.git.branch("demo", "main")).flush()  # node b takes the lease: claims
        before = history(repos)
        doc.insert(0, "late;")
        await ann.flush()
        sync_a.dirty.setdefault("README.md", a.rooms.get_key(ROOM))  # type: ignore[arg-type]
        with pytest.raises(Fenced):
            await sync_a._commit(Grant(stale.name, stale.node_id, stale.token))
        assert history(repos) == before  # the ref did not move
        await sync_a.flush()  # under a lease of its own, node a commits the edit after all
        after = history(repos)
        assert len(after) == len(before) + 1
