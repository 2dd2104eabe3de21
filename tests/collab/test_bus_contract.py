"""Contract tests that every ``Bus`` implementation must pass: two or three nodes, each with
its own bus and its own handle on the shared store, against the in-process hub and against a
real ``redis-server`` started by the test."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from buslistener import Heard
from redisproc import RedisProcess

from collab.bus.bus import Bus
from collab.bus.local import LocalHub
from collab.bus.redis import RedisBus
from collab.store.base import Store
from collab.store.redis_store import RedisStore

IMPLEMENTATIONS = ["local", "redis"]


@dataclass
class Node:
    store: Store
    bus: Bus


class Cluster:
    """Nodes on one shared backend; ``node()`` starts another."""

    def __init__(self, kind: str, redis: RedisProcess | None, prefix: str) -> None:
        self.kind = kind
        self.redis = redis
        self.prefix = prefix
        self.hub = LocalHub()
        self.nodes: list[Node] = []

    async def node(self, node_id: str) -> Node:
        store: Store
        bus: Bus
        if self.kind == "local":
            store, bus = self.hub.store(node_id), self.hub.bus(node_id)
        else:
            assert self.redis is not None
            redis_bus = RedisBus(
                self.redis.url,
                node_id,
                prefix=self.prefix,
                block_ms=1_000,
                node_ttl_ms=2_000,  # long against the beats: a loaded machine delays them
                heartbeat_s=0.1,
            )
            # the node's entries carry its id and incarnation, as a cluster's node makes them
            store = RedisStore(self.redis.url, node_id=redis_bus.author, prefix=self.prefix)
            bus = redis_bus
        await store.start()
        await bus.start()
        node = Node(store, bus)
        self.nodes.append(node)
        return node

    async def close(self) -> None:
        for node in self.nodes:
            await node.bus.stop()
            await node.store.stop()


_prefixes = itertools.count()


@pytest.fixture(params=IMPLEMENTATIONS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
    made = Cluster(request.param, redis, f"b{next(_prefixes)}:")
    try:
        yield made
    finally:
        await made.close()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``check()`` to hold (deliveries are asynchronous on every bus)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not delivered within the timeout")
        await asyncio.sleep(0.005)


async def test_an_update_reaches_the_other_nodes_once_and_not_its_own(cluster: Cluster) -> None:
    a, b, c = [await cluster.node(n) for n in ("a", "b", "c")]
    heard = {name: Heard() for name in "abc"}
    for name, node in zip("abc", (a, b, c), strict=True):
        node.bus.watch("doc", 0, heard[name])
    seq = await a.store.append("doc", b"from a")
    await until(lambda: bool(heard["b"].updates) and bool(heard["c"].updates))
    # a later update from b marks the end: everything before it has been delivered
    last = await b.store.append("doc", b"from b")
    await until(lambda: len(heard["c"].updates["doc"]) == 2 and "doc" in heard["a"].updates)
    assert heard["b"].updates == {"doc": [(seq, b"from a")]}
    assert heard["c"].updates == {"doc": [(seq, b"from a"), (last, b"from b")]}
    assert heard["a"].updates == {"doc": [(last, b"from b")]}


async def test_watching_after_a_seq_replays_what_came_later(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    seqs = [await a.store.append("doc", b"u%d" % i) for i in range(5)]
    heard = Heard()
    b.bus.watch("doc", seqs[1], heard)  # b's room holds everything up to the second
    await until(lambda: len(heard.updates.get("doc", [])) == 3)
    assert heard.updates["doc"] == [(s, b"u%d" % i) for i, s in enumerate(seqs) if i > 1]
    later = await a.store.append("doc", b"live")
    await until(lambda: len(heard.updates["doc"]) == 4)
    assert heard.updates["doc"][-1] == (later, b"live")


async def test_concurrent_appends_from_two_nodes_arrive_in_seq_order(cluster: Cluster) -> None:
    a, b, watcher = [await cluster.node(n) for n in ("a", "b", "w")]
    docs = [f"doc-{i}" for i in range(5)]
    heard = Heard()
    for doc in docs:
        watcher.bus.watch(doc, 0, heard)
    work = [(node, docs[i % 5], b"%d" % i) for i in range(200) for node in (a, b)]
    seqs = await asyncio.gather(*(node.store.append(doc, data) for node, doc, data in work))

    def complete() -> bool:
        return sum(len(v) for v in heard.updates.values()) == len(work)

    await until(complete)
    for doc in docs:
        got = heard.updates[doc]
        sent = [s for (_, d, _), s in zip(work, seqs, strict=True) if d == doc]
        assert [s for s, _ in got] == sorted(sent)
        assert len({s for s, _ in got}) == len(got)


async def test_documents_watched_while_others_append_to_them_miss_nothing(
    cluster: Cluster,
) -> None:
    """Watches start (and move on) in the middle of a stream of appends to their documents:
    what was appended before a watch started is caught up on, what comes meanwhile is not
    lost or doubled, and every document's updates arrive in seq order."""
    a, b = await cluster.node("a"), await cluster.node("b")
    docs = [f"d{i}" for i in range(40)]
    heard = Heard()
    stop = asyncio.Event()
    appended: dict[str, list[tuple[int, bytes]]] = {doc: [] for doc in docs}

    async def append_all() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            doc = docs[i % len(docs)]
            data = b"%d" % i
            seq = await a.store.append(doc, data)
            appended[doc].append((seq, data))  # the list of now (a watch may replace it)
            await asyncio.sleep(0)  # an in-process store may answer without yielding

    writer = asyncio.create_task(append_all())
    try:
        for doc in docs:  # each watch starts from what was appended up to now, or from 0
            await asyncio.sleep(0.005)
            after = appended[doc][len(appended[doc]) // 2][0] if appended[doc] else 0
            b.bus.watch(doc, after, heard)
            appended[doc] = [entry for entry in appended[doc] if entry[0] > after]
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await writer

    def complete() -> bool:
        return all(len(heard.updates.get(doc, [])) == len(appended[doc]) for doc in docs)

    await until(complete)
    for doc in docs:
        assert heard.updates.get(doc, []) == appended[doc], doc
    assert heard.gaps == []


async def test_an_unread_compacted_update_is_reported_as_a_gap(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    seqs = [await a.store.append("doc", b"u%d" % i) for i in range(5)]
    await a.store.compact("doc", b"snapshot", seqs[3])
    heard = Heard()
    b.bus.watch("doc", seqs[0], heard)  # what b missed is in the snapshot, not in the log
    await until(lambda: bool(heard.gaps))
    assert heard.gaps == [("doc", seqs[0])]
    assert "doc" not in heard.updates
    # watched again from the snapshot's seq, it goes on
    b.bus.watch("doc", seqs[3], heard)
    await until(lambda: "doc" in heard.updates)
    assert heard.updates["doc"] == [(seqs[4], b"u4")]


async def test_a_log_compacted_to_its_end_past_the_watch_is_reported_as_a_gap(
    cluster: Cluster,
) -> None:
    """Every update the watcher missed is in the snapshot and the log is empty: nothing later
    shows the hole, so the watch itself must report it rather than wait for the next update."""
    a, b = await cluster.node("a"), await cluster.node("b")
    seqs = [await a.store.append("doc", b"u%d" % i) for i in range(3)]
    await a.store.compact("doc", b"snapshot", seqs[-1])
    heard = Heard()
    b.bus.watch("doc", seqs[0], heard)
    await until(lambda: bool(heard.gaps))
    assert heard.gaps == [("doc", seqs[0])]
    assert "doc" not in heard.updates


async def test_unwatched_documents_are_not_delivered(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    heard = Heard()
    b.bus.watch("kept", 0, heard)
    b.bus.watch("dropped", 0, heard)
    b.bus.unwatch("dropped")
    await a.store.append("dropped", b"x")
    marker = await a.store.append("kept", b"after")
    await until(lambda: "kept" in heard.updates)
    assert heard.updates == {"kept": [(marker, b"after")]}


async def test_awareness_reaches_the_watching_nodes_only(cluster: Cluster) -> None:
    a, b, c = [await cluster.node(n) for n in ("a", "b", "c")]
    heard = {name: Heard() for name in "abc"}
    a.bus.watch("doc", 0, heard["a"])
    b.bus.watch("doc", 0, heard["b"])
    c.bus.watch("other", 0, heard["c"])
    await asyncio.sleep(0.2)  # the pattern subscriptions are in place
    a.bus.publish_awareness("doc", b"cursor of a")
    await until(lambda: bool(heard["b"].awareness))
    b.bus.publish_awareness("doc", b"cursor of b")
    await until(lambda: bool(heard["a"].awareness))
    assert heard["b"].awareness == [("doc", "a", b"cursor of a")]
    assert heard["a"].awareness == [("doc", "b", b"cursor of b")]
    assert heard["c"].awareness == []


async def test_a_stopped_node_is_reported_gone(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    heard = Heard()
    a.bus.watch("doc", 0, heard)
    assert await a.bus.nodes() == ["a", "b"]
    await b.bus.stop()  # a stopping node takes its key with it: no wait for it to expire
    await until(lambda: "b" in heard.gone)
    assert set(heard.gone) == {"b"}
    assert await a.bus.nodes() == ["a"]
    assert a.bus.healthy


async def test_the_position_counts_own_and_delivered_entries(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    heard = Heard()
    assert b.bus.position("doc") is None
    b.bus.watch("doc", 0, heard)
    assert b.bus.position("doc") == 0
    await a.store.append("doc", b"from a")
    own = await b.store.append("doc", b"from b")
    last = await a.store.append("doc", b"from a again")
    await until(lambda: b.bus.position("doc") == last)
    assert [s for s, _ in heard.updates["doc"]] == [1, last]  # b's own is counted, not heard
    assert own < last
