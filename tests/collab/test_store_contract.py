"""Contract tests that every ``Store`` implementation must pass."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import pathlib
import random
from collections.abc import AsyncIterator

import pytest
from pycrdt import Doc, Text, TransactionEvent
from redis.asyncio import Redis
from redisproc import RedisProcess

from collab.bus.lease import Grant
from collab.bus.redis_lease import RedisLeases
from collab.store.base import BehindSnapshot, FenceLost, Store, StoredDoc
from collab.store.memory_store import MemoryStore
from collab.store.redis_store import RedisStore
from collab.store.repair import repair
from collab.store.sqlite_store import SQLiteStore

IMPLEMENTATIONS = ["memory", "sqlite", "redis"]


_stores_made = itertools.count()


def make_store(kind: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "redis":
        # one Redis for the module; each store under a prefix of its own
        server: RedisProcess = request.getfixturevalue("redis_server")
        return RedisStore(server.url, node_id="n1", prefix=f"t{next(_stores_made)}:")
    return SQLiteStore(tmp_path / "data" / "collab.db")


@pytest.fixture(params=IMPLEMENTATIONS)
async def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    s = make_store(request.param, tmp_path, request)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def load(store: Store, doc_id: str) -> StoredDoc:
    stored = await store.load(doc_id)
    assert stored is not None
    assert stored.corrupt is None
    return stored


PROTOCOL_METHODS = sorted(
    name for name, value in vars(Store).items() if callable(value) and not name.startswith("_")
)


def _parameters(function: object) -> list[tuple[str, object, object]]:
    assert callable(function)
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_methods_take_the_protocols_parameters(
    kind: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    """Every method of the protocol, with the same parameters (names, kinds, defaults): a
    caller of ``Store`` can call it by keyword as well as by position."""
    implementation = type(make_store(kind, tmp_path, request))
    for name in PROTOCOL_METHODS:
        assert _parameters(getattr(implementation, name)) == _parameters(getattr(Store, name)), name


async def test_every_method_returns_an_awaitable(store: Store) -> None:
    """Each call is awaited by its callers (an append may be a future rather than a
    coroutine): every method's result must be awaitable, and awaiting it must work."""
    calls = {
        "start": lambda: store.start(),
        "load": lambda: store.load("doc"),
        "append": lambda: store.append("doc", b"u"),
        "sync": lambda: store.sync(),
        "compact": lambda: store.compact("doc", b"snap", 1),
        "keys": lambda: store.keys(),
        "clear_recovered": lambda: store.clear_recovered("doc"),
        "delete": lambda: store.delete("doc"),
        "take_authors": lambda: store.take_authors("repo/main"),
        "settle_authors": lambda: store.settle_authors("repo/main", []),
        "stop": lambda: store.stop(),
    }
    # (but what the last take gave: a commit asks it with no await in between)
    assert sorted(calls) == sorted(set(PROTOCOL_METHODS) - {"authors_of"})
    assert store.authors_of("repo/main", None) == []
    for name, call in calls.items():
        result = call()
        assert inspect.isawaitable(result), name
        await result


def test_every_method_has_a_behavioural_contract() -> None:
    """The contract tests of each method, run against every implementation: a method added
    to the protocol fails here until it has one."""
    contract = {
        "start": [test_lifecycle, test_async_context_manager],
        "stop": [test_lifecycle, test_async_context_manager, test_stopped_store_refuses_everything],
        "load": [
            test_unknown_doc_loads_none,
            test_appends_return_increasing_seqs_and_load_in_order,
        ],
        "append": [
            test_appends_return_increasing_seqs_and_load_in_order,
            test_many_concurrent_appends,
        ],
        "sync": [
            test_sync_follows_the_appends_made_before_it,
            test_sync_is_ordered_with_other_writes,
        ],
        "compact": [
            test_compact_keeps_later_updates_and_seqs_keep_increasing,
            test_compact_is_ordered_with_appends,
        ],
        "delete": [test_delete, test_documents_are_independent],
        "keys": [test_keys_by_prefix],
        "clear_recovered": [
            test_clear_recovered_keeps_the_history,
            test_clear_recovered_forgets_the_mark,
        ],
        "take_authors": [test_the_authors_of_a_branch_are_taken_once],
        "settle_authors": [test_the_authors_of_a_branch_are_taken_once],
        "authors_of": [
            test_a_commit_of_some_files_takes_the_writers_of_those_from_a_clusters_store
        ],
    }
    assert sorted(contract) == PROTOCOL_METHODS
    for tests in contract.values():
        for test in tests:
            takes = inspect.signature(test).parameters
            assert "store" in takes or "kind" in takes, test.__name__  # every implementation


async def test_unknown_doc_loads_none(store: Store) -> None:
    assert await store.load("nope") is None


async def test_appends_return_increasing_seqs_and_load_in_order(store: Store) -> None:
    payloads = [b"first", b"", b"\x00\x01\xff" * 100, bytes(range(256)), b"last"]
    seqs = [await store.append("doc", p) for p in payloads]
    assert seqs == sorted(set(seqs))
    assert seqs[0] >= 1
    stored = await load(store, "doc")
    assert stored.snapshot is None
    assert stored.snapshot_seq == 0
    assert stored.updates == list(zip(seqs, payloads, strict=True))
    assert stored.last_seq == seqs[-1]


async def test_append_accepts_bytearray(store: Store) -> None:
    buf = bytearray(b"abc")
    seq = await store.append("doc", buf)  # type: ignore[arg-type]
    buf[:] = b"xyz"
    assert (await load(store, "doc")).updates == [(seq, b"abc")]


async def test_documents_are_independent(store: Store) -> None:
    a1 = await store.append("a", b"a1")
    b1 = await store.append("b", b"b1")
    a2 = await store.append("a", b"a2")
    assert a1 < a2
    assert (await load(store, "a")).updates == [(a1, b"a1"), (a2, b"a2")]
    assert (await load(store, "b")).updates == [(b1, b"b1")]
    await store.compact("a", b"snap-a", a2)
    await store.delete("a")
    assert await store.load("a") is None
    assert (await load(store, "b")).updates == [(b1, b"b1")]


async def test_compact_keeps_later_updates_and_seqs_keep_increasing(store: Store) -> None:
    seqs = [await store.append("doc", b"u%d" % i) for i in range(6)]
    await store.compact("doc", b"snapshot-through-3", seqs[3])
    stored = await load(store, "doc")
    assert stored.snapshot == b"snapshot-through-3"
    assert stored.snapshot_seq == seqs[3]
    assert stored.updates == [(seqs[4], b"u4"), (seqs[5], b"u5")]

    later = await store.append("doc", b"u6")
    assert later > seqs[5]
    stored = await load(store, "doc")
    assert [s for s, _ in stored.updates] == [seqs[4], seqs[5], later]

    # Compacting everything leaves only the snapshot, and seqs are still never reused.
    await store.compact("doc", b"snapshot-all", later)
    stored = await load(store, "doc")
    assert (stored.snapshot, stored.snapshot_seq, stored.updates) == (b"snapshot-all", later, [])
    assert stored.last_seq == later
    assert await store.append("doc", b"after") > later

    # Re-snapshotting at the same point replaces the snapshot.
    await store.compact("doc", b"snapshot-all-2", later)
    stored = await load(store, "doc")
    assert (stored.snapshot, stored.snapshot_seq) == (b"snapshot-all-2", later)
    assert len(stored.updates) == 1


async def test_compact_rejects_bad_through_seq(store: Store) -> None:
    seqs = [await store.append("doc", b"u%d" % i) for i in range(4)]
    with pytest.raises(ValueError) as past:
        await store.compact("doc", b"s", seqs[-1] + 1)  # past the last update
    with pytest.raises(ValueError) as negative:
        await store.compact("doc", b"s", -1)
    assert not isinstance(past.value, BehindSnapshot)
    assert not isinstance(negative.value, BehindSnapshot)
    await store.compact("doc", b"s2", seqs[2])
    with pytest.raises(BehindSnapshot):  # a node further along compacted first
        await store.compact("doc", b"s1", seqs[1])
    # The failed calls changed nothing and the store keeps serving.
    stored = await load(store, "doc")
    assert (stored.snapshot, stored.snapshot_seq) == (b"s2", seqs[2])
    assert stored.updates == [(seqs[3], b"u3")]


async def test_compact_of_new_doc_at_zero_seeds_it(store: Store) -> None:
    await store.compact("seeded", b"seed", 0)
    stored = await load(store, "seeded")
    assert (stored.snapshot, stored.snapshot_seq, stored.updates) == (b"seed", 0, [])
    seq = await store.append("seeded", b"u")
    assert seq > 0
    assert (await load(store, "seeded")).updates == [(seq, b"u")]


async def test_delete(store: Store) -> None:
    first = await store.append("doc", b"u1")
    last = await store.append("doc", b"u2")
    await store.compact("doc", b"snap", first)
    await store.delete("doc")
    assert await store.load("doc") is None
    await store.delete("doc")  # deleting twice, or an unknown doc, is fine
    await store.delete("never-seen")
    again = await store.append("doc", b"new")
    assert again > last  # seqs are never reused, not even after delete
    stored = await load(store, "doc")
    assert (stored.snapshot, stored.updates) == (None, [(again, b"new")])


async def test_many_concurrent_appends(store: Store) -> None:
    docs = [f"doc-{d}" for d in range(10)]
    work = [(docs[i % 10], b"%s:%d" % (docs[i % 10].encode(), i)) for i in range(500)]
    seqs = await asyncio.gather(*(store.append(doc_id, data) for doc_id, data in work))
    for doc_id in docs:
        mine = [(seq, data) for (d, data), seq in zip(work, seqs, strict=True) if d == doc_id]
        stored = await load(store, doc_id)
        # Every append is there exactly once, in seq order, in the order it was made.
        assert stored.updates == mine
        assert [s for s, _ in mine] == sorted({s for s, _ in mine})


async def test_sync_follows_the_appends_made_before_it(store: Store) -> None:
    await store.sync()  # nothing written yet: done all the same
    appends = [asyncio.ensure_future(store.append("doc", b"u%d" % i)) for i in range(20)]
    await asyncio.sleep(0)  # every append is made
    await store.sync()
    assert all(a.done() for a in appends)
    assert [a.result() for a in appends] == list(range(1, 21))
    await store.sync()  # again, with nothing new


async def test_sync_is_ordered_with_other_writes(store: Store) -> None:
    """A sync covers compactions, deletions and cleared marks made before it, as well as
    appends: once it is done, all of them are in every later load."""
    seqs = [await store.append(doc, b"u") for doc in ("kept", "compacted", "deleted")]
    compacted = asyncio.ensure_future(store.compact("compacted", b"snap", seqs[1]))
    deleted = asyncio.ensure_future(store.delete("deleted"))
    cleared = asyncio.ensure_future(store.clear_recovered("kept"))
    await asyncio.sleep(0)
    await store.sync()
    await asyncio.gather(compacted, deleted, cleared)
    assert (await load(store, "compacted")).snapshot == b"snap"
    assert await store.load("deleted") is None
    kept = await load(store, "kept")
    assert kept.updates == [(seqs[0], b"u")] and not kept.recovered


async def test_compact_is_ordered_with_appends(store: Store) -> None:
    seqs = [await store.append("doc", b"u%d" % i) for i in range(10)]
    # Requests are served in the order they start (an append may start when it is called).
    before = [asyncio.ensure_future(store.append("doc", b"before-%d" % i)) for i in range(20)]
    compacted = asyncio.ensure_future(store.compact("doc", b"snap", seqs[-1]))
    loaded = asyncio.ensure_future(store.load("doc"))
    await asyncio.sleep(0)  # the compaction and the load have started
    after = [asyncio.ensure_future(store.append("doc", b"after-%d" % i)) for i in range(20)]
    await asyncio.gather(*before, compacted, *after)
    mid = await loaded
    assert isinstance(mid, StoredDoc)
    assert mid.snapshot == b"snap"
    assert [d for _, d in mid.updates] == [b"before-%d" % i for i in range(20)]
    stored = await load(store, "doc")
    assert stored.snapshot_seq == seqs[-1]
    assert [d for _, d in stored.updates] == [b"before-%d" % i for i in range(20)] + [
        b"after-%d" % i for i in range(20)
    ]


async def test_clear_recovered_keeps_the_history(store: Store) -> None:
    """On a document that was never repaired it changes nothing: not its records, not its
    sequence; on an unknown document it is harmless and creates nothing."""
    first = await store.append("doc", b"u1")
    await store.compact("doc", b"snap", first)
    second = await store.append("doc", b"u2")
    before = await load(store, "doc")
    assert not before.recovered
    await store.clear_recovered("doc")
    assert await load(store, "doc") == before
    await store.clear_recovered("never-seen")
    assert await store.load("never-seen") is None
    assert await store.keys() == ["doc"]
    assert await store.append("doc", b"u3") > second


async def _reseeded(store: Store, doc_id: str) -> bool:
    """Have ``collab store repair`` drop the document's history (``--reseed``), which marks
    it recovered; False where the store has no repair (a memory store is never damaged)."""
    if not isinstance(store, SQLiteStore):
        return False
    await store.stop()
    await asyncio.to_thread(repair, store.path, reseed=[doc_id])
    await store.start()
    return True


async def test_clear_recovered_forgets_the_mark(store: Store) -> None:
    old = await store.append("doc", b"before the repair")
    await store.append("other", b"o")
    if not await _reseeded(store, "doc"):
        pytest.skip("this store has no repair, so no document of it is ever recovered")
    new = await store.append("doc", b"after the repair")
    assert new > old
    stored = await load(store, "doc")
    assert stored.recovered and stored.updates == [(new, b"after the repair")]
    assert not (await load(store, "other")).recovered
    await store.clear_recovered("doc")
    stored = await load(store, "doc")
    assert not stored.recovered and stored.updates == [(new, b"after the repair")]
    await store.stop()  # the cleared mark is stored, not only remembered
    await store.start()
    assert not (await load(store, "doc")).recovered


async def test_stopped_store_refuses_everything(store: Store) -> None:
    seq = await store.append("doc", b"u")
    await store.stop()
    refused = {
        "load": lambda: store.load("doc"),
        "append": lambda: store.append("doc", b"late"),
        "sync": lambda: store.sync(),
        "compact": lambda: store.compact("doc", b"snap", 1),
        "delete": lambda: store.delete("doc"),
        "keys": lambda: store.keys(),
        "clear_recovered": lambda: store.clear_recovered("doc"),
        "take_authors": lambda: store.take_authors("repo/main"),
        "settle_authors": lambda: store.settle_authors("repo/main", ["ann"]),
    }
    assert sorted(refused) == sorted(set(PROTOCOL_METHODS) - {"start", "stop", "authors_of"})
    for call in refused.values():
        with pytest.raises(RuntimeError):
            await call()
    await store.start()
    assert (await load(store, "doc")).updates == [(seq, b"u")]  # and nothing of it was done


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
async def test_lifecycle(kind: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> None:
    s = make_store(kind, tmp_path, request)
    with pytest.raises(RuntimeError):
        await s.append("doc", b"too early")
    await s.start()
    seq = await s.append("doc", b"u")
    await s.stop()
    await s.stop()  # stopping twice is harmless
    with pytest.raises(RuntimeError):
        await s.append("doc", b"too late")
    with pytest.raises(RuntimeError):
        await s.sync()
    with pytest.raises(RuntimeError):
        await s.load("doc")
    await s.start()  # a stopped store can be started again, with its data
    assert (await load(s, "doc")).updates == [(seq, b"u")]
    await s.stop()


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
async def test_async_context_manager(
    kind: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    s = make_store(kind, tmp_path, request)
    assert isinstance(s, MemoryStore | SQLiteStore | RedisStore)
    async with s as entered:
        assert entered is s
        await s.append("doc", b"u")
    with pytest.raises(RuntimeError):
        await s.append("doc", b"after exit")


WORDS = ["alpha ", "beta ", "gamma\n", "delta ", "def f():\n", "    return 1\n", "x", "#"]


async def test_pycrdt_history_roundtrip_with_compaction(store: Store) -> None:
    rng = random.Random(20240519)
    doc: Doc[Text] = Doc()
    text = Text()
    doc["source"] = text
    pending: list[bytes] = []

    def on_change(event: TransactionEvent) -> None:
        pending.append(event.update)

    subscription = doc.observe(on_change)
    seqs: list[int] = []
    half_text = ""
    for i in range(200):
        if len(text) > 0 and rng.random() < 0.35:
            start = rng.randrange(len(text))
            del text[start : min(len(text), start + rng.randint(1, 6))]
        else:
            text.insert(rng.randint(0, len(text)), rng.choice(WORDS))
        assert len(pending) == 1
        seqs.append(await store.append("room", pending.pop()))
        if i == 99:
            await store.compact("room", doc.get_update(), seqs[-1])
            half_text = str(text)
    doc.unobserve(subscription)

    stored = await load(store, "room")
    assert stored.snapshot_seq == seqs[99]
    assert [s for s, _ in stored.updates] == seqs[100:]

    # The snapshot alone reproduces the text as it was at compaction time.
    assert stored.snapshot is not None
    at_half: Doc[Text] = Doc()
    at_half_text = at_half.get("source", type=Text)
    at_half.apply_update(stored.snapshot)
    assert str(at_half_text) == half_text

    fresh: Doc[Text] = Doc()
    fresh_text = fresh.get("source", type=Text)
    fresh.apply_update(stored.snapshot)
    for _, update in stored.updates:
        fresh.apply_update(update)
    assert str(fresh_text) == str(text)
    assert len(str(text)) > 0


async def test_keys_by_prefix(store: Store) -> None:
    assert await store.keys() == []
    for key in ("demo/main:b.py", "demo/main:a.py", "demo/mainline:x", "other/main:a.py"):
        await store.append(key, b"u")
    await store.compact("demo/main:b.py", b"snap", await store.append("demo/main:b.py", b"v"))
    assert await store.keys("demo/main:") == ["demo/main:a.py", "demo/main:b.py"]
    assert len(await store.keys()) == 4
    await store.delete("demo/main:a.py")
    assert await store.keys("demo/main:") == ["demo/main:b.py"]
    assert await store.keys("%") == []  # no pattern matching


async def test_a_fenced_append_is_written_only_while_its_grant_holds_the_lease(
    store: Store,
) -> None:
    """A cluster's store writes an update made under a lease only while that grant holds
    the lease (checked in the same step as the write); a store without leases refuses a
    fence outright. Either way a refused update is not stored."""
    await store.append("doc", b"first")
    grant = Grant("demo/main", "n1", 7)
    if not isinstance(store, RedisStore):
        with pytest.raises(ValueError, match="no leases"):
            await store.append("doc", b"fenced", fence=grant)
        assert [u for _, u in (await load(store, "doc")).updates] == [b"first"]
        return
    client = Redis.from_url(store.url)
    leases = RedisLeases(client, "n1", ttl=30, prefix=store.keys_.prefix)
    with pytest.raises(FenceLost):  # nobody holds it
        await store.append("doc", b"unheld", fence=grant)
    held = await leases.acquire("demo/main")
    assert held is not None
    assert await store.append("doc", b"held", fence=held) == 2
    taken = Grant(held.name, held.node_id, held.token + 1)
    with pytest.raises(FenceLost):  # another grant of the same node, say a later one
        await store.append("doc", b"stale", fence=taken)
    await leases.release(held)
    with pytest.raises(FenceLost):  # released
        await store.append("doc", b"released", fence=held)
    assert [u for _, u in (await load(store, "doc")).updates] == [b"first", b"held"]
    await client.aclose()


async def test_the_authors_of_a_branch_are_taken_once(store: Store) -> None:
    """A durable store keeps who wrote to each branch until their commit (in a cluster,
    any node's; after a crash, those before it), and forgets them once their commit is
    settled, but those who wrote since the take. A take that no settle follows (its node
    died before the commit landed) forgets no one. The in-memory one keeps none (its
    process knows them, and a crash loses its edits too)."""
    await store.append("repo/main:a.txt", b"u", author="ann")
    await store.append("repo/main:b.txt", b"u", author="bob")
    await store.append("repo/main:b.txt", b"u", author="ann")
    await store.append("repo/other:a.txt", b"u", author="cid")
    await store.append("repo/main:a.txt", b"u")  # (a server-side edit: no one)
    keeps = not isinstance(store, MemoryStore)
    assert await store.take_authors("repo/main") == (["ann", "bob"] if keeps else [])
    taken = await store.take_authors("repo/main")  # (as the next commit would)
    assert taken == (["ann", "bob"] if keeps else [])
    await store.append("repo/main:a.txt", b"u", author="bob")  # after the take
    await store.settle_authors("repo/main", taken)
    assert await store.take_authors("repo/main") == (["bob"] if keeps else [])
    await store.settle_authors("repo/main", ["bob"])
    assert await store.take_authors("repo/main") == []
    assert await store.take_authors("repo/other") == (["cid"] if keeps else [])


async def test_the_authors_an_older_version_kept_in_redis_are_taken_too(
    redis_server: RedisProcess,
) -> None:
    """An older version kept a branch's authors in a set that its take deleted: people it
    holds when a node of this version takes over are named by the next commit, and forgotten
    with the others once it is settled."""
    store = RedisStore(redis_server.url, node_id="n1", prefix=f"t{next(_stores_made)}:")
    await store.start()
    client = Redis.from_url(store.url)
    try:
        await client.sadd(store.keys_.old_authors("repo/main"), "ann")
        await store.append("repo/main:a.txt", b"u", author="bob")
        taken = await store.take_authors("repo/main")
        assert taken == ["ann", "bob"]
        assert await store.take_authors("repo/main") == ["ann", "bob"]
        await store.settle_authors("repo/main", taken)
        assert await store.take_authors("repo/main") == []
        assert not await client.exists(store.keys_.old_authors("repo/main"))
    finally:
        await client.aclose()
        await store.stop()


async def test_a_commit_of_some_files_takes_the_writers_of_those_from_a_clusters_store(
    store: Store,
) -> None:
    """A cluster's store knows who wrote to which document: a commit of some files (one
    node's) takes and settles the writers of those only, and the others' stay for the
    commit of theirs (another node's, or whoever commits them after that node died). The
    SQLite store gives the whole branch's (one node commits a branch's files together)."""
    await store.append("repo/main:a.txt", b"u", author="ann")
    await store.append("repo/main:b.txt", b"u", author="bob")
    if isinstance(store, MemoryStore):
        assert await store.take_authors("repo/main", ["a.txt"]) == []
        return
    by_file = isinstance(store, RedisStore)
    taken = await store.take_authors("repo/main", ["a.txt"])
    assert taken == (["ann"] if by_file else ["ann", "bob"])
    # the files a commit holds are known once its text is taken, after the take
    assert store.authors_of("repo/main", ["b.txt"]) == (["bob"] if by_file else ["ann", "bob"])
    await store.settle_authors("repo/main", ["ann", "bob"], ["a.txt"])
    assert await store.take_authors("repo/main") == (["bob"] if by_file else [])
    if by_file:  # a deleted document's writers go with it (nothing of theirs is left)
        await store.delete("repo/main:b.txt")
        assert await store.take_authors("repo/main") == []
