"""The branches each node has open documents of, with a real ``redis-server``: kept in a set
of the node's own beside its key (``RedisKeys.open_branches``), changed only by the branches
opened and closed, read by ``branch.delete``'s check (``Cluster.open_elsewhere``) for the
live nodes only, and written again when Redis loses it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import AsyncIterator

from gitcli import until
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redisproc import RedisProcess

from collab.bus.cluster import Cluster
from collab.bus.keys import RedisKeys
from collab.bus.redis import RedisBus
from collab.cli.cluster_commands import cluster_status

PREFIX = "o:"
KEYS = RedisKeys(PREFIX)


def fast(bus: RedisBus, ttl_ms: int = 600) -> RedisBus:
    """Beats ten times a second, gone ``ttl_ms`` after its last."""
    bus.heartbeat_s = 0.1
    bus.node_ttl_ms = ttl_ms
    return bus


@contextlib.asynccontextmanager
async def cluster_node(
    url: str, node_id: str, opened: set[str], ttl_ms: int = 600
) -> AsyncIterator[Cluster]:
    """A node's cluster state (no server), whose open branches are ``opened``."""
    node = Cluster(url, node_id, prefix=PREFIX)
    fast(node.bus, ttl_ms)
    node.bus.open_branches = lambda: opened
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def members(client: Redis, key: str) -> set[str]:
    return {m.decode() for m in await client.smembers(key)}  # type: ignore[misc]


async def net_input(client: Redis) -> int:
    """How many bytes Redis has received from its clients, all of them."""
    return int((await client.info("stats"))["total_net_input_bytes"])


async def test_a_beat_costs_the_same_whatever_the_number_of_branches_open(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    """The node's key holds no list of branches: it is the same size with 2,000 branches
    open as with none, and a beat sends Redis only the branches opened or closed since the
    last one (the whole list was in the key, rewritten every beat: 2,000 branches made each
    beat about 60 KB)."""
    opened: set[str] = set()
    bus = fast(RedisBus(redis_server.url, "a", prefix=PREFIX))
    bus.open_branches = lambda: opened
    bus.describe = lambda: {"rooms": len(opened)}
    beats = 0
    beat = bus._beat

    async def counted() -> bytes | None:
        nonlocal beats
        held = await beat()
        beats += 1
        return held

    bus._beat = counted  # type: ignore[method-assign]
    await bus.start()
    try:

        async def key_after_a_beat() -> bytes:
            seen = beats
            await until(lambda: beats >= seen + 2)
            raw = await redis_client.get(KEYS.node("a"))
            assert raw is not None
            return bytes(raw)

        async def sent_per_beat(count: int = 10) -> float:
            await until(lambda: beats > 0)
            seen, before = beats, await net_input(redis_client)
            await until(lambda: beats >= seen + count)
            return (await net_input(redis_client) - before) / (beats - seen)

        idle = await key_after_a_beat()
        idle_cost = await sent_per_beat()
        opened.update(f"demo/topic-{i:04}" for i in range(2000))
        busy = await key_after_a_beat()
        assert await members(redis_client, KEYS.open_branches(bus.author)) == opened
        assert "open" not in json.loads(busy)
        assert json.loads(busy)["rooms"] == 2000
        assert abs(len(busy) - len(idle)) < 16  # "at", "redis_ms" and "rooms" vary a little
        busy_cost = await sent_per_beat()
        assert busy_cost < idle_cost + 1000, (idle_cost, busy_cost)
        opened.discard("demo/topic-0007")
        opened.add("demo/new")
        await until(lambda: beats > 0)
        seen = beats
        await until(lambda: beats >= seen + 2)
        assert await members(redis_client, KEYS.open_branches(bus.author)) == opened
    finally:
        await bus.stop()
    # a node that stops leaves neither its key nor its set
    assert await redis_client.exists(KEYS.node("a"), KEYS.open_branches(bus.author)) == 0


async def test_a_branch_counts_as_open_while_a_live_node_lists_it(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    """``open_elsewhere`` names the other nodes whose set holds the branch; a node that
    closes it, and one that dies, stop counting: a dead node's set is not read once its key
    lapsed, even if the set were still there."""
    on_a: set[str] = set()
    on_b: set[str] = {"demo/topic"}
    async with (
        cluster_node(redis_server.url, "a", on_a) as a,
        cluster_node(redis_server.url, "b", on_b) as b,
    ):
        assert await a.open_elsewhere("demo/topic") == ["b"]
        assert await b.open_elsewhere("demo/topic") == []  # not itself
        assert await a.open_elsewhere("demo/other") == []
        on_b.clear()  # closed: gone from b's set at its next beat
        await asyncio.wait_for(_until_open(a, "demo/topic", []), 5)
        on_b.add("demo/topic")
        await asyncio.wait_for(_until_open(a, "demo/topic", ["b"]), 5)
        status = await cluster_status(redis_server.url, PREFIX)
        assert [n.get("open") for n in status["nodes"]] == [[], ["demo/topic"]]

        # b dies (its beats stop, nothing is released): its key lapses
        dead = KEYS.open_branches(b.bus.author)
        b.bus._tasks[1].cancel()
        await redis_client.persist(dead)  # its set outlives it: it must not count
        await asyncio.wait_for(_until_open(a, "demo/topic", []), 5)
        assert await members(redis_client, dead) == {"demo/topic"}
        # a process started again under b's id: the set its predecessor left is not its
        # own
        async with cluster_node(redis_server.url, "b", set()) as again:
            assert again.bus.author != b.bus.author
            assert await a.open_elsewhere("demo/topic") == []
            status = await cluster_status(redis_server.url, PREFIX)
            assert [n.get("open") for n in status["nodes"]] == [[], []]


async def _until_open(node: Cluster, branch: str, expected: list[str]) -> None:
    while await node.open_elsewhere(branch) != expected:
        await asyncio.sleep(0.02)


async def test_a_node_of_an_earlier_version_listing_the_branch_in_its_key_counts(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    """A node of the version that listed its open branches in its key (``open``), during an
    upgrade of the cluster one node at a time."""
    about = {"at": 0, "incarnation": "0123456789abcdef", "open": ["demo/topic"]}
    await redis_client.set(KEYS.node("old"), json.dumps(about), px=60_000)
    async with cluster_node(redis_server.url, "a", set()) as a:
        assert await a.open_elsewhere("demo/topic") == ["old"]
        assert await a.open_elsewhere("demo/other") == []


async def test_a_set_deleted_or_lost_with_redis_is_written_again(tmp_path: pathlib.Path) -> None:
    """The set comes back whole at the next beat: deleted alone (evicted, say), and lost with
    a Redis restarted with nothing kept; one that Redis brought back older (a backup) is
    written again as it is now, not left as the backup held it."""
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    client = Redis.from_url(redis.url)
    opened = {"demo/x", "demo/y"}
    try:
        # a long time to live: the backup's set has not expired when Redis comes back on it
        async with cluster_node(redis.url, "a", opened, ttl_ms=30_000) as node:
            key = KEYS.open_branches(node.bus.author)

            async def holds(expected: set[str]) -> None:
                async def check() -> None:
                    while True:
                        with contextlib.suppress(OSError, RedisError):
                            if await members(client, key) == expected:
                                return
                        await asyncio.sleep(0.02)

                await asyncio.wait_for(check(), 10)

            await holds(opened)
            await client.delete(key)
            await holds(opened)

            redis.restart_empty()
            await holds(opened)
            assert await node.open_elsewhere("demo/x") == []  # itself

            await client.aclose()
            redis.copy(tmp_path / "backup")  # holds x and y
            opened.discard("demo/x")
            opened.add("demo/z")
            client = Redis.from_url(redis.url)
            await holds({"demo/y", "demo/z"})
            redis.restart_from(tmp_path / "backup")
            await holds({"demo/y", "demo/z"})
    finally:
        await client.aclose()
        redis.stop()
