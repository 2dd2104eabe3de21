"""``branch.delete`` in a cluster: refused while another node has a document of the branch
open, is opening one, or has edits of it not committed yet; a document opened on another
node while the branch is deleted waits, then finds no branch. Never a branch deleted under a
document that then writes it back, nor a rescue branch holding a copy of its edits. Two
nodes in this process, one real ``redis-server``, one repositories' directory."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gitcli import until
from redis.asyncio import Redis
from redisproc import RedisProcess
from servers import make_config

from collab import Client, ClientError, CollabServer
from collab.bus.keys import RedisKeys
from collab.bus.redis_lease import RedisLeases
from protocol.errors import ErrorCode
from protocol.names import DocId

TOPIC = "demo/topic:README.md"


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


def topics(repos: Path) -> list[str]:
    """The branches named ``topic`` or after it (a rescue branch: ``topic-rescued-...``)."""
    return git(repos, "for-each-ref", "--format=%(refname:short)", "refs/heads/topic*").split()


async def deleted_once_allowed(admin: Client, branch: str) -> None:
    """Ask for ``branch.delete`` until it is done; refused meanwhile (CONFLICT)."""
    async with asyncio.timeout(30):
        while True:
            try:
                await admin.call("branch.delete", repo="demo", name=branch)
                return
            except ClientError as exc:
                assert exc.code == ErrorCode.CONFLICT, exc
            await asyncio.sleep(0.2)


async def test_a_branch_whose_edits_another_node_has_not_committed_is_not_deleted(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """Bob typed in a document of topic on node b and closed it; node b has not committed
    his edits yet (another node holds the branch's lease), no one has the document open.
    Ann's ``branch.delete`` on node a is refused (CONFLICT: edits not yet committed), rather
    than deleting the branch under them (node b would write it back, and a rescue branch
    hold a copy of them). Once they are committed, the branch is deleted, and nothing is
    rescued."""
    a, b = two_nodes
    assert a.cluster is not None
    leases = a.cluster.leases
    assert isinstance(leases, RedisLeases)
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        await ann.call("branch.create", repo="demo", name="topic")
        doc = await bob.open(TOPIC)
        # his own branch made (from topic: a commit of it) before he types
        await until(lambda: "people/bob-" in git(repos, "branch", "--list", "people/*"))
        doc.insert(0, "typed on node b;")
        await bob.flush()
        busy = RedisLeases(leases.client, "n9", ttl=30.0, prefix=leases.prefix)
        while (held := await busy.acquire("demo/topic")) is None:  # as soon as it is free
            await asyncio.sleep(0.02)
        # another node is committing topic now
        await doc.close()
        await asyncio.sleep(1.5)  # node b's set of open branches no longer lists topic
        with pytest.raises(ClientError) as refused:
            await ann.call("branch.delete", repo="demo", name="topic")
        assert refused.value.code == ErrorCode.CONFLICT, refused.value
        assert "not yet committed" in refused.value.message
        assert topics(repos) == ["topic"]
        await busy.release(held)
        await deleted_once_allowed(ann, "topic")
        await asyncio.sleep(1.5)  # node b had nothing to write back
    assert topics(repos) == []


async def test_a_branch_a_document_is_being_opened_of_on_another_node_is_not_deleted(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """Bob's open of a document of topic on node b is under way (the branch looked at, the
    document loading) as ann deletes topic on node a: the deletion is refused (CONFLICT), as
    for an open document, rather than deleting the branch under the document about to open
    (typed in, node b would write the branch back). Bob's document opens, and what he types
    is committed on topic."""
    a, b = two_nodes
    loading, go_on = asyncio.Event(), asyncio.Event()

    async def slowly(doc_id: DocId) -> None:
        if str(doc_id) == TOPIC:
            loading.set()
            await go_on.wait()

    b.rooms.before_load.append(slowly)  # last: once its branch was looked at
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        await ann.call("branch.create", repo="demo", name="topic")
        opening = asyncio.create_task(bob.open(TOPIC))
        await loading.wait()
        try:
            with pytest.raises(ClientError) as refused:
                await ann.call("branch.delete", repo="demo", name="topic")
        finally:
            go_on.set()
        assert refused.value.code == ErrorCode.CONFLICT, refused.value
        assert "open documents (on node n1)" in refused.value.message
        doc = await opening
        doc.insert(0, "typed on node b;")
        await bob.flush()
        await bob.commit("demo", "topic")
    assert git(repos, "show", "topic:README.md").startswith("typed on node b;")
    assert topics(repos) == ["topic"]


async def test_a_document_opened_on_another_node_during_a_deletion_waits_for_it(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """From its start, a deletion of topic on node a holds every node's opens of topic's
    documents: bob's open on node b waits for the deletion to end, then finds no branch
    (4004). (Had node b said it was opening the document before it saw the hold, the
    deletion would be refused, and the document opened: never both.)"""
    a, b = two_nodes
    assert a.cluster is not None
    client = Redis.from_url(a.cluster.url)
    try:
        async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
            await ann.call("branch.create", repo="demo", name="topic")
            deleting = asyncio.create_task(ann.call("branch.delete", repo="demo", name="topic"))
            await until(lambda: client.exists(RedisKeys().opens_held("demo/topic")))
            opening = asyncio.create_task(bob.open(TOPIC))
            await asyncio.wait([opening])
            assert deleting.done()  # the open waited for the deletion
            if deleting.exception() is None:
                assert isinstance(opening.exception(), ClientError)
                assert opening.exception().code == ErrorCode.NOT_FOUND  # type: ignore[union-attr]
                assert topics(repos) == []
            else:  # (node b's beat came between its open's start and its look at the hold)
                assert opening.exception() is None
                assert topics(repos) == ["topic"]
    finally:
        await client.aclose()


async def test_a_text_git_refuses_does_not_keep_a_branch_from_being_deleted_in_a_cluster(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """In a cluster too, a document whose text git's fsck refuses (never committed) does not
    count as edits not yet committed: the branch is deleted, the text kept on a rescue
    branch that says who deleted it."""
    a, _b = two_nodes
    async with Client(a.url, user="ann") as ann:
        await ann.call("branch.create", repo="demo", name="topic")
        modules = await ann.open("demo/topic:.gitmodules")
        modules.insert(0, '[submodule "x"]\n\tpath = x\n\turl = --upload-pack=touch\n')
        await ann.flush()
        await ann.commit("demo", "topic")  # held: not committed
        await modules.close()
        await until(lambda: a.rooms.get_key("demo/topic:.gitmodules") is None)
        await ann.call("branch.delete", repo="demo", name="topic")
    [rescued] = topics(repos)
    assert rescued.startswith("topic-rescued-")
    assert "deleted by ann (branch.delete)" in git(repos, "log", "-1", "--format=%B", rescued)
