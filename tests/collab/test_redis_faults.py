"""The Redis store and bus through Redis faults, with a real ``redis-server``: killed with
``kill -9`` and restarted on its append-only file, and paused with ``SIGSTOP``."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from buslistener import Heard
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redisproc import RedisProcess

from collab.bus.redis import RedisBus
from collab.store.redis_store import RedisStore


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("did not happen within the timeout")
        await asyncio.sleep(0.01)


def bus(redis: RedisProcess, node_id: str) -> RedisBus:
    return RedisBus(redis.url, node_id, block_ms=500, node_ttl_ms=600, heartbeat_s=0.1)


@pytest.fixture
def redis(tmp_path: pathlib.Path) -> Iterator[RedisProcess]:
    """A ``redis-server`` of the test's own, stopped (resumed first if paused) at its end."""
    process = RedisProcess(tmp_path / "redis")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@contextlib.asynccontextmanager
async def running(*parts: RedisStore | RedisBus) -> AsyncIterator[None]:
    """Start ``parts`` in order; stop those started, last first."""
    started: list[RedisStore | RedisBus] = []
    try:
        for part in parts:
            await part.start()
            started.append(part)
        yield
    finally:
        for part in reversed(started):
            await part.stop()


@contextlib.contextmanager
def paused(redis: RedisProcess) -> Iterator[None]:
    """Redis stopped (``SIGSTOP``) for the block, resumed at its end however it ends."""
    redis.pause()
    try:
        yield
    finally:
        redis.resume()


@contextlib.asynccontextmanager
async def raw_client(redis: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis.url)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def watched(
    redis: RedisProcess, *, heartbeat_s: float = 5.0
) -> AsyncIterator[tuple[RedisStore, RedisBus, Heard]]:
    """Node a's store, and node b's bus watching ``doc`` (what it hears in the ``Heard``).
    Its heartbeat rare by default: after an outage b looks at Redis again only when it
    reconnects."""
    store = RedisStore(redis.url, node_id="a")
    watcher = RedisBus(redis.url, "b", block_ms=500, node_ttl_ms=600, heartbeat_s=heartbeat_s)
    heard = Heard()
    async with running(store, watcher):
        watcher.watch("doc", 0, heard)
        yield store, watcher, heard


async def test_acknowledged_appends_survive_kill_9_of_redis(redis: RedisProcess) -> None:
    store = RedisStore(redis.url, node_id="a")
    async with running(store):
        assert store.durable_config is True
        work = [(f"doc-{i % 7}", b"update %d" % i) for i in range(300)]
        seqs = await asyncio.gather(*(store.append(doc, data) for doc, data in work))
        await store.sync()
        redis.kill()  # nothing of Redis' memory is left: only its append-only file
        redis.start()
    again = RedisStore(redis.url, node_id="b")
    async with running(again):
        for doc in {d for d, _ in work}:
            stored = await again.load(doc)
            assert stored is not None and stored.corrupt is None
            mine = [(s, data) for (d, data), s in zip(work, seqs, strict=True) if d == doc]
            assert stored.updates == mine


async def test_a_store_on_a_redis_without_fsync_says_so(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = RedisProcess(tmp_path / "redis", appendfsync="everysec")
    redis.start()
    try:
        store = RedisStore(redis.url)
        await store.start()
        assert store.durable_config is False
        assert "appendfsync always" in caplog.text
        await store.stop()
    finally:
        redis.stop()


async def test_a_damaged_entry_is_reported_not_served(redis: RedisProcess) -> None:
    store = RedisStore(redis.url)
    async with running(store), raw_client(redis) as raw:
        first = await store.append("doc", b"good")
        await store.append("doc", b"will be damaged")
        await store.append("doc", b"after it")
        await raw.xadd(store.keys_.log("doc"), {"u": b"forged", "n": b"x", "c": b"1"}, id="0-9")
        stored = await store.load("doc")
        assert stored is not None
        assert stored.corrupt is not None and stored.corrupt.seq == 9
        assert stored.updates[0] == (first, b"good")


async def test_the_bus_reads_on_after_redis_restarts(redis: RedisProcess) -> None:
    a_store = RedisStore(redis.url, node_id="a")
    a_bus, b_bus = bus(redis, "a"), bus(redis, "b")
    heard = Heard()
    async with running(a_store, a_bus, b_bus):
        b_bus.watch("doc", 0, heard)
        before = [await a_store.append("doc", b"before %d" % i) for i in range(20)]
        redis.kill()
        await until(lambda: not b_bus.healthy)
        # an append made while Redis is down waits for it, and is written once it is back
        waiting = asyncio.ensure_future(a_store.append("doc", b"while Redis was down"))
        await asyncio.sleep(0.5)
        assert not waiting.done() and not a_store.reachable
        redis.start()
        during = await asyncio.wait_for(waiting, 20)
        await until(lambda: b_bus.healthy)
        assert a_store.reachable
        after = [await a_store.append("doc", b"after %d" % i) for i in range(20)]
        await until(lambda: len(heard.updates.get("doc", [])) == 41)
        got = heard.updates["doc"]
        assert [s for s, _ in got] == [*before, during, *after]  # each once, in order
        assert heard.gaps == []


async def test_a_write_fails_once_redis_stays_away_past_the_limit(redis: RedisProcess) -> None:
    """... and says so (``write_failure``, ``write_errors``: ``/healthz`` and the metrics)
    until Redis answers again: what failed it is over."""
    store = RedisStore(redis.url, outage_limit=0.5)
    async with running(store):
        await store.append("doc", b"before")
        assert (store.write_failure, store.write_errors, store.appended) == (None, 0, 1)
        redis.kill()
        with pytest.raises(ConnectionError):
            await store.append("doc", b"refused after the limit")
        assert store.write_failure is not None
        assert store.write_failure.startswith("Redis could not be reached for")
        assert store.write_errors == 1
        redis.start()
        assert (await store.load("doc")) is not None  # and the store works again
        assert (store.write_failure, store.write_errors, store.appended) == (None, 1, 1)


async def test_writes_redis_refuses_fail_until_one_succeeds(redis: RedisProcess) -> None:
    """A Redis out of memory (``maxmemory``, ``noeviction``) refuses every write: each fails
    and is counted, and ``write_failure`` says why until a write succeeds (reads answered
    meanwhile do not clear it, nor a write Redis still takes); a refusal of the store's own
    (a compaction behind the snapshot) is no failure."""
    store = RedisStore(redis.url)
    client = Redis.from_url(redis.url)
    async with running(store):
        await store.append("doc", b"before")
        await store.compact("doc", b"snapshot", 1)
        with pytest.raises(ValueError):
            await store.compact("doc", b"older", 0)
        assert (store.write_failure, store.write_errors) == (None, 0)
        await client.config_set("maxmemory", 1)
        try:
            for update in (b"refused", b"refused too"):
                with pytest.raises(ResponseError, match="OOM"):
                    await store.append("doc", update)
            assert await store.load("doc") is not None
            await store.take_authors("demo/main")  # (it takes away first: Redis runs it)
            assert store.write_failure is not None
            assert store.write_failure.startswith("Redis refuses them: OOM")
            assert store.write_errors == 2
        finally:
            await client.config_set("maxmemory", 0)
            await client.aclose()
        await store.append("doc", b"after")
        assert (store.write_failure, store.write_errors, store.appended) == (None, 2, 2)


async def test_a_paused_redis_is_reported_and_caught_up_with(redis: RedisProcess) -> None:
    a_store = RedisStore(redis.url, node_id="a")
    b_bus = bus(redis, "b")
    heard = Heard()
    async with running(a_store, b_bus):
        b_bus.watch("doc", 0, heard)
        first = await a_store.append("doc", b"first")
        await until(lambda: "doc" in heard.updates)
        with paused(redis):
            # an append made while Redis is stopped waits for it instead of failing
            waiting = asyncio.ensure_future(a_store.append("doc", b"during the pause"))
            await until(lambda: not b_bus.healthy)
            assert not waiting.done()
        second = await asyncio.wait_for(waiting, 20)
        await until(lambda: b_bus.healthy and len(heard.updates["doc"]) == 2)
        assert heard.updates["doc"] == [(first, b"first"), (second, b"during the pause")]


def _doc_of(i: int) -> str:
    return "two" if i < 100 else "one"


def _append_600_elsewhere_holding_this_loop(redis: RedisProcess) -> list[int]:
    """Another node appends 600 updates (100 to "two", then 500 to "one") to a feed that
    keeps about 10 entries, on a thread of its own while this event loop is held: the feed
    moves far past this loop's buses. Their seqs, in the order made."""

    async def append() -> list[int]:
        store = RedisStore(redis.url, node_id="a", feed_length=10)
        async with store:
            return [await store.append(_doc_of(i), b"u%d" % i) for i in range(600)]

    seqs: list[int] = []
    appender = threading.Thread(target=lambda: seqs.extend(asyncio.run(append())))
    appender.start()
    appender.join()
    return seqs


async def _heard_the_600_once_in_order(heard: Heard, seqs: list[int]) -> None:
    await until(lambda: sum(len(v) for v in heard.updates.values()) == 600)
    for doc in ("one", "two"):
        expected = [(s, b"u%d" % i) for i, s in enumerate(seqs) if _doc_of(i) == doc]
        assert heard.updates[doc] == expected
    assert heard.gaps == []


async def test_a_node_that_fell_behind_a_trimmed_feed_catches_up_from_the_logs(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """The feed keeps about ``feed_length`` entries: a node whose place in it was trimmed away
    (its event loop held up while hundreds of updates went by) reads what it missed from each
    document's log, every update once and in order; "two" took its updates first, so none of
    them is left in the feed, nor anything after them to show that some were missed."""
    b_bus = bus(redis, "b")
    heard = Heard()
    async with running(b_bus):
        b_bus.watch("one", 0, heard)
        b_bus.watch("two", 0, heard)
        await asyncio.sleep(0.2)  # both joined: read from the feed from now on
        seqs = _append_600_elsewhere_holding_this_loop(redis)
        entries = await b_bus._client.xlen(b_bus.keys.feed)  # type: ignore[union-attr]
        assert entries < 600  # the feed was trimmed past b's place
        await _heard_the_600_once_in_order(heard, seqs)
        assert "trimmed past this node's place" in caplog.text


async def test_a_join_in_flight_when_the_feed_is_trimmed_past_the_node_reads_its_log_again(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A document that was joining (its log read, the answer not yet taken) when the node
    found the feed trimmed past its place: the log it read predates the updates the feed no
    longer holds, so it reads the log again instead of missing them."""
    b_bus = bus(redis, "b")
    heard = Heard()
    async with running(b_bus):
        b_bus.watch("one", 0, heard)
        await asyncio.sleep(0.2)  # joined: read from the feed from now on
        read_log = b_bus._log_after
        answered = asyncio.Event()

        async def log_after_held_up(doc_id: str, after: int) -> tuple[list[object], int, int]:
            read = await read_log(doc_id, after)
            if doc_id == "two":
                await answered.wait()  # the answer is taken after the trim is found
            return read

        b_bus._log_after = log_after_held_up  # type: ignore[method-assign,assignment]
        b_bus.watch("two", 0, heard)
        await asyncio.sleep(0.2)  # the log of "two" was read: empty
        seqs = _append_600_elsewhere_holding_this_loop(redis)
        await until(lambda: "trimmed past this node's place" in caplog.text)
        answered.set()
        await _heard_the_600_once_in_order(heard, seqs)


async def test_a_join_whose_log_read_fails_unexpectedly_is_reported_as_a_gap(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading a document's log failing with something other than an outage (a reply of
    an unexpected shape): the feed's entries held for the join must not stay held for good,
    leaving the document deaf to the other nodes; its listener is told to load it again."""
    b_bus = bus(redis, "b")
    heard = Heard()
    async with running(b_bus):

        async def log_after_failing(doc_id: str, after: int) -> tuple[list[object], int, int]:
            raise ValueError("a reply of an unexpected shape")

        b_bus._log_after = log_after_failing  # type: ignore[method-assign,assignment]
        b_bus.watch("doc", 0, heard)
        await until(lambda: bool(heard.gaps))
        assert heard.gaps == [("doc", 0)]
        assert "reading the shared log failed: reloading" in caplog.text


async def test_a_document_another_node_deleted_is_reported_as_deleted_not_lost(
    redis: RedisProcess,
) -> None:
    """A deletion leaves its mark in the feed: the watcher is told the document was deleted
    on purpose (its room lets go of it), not that its log went back (which a room answers
    by writing its history back)."""
    async with watched(redis, heartbeat_s=0.1) as (a_store, _b_bus, heard):
        before = [await a_store.append("doc", b"before %d" % i) for i in range(3)]
        await until(lambda: len(heard.updates.get("doc", [])) == 3)
        await a_store.delete("doc")
        await until(lambda: heard.deleted == ["doc"])
        await a_store.append("doc", b"made again")  # nothing more is delivered for it
        await asyncio.sleep(0.3)
        assert heard.gaps == []
        assert [s for s, _ in heard.updates["doc"]] == before


async def test_a_feed_that_went_back_is_read_from_its_new_start(redis: RedisProcess) -> None:
    """The feed and its counter deleted under a connected node (a Redis that lost them):
    the node notices at its next beat and reads on from the feed's new start, catching up
    from the logs, rather than waiting for ids it already passed."""
    async with watched(redis, heartbeat_s=0.1) as (a_store, b_bus, heard):
        before = [await a_store.append("doc", b"before %d" % i) for i in range(5)]
        await until(lambda: len(heard.updates.get("doc", [])) == 5)
        assert b_bus._client is not None
        await b_bus._client.delete(b_bus.keys.feed, b_bus.keys.feed_seq)
        after = [await a_store.append("doc", b"after %d" % i) for i in range(2)]
        await until(lambda: len(heard.updates["doc"]) == 7)
        assert [s for s, _ in heard.updates["doc"]] == [*before, *after]


async def test_a_document_whose_log_went_back_is_reported_as_a_gap(redis: RedisProcess) -> None:
    """Redis restarted with nothing kept (its files lost): the documents' counters start
    again, so the other nodes' new updates come with seqs the watcher already passed. Its
    listener is told to load the document again rather than have them dropped as old."""
    async with watched(redis, heartbeat_s=0.1) as (a_store, b_bus, heard):
        before = [await a_store.append("doc", b"before %d" % i) for i in range(5)]
        await until(lambda: len(heard.updates.get("doc", [])) == 5)
        redis.restart_empty()
        after = [await a_store.append("doc", b"after %d" % i) for i in range(2)]
        assert after == [1, 2]  # the counter started again
        await until(lambda: bool(heard.gaps))
        assert heard.gaps == [("doc", before[-1])]
        assert [s for s, _ in heard.updates["doc"]] == before
        # watched again from what the store holds now, it goes on
        b_bus.watch("doc", after[-1], heard)
        last = await a_store.append("doc", b"later")
        await until(lambda: heard.updates["doc"][-1] == (last, b"later"))


async def test_appends_go_on_after_redis_forgets_the_scripts(redis: RedisProcess) -> None:
    """A Redis that forgot the store's scripts (restarted, or ``SCRIPT FLUSH``) is sent them
    with each operation: each update is stored once."""
    store = RedisStore(redis.url, node_id="a")
    async with running(store):
        first = await store.append("doc", b"first")
        assert store._client is not None
        await store._client.script_flush()
        batch = await asyncio.gather(*(store.append("doc", b"u%d" % i) for i in range(3)))
        assert batch == [first + 1, first + 2, first + 3]
        stored = await store.load("doc")
        assert stored is not None
        assert [u for _, u in stored.updates] == [b"first", b"u0", b"u1", b"u2"]


async def test_appends_keep_their_order_while_the_scripts_come_and_go(
    tmp_path: pathlib.Path,
) -> None:
    """Another client flushes Redis's scripts and loads them again, over and over, while one
    document takes a thousand appends in batches: none is refused, and they are stored in
    the order they were made (a batch never has an operation refused while later ones run)."""
    redis = RedisProcess(tmp_path / "redis", appendfsync="no")
    redis.start()
    store = RedisStore(redis.url, node_id="a")
    churning = True

    async def churn(other: Redis) -> None:
        while churning:
            await other.script_flush()
            await asyncio.sleep(0.0005)
            await other.script_load("return 1")
            await asyncio.sleep(0.001)

    try:
        async with running(store), raw_client(redis) as other:
            task = asyncio.create_task(churn(other))
            seqs = await asyncio.gather(*(store.append("doc", b"%d" % i) for i in range(1000)))
            churning = False
            await task
            assert seqs == list(range(1, 1001))
            stored = await store.load("doc")
            assert stored is not None
            assert [u for _, u in stored.updates] == [b"%d" % i for i in range(1000)]
    finally:
        redis.stop()


async def test_a_redis_that_lost_its_data_is_noticed_though_the_seqs_passed_the_cursor(
    redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarted with nothing kept, and the other nodes appended past the watcher's
    cursor before it was back: neither the feed's head nor the document's seqs show the
    loss, but the generation token does. The listener is told to load the document again;
    the new updates numbered as old ones are not taken for the next ones."""
    monkeypatch.setattr("collab.bus.redis.RETRY_S", (1.0,))  # the watcher is back late
    async with watched(redis) as (a_store, _watcher, heard):
        before = [await a_store.append("doc", b"before %d" % i) for i in range(3)]
        await until(lambda: len(heard.updates.get("doc", [])) == 3)
        redis.restart_empty()
        after = [await a_store.append("doc", b"after %d" % i) for i in range(6)]
        assert after == [1, 2, 3, 4, 5, 6]  # past the watcher's cursor (3)
        await until(lambda: bool(heard.gaps))
        assert heard.gaps == [("doc", before[-1])]
        assert [s for s, _ in heard.updates["doc"]] == before  # not 4, 5, 6 as if next


async def test_a_redis_back_with_older_data_is_noticed_though_it_kept_its_token(
    redis: RedisProcess, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis came back on older files (a backup), which hold the generation token too, and
    another node appended before the watcher was back: the new updates take the seqs of the
    ones the watcher had, from the same node. The feed's entry at the watcher's place is
    another one now, so the listener is told to load the document again."""
    monkeypatch.setattr("collab.bus.redis.RETRY_S", (1.0,))  # the watcher is back late
    async with watched(redis) as (a_store, _watcher, heard):
        kept = [await a_store.append("doc", b"kept %d" % i) for i in range(3)]
        redis.copy(tmp_path / "backup")
        lost = [await a_store.append("doc", b"lost %d" % i) for i in range(3)]
        await until(lambda: len(heard.updates.get("doc", [])) == 6)
        redis.restart_from(tmp_path / "backup")
        new = [await a_store.append("doc", b"new %d" % i) for i in range(5)]
        assert new[:3] == lost  # the seqs the watcher had, from the same node
        await until(lambda: bool(heard.gaps))
        assert heard.gaps == [("doc", lost[-1])]
        assert [s for s, _ in heard.updates["doc"]] == kept + lost  # nothing new as if next


async def test_a_damaged_entry_met_while_joining_makes_the_document_reload(
    redis: RedisProcess,
) -> None:
    """An entry of a document's log without its update: the join reports a gap (the
    listener reloads the document, and the store's load reports the damage) instead of
    dying and holding the document's later updates for ever."""
    store = RedisStore(redis.url, node_id="a")
    watcher = bus(redis, "b")
    heard = Heard()
    async with running(store), raw_client(redis) as raw:
        await store.append("doc", b"good")
        await raw.xadd(store.keys_.log("doc"), {"n": b"a", "c": b"1"}, id="0-2")
        await raw.set(store.keys_.seq("doc"), 2)
        async with running(watcher):
            watcher.watch("doc", 0, heard)
            await until(lambda: bool(heard.gaps))
            assert heard.gaps == [("doc", 0)] and "doc" not in heard.updates
            assert watcher.position("doc") == 0
            await store.append("doc", b"later")
            await asyncio.sleep(0.3)
            assert "doc" not in heard.updates  # a document that reloads takes nothing more here


async def test_a_listener_that_fails_reloads_its_document_and_the_others_get_theirs(
    redis: RedisProcess,
) -> None:
    """Two documents' updates in one read of the feed, the first one's listener failing:
    that document reloads (a gap), the second gets its update at once."""

    class Failing(Heard):
        def bus_updates(self, doc_id: str, updates: list[tuple[int, bytes]]) -> None:
            raise RuntimeError("a listener's bug")

    watcher = bus(redis, "b")
    bad, good = Failing(), Heard()
    async with running(watcher), raw_client(redis) as raw:
        watcher.watch("bad", 0, bad)
        watcher.watch("good", 0, good)
        await asyncio.sleep(0.3)  # both joined (their logs are empty)
        keys = watcher.keys
        async with raw.pipeline(transaction=True) as pipe:  # one transaction: one read
            for n, doc in enumerate(("bad", "good"), 1):
                fields = {"d": doc, "s": 1, "n": "a", "u": doc.encode()}
                pipe.xadd(keys.feed, fields, id=f"0-{n}")  # type: ignore[arg-type]
            pipe.set(keys.feed_seq, 2)
            await pipe.execute()
        await until(lambda: bool(good.updates) and bool(bad.gaps))
        assert good.updates == {"good": [(1, b"good")]}
        assert bad.gaps == [("bad", 0)]


async def test_an_append_after_its_documents_counter_was_deleted_goes_on_from_the_log(
    redis: RedisProcess,
) -> None:
    """A document's seq counter deleted alone (or evicted): the next append goes on from its
    log's end instead of failing until the counter passes it; an entry the log refuses
    otherwise leaves the counter as it was."""
    store = RedisStore(redis.url, node_id="a")
    async with running(store), raw_client(redis) as raw:
        assert [await store.append("doc", b"u%d" % i) for i in range(3)] == [1, 2, 3]
        await raw.delete(store.keys_.seq("doc"))
        assert await store.append("doc", b"after") == 4
        assert await raw.get(store.keys_.seq("doc")) == b"4"
        stored = await store.load("doc")
        assert stored is not None and [seq for seq, _u in stored.updates] == [1, 2, 3, 4]
        await raw.set(store.keys_.log("other"), b"not a stream")
        with pytest.raises(Exception, match="WRONGTYPE"):
            await store.append("other", b"refused")
        assert await raw.get(store.keys_.seq("other")) in (None, b"0")  # not left ahead


async def test_a_document_whose_seqs_went_back_is_reloaded(redis: RedisProcess) -> None:
    """A watched document's keys deleted (or evicted): the updates appended since have seqs
    at or below the ones a node already took. The node is told to reload it (``bus_gap``)
    instead of taking them for ones it has."""
    watching = watched(redis, heartbeat_s=0.1)
    async with watching as (store, _watcher, heard), raw_client(redis) as raw:
        for i in range(5):
            await store.append("doc", b"before %d" % i)
        await until(lambda: len(heard.updates.get("doc", [])) == 5)
        keys = store.keys_
        await raw.delete(keys.log("doc"), keys.snapshot("doc"), keys.seq("doc"))
        assert await store.append("doc", b"after the deletion") == 1
        await until(lambda: bool(heard.gaps))
        assert heard.gaps == [("doc", 5)]
        assert len(heard.updates["doc"]) == 5  # nothing taken for what was delivered


async def test_a_store_on_a_redis_that_may_evict_keys_says_so(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = RedisProcess(tmp_path / "redis", extra=("--maxmemory-policy", "allkeys-lru"))
    redis.start()
    try:
        store = RedisStore(redis.url)
        await store.start()
        assert "maxmemory-policy allkeys-lru" in caplog.text
        await store.stop()
    finally:
        redis.stop()
    caplog.clear()
    redis = RedisProcess(tmp_path / "redis-kept")
    redis.start()
    try:
        store = RedisStore(redis.url)
        await store.start()
        assert "maxmemory-policy" not in caplog.text  # noeviction, Redis's default
        await store.stop()
    finally:
        redis.stop()


async def test_an_append_after_a_compacted_documents_log_and_counter_were_lost_goes_past_its_snapshot(
    redis: RedisProcess,
) -> None:
    """A compacted document whose log and seq counter were deleted (or evicted) while its
    snapshot stayed: the next append goes on past the snapshot's seq. A seq at or below it
    would be taken for one the snapshot covers: a node loading the document again would
    find the log "compacted past" its cursor and reload it over and over, each time writing
    its whole state back, and compactions would be refused as behind the snapshot."""
    store = RedisStore(redis.url, node_id="a")
    async with running(store), raw_client(redis) as raw:
        assert [await store.append("doc", b"u%d" % i) for i in range(5)] == [1, 2, 3, 4, 5]
        await store.compact("doc", b"snapshot", 5)
        await raw.delete(store.keys_.log("doc"), store.keys_.seq("doc"))
        assert await store.append("doc", b"after") == 6
        stored = await store.load("doc")
        assert stored is not None and stored.snapshot_seq == 5
        assert [seq for seq, _u in stored.updates] == [6] and stored.last_seq == 6
        await store.compact("doc", b"snapshot 2", 6)  # not behind the snapshot
