"""One committer per branch: two nodes of a cluster (in this process, one real
``redis-server``, one repositories' directory) committing the same branch at once never both
move its ref from the same commit, and a node whose lease was taken over cannot move it."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dulwich.repo import Repo
from gitcli import until
from pycrdt import Doc, Text
from redisproc import RedisProcess
from servers import make_config

from collab import Client, ClientError, CollabServer
from collab.bus.lease import Grant, LeaseLost
from collab.bus.redis_lease import RedisLeases
from collab.live.origin import Origin
from collab.live.room import RoomFailed
from gitsync.fence import Fenced
from gitsync.objects.commits import commit_changes, set_committing
from protocol.errors import ErrorCode

T = TypeVar("T")
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
                ref_poll=3600.0,  # and catches up with moved refs itself
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


def git(repos: Path, *args: str, env: dict[str, str] | None = None, text: str = "") -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(repos / "demo"), *args],
        capture_output=True,
        text=True,
        input=text,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def outside_commit(repos: Path, tmp_path: Path, path: str, content: str) -> str:
    """Commit ``content`` to ``path`` on main with the git CLI, as a push would."""
    env = {
        **os.environ,
        "GIT_INDEX_FILE": str(tmp_path / "outside-index"),
        "GIT_AUTHOR_NAME": "Outside",
        "GIT_AUTHOR_EMAIL": "outside@example.com",
        "GIT_COMMITTER_NAME": "Outside",
        "GIT_COMMITTER_EMAIL": "outside@example.com",
    }
    blob = git(repos, "hash-object", "-w", "--stdin", text=content)
    for _attempt in range(20):  # a node may commit meanwhile: on top of its commit, then
        parent = git(repos, "rev-parse", "main")
        git(repos, "read-tree", parent, env=env)
        git(repos, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = git(repos, "write-tree", env=env)
        commit = git(repos, "commit-tree", tree, "-p", parent, "-m", "outside", env=env)
        moved = subprocess.run(
            [
                "git",
                "--git-dir",
                str(repos / "demo"),
                "update-ref",
                "refs/heads/main",
                commit,
                parent,
            ],
            capture_output=True,
        )
        if moved.returncode == 0:
            return commit
    raise AssertionError("main kept moving")


async def hold_lease(server: CollabServer, ttl: float) -> tuple[RedisLeases, Grant]:
    """The branch's lease, taken by another node ("n9", committing the branch) for ``ttl``
    seconds as soon as no node holds it."""
    assert server.cluster is not None
    leases = server.cluster.leases
    assert isinstance(leases, RedisLeases)
    busy = RedisLeases(leases.client, "n9", ttl=ttl, prefix=leases.prefix)
    while (held := await busy.acquire("demo/main")) is None:
        await asyncio.sleep(0.02)
    return busy, held


async def waiting_for_the_lease(server: CollabServer, repos: Path, call: Awaitable[T]) -> T:
    """``call``'s result, made while another node holds main's lease: it waits, main
    unmoved, until that node releases it."""
    busy, held = await hold_lease(server, ttl=30.0)
    before = git(repos, "rev-parse", "main")
    task = asyncio.ensure_future(call)
    await asyncio.sleep(1.5)
    assert not task.done()
    assert git(repos, "rev-parse", "main") == before
    await busy.release(held)
    return await asyncio.wait_for(task, 15)


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


async def test_a_move_on_top_of_another_nodes_commit_is_merged_from_that_commit(
    two_nodes: list[CollabServer], repos: Path, tmp_path: Path
) -> None:
    """Node a commits the shared text; someone pushes on top of that commit; node b, which
    synced last before a's commit, merges the push from a's commit (the documents hold it),
    not from its own older one: a's edits are not merged into the documents again."""
    a, b = two_nodes
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        doc_a, doc_b = await ann.open(ROOM), await bob.open(ROOM)
        sync_a, sync_b = await a.git.branch("demo", "main"), await b.git.branch("demo", "main")
        doc_a.insert(len(str(doc_a)), "line y\n")
        await ann.flush()
        await until(lambda: str(doc_b) == str(doc_a))
        await sync_a.flush()
        doc_a.insert(len(str(doc_a)), "line z\n")
        await ann.flush()
        await until(lambda: str(doc_b) == str(doc_a))
        expected = str(doc_a)
        outside_commit(repos, tmp_path, "src/app.py", "print('changed')\n")
        await sync_b.catch_up()
        await bob.flush()
        await asyncio.sleep(0.3)
        assert str(doc_b) == str(doc_a) == expected
        assert "<<<<<<<" not in str(doc_b)


@pytest.mark.parametrize("stopped", ["before merging", "at the record"])
async def test_a_node_whose_lease_expired_while_it_merged_a_move_cannot_record_it(
    two_nodes: list[CollabServer],
    repos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stopped: str,
) -> None:
    """Node a merges a push into the documents so slowly, and without renewing its lease
    (a paused process), that the lease expires and node b merges the push and commits. A
    notices before it changes a document (``LeaseLost``); and were it not to, its late
    record of the push as synced is refused (``Fenced``), so the branch's synced commit
    does not go back behind b's commit."""
    a, b = two_nodes
    assert a.cluster is not None and b.cluster is not None
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        doc_a, doc_b = await ann.open(ROOM), await bob.open(ROOM)
        sync_a, sync_b = await a.git.branch("demo", "main"), await b.git.branch("demo", "main")
        monkeypatch.setattr(a.cluster.leases, "ttl", 0.5)
        monkeypatch.setattr(b.cluster.leases, "ttl", 0.5)

        async def paused(_grant: Grant) -> bool:
            await asyncio.sleep(3600)
            return False

        monkeypatch.setattr(a.cluster.leases, "renew", paused)
        if stopped == "at the record":
            monkeypatch.setattr(sync_a, "check_lease", lambda: None)
        merge = sync_a.merge_into_live

        merging: list[object] = []

        async def slowly(changes: object, *args: object) -> None:
            merging.append(changes)
            await asyncio.sleep(1.5)
            await merge(changes, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(sync_a, "merge_into_live", slowly)
        if stopped == "at the record":  # a file no one has open: nothing to merge twice
            outside_commit(repos, tmp_path, "src/app.py", "print('changed')\n")
        else:  # the open one: a merging it after b did would double the push in it
            pushed = git(repos, "show", "main:README.md") + "\npushed line\n"
            outside_commit(repos, tmp_path, "README.md", pushed)
        while True:  # until a merges under its lease (another node may hold it a moment)
            late = asyncio.create_task(sync_a.catch_up())
            while not merging and not late.done():
                await asyncio.sleep(0.01)
            if merging:
                break
            await late
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.8)  # a's lease has expired; b takes it
        await sync_b.catch_up()
        doc_b.insert(len(str(doc_b)), "bob\n")
        await bob.flush()
        await until(lambda: str(doc_a) == str(doc_b))
        committed = await sync_b.flush()
        with pytest.raises(Fenced if stopped == "at the record" else LeaseLost):
            await late
        assert git(repos, "rev-parse", "refs/collab/synced/main") == committed.decode()
        monkeypatch.setattr(sync_a, "merge_into_live", merge)
        doc_a.insert(len(str(doc_a)), "ann\n")
        await ann.flush()
        await until(lambda: str(doc_a) == str(doc_b))
        await sync_a.flush()
        await asyncio.sleep(0.3)
        assert "<<<<<<<" not in str(doc_b)
        assert git(repos, "show", "main:README.md") + "\n" == str(doc_b)
        if stopped == "before merging":
            assert str(doc_b).count("pushed line") == 1


async def test_a_room_stays_loaded_until_its_edits_are_committed(
    two_nodes: list[CollabServer], repos: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Node a's last client leaves while another node holds the branch's lease: the room
    stays loaded (it takes the other nodes' edits) until a has committed it, so that the
    text a commits is never older than what git already holds. That is planned, not a
    failure: it is logged at INFO, never as an error."""
    caplog.set_level(logging.INFO, logger="collab")
    a, b = two_nodes
    async with Client(b.url, user="bob") as bob:
        doc_b = await bob.open(ROOM)
        busy, held = await hold_lease(a, 30.0)
        async with Client(a.url, user="ann") as ann:
            doc_a = await ann.open(ROOM)
            doc_a.insert(len(str(doc_a)), "ann\n")
            await ann.flush()
            await until(lambda: str(doc_b) == str(doc_a))
        await asyncio.sleep(1.0)  # past the grace period: a tried to unload it
        assert a.rooms.get_key(ROOM) is not None
        await until(lambda: any("kept loaded" in r.getMessage() for r in caplog.records), 20)
        assert a.rooms.get_key(ROOM) is not None
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        doc_b.insert(len(str(doc_b)), "bob\n")
        await bob.flush()
        await busy.release(held)
        await until(lambda: a.rooms.get_key(ROOM) is None)  # committed, then unloaded
        await (await b.git.branch("demo", "main")).flush()
        assert git(repos, "show", "main:README.md") + "\n" == str(doc_b)


async def test_a_stopping_node_waits_for_the_lease_to_commit(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """A node stopped while another node holds the branch's lease for a moment still makes
    its last commit: it tries again until the lease is free."""
    a, _b = two_nodes
    await hold_lease(a, 2.0)  # another node is committing the branch, for up to 2 s
    async with Client(a.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(len(str(doc)), "last words\n")
        await ann.flush()
    await a.stop()
    assert "last words" in git(repos, "show", "main:README.md")


async def test_commits_go_on_after_redis_lost_the_lease_counter(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """Redis lost the branch's fencing counter (restarted without its data, say): the next
    grants' tokens are below the fence the branch has seen. The node raises the counter
    past the fence and commits, instead of being refused for good."""
    a, _b = two_nodes
    assert a.cluster is not None
    leases = a.cluster.leases
    async with Client(a.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        sync = await a.git.branch("demo", "main")
        for round_ in range(3):  # the fence rises with each commit's grant
            doc.insert(0, f"r{round_};")
            await ann.flush()
            await sync.flush()
        assert isinstance(leases, RedisLeases)
        await leases.client.delete(f"{leases.prefix}fence:demo/main")  # the counter is lost
        doc.insert(0, "after;")
        await ann.flush()
        for _attempt in range(20):
            await sync.flush()
            if not sync.dirty:
                break
            await asyncio.sleep(0.1)
        assert git(repos, "show", "main:README.md").startswith("after;")


async def test_a_merge_waits_for_its_targets_lease(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """A merge into a branch another node is committing waits for that node's lease (the
    branch's one committer), then merges into the branch and its live documents."""
    node = two_nodes[0]
    async with Client(node.url, user="ann") as ann:
        await ann.call("branch.create", repo="demo", name="topic")
        doc = await ann.open("demo/topic:README.md")
        doc.insert(0, "from topic;")
        await ann.flush()
        await ann.commit("demo", "topic")
        result = await waiting_for_the_lease(node, repos, ann.merge("demo", "topic", "main"))
        assert result["applied"]
        assert git(repos, "show", "main:README.md").startswith("from topic;")
        main = await ann.open("demo/main:README.md")
        await main.wait_for(lambda text: text.startswith("from topic;"))


async def test_a_file_another_node_made_no_text_is_closed_here_too_not_written_over(
    two_nodes: list[CollabServer], repos: Path, tmp_path: Path
) -> None:
    """A push makes a file binary while both nodes have its document open and bob typed in
    it. The node that merges the push closes its document of the file; the other closes its
    own copy once it takes the branch's lease (it adopts the first node's sync), and never
    commits the text over the binary file."""
    a, b = two_nodes
    path = "src/app.py"
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        doc_a = await ann.open(f"demo/main:{path}")
        doc_b = await bob.open(f"demo/main:{path}")
        doc_b.insert(0, "typed by bob;")
        await bob.flush()
        sync_a, sync_b = await a.git.branch("demo", "main"), await b.git.branch("demo", "main")
        binary = "\0\1\2 not text\n"
        pushed = outside_commit(repos, tmp_path, path, binary)

        async def both_closed() -> bool:  # whichever node merges the push, with its lease
            await sync_a.catch_up()
            await sync_b.flush()
            return doc_a.error is not None and doc_b.error is not None

        await until(both_closed, timeout=20)
        assert doc_a.error is not None and doc_b.error is not None
        assert doc_a.error.code == doc_b.error.code == 4013
        assert git(repos, "show", f"main:{path}") == binary.strip()
        assert git(repos, "rev-parse", "main") == pushed


async def test_an_edit_made_under_a_lease_taken_over_before_it_was_stored_is_refused(
    two_nodes: list[CollabServer],
) -> None:
    """A node changes a document under the branch's lease (a merge), but another node has
    taken the lease over by the time the update reaches Redis (this one was paused): the
    shared store refuses it, no peer of either node gets it, and the room reloads without
    it; the node holding the lease now makes the change instead."""
    a, b = two_nodes
    assert a.cluster is not None
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        doc_a, doc_b = await ann.open(ROOM), await bob.open(ROOM)
        doc_a.insert(0, "before;")
        await until(lambda: "before;" in str(doc_b))
        sync_a = await a.git.branch("demo", "main")
        grant = await sync_a.lease()
        assert grant is not None
        await a.cluster.leases.release(grant)  # expired, as for a paused process
        busy, held = await hold_lease(a, ttl=30.0)
        room = a.rooms.get_key(ROOM)
        assert room is not None
        late = room.edit(lambda text: text.insert(0, "late merge;"), origin=Origin.GIT, fence=grant)
        with pytest.raises(RoomFailed, match="FenceLost"):
            await late
        doc_a.insert(0, "after;")  # on the reloaded room, once ann is back
        await until(lambda: "after;" in str(doc_b) and "after;" in str(doc_a))
        assert "late merge;" not in str(doc_a) and "late merge;" not in str(doc_b)
        assert str(doc_a) == str(doc_b)
        await busy.release(held)


async def test_a_fork_commits_its_source_under_the_sources_lease(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """A fork commits the source's pending text first: under the source's lease, as every
    commit, or it would move the ref under the holder's feet, which would take the commit
    for a push and merge it into the documents a second time."""
    node = two_nodes[0]
    async with Client(node.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(0, "typed before the fork;")
        await ann.flush()
        assert await waiting_for_the_lease(node, repos, ann.fork("demo", "main", "topic")) == (
            "topic"
        )
        assert git(repos, "show", "main:README.md").startswith("typed before the fork;")
        assert git(repos, "rev-parse", "topic") == git(repos, "rev-parse", "main")
        topic = await ann.open("demo/topic:README.md")
        assert str(topic.text) == str(doc.text)


async def test_a_commit_a_dead_node_left_unrecorded_is_adopted_not_merged_again(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """A node killed after it moved the branch to its commit of the shared text, before it
    recorded it as synced: the next node to commit takes that commit as synced (the
    documents hold its text) instead of writing its own record over the dead node's and
    then merging that commit into the documents a second time."""
    node = two_nodes[0]
    async with Client(node.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        sync = await node.git.branch("demo", "main")
        doc.insert(0, "typed before the kill;")
        await ann.flush()
        with Repo(str(repos / "demo")) as repo:  # what the killed node had done
            commit_changes(
                repo,
                "main",
                {"README.md": str(doc).encode()},
                message="Edit README.md\n",
                author="Ann <ann@example.com>",
                expected=sync.synced,
                before_move=lambda made: set_committing(repo, "main", made),
            )
        doc.insert(0, "typed after;")
        await ann.flush()
        await sync.flush()
        committed = git(repos, "show", "main:README.md")
        assert committed == str(doc).strip() or committed == str(doc)
        assert committed.count("typed before the kill;") == 1 and "<<<<<<<" not in committed
        assert str(doc).count("typed before the kill;") == 1


async def test_a_document_deleted_while_another_node_holds_it_is_written_back(
    two_nodes: list[CollabServer],
) -> None:
    """A branch deleted as another node opens one of its documents (the deletion checks the
    nodes' open branches as of their last beat): that node writes the document's whole
    state into the shared log again, so that a node that loads it later has all of it."""
    a, b = two_nodes
    async with Client(b.url, user="bob") as bob:
        doc = await bob.open(ROOM)
        doc.insert(0, "typed before the deletion;")
        await bob.flush()
        assert a.store is not None
        await a.store.delete(ROOM)  # what deleting the branch does to its documents
        await asyncio.sleep(0.5)
        doc.insert(0, "typed after;")
        await bob.flush()
        async with Client(a.url, user="ann") as ann:
            fresh = await ann.open(ROOM)
            await fresh.wait_for(lambda text: text == str(doc), timeout=10)
        stored = await a.store.load(ROOM)
        assert stored is not None
        again: Doc[Any] = Doc()
        stored.apply_to(again)
        assert str(again.get("source", type=Text)) == str(doc)


async def test_a_commit_names_who_typed_on_every_node(
    two_nodes: list[CollabServer], repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits are the same whichever node makes them: one made by node a names bob, who
    typed on node b, beside ann, who typed on node a."""
    a, b = two_nodes
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        doc_a, doc_b = await ann.open(ROOM), await bob.open(ROOM)

        async def not_here(*_args: object, **_kwargs: object) -> None:
            return None  # node b makes no commit in this test: node a makes them all

        monkeypatch.setattr(await b.git.branch("demo", "main"), "_commit", not_here)
        doc_b.insert(0, "bob typed;")
        await bob.flush()
        await until(lambda: "bob typed;" in str(doc_a))
        doc_a.insert(0, "ann typed;")
        await ann.flush()
        sync_a = await a.git.branch("demo", "main")
        await sync_a.flush_patiently()
        assert git(repos, "show", "main:README.md").startswith("ann typed;bob typed;")
        for name in ("ann", "bob"):  # (node a may have committed bob's text before ann's)
            added = git(repos, "log", "-S", f"{name} typed;", "--format=%H", "main").split()
            names = git(
                repos, "log", "-1", "--format=%an%n%(trailers:key=Co-authored-by)", added[-1]
            )
            assert name in names, names
        # taken by that commit: the next one names only who typed since
        doc_a.insert(0, "again;")
        await ann.flush()
        await sync_a.flush_patiently()
        names = git(repos, "log", "-1", "--format=%an%n%(trailers:key=Co-authored-by)")
        assert "ann" in names and "bob" not in names, names


async def test_a_node_behind_the_shared_log_does_not_commit_its_older_text(
    two_nodes: list[CollabServer], repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node b stops receiving the other node's edits for a while (a paused process, a link
    to Redis down); meanwhile node a commits ann's. Bob types on node b: node b does not
    commit its copy, which lacks ann's edit and would take it out of the branch; it commits
    once ann's edit has arrived, with both."""
    a, b = two_nodes
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        doc_a, doc_b = await ann.open(ROOM), await bob.open(ROOM)
        room_b = b.rooms.get_key(ROOM)
        assert room_b is not None
        held: list[list[bytes]] = []
        deliver = room_b.receive_remote
        monkeypatch.setattr(room_b, "receive_remote", held.append)
        doc_a.insert(0, "ann typed;")
        await ann.flush()
        await (await a.git.branch("demo", "main")).flush_patiently()
        assert git(repos, "show", "main:README.md").startswith("ann typed;")
        doc_b.insert(0, "bob typed;")
        await bob.flush()
        sync_b = await b.git.branch("demo", "main")
        await sync_b.flush()
        assert ROOM.split(":")[1] in sync_b.dirty  # pending still
        assert git(repos, "show", "main:README.md").startswith("ann typed;")
        assert "bob typed;" not in git(repos, "show", "main:README.md")
        await until(lambda: held)
        monkeypatch.setattr(room_b, "receive_remote", deliver)
        for updates in held:
            room_b.receive_remote(updates)
        await sync_b.flush_patiently()
        text = git(repos, "show", "main:README.md")
        assert "ann typed;" in text and "bob typed;" in text, text
        for commit in git(repos, "rev-list", "main").split():  # no commit took ann's out
            shown = git(repos, "show", f"{commit}:README.md")
            assert "ann typed;" in shown or "bob typed;" not in shown, commit
    assert str(doc_b.text) == str(doc_a.text)


async def test_a_branch_deleted_on_one_node_is_let_go_by_the_others(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """Bob typed on node b, whose room of the document lingers after he closes it; ann
    deletes the branch on node a. Node b lets its room go without writing its history back
    to the shared store, so the branch made again under the name reads as its source, on
    both nodes and in git."""
    a, b = two_nodes
    key = "demo/topic:README.md"
    readme = git(repos, "show", "main:README.md")
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        await ann.call("branch.create", repo="demo", name="topic")
        doc = await bob.open(key)
        doc.insert(0, "old topic text;")
        await bob.flush()
        await bob.commit("demo", "topic")
        await doc.close()
        assert b.rooms.get_key(key) is not None  # lingering, in its grace period
        await ann.call("branch.delete", repo="demo", name="topic")
        await until(lambda: b.rooms.get_key(key) is None)
        await asyncio.sleep(1.5)  # past a beat: nothing was written back
        assert await a.store.keys("demo/topic:") == []
        await ann.call("branch.create", repo="demo", name="topic")
        for client in (bob, ann):
            again = await client.open(key)
            assert str(again.text).strip() == readme  # (git() strips what it prints)
            await again.close()
    assert git(repos, "show", "topic:README.md") == readme


async def test_a_fork_on_another_node_starts_with_the_edits_pending_on_the_first(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """A fork asked of a node that has none of the source's documents open still starts at
    a commit of the text typed on the other node: otherwise that text would be the fork's
    own change, and merging the fork back would conflict on it."""
    a, b = two_nodes
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        doc = await ann.open(ROOM)
        await until(lambda: "people/ann-" in git(repos, "branch", "--list", "people/*"))
        doc.insert(0, "typed on node a;")
        await ann.flush()  # stored, not committed (the nodes commit after a minute)
        assert "typed on node a;" not in git(repos, "show", "main:README.md")
        assert await bob.fork("demo", "main", "topic") == "topic"
        assert git(repos, "show", "topic:README.md") == str(doc.text).strip()  # (git() strips)
        assert git(repos, "rev-parse", "topic") == git(repos, "rev-parse", "main")
        topic = await bob.open("demo/topic:README.md")
        topic.insert(len(str(topic.text)), "\ntopic's own line\n")
        await bob.commit("demo", "topic")
        merged = await ann.merge("demo", "topic", "main")
        assert merged["applied"] and merged["conflicts"] == [], merged
        assert await doc.wait_for(lambda text: "topic's own line" in text)
        assert str(doc.text).count("typed on node a;") == 1


async def test_a_merge_log_and_fetch_on_another_node_hold_the_edits_pending_on_the_first(
    two_nodes: list[CollabServer], repos: Path, tmp_path: Path
) -> None:
    """A merge, a branch's log and a git fetch asked of a node that has none of the
    branch's documents open hold the edits typed on the other node so far, as they would
    on that node."""
    a, b = two_nodes
    git(repos, "branch", "topic", "main")
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        doc = await ann.open("demo/topic:README.md")
        # (opening it made ann's own branch from topic, committing topic first)
        await until(lambda: "people/ann-" in git(repos, "branch", "--list", "people/*"))
        doc.insert(0, "topic typed on node a;")
        await ann.flush()
        work = tmp_path / "clone"
        url = f"http://bob:x@127.0.0.1:{b.port}/git/demo.git"  # dev mode: any password
        await asyncio.to_thread(
            subprocess.run, ["git", "clone", "-q", "-b", "topic", url, str(work)], check=True
        )
        assert (work / "README.md").read_text().startswith("topic typed on node a;")
        doc.insert(0, "more;")
        await ann.flush()
        log = await bob.call("branch.log", repo="demo", branch="topic")
        assert log["head"] == git(repos, "rev-parse", "topic")
        assert git(repos, "show", "topic:README.md").startswith("more;topic typed on node a;")
        doc.insert(0, "and more;")
        await ann.flush()
        merged = await bob.merge("demo", "topic", "main")
        assert merged["applied"], merged
        shown = git(repos, "show", "main:README.md")
        assert shown.startswith("and more;more;topic typed on node a;"), shown


async def test_a_commit_names_who_typed_when_the_node_that_took_them_died_before_committing(
    two_nodes: list[CollabServer], repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that took a branch's authors from the shared store and died before its commit
    landed forgets no one: the next holder of the lease names them."""
    a, b = two_nodes
    async with Client(a.url, user="bob") as bob, Client(b.url, user="ann") as ann:
        doc_a, doc_b = await bob.open(ROOM), await ann.open(ROOM)

        async def not_here(*_args: object, **_kwargs: object) -> None:
            return None  # node a makes no commit: it dies in the middle of one

        monkeypatch.setattr(await a.git.branch("demo", "main"), "_commit", not_here)
        doc_a.insert(0, "bob typed;")
        await bob.flush()
        await until(lambda: "bob typed;" in str(doc_b))
        assert await a.store.take_authors("demo/main") == ["bob"]  # its commit began so
        await (await b.git.branch("demo", "main")).flush_patiently()
        assert git(repos, "show", "main:README.md").startswith("bob typed;")
        names = git(repos, "log", "-1", "--format=%an%n%(trailers:key=Co-authored-by)")
        assert names.split("\n")[0] == "bob", names


async def test_a_commit_names_only_who_wrote_its_files_and_leaves_the_others_to_theirs(
    two_nodes: list[CollabServer], repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice types in one file on node a, bob in another on node b. Node b's commit of
    bob's file names bob only; alice's file, committed later by node b (node a died before
    committing it), names alice, not the engine."""
    a, b = two_nodes
    app = "demo/main:src/app.py"

    async def not_here(*_args: object, **_kwargs: object) -> None:
        return None  # node a makes no commit: it dies first

    monkeypatch.setattr(await a.git.branch("demo", "main"), "_commit", not_here)
    async with Client(a.url, user="alice") as alice, Client(b.url, user="bob") as bob:
        await alice.join("demo")  # (their own branches first: making one commits main)
        await bob.join("demo")
        theirs = await alice.open(app)
        theirs.insert(0, "# alice typed\n")
        await alice.flush()
        mine = await bob.open(ROOM)
        mine.insert(0, "bob typed;")
        await bob.flush()
        sync_b = await b.git.branch("demo", "main")
        await sync_b.flush()  # (its continuous commit: of what is pending on node b)
        assert git(repos, "show", "main:README.md").startswith("bob typed;")
        assert not git(repos, "show", "main:src/app.py").startswith("# alice typed")
        names = git(repos, "log", "-1", "--format=%an%n%(trailers:key=Co-authored-by)")
        assert names.split("\n") == ["bob"], names
        async with Client(b.url, user="dave") as dave:
            await dave.open(app)  # (loaded on node b: its text is pending there)
            await sync_b.flush_patiently()
    assert git(repos, "show", "main:src/app.py").startswith("# alice typed\n")
    added = git(repos, "log", "-S", "# alice typed", "--format=%an", "main").split()
    assert added[-1] == "alice", added


async def test_a_branch_deleted_outside_while_open_on_another_node_keeps_a_clashing_name_out(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """``topic`` is deleted with git while bob types in it on node b; ann asks node a for
    ``topic/x``, a name git cannot hold beside it. Node a must not forget ``topic`` (its
    rescue would miss what bob types next on node b, which node b could then commit
    nowhere): the new name is refused, and node b's next commit restores ``topic`` with
    every line bob typed. (Asked before node b's next beat, which would list the branch as
    open there, the name is refused all the same.)"""
    a, b = two_nodes
    key = "demo/topic:README.md"
    async with Client(a.url, user="ann") as ann, Client(b.url, user="bob") as bob:
        await ann.call("branch.create", repo="demo", name="topic")
        doc = await bob.open(key)
        doc.insert(0, "bob 1;")
        await bob.flush()
        git(repos, "update-ref", "-d", "refs/heads/topic")  # (before node b's next beat)
        with pytest.raises(ClientError) as refused:
            await ann.call("branch.create", repo="demo", name="topic/x")
        assert refused.value.code == ErrorCode.CONFLICT
        assert "open on node" in refused.value.message
        doc.insert(0, "bob 2;")
        await bob.flush()
        await (await b.git.branch("demo", "topic")).flush_patiently()
    assert git(repos, "show", "topic:README.md").startswith("bob 2;bob 1;")


async def test_a_branch_made_again_under_the_name_of_one_deleted_outside_starts_as_its_source(
    two_nodes: list[CollabServer], repos: Path
) -> None:
    """``topic``, with alice's text committed and more pending, is deleted with git, then
    made again from ``other``: the new branch starts as ``other`` (the old documents' text
    was committed over it, dropping ``other``'s change); the old text not committed is kept
    on a rescue branch."""
    a = two_nodes[0]
    key = "demo/topic:README.md"
    async with Client(a.url, user="alice") as alice:
        await alice.call("branch.create", repo="demo", name="other")
        theirs = await alice.open("demo/other:README.md")
        theirs.insert(0, "carol's line on other\n")
        await alice.flush()
        await alice.commit("demo", "other")
        await theirs.close()
        await alice.call("branch.create", repo="demo", name="topic")
        doc = await alice.open(key)
        doc.insert(0, "alice committed\n")
        await alice.flush()
        await alice.commit("demo", "topic")
        old_head = git(repos, "rev-parse", "topic")
        doc.insert(0, "alice pending\n")
        await alice.flush()  # (left open: an unload would commit it, restoring the branch)
        git(repos, "update-ref", "-d", "refs/heads/topic")
        async with Client(a.url, user="ann") as ann:
            await ann.call("branch.create", repo="demo", name="topic", **{"from": "other"})
            again = await ann.open(key)
            assert str(again.text).startswith("carol's line on other\n")
            again.insert(0, "new topic\n")
            await ann.flush()
            await ann.commit("demo", "topic")
    assert git(repos, "show", "topic:README.md").startswith("new topic\ncarol's line on other\n")
    rescued = git(repos, "show", f"topic-rescued-{old_head[:7]}:README.md")
    assert rescued.startswith("alice pending\nalice committed\n")


async def test_a_file_changed_while_a_commit_takes_its_authors_names_its_writer(
    two_nodes: list[CollabServer], repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node a's commit asks Redis who wrote (an await); meanwhile bob's edit of another
    file, typed on node b, reaches node a's room of it. The commit holds that file too, and
    names bob (its files were listed before the take: his name was left out, and node b,
    finding the text committed, forgot him)."""
    a, b = two_nodes
    app = "demo/main:src/app.py"
    async with (
        Client(a.url, user="alice") as alice,
        Client(a.url, user="carol") as carol,
        Client(b.url, user="bob") as bob,
    ):
        for client in (alice, carol, bob):
            await client.join("demo")  # (their own branches first: making one commits main)
        mine = await alice.open(ROOM)
        watching = await carol.open(app)  # (node a has the file loaded)
        theirs = await bob.open(app)
        mine.insert(0, "alice typed;")
        await alice.flush()
        take = a.store.take_authors

        async def bob_types_first(*args: Any, **kwargs: Any) -> list[str]:
            theirs.insert(0, "# bob typed\n")
            await bob.flush()
            await watching.wait_for(lambda t: t.startswith("# bob typed"))
            return await take(*args, **kwargs)

        monkeypatch.setattr(a.store, "take_authors", bob_types_first)
        await (await a.git.branch("demo", "main")).flush()
        monkeypatch.undo()
        await (await b.git.branch("demo", "main")).flush_patiently()
    added = git(repos, "log", "-S", "# bob typed", "--format=%H", "main").split()
    names = git(repos, "log", "-1", "--format=%an%n%(trailers:key=Co-authored-by)", added[-1])
    assert "bob" in names, names
