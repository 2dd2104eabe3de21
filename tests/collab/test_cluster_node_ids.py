"""A node's id is held by one process at a time: ``collab serve --redis`` nodes on a real
``redis-server``, two started with the same ``--node-id`` (a copy-pasted unit, a reused
host name), one killed and restarted at once under its id, one paused until another took
its id; and, on the bus, the entries and cursors of another process under the same id."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from buslistener import Heard
from gitcli import until
from redis.asyncio import Redis
from redisproc import RedisProcess
from serverproc import ServerProcess

from collab import Client
from collab.bus.keys import RedisKeys
from collab.bus.nodes import NodeIdTaken
from collab.bus.redis import RedisBus
from collab.store.redis_store import RedisStore

ROOM = "demo/main:README.md"
PREFIX = "ids:"


def node(
    repos: Path, tmp_path: Path, redis: RedisProcess, name: str, node_id: str
) -> ServerProcess:
    data = tmp_path / name / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    extra = ("--redis", redis.url, "--node-id", node_id, "--commit-idle", "0.3")
    return ServerProcess(repos, data, extra_args=extra)


async def test_a_second_process_with_a_nodes_id_refuses_to_start(
    repos: Path, tmp_path: Path, redis_server: RedisProcess, redis_client: Redis
) -> None:
    first = node(repos, tmp_path, redis_server, "first", "web")
    second = node(repos, tmp_path, redis_server, "second", "web")
    await first.start()
    try:
        with pytest.raises(RuntimeError, match="server exited"):
            await second.start()
        assert second.proc is not None and await second.proc.wait() == 2
        said = second.log.read_text()
        assert "node id 'web' is in use by another running node" in said
        # the first one serves on, as itself
        async with Client(first.url, user="ann") as ann:
            doc = await ann.open(ROOM)
            doc.insert(0, "still served;")
            await ann.flush()
    finally:
        await first.stop()
        await second.stop()


async def test_a_node_killed_and_restarted_at_once_starts_and_its_old_cursors_go(
    repos: Path, tmp_path: Path, redis_server: RedisProcess, redis_client: Redis
) -> None:
    victim = node(repos, tmp_path, redis_server, "victim", "n0")
    other = node(repos, tmp_path, redis_server, "other", "n1")
    await asyncio.gather(victim.start(), other.start())
    try:
        x = Client(victim.url, user="xavier", min_backoff=30, max_backoff=30)
        await x.connect()
        dx = await x.open(ROOM)
        dx.set_awareness({"cursor": {"index": 1}})
        async with Client(other.url, user="yolanda") as y:
            dy = await y.open(ROOM)
            await dy.wait_for(lambda _t: dx.client_id in dy.awareness, timeout=10)
            await victim.kill()
            await x.close()  # its tab is closed meanwhile: it never comes back
            await victim.start()  # as systemd does: at once, under the same id
            # the restarted process is another one: the cursors the dead one relayed go
            await dy.wait_for(lambda _t: dx.client_id not in dy.awareness, timeout=15)
            async with Client(victim.url, user="zed") as z:  # and the node serves
                dz = await z.open(ROOM)
                dz.insert(0, "after the restart;")
                await dy.wait_for(lambda t: "after the restart;" in t, timeout=10)
    finally:
        await asyncio.gather(victim.stop(), other.stop())


async def test_a_node_whose_id_another_process_took_while_it_was_paused_stops(
    repos: Path, tmp_path: Path, redis_server: RedisProcess, redis_client: Redis
) -> None:
    paused = node(repos, tmp_path, redis_server, "paused", "web")
    successor = node(repos, tmp_path, redis_server, "successor", "web")
    await paused.start()
    try:
        assert paused.proc is not None
        paused.proc.send_signal(signal.SIGSTOP)
        # its key lapses: a process started under its id now takes it (after waiting out
        # what is left of the key)
        await successor.start()
        paused.proc.send_signal(signal.SIGCONT)
        async with asyncio.timeout(20):
            assert await paused.proc.wait() == 2
        said = paused.log.read_text()
        assert "took node id 'web'" in said and "stops serving as 'web'" in said
        raw = await redis_client.get(RedisKeys().node("web"))  # the successor's key, left alone
        assert raw is not None
        async with Client(successor.url, user="ann") as ann:
            doc = await ann.open(ROOM)
            doc.insert(0, "served by the successor;")
            await ann.flush()
    finally:
        if paused.proc is not None and paused.proc.returncode is None:
            paused.proc.send_signal(signal.SIGCONT)
        await asyncio.gather(paused.stop(), successor.stop())


async def test_another_processs_entries_under_the_same_node_id_are_delivered(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    """A node's own entries are the ones its own process wrote: an earlier (or displaced)
    process under the same id is another writer, whose updates the node must take."""
    bus = RedisBus(redis_server.url, "web", prefix=PREFIX, heartbeat_s=0.1)
    mine = RedisStore(redis_server.url, node_id=bus.author, prefix=PREFIX)
    theirs = RedisStore(redis_server.url, node_id="web#0123456789abcdef", prefix=PREFIX)
    heard = Heard()
    await bus.start()
    await mine.start()
    await theirs.start()
    try:
        bus.watch("doc", 0, heard)
        await mine.append("doc", b"mine")
        await theirs.append("doc", b"theirs")
        await until(lambda: bool(heard.updates.get("doc")), 15, "the other process's entry")
        await asyncio.sleep(0.2)
        assert heard.updates["doc"] == [(2, b"theirs")]
    finally:
        await theirs.stop()
        await mine.stop()
        await bus.stop()


async def test_a_start_waits_out_a_dead_processs_key_and_refuses_a_live_ones(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    keys = RedisKeys(PREFIX)
    dead = json.dumps({"at": 0, "incarnation": "dead"})
    await redis_client.set(keys.node("web"), dead, px=1_000)  # a process killed a moment ago
    bus = RedisBus(redis_server.url, "web", prefix=PREFIX, node_ttl_ms=1_000, heartbeat_s=0.1)
    started = asyncio.get_running_loop().time()
    await bus.start()
    try:
        assert asyncio.get_running_loop().time() - started < 2.0
        about = json.loads(await redis_client.get(keys.node("web")) or b"{}")
        assert about["incarnation"] == bus.incarnation
        twin = RedisBus(redis_server.url, "web", prefix=PREFIX, node_ttl_ms=1_000)
        with pytest.raises(NodeIdTaken, match="'web'"):
            await twin.start()
        assert not twin.healthy
    finally:
        await bus.stop()
    assert await redis_client.get(keys.node("web")) is None


async def test_a_node_seen_with_another_incarnation_is_reported_gone_once(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    """The cursors relayed by a node's previous process go when a new process under its id
    is seen, by its key or by its first awareness message, whichever comes first; that new
    process's own cursors stay."""
    keys = RedisKeys(PREFIX)
    watcher = RedisBus(redis_server.url, "b", prefix=PREFIX, heartbeat_s=0.1)
    heard = Heard()
    await redis_client.set(keys.node("a"), json.dumps({"incarnation": "aaaa"}), px=60_000)
    await watcher.start()
    watcher.watch("doc", 0, heard)
    try:
        while not heard.awareness:  # until the watcher's subscription is in place
            await redis_client.publish(keys.awareness("doc"), b"a#aaaa\0cursor 1")
            await asyncio.sleep(0.05)
        heard.awareness.clear()
        # restarted: its first message comes before any beat of the watcher sees its key
        await redis_client.publish(keys.awareness("doc"), b"a#bbbb\0cursor 2")
        await until(lambda: len(heard.awareness) == 1, 15, "the second cursor")
        assert heard.gone == ["a"]
        await asyncio.sleep(0.5)  # beats that still see the previous process's key
        await redis_client.publish(keys.awareness("doc"), b"a#aaaa\0a late cursor 1")
        await redis_client.set(keys.node("a"), json.dumps({"incarnation": "bbbb"}), px=60_000)
        await asyncio.sleep(0.5)  # beats that see the key of the same new process
        assert heard.gone == ["a"]
        await redis_client.set(keys.node("a"), json.dumps({"incarnation": "cccc"}), px=60_000)
        await until(lambda: len(heard.gone) == 2, 15, "the third process seen by its key")
        assert heard.awareness == [("doc", "a", b"cursor 2")]
    finally:
        await watcher.stop()


async def test_another_processs_cursors_under_the_same_node_id_are_not_relayed(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    """The awareness of another process under this node's id (a paused one that was
    displaced and wakes before it notices, a previous one's late message) is not taken for a
    remote node's: no node-gone would ever drop those cursors, this node's own id being
    never reported gone to itself. The other nodes' cursors still come."""
    keys = RedisKeys(PREFIX)
    bus = RedisBus(redis_server.url, "web", prefix=PREFIX, heartbeat_s=0.1)
    heard = Heard()
    await bus.start()
    bus.watch("doc", 0, heard)
    try:
        while not heard.awareness:  # until the subscription is in place
            await redis_client.publish(keys.awareness("doc"), b"other#abcd\0ready")
            await asyncio.sleep(0.05)
        heard.awareness.clear()
        await redis_client.publish(keys.awareness("doc"), b"web#0123456789abcdef\0ghost")
        await redis_client.publish(keys.awareness("doc"), b"other#abcd\0cursor")
        await until(lambda: ("doc", "other", b"cursor") in heard.awareness, 15, "the cursor")
        await asyncio.sleep(0.2)
        assert heard.awareness == [("doc", "other", b"cursor")]
    finally:
        await bus.stop()
