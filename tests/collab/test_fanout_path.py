"""The fan-out hot path: frames built once per broadcast, the update pre-check, commits that
do not wait for company that is not coming, and the serve command's event loop."""

from __future__ import annotations

import asyncio
import pathlib
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

import collab.server.yjs_endpoint
import collab.store.sqlite_store
from collab.live.outbox import Outbox
from collab.live.room import InvalidUpdate, Room, RoomFailed, _precheck
from collab.live.rooms import Rooms
from collab.server.auth import Identity, Role
from collab.server.yjs_endpoint import YjsPeer
from collab.store.memory_store import MemoryStore
from collab.store.sqlite_store import SQLiteStore
from gitsync.repos import Repositories
from protocol.lib0 import write_var_uint
from protocol.names import DocId
from protocol.text_update import read_text_update
from protocol.yjs import (
    AwarenessEntry,
    AwarenessMessage,
    SyncUpdate,
    YjsLimits,
    decode_message,
    encode_awareness,
)

PANIC_UPDATE = bytes.fromhex(
    (Path(__file__).resolve().parent.parent / "data" / "panic_update.hex").read_text().split()[0]
)


class _Transport:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.buffered = 0  # what the transport reports as its write buffer

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


class _WebSocket:
    closed = False

    def __init__(self) -> None:
        self.transport = _Transport()
        self.sent: list[bytes] = []  # messages sent through the queued path

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)


def _payload(wire: bytes) -> bytes:
    """The payload of one unmasked binary WebSocket frame."""
    assert wire[0] == 0x82
    size = wire[1]
    if size < 126:
        return wire[2:]
    if size == 126:
        return wire[4:]
    return wire[10:]


def _edit(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("source", type=Text).insert(0, text)
    return updates[0]


async def _room_with_peers(count: int) -> tuple[Room, list[YjsPeer], list[_WebSocket]]:
    store = MemoryStore()
    await store.start()
    doc: Doc[Any] = Doc()
    doc.get("source", type=Text)
    room = Room(DocId.parse("demo/main:a.md"), doc, store, last_seq=0, limits=YjsLimits())
    peers, sockets = [], []
    for i in range(count):
        ws = _WebSocket()
        peer = YjsPeer(Outbox(ws, limit=64, name=f"p{i}"), Identity(f"u{i}", Role.WRITE, "*"), True)  # type: ignore[arg-type]
        room.attach(peer)
        room.handshake(peer, b"\x00")
        peers.append(peer)
        sockets.append(ws)
    return room, peers, sockets


async def test_a_broadcast_encodes_and_frames_an_update_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    real = collab.server.yjs_endpoint.encode_message

    def counting(message: Any) -> bytes:
        calls.append(message)
        return real(message)

    monkeypatch.setattr(collab.server.yjs_endpoint, "encode_message", counting)
    room, peers, sockets = await _room_with_peers(5)
    try:
        for ws in sockets:
            ws.transport.frames.clear()
        update = _edit("hello")
        await room.receive_update(update, sender=peers[0])
        assert calls == [SyncUpdate(update)]
        assert sockets[0].transport.frames == []  # not echoed to its sender
        frames = [ws.transport.frames for ws in sockets[1:]]
        assert all(len(f) == 1 for f in frames)
        assert all(f[0] is frames[0][0] for f in frames)  # the very same bytes object
        assert decode_message(_payload(frames[0][0]), YjsLimits()) == SyncUpdate(update)

        second = _edit("world")
        await room.receive_update(second, sender=peers[1])
        assert decode_message(_payload(sockets[0].transport.frames[-1]), YjsLimits()) == (
            SyncUpdate(second)
        )
    finally:
        await room.stop()


def _frames(wire: bytes) -> list[bytes]:
    """The payloads of the unmasked binary WebSocket frames written back to back in ``wire``."""
    out = []
    while wire:
        size, at = wire[1], 2
        if size == 126:
            size, at = int.from_bytes(wire[2:4], "big"), 4
        elif size == 127:
            size, at = int.from_bytes(wire[2:10], "big"), 10
        out.append(wire[at : at + size])
        wire = wire[at + size :]
    return out


async def test_a_group_commit_reaches_each_peer_in_one_write_in_order() -> None:
    room, peers, sockets = await _room_with_peers(5)
    try:
        for ws in sockets:
            ws.transport.frames.clear()
        updates = [_edit(f"edit {i}") for i in range(3)]
        await asyncio.gather(
            *(room.receive_update(u, sender=peers[i]) for i, u in enumerate(updates))
        )
        for ws in sockets[3:]:  # sent nothing: one write holding all three, in order
            (wire,) = ws.transport.frames
            got = [decode_message(f, YjsLimits()) for f in _frames(wire)]
            assert got == [SyncUpdate(u) for u in updates]
        for i, ws in enumerate(sockets[:3]):  # a sender gets the others', not its own
            (wire,) = ws.transport.frames
            got = [decode_message(f, YjsLimits()) for f in _frames(wire)]
            assert got == [SyncUpdate(u) for j, u in enumerate(updates) if j != i]
    finally:
        await room.stop()


async def test_a_peer_that_is_behind_gets_the_batches_queued_and_merged() -> None:
    room, peers, sockets = await _room_with_peers(3)
    try:
        for ws in sockets:
            ws.transport.frames.clear()
        lagging = sockets[2]
        lagging.transport.buffered = 1 << 20  # its socket is backed up: nothing written now
        first = [_edit(f"a{i}") for i in range(2)]
        await asyncio.gather(
            *(room.receive_update(u, sender=peers[i]) for i, u in enumerate(first))
        )
        second = _edit("b")
        await room.receive_update(second, sender=peers[0])
        assert lagging.transport.frames == []
        assert len(sockets[1].transport.frames) == 2  # the one it did not send, then "b"

        lagging.transport.buffered = 0
        sender = asyncio.create_task(peers[2].outbox.run())
        await asyncio.sleep(0.05)
        peers[2].outbox.finish()
        await sender
        (message,) = lagging.sent  # three updates, queued and merged into one
        merged = decode_message(message, YjsLimits())
        assert isinstance(merged, SyncUpdate)
        doc: Doc[Any] = Doc()
        doc.apply_update(merged.update)
        expected: Doc[Any] = Doc()
        for update in [*first, second]:
            expected.apply_update(update)
        text = str(doc.get("source", type=Text))
        assert text == str(expected.get("source", type=Text))
        assert sorted(text) == sorted("a0a1b")
    finally:
        await room.stop()


async def test_an_awareness_broadcast_builds_its_message_once() -> None:
    room, peers, sockets = await _room_with_peers(6)
    try:
        for ws in sockets:
            ws.transport.frames.clear()
        behind = sockets[4:]
        for ws in behind:
            ws.transport.buffered = 1 << 20  # backed up: the message is queued for them
        payload = encode_awareness([AwarenessEntry(7, 1, {"cursor": 3})])
        room.receive_awareness(peers[0], payload)
        frames = [ws.transport.frames[-1] for ws in sockets[1:4]]
        assert all(f is frames[0] for f in frames)
        message = decode_message(_payload(frames[0]), YjsLimits())
        assert isinstance(message, AwarenessMessage)

        for ws, peer in zip(behind, peers[4:], strict=True):
            assert ws.transport.frames == []
            ws.transport.buffered = 0
            peer.outbox.finish()
            await peer.outbox.run()
        queued = [ws.sent for ws in behind]
        assert all(len(q) == 1 for q in queued)
        assert queued[0][0] is queued[1][0]  # encoded once for both
        assert queued[0][0] == _payload(frames[0])
    finally:
        await room.stop()


def test_precheck_rejects_bad_updates_and_passes_good_ones() -> None:
    _precheck(_edit("fine"))
    _precheck(b"\x00\x00")
    with pytest.raises(InvalidUpdate):
        _precheck(b"\x01\x02\x03\xff\xff\xff\xff")
    with pytest.raises(InvalidUpdate):
        _precheck(PANIC_UPDATE)


def test_precheck_decodes_an_edit_past_clock_zero_and_refuses_what_does_not_decode() -> None:
    """An update none of whose sections starts at clock 0 would integrate nothing into an
    empty document: it is only decoded, and what the decoder refuses is still refused."""
    doc: Doc[Any] = Doc()
    text = doc.get("source", type=Text)
    text += "first"
    state = doc.get_state()
    text += " later"
    later = doc.get_update(state)
    shape = read_text_update(later, "source")
    assert 0 not in shape.starts.values()
    _precheck(later, shape)
    client = doc.client_id
    forged = bytearray()
    for number in (1, 1, client, 11):  # one section of one string, at clock 11
        write_var_uint(forged, number)
    forged += b"\x84"  # a string placed after an origin
    for number in (client, 10, 2):
        write_var_uint(forged, number)
    forged += b"\xff\xfe\x00"  # two bytes that are not UTF-8, then no deletions
    shape = read_text_update(bytes(forged), "source")
    with pytest.raises(InvalidUpdate):
        _precheck(bytes(forged), shape)


async def test_the_group_window_holds_appends_only_while_they_come_fast(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each commit adds 0.1 append/s to its document's rate; with a 1 s window it groups from
    # 1 append/s on, i.e. from the eleventh commit to one document in quick succession.
    monkeypatch.setattr(collab.store.sqlite_store, "_RATE_HORIZON", 10.0)
    window = 1.0
    async with SQLiteStore(tmp_path / "store.db", group_window=window) as store:
        for i in range(11):  # slow: each is committed at once (timed in the test below)
            assert await store.append("doc", b"u%d" % i) == i + 1
        assert await store.append("quiet", b"q") == 1
        # Fast now: the document's appends are held until the first of them is a window old,
        # and grouped, with whatever else arrives meanwhile.
        committed = time.monotonic()
        commits = store.commits
        gathering = asyncio.gather(*(store.append("doc", b"x%d" % i) for i in range(9)))
        await asyncio.sleep(window / 3)
        late, seqs = await asyncio.gather(store.append("late", b"l"), gathering)
        assert (late, seqs) == (1, list(range(12, 21)))
        assert time.monotonic() - committed >= window * 0.8
        assert store.commits - commits <= 2  # one, unless the writer raced the first put


async def test_appends_that_come_slowly_are_not_held_for_company(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document's appends that come slowly are committed at once, the window
    notwithstanding, and so is another document's lone append while the first is busy (it
    would share no broadcast). The window is long and rates barely decay, so that a held
    append would wait 30 s where one committed at once takes milliseconds: half the window
    tells the two apart on any machine, however loaded."""
    monkeypatch.setattr(collab.store.sqlite_store, "_RATE_HORIZON", 1000.0)  # a commit adds 0.001/s
    window = 30.0
    # busy from 0.0035 appends/s: from a document's fourth commit on
    monkeypatch.setattr(collab.store.sqlite_store, "_BUSY_PER_WINDOW", 0.0035 * window)
    async with SQLiteStore(tmp_path / "store.db", group_window=window) as store:
        for i in range(4):  # three commits or fewer before each: slow
            assert await asyncio.wait_for(store.append("doc", b"u%d" % i), window / 2) == i + 1
        assert await asyncio.wait_for(store.append("quiet", b"q"), window / 2) == 1
        # The document is busy now: its next append waits for company, and one made
        # meanwhile is committed with it (a load ends the wait here, not the window).
        commits = store.commits
        held = store.append("doc", b"held")
        for _ in range(3):  # a commit due now runs at the end of this turn of the loop
            await asyncio.sleep(0)
        assert not held.done() and store.commits == commits
        company = store.append("doc", b"company")
        loaded = await store.load("doc")
        assert await asyncio.gather(held, company) == [5, 6]
        assert store.commits - commits == 1
        assert loaded is not None and [seq for seq, _ in loaded.updates][-2:] == [5, 6]


async def test_under_load_an_append_waits_a_window_for_company(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collab.store.sqlite_store, "_BUSY_PER_WINDOW", 0.0)  # always grouping
    window = 1.0
    async with SQLiteStore(tmp_path / "store.db", group_window=window) as store:
        started = time.monotonic()
        first = asyncio.ensure_future(store.append("doc", b"first"))
        await asyncio.sleep(window / 3)
        second = store.append("doc", b"second")
        assert await asyncio.gather(first, second) == [1, 2]
        assert store.commits == 1  # one commit for both
        assert time.monotonic() - started >= window * 0.8


async def test_an_append_whose_window_passed_while_the_loop_was_busy_is_not_held(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window runs from when the first append was made: an event loop busy for longer
    # than the window (a long compaction, say) is not followed by a whole window more of
    # waiting; what was made meanwhile goes with it.
    monkeypatch.setattr(collab.store.sqlite_store, "_BUSY_PER_WINDOW", 0.0)  # always grouping
    window = 0.4
    async with SQLiteStore(tmp_path / "store.db", group_window=window) as store:
        commits = store.commits
        first = store.append("doc", b"first")
        time.sleep(window * 1.5)  # the loop is busy past the first append's window
        second = store.append("doc", b"second")
        freed = time.monotonic()
        assert await asyncio.gather(first, second) == [1, 2]
        assert time.monotonic() - freed < window / 2
        assert store.commits - commits == 1


async def test_sequence_numbers_continue_after_delete_and_restart(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "store.db"
    async with SQLiteStore(path) as store:
        for i in range(3):
            await store.append("doc", b"u%d" % i)
        await store.delete("doc")
        assert await store.append("doc", b"again") == 4
        await store.delete("doc")
    async with SQLiteStore(path) as store:
        assert await store.load("doc") is None
        assert await store.append("doc", b"later") == 5


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not used on Windows")
def test_serve_runs_its_event_loop_on_uvloop() -> None:
    from collab.cli.commands import _event_loop_run

    seen: list[str] = []

    async def probe() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    _event_loop_run(probe())
    assert seen and seen[0].startswith("uvloop")


def test_serve_defaults_are_the_server_config_defaults() -> None:
    import dataclasses

    from collab.cli.commands import _parser
    from collab.server.config import ServerConfig

    args = vars(_parser().parse_args(["serve"]))
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(ServerConfig)
        if f.default is not dataclasses.MISSING
    }
    shared = sorted(set(args) & set(defaults))
    assert {"group_window", "grace", "heartbeat", "store"} <= set(shared)
    assert {name: args[name] for name in shared} == {name: defaults[name] for name in shared}
    assert defaults["group_window"] > 0  # appends are grouped under load by default


class _HeldStore(MemoryStore):
    """A store whose appends and compactions complete only when the test says so, and whose
    syncs too once ``hold_syncs`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[tuple[bytes, asyncio.Future[int]]] = []
        self.compaction: asyncio.Future[None] | None = None
        self.compacted: list[int] = []  # through_seq of each compaction started
        self.hold_syncs = False
        self.syncs: list[asyncio.Future[None]] = []

    def append(  # type: ignore[override]
        self, doc_id: str, update: bytes, fence: object = None, author: str | None = None
    ) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.appends.append((update, future))
        return future

    def sync(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.syncs.append(future)
        if not self.hold_syncs:
            future.set_result(None)
        return future

    async def compact(self, doc_id: str, snapshot: bytes, through_seq: int) -> None:
        self.compacted.append(through_seq)
        self.compaction = asyncio.get_running_loop().create_future()
        await self.compaction


async def _held_room(count: int) -> tuple[Room, _HeldStore, list[YjsPeer], list[_WebSocket]]:
    room, peers, sockets = await _room_with_peers(count)
    store = room.store = _HeldStore()
    for ws in sockets:
        ws.transport.frames.clear()
    return room, store, peers, sockets


def _seen(ws: _WebSocket) -> list[bytes]:
    updates = []
    for wire in ws.transport.frames:
        for frame in _frames(wire):
            message = decode_message(frame, YjsLimits())
            assert isinstance(message, SyncUpdate)
            updates.append(message.update)
    return updates


async def _two_updates(
    room: Room, peers: list[YjsPeer]
) -> list[tuple[bytes, asyncio.Future[None]]]:
    """Two edits from two peers, each handed to the store in its own turn of the loop."""
    sent = []
    for i, text in enumerate(("first", "second")):
        update = _edit(text)
        sent.append((update, room.receive_update(update, sender=peers[i])))
        await asyncio.sleep(0)
    return sent


async def test_an_update_goes_to_the_store_while_the_one_before_is_being_stored() -> None:
    room, store, peers, sockets = await _held_room(3)
    (first, done_first), (second, done_second) = await _two_updates(room, peers)
    assert [u for u, _ in store.appends] == [first, second]  # not held behind the first

    store.appends[1][1].set_result(2)  # stored first, but broadcast only after the first
    await asyncio.sleep(0)
    assert _seen(sockets[2]) == [] and not done_second.done()

    store.appends[0][1].set_result(1)
    await asyncio.gather(done_first, done_second)
    assert _seen(sockets[2]) == [first, second]
    assert _seen(sockets[0]) == [second] and _seen(sockets[1]) == [first]
    assert room.last_seq == 2


async def test_batches_stored_by_one_commit_reach_each_peer_in_one_write() -> None:
    room, store, peers, sockets = await _held_room(3)
    (first, done_first), (second, done_second) = await _two_updates(room, peers)
    for seq, (_, future) in enumerate(store.appends, 1):  # one commit makes both durable
        future.set_result(seq)
    await asyncio.gather(done_first, done_second)
    assert len(sockets[2].transport.frames) == 1
    assert _seen(sockets[2]) == [first, second]
    assert _seen(sockets[0]) == [second] and _seen(sockets[1]) == [first]


async def test_a_written_update_is_broadcast_before_it_is_durable() -> None:
    room, store, peers, sockets = await _held_room(3)
    store.hold_syncs = True
    (first, done_first), (second, done_second) = await _two_updates(room, peers)
    store.appends[0][1].set_result(1)
    await asyncio.sleep(0)
    assert _seen(sockets[2]) == [first]  # written: out at once, while the disk syncs
    assert len(store.syncs) == 1 and not done_first.done()
    drained = asyncio.ensure_future(room.drain())

    store.appends[1][1].set_result(2)
    await asyncio.sleep(0)
    assert _seen(sockets[2]) == [first, second]
    store.syncs[1].set_result(None)  # a later sync covers the earlier writes, too
    await asyncio.sleep(0)
    assert done_second.done() and not done_first.done() and not drained.done()
    store.syncs[0].set_result(None)
    await asyncio.gather(done_first, drained)


async def test_a_failed_sync_fails_the_room_and_its_updates() -> None:
    room, store, peers, _sockets = await _held_room(3)
    store.hold_syncs = True
    (_first, done_first), _ = await _two_updates(room, peers)
    store.appends[0][1].set_result(1)
    await asyncio.sleep(0)
    store.syncs[0].set_exception(OSError(5, "Input/output error"))
    with pytest.raises(RoomFailed, match="sync failed"):
        await done_first
    assert room.failed
    with pytest.raises(RoomFailed):
        room.receive_update(_edit("after"), sender=peers[0])
    assert all(peer.outbox.closing for peer in peers)  # they reconnect to a reloaded room


async def test_a_compaction_does_not_hold_back_broadcasts() -> None:
    room, store, peers, sockets = await _held_room(2)
    room.compact_every = 2
    for i in range(2):
        room.receive_update(_edit(f"u{i}"), sender=peers[0])
        await asyncio.sleep(0)
        store.appends[-1][1].set_result(i + 1)
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.compaction is not None and not store.compaction.done()  # under way

    later = _edit("later")
    done = room.receive_update(later, sender=peers[0])
    await asyncio.sleep(0)
    store.appends[-1][1].set_result(3)
    await done
    assert _seen(sockets[1])[-1] == later

    first_compaction = store.compaction
    explicit = asyncio.ensure_future(room.compact())  # as an unload does
    await asyncio.sleep(0.01)
    assert store.compacted == [2]  # it waits for the one under way
    first_compaction.set_result(None)
    await asyncio.sleep(0.01)
    assert store.compacted == [2, 3] and store.compaction is not first_compaction
    store.compaction.set_result(None)
    await explicit
    await room.stop()
    assert room.updates_since_snapshot == 0


def _insert(doc: Doc[Any], text: str) -> bytes:
    """An update inserting ``text`` at the start of ``doc``'s source."""
    state = doc.get_state()
    doc.get("source", type=Text).insert(0, text)
    return doc.get_update(state)


async def _stored(store: MemoryStore, room: Room) -> tuple[int, int]:
    """(the snapshot's seq, how many updates follow it) once the room is at rest."""
    await room.stop()
    stored = await store.load(room.key)
    assert stored is not None
    return stored.snapshot_seq, len(stored.updates)


async def test_snapshots_grow_rarer_as_the_document_grows() -> None:
    store = MemoryStore()
    await store.start()
    doc: Doc[Any] = Doc()
    room = Room(DocId.parse("demo/main:a.md"), doc, store, last_seq=0, compact_every=5)
    writer: Doc[Any] = Doc()
    big = "x" * 20_000
    for text in [big, "a", "b", "c", "d"]:  # five updates, no snapshot yet: one is due
        await room.receive_update(_insert(writer, text))
    assert await _stored(store, room) == (5, 0)
    assert room.snapshot_bytes > len(big)

    for i in range(50):  # many more than compact_every, but far fewer bytes than the snapshot
        await room.receive_update(_insert(writer, f"edit {i}"))
    assert await _stored(store, room) == (5, 50)

    await room.receive_update(_insert(writer, big))  # as many bytes as the snapshot: due
    assert await _stored(store, room) == (56, 0)
    assert str(doc.get("source", type=Text)) == str(writer.get("source", type=Text))


async def test_a_loaded_room_counts_the_history_its_store_holds(repos: Path) -> None:
    store = MemoryStore()
    await store.start()
    doc_id = DocId.parse("demo/main:README.md")
    writer: Doc[Any] = Doc()
    snapshot = _insert(writer, "y" * 5000)
    await store.compact(str(doc_id), snapshot, 0)
    updates = [_insert(writer, f"later {i}") for i in range(3)]
    for update in updates:
        await store.append(str(doc_id), update)
    repositories = Repositories(repos)
    rooms = Rooms(store, repositories)
    try:
        async with rooms.borrow(doc_id) as room:
            assert room.snapshot_bytes == len(snapshot)
            assert room.bytes_since_snapshot == sum(map(len, updates))
            assert room.updates_since_snapshot == 3
    finally:
        await rooms.close()
        repositories.close()


async def test_a_failed_append_fails_the_room_and_nothing_after_it_is_broadcast() -> None:
    room, store, peers, sockets = await _held_room(3)
    (_, done_first), (_, done_second) = await _two_updates(room, peers)
    store.appends[1][1].set_result(2)
    store.appends[0][1].set_exception(OSError("disk full"))
    for done in (done_first, done_second):
        with pytest.raises(RoomFailed):
            await done
    assert room.failed
    assert all(_seen(ws) == [] for ws in sockets)
    with pytest.raises(RoomFailed):
        room.receive_update(_edit("third"), sender=peers[2])


async def test_what_was_stored_before_a_failed_append_is_still_broadcast() -> None:
    room, store, peers, sockets = await _held_room(3)
    (first, done_first), (_, done_second) = await _two_updates(room, peers)
    store.appends[0][1].set_result(1)
    store.appends[1][1].set_exception(OSError("disk full"))
    await done_first
    with pytest.raises(RoomFailed):
        await done_second
    assert room.failed
    assert _seen(sockets[2]) == [first] and _seen(sockets[1]) == [first]


async def test_a_drain_cancelled_leaves_the_updates_it_waited_for_alone() -> None:
    """A commit waits for its documents' updates (``Room.drain``); one whose request is
    cancelled meanwhile must not cancel those updates' futures, which acknowledge them."""
    room, store, peers, _sockets = await _held_room(2)
    (_first, done_first), (_second, done_second) = await _two_updates(room, peers)
    draining = asyncio.create_task(room.drain())
    await asyncio.sleep(0)
    draining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await draining
    assert not done_first.cancelled() and not done_second.cancelled()
    for seq, (_, future) in enumerate(store.appends, 1):
        future.set_result(seq)
    await asyncio.gather(done_first, done_second)
