"""The listing of a cluster's nodes, with a real ``redis-server``: what each node says of
itself, read the same way by the nodes and by ``collab cluster status``; and a node seen
alive only once, between two beats of a watcher, reported gone all the same."""

from __future__ import annotations

import asyncio

from buslistener import Heard
from gitcli import until
from redis.asyncio import Redis
from redisproc import RedisProcess

from collab.bus.keys import RedisKeys
from collab.bus.nodes import read_nodes
from collab.bus.redis import RedisBus
from collab.cli.cluster_commands import cluster_status

PREFIX = "n:"


async def test_each_live_node_is_read_with_its_description(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    a = RedisBus(redis_server.url, "a", prefix=PREFIX)
    a.describe = lambda: {"rooms": 3, "workers": 2}
    await a.start()
    keys = RedisKeys(PREFIX)
    await redis_client.set(keys.node("garbled"), b"not json", px=60_000)
    try:
        found = await read_nodes(redis_client, keys)
        assert sorted(found) == ["a", "garbled"]
        assert found["a"]["rooms"] == 3 and found["a"]["workers"] == 2
        assert found["garbled"] == {}  # a value that says nothing leaves the node listed
        status = await cluster_status(redis_server.url, PREFIX)
        assert [node["node"] for node in status["nodes"]] == ["a", "garbled"]
        assert status["nodes"][0]["rooms"] == 3
    finally:
        await a.stop()
    assert sorted(await read_nodes(redis_client, keys)) == ["garbled"]  # a stopped node is gone


async def test_a_node_listed_between_two_beats_is_reported_gone(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    watcher = RedisBus(redis_server.url, "a", prefix=PREFIX, heartbeat_s=1.0)
    beats = 0

    def describe() -> dict[str, object]:
        nonlocal beats
        beats += 1
        return {}

    watcher.describe = describe
    await watcher.start()
    heard = Heard()
    watcher.watch("doc", 0, heard)
    try:
        seen = beats
        await until(lambda: beats > seen)  # a beat now: the next one is a second away
        await asyncio.sleep(0.05)  # its listing of the nodes is done too
        # node b's key, as its start writes it and its stop deletes it (a real node's start
        # and stop may outlast a beat on a loaded machine)
        brief = RedisKeys(PREFIX).node("b")
        await redis_client.set(brief, b"{}", px=60_000)
        assert await watcher.nodes() == ["a", "b"]  # asked between two beats (`/healthz`)
        await redis_client.delete(brief)
        assert beats == seen + 1, "a beat came between: the test proves nothing"
        await until(lambda: "b" in heard.gone)
        assert heard.gone == ["b"]
    finally:
        await watcher.stop()


async def test_a_node_is_described_healthy_from_its_first_beat(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    """Its key, written at start, says the node is healthy (``collab cluster status`` showed
    a node that just started as degraded until its next beat)."""
    a = RedisBus(redis_server.url, "a", prefix=PREFIX, heartbeat_s=60.0)
    a.describe = lambda: {"healthy": a.healthy}
    await a.start()
    try:
        found = await read_nodes(redis_client, RedisKeys(PREFIX))
        assert found["a"]["healthy"] is True
    finally:
        await a.stop()


async def test_a_node_back_after_it_was_taken_for_gone_is_asked_for_its_peers_cursors(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    """Node b's key lapses (b was paused longer than its key lives) and node a reports it
    gone, dropping the cursors it relayed; when b beats again, a asks b, on each document
    it watches, for its peers' states (they came back only with the clients' renewals)."""
    a = RedisBus(redis_server.url, "back-a", prefix=PREFIX, heartbeat_s=0.2)
    b = RedisBus(redis_server.url, "back-b", prefix=PREFIX, heartbeat_s=60.0)
    await a.start()
    await b.start()
    on_a, on_b = Heard(), Heard()
    a.watch("doc", 0, on_a)
    b.watch("doc", 0, on_b)
    try:
        await until(lambda: "back-b" in a._live)
        await redis_client.delete(RedisKeys(PREFIX).node("back-b"))  # lapsed
        await until(lambda: "back-b" in on_a.gone)
        asked = len([heard for heard in on_b.awareness if heard == ("doc", "back-a", b"")])
        await b._beat()  # (as its heartbeat does once it goes on): back
        await until(lambda: "back-b" in a._live, timeout=10)
        await until(lambda: on_b.awareness.count(("doc", "back-a", b"")) > asked, timeout=10)
    finally:
        await b.stop()
        await a.stop()
