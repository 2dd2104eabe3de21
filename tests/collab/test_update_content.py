"""A document is a file's text: an update that inserts anything else, or writes as a client no
stock client can read back or as an epoch's client, is refused with 4010, and the document,
its other peers and their later reconnections are unaffected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, Text
from serverproc import ServerProcess
from yjsclient import YjsPeer

from collab import CollabServer
from collab.live import room as room_module
from collab.live.epochs import EPOCH_BASE
from collab.live.room import InvalidUpdate, Room
from collab.store.memory_store import MemoryStore
from protocol.errors import ErrorCode
from protocol.lib0 import write_var_uint
from protocol.names import DocId
from protocol.yjs import SyncStep2, SyncUpdate, YjsLimits, encode_message

ROOM = "demo/main:README.md"


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """An update that builds on clocks not sent waits for them this long, not 10 s."""
    monkeypatch.setattr(room_module, "PARK_SECONDS", 0.3)


@asynccontextmanager
async def alice_and_carol(server: CollabServer) -> AsyncIterator[tuple[YjsPeer, YjsPeer]]:
    """Two stock copies of the document, synced: alice types, carol watches."""
    async with (
        YjsPeer(server.url, ROOM, user="alice") as alice,
        YjsPeer(server.url, ROOM, user="carol") as carol,
    ):
        await asyncio.wait_for(alice.synced.wait(), 5)
        await asyncio.wait_for(carol.synced.wait(), 5)
        yield alice, carol


def with_client(update: bytes, client: int) -> bytes:
    """``update`` (one client's structs) rewritten as written by ``client``."""
    assert update[:2] == b"\x01\x01"
    end = 2
    while update[end] & 0x80:  # past the varuint of the client it names
        end += 1
    forged = bytearray(update[:2])
    write_var_uint(forged, client)
    return bytes(forged) + update[end + 1 :]


def embed(doc: Doc[Any]) -> None:
    doc.get("source", type=Text).insert_embed(0, {"image": "x.png"})


def other_root(doc: Doc[Any]) -> None:
    doc.get("junk", type=Map)["blob"] = "x" * 900


def formatted(doc: Doc[Any]) -> None:
    doc.get("source", type=Text).insert(0, "b", {"bold": True})


@pytest.mark.parametrize("change", [embed, other_root, formatted])
async def test_content_other_than_text_is_refused(
    server: CollabServer, change: Callable[[Doc[Any]], None]
) -> None:
    async with YjsPeer(server.url, ROOM, user="honest") as honest:
        await asyncio.wait_for(honest.synced.wait(), 5)
        before = str(honest.text)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            with mallory.doc.transaction():
                change(mallory.doc)
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        honest.text.insert(len(honest.text), "!")  # the room still takes text
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text == before + "!")
    room = server.rooms.get_key(ROOM)
    assert room is not None and room.doc.get_update() == later.doc.get_update()
    stored = await server.store.load(ROOM)
    assert stored is not None
    assert all(b"x.png" not in update and b"junk" not in update for _, update in stored.updates)


@pytest.mark.parametrize("client", [EPOCH_BASE + 12345, 2**60, 2**64 - 1])
async def test_an_update_as_an_epoch_or_unencodable_client_is_refused(
    server: CollabServer, client: int
) -> None:
    async with YjsPeer(server.url, ROOM, user="honest") as honest:
        await asyncio.wait_for(honest.synced.wait(), 5)
        writer: Doc[Any] = Doc(client_id=5)
        writer.apply_update(honest.doc.get_update())
        state = writer.get_state()
        writer.get("source", type=Text).insert(0, "forged ")
        update = with_client(writer.get_update(state), client)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            await mallory.send(encode_message(SyncUpdate(update)))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        copy = honest.doc
    # the honest client comes back with its copy, as y-websocket does after a blip: it syncs
    again = YjsPeer(server.url, ROOM, user="honest")
    again.doc, again.text = copy, copy.get("source", type=Text)
    async with again:
        await asyncio.wait_for(again.synced.wait(), 5)
        assert "forged" not in str(again.text)
        assert again.close_code is None


def section(client: int, clock: int, *structs: bytes, deletes: bytes = b"\x00") -> bytes:
    """An update of one section: ``structs`` of ``client`` from ``clock``, then ``deletes``
    (the delete set's encoding; none by default)."""
    update = bytearray()
    for number in (1, len(structs), client, clock):
        write_var_uint(update, number)
    for struct in structs:
        update += struct
    return bytes(update + deletes)


def string(
    text: bytes, origin: tuple[int, int] | None = None, right: tuple[int, int] | None = None
) -> bytes:
    """A string struct placed after ``origin`` and before ``right`` (neither: in the root)."""
    struct = bytearray([0x04 | (0x80 if origin else 0) | (0x40 if right else 0)])
    for named in (origin, right):
        if named is not None:
            for number in named:
                write_var_uint(struct, number)
    if origin is None and right is None:
        struct += b"\x01\x06source"
    write_var_uint(struct, len(text))
    return bytes(struct + text)


def skip(length: int) -> bytes:
    struct = bytearray(b"\x0a")
    write_var_uint(struct, length)
    return bytes(struct)


def collected(length: int) -> bytes:
    struct = bytearray(b"\x00")
    write_var_uint(struct, length)
    return bytes(struct)


def deleting(client: int, start: int, length: int) -> bytes:
    deletes = bytearray()
    for number in (1, client, 1, start, length):
        write_var_uint(deletes, number)
    return bytes(deletes)


def item_at(clock: int, text: bytes, client: int = 500) -> bytes:
    """An update of one string struct of ``client`` at ``clock``, at the start of the text."""
    return section(client, clock, string(text))


@pytest.mark.parametrize(
    "clock", [2**32, 2**62, 2**32 - 2], ids=["at 2^32", "at 2^62", "ending past 2^32"]
)
async def test_an_update_with_clocks_past_32_bits_is_refused_and_later_edits_are_kept(
    server: CollabServer, clock: int
) -> None:
    """The CRDT core keeps clocks in 32 bits: such an update would be read at another
    clock than stock clients read it (text they never show reaching git), or take the
    clocks of later edits for ones the document has (acknowledged edits dropped)."""
    async with YjsPeer(server.url, ROOM, user="honest") as honest:
        await asyncio.wait_for(honest.synced.wait(), 5)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            await mallory.send(encode_message(SyncUpdate(item_at(clock, b"HIDDEN"))))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        honest.text.insert(0, "kept ")
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text.startswith("kept "))
            assert "HIDDEN" not in str(later.text)
    stored = await server.store.load(ROOM)
    assert stored is not None
    loaded: Doc[Any] = Doc()
    stored.apply_to(loaded)
    text = str(loaded.get("source", type=Text))
    assert text.startswith("kept ") and "HIDDEN" not in text


async def test_text_placed_next_to_a_collected_range_never_reaches_git(
    server: CollabServer, repos: Path
) -> None:
    """A collected range (GC struct) of a client, then text placed between a character and
    it: stock Yjs drops such text and the server's core would keep it, in git too, unseen by
    every editor. The range is refused; the text waits for it, then is refused too."""
    async with alice_and_carol(server) as (alice, carol):
        alice.text.insert(0, "hello\n")
        await carol.wait_text(lambda text: text.startswith("hello\n"))
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            await mallory.send(encode_message(SyncUpdate(section(31002, 0, collected(3)))))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            between = {"origin": (alice.doc.client_id, 4), "right": (31002, 1)}
            hidden = section(31003, 0, string(b"INJECTED", **between))
            await mallory.send(encode_message(SyncUpdate(hidden)))
            assert await mallory.wait_closed() == ErrorCode.RESYNC
        alice.text.insert(0, "typed\n")
        await carol.wait_text(lambda text: text.startswith("typed\nhello\n"))
    room = server.rooms.get_key(ROOM)
    assert room is not None and str(room.text) == str(carol.text)
    assert "INJECTED" not in str(room.text)


def future_delete(client: int, end: int, gap: bool = False) -> bytes:
    """An update deleting the clocks 0 to ``end`` of ``client``; with ``gap``, also writing
    one character as ``client`` at clock ``end - 1``, far past its last (kept pending: the
    clocks before it are still unwritten)."""
    deletes = deleting(client, 0, end)
    return section(client, end - 1, string(b"z"), deletes=deletes) if gap else b"\x00" + deletes


def two_sections(client: int) -> bytes:
    """Two sections of ``client``, both from clock 0 ("ab", then "abcdef"): no encoder
    writes one, and the CRDT core would take their clocks twice."""
    update = bytearray(b"\x02")
    for text in (b"ab", b"abcdef"):
        for number in (1, client, 0):
            write_var_uint(update, number)
        update += b"\x04\x01\x06source"
        write_var_uint(update, len(text))
        update += text
    return bytes(update + b"\x00")


@pytest.mark.parametrize(
    "update",
    [
        b"\x00\x00" + b"JUNK" * 250_000,  # as if a delete set alone: let past the caps
        bytes(4 * 1024 * 1024),  # zeros, read as no structs and no deletions
        item_at(0, b"typed") + b"JUNK" * 1000,  # an edit, then more
    ],
    ids=["after an empty delete set", "zeros", "after an edit"],
)
async def test_bytes_after_the_delete_set_are_refused(server: CollabServer, update: bytes) -> None:
    """The CRDT implementations read an update up to the end of its delete set and ignore
    what follows: the server stored such bytes, relayed them to every peer, and counted an
    update that begins as a delete set alone (deletions pass the caps on what a document
    holds) for no more. Refused with 4010; nothing of it is stored or sent."""
    async with alice_and_carol(server) as (alice, carol):
        before = str(carol.text)
        received = len(carol.received)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            await mallory.send(encode_message(SyncUpdate(update)))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
            assert "after its delete set" in mallory.close_reason
        alice.text.insert(0, "then ")
        await carol.wait_text(lambda text: text == "then " + before)
        assert len(carol.received) == received + 1  # alice's edit, nothing else
    stored = await server.store.load(ROOM)
    assert stored is not None
    assert all(b"JUNK" not in got and len(got) < 1024 for _seq, got in stored.updates)


@pytest.mark.parametrize(
    ("end", "gap"),
    [(2**32 - 1, False), (40, False), (200, True)],
    ids=["all clocks", "a few past the last", "with a struct past a gap"],
)
async def test_deleting_clocks_a_client_has_not_written_is_refused(
    server: CollabServer, end: int, gap: bool
) -> None:
    """Kept as a pending delete, it would delete the victim's later typing as it came, after
    it was stored and acknowledged: for everyone, the victim too at its next remote update."""
    async with alice_and_carol(server) as (victim, observer):
        victim.text.insert(0, "0123456789")  # clocks 0 to 9 are the victim's
        await observer.wait_text(lambda text: "0123456789" in text)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            forged = future_delete(victim.doc.client_id, end, gap)
            await mallory.send(encode_message(SyncUpdate(forged)))
            assert await mallory.wait_closed() == ErrorCode.RESYNC
        victim.text.insert(0, "typed later ")
        await observer.wait_text(lambda text: text.startswith("typed later 0123456789"))
        observer.text.insert(len(observer.text), "!")
        await victim.wait_text(lambda text: text.endswith("!"))
        assert str(victim.text) == str(observer.text)
        assert str(victim.text).startswith("typed later 0123456789")
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text == str(observer.text))


async def test_deleting_text_of_every_client_is_still_taken(server: CollabServer) -> None:
    """Deleting what others wrote, also a whole document at once, is an edit like any."""
    async with (
        YjsPeer(server.url, ROOM, user="alice") as alice,
        YjsPeer(server.url, ROOM, user="bob") as bob,
    ):
        await asyncio.wait_for(alice.synced.wait(), 5)
        await asyncio.wait_for(bob.synced.wait(), 5)
        alice.text.insert(len(alice.text), " alice")
        await bob.wait_text(lambda text: text.endswith(" alice"))
        bob.text.insert(len(bob.text), " bob")
        await alice.wait_text(lambda text: text.endswith(" alice bob"))
        del alice.text[0 : len(alice.text)]
        await bob.wait_text(lambda text: text == "")
        bob.text.insert(0, "again")
        await alice.wait_text(lambda text: text == "again")
        assert alice.close_code is None and bob.close_code is None


async def test_two_sections_of_one_client_are_refused(server: CollabServer) -> None:
    async with YjsPeer(server.url, ROOM, user="honest") as honest:
        await asyncio.wait_for(honest.synced.wait(), 5)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            await mallory.send(encode_message(SyncUpdate(two_sections(7))))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        honest.text.insert(0, "kept ")
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text.startswith("kept "))
            assert "ab" not in str(later.text).replace("kept ", "", 1)[:2]
    room = server.rooms.get_key(ROOM)
    assert room is not None
    again: Doc[Any] = Doc()
    again.apply_update(room.doc.get_update())
    assert str(again.get("source", type=Text)) == str(room.text)


async def test_others_text_sent_again_is_taken(server: CollabServer) -> None:
    """An editor that stores its document (y-indexeddb) sends it whole when it opens, others'
    text too, non-ASCII text included: it is taken."""
    async with (
        YjsPeer(server.url, ROOM, user="alice") as alice,
        YjsPeer(server.url, ROOM, user="bob") as bob,
    ):
        await asyncio.wait_for(alice.synced.wait(), 5)
        await asyncio.wait_for(bob.synced.wait(), 5)
        await alice.set_awareness(alice.doc.client_id, 1, {"user": {"name": "alice"}})
        alice.text.insert(0, "héllo wörld 😀 日本 ")
        await bob.wait_text(lambda text: text.startswith("héllo wörld 😀 日本 "))
        copy: Doc[Any] = Doc(client_id=bob.doc.client_id)
        copy.apply_update(bob.doc.get_update())
        copy.get("source", type=Text).insert(0, "offline ")
        # bob's stored copy, alice's text in it, comes back whole
        await bob.send(encode_message(SyncUpdate(copy.get_update())))
        await alice.wait_text(lambda text: text.startswith("offline héllo"))
        alice.text.insert(len(alice.text), "!")
        await bob.wait_text(lambda text: text.endswith("!"))
        assert alice.close_code is None and bob.close_code is None


def inside_a_pair(author: int, client: int, first: int, delete: bool) -> bytes:
    """Yjs' encoding of an edit between the two UTF-16 units of a character past U+FFFF
    whose first unit is ``first`` of ``client``: "X" placed there by ``author`` (its origin
    that unit, its right origin the next), or a deletion ending there."""
    if delete:
        return b"\x00" + deleting(client, 0, first + 1)
    return section(author, 0, string(b"X", origin=(client, first), right=(client, first + 1)))


@pytest.mark.parametrize("delete", [False, True], ids=["an insert", "a deletion"])
async def test_an_edit_inside_a_character_past_the_bmp_is_refused(
    server: CollabServer, delete: bool
) -> None:
    """Yjs makes both halves of a split character U+FFFD; the server's CRDT core places the
    text elsewhere, and elsewhere again once the document is loaded anew: every copy would
    read differently, for good."""
    async with alice_and_carol(server) as (alice, observer):
        alice.text.insert(0, "a😀b ")
        await observer.wait_text(lambda text: text.startswith("a😀b "))
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            edit = inside_a_pair(mallory.doc.client_id, alice.doc.client_id, 1, delete)
            await mallory.send(encode_message(SyncUpdate(edit)))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        observer.text.insert(0, "ok ")  # the room still takes edits, emoji and all
        await alice.wait_text(lambda text: text.startswith("ok a😀b "))
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text == str(alice.text) == str(observer.text))
    room = server.rooms.get_key(ROOM)
    assert room is not None and str(room.text).startswith("ok a😀b ")
    again: Doc[Any] = Doc()
    again.apply_update(room.doc.get_update())
    assert str(again.get("source", type=Text)) == str(room.text)


async def test_text_sent_again_from_inside_a_character_is_refused(server: CollabServer) -> None:
    """A section that starts at clocks the document has is cut where they end, by the
    server's CRDT core and by Yjs alike; a cut between the two UTF-16 units of a character
    of the update's own text would read U+FFFD in Yjs and be dropped by the core."""
    async with alice_and_carol(server) as (alice, observer):
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            me = mallory.doc.client_id
            await mallory.send(encode_message(SyncUpdate(section(me, 0, string(b"hello")))))
            await observer.wait_text(lambda text: "hello" in text)
            # clocks 4 on again, "😀b" after 3: the document has 0-4, so the cut is at 5
            again = section(me, 4, string("😀b".encode(), origin=(me, 3)))
            await mallory.send(encode_message(SyncUpdate(again)))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        observer.text.insert(0, "ok ")
        await alice.wait_text(lambda text: text.startswith("ok "))
        assert str(alice.text) == str(observer.text) and "\ufffd" not in str(alice.text)
    room = server.rooms.get_key(ROOM)
    assert room is not None and str(room.text) == str(observer.text)


@pytest.mark.parametrize("struct", [string(b""), b"\x01\x00"], ids=["string", "deleted"])
async def test_an_empty_struct_is_refused(
    server: CollabServer, struct: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    """No encoder writes a struct of no length, and the Rust core panics on some (a trace on
    the server's error output for each): refused before it is applied."""
    async with alice_and_carol(server) as (alice, observer):
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            me = mallory.doc.client_id
            forged = section(me, 0, string(b"ab"), string(b"", origin=(me, 1)))
            if struct != string(b""):
                forged = section(me, 0, string(b"ab"), struct)
            await mallory.send(encode_message(SyncUpdate(forged)))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        observer.text.insert(0, "ok ")
        await alice.wait_text(lambda text: text.startswith("ok "))
    assert "panicked" not in capfd.readouterr().err


@pytest.mark.parametrize("first", [True, False], ids=["first edit", "later edit"])
async def test_text_that_is_not_utf8_is_refused(server: CollabServer, first: bool) -> None:
    """The CRDT core cannot decode a string that is not UTF-8: a client's first edit (clock 0)
    and its later ones (checked by decoding alone, see ``room._precheck``) are refused alike,
    and the document goes on."""
    async with alice_and_carol(server) as (alice, observer):
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            me = mallory.doc.client_id
            if first:
                forged = section(me, 0, string(b"\xff\xfe"))
            else:
                mallory.text.insert(0, "ab")
                await alice.wait_text(lambda text: text.startswith("ab"))
                forged = section(me, 2, string(b"\xed\xa0\x80", origin=(me, 1)))
            await mallory.send(encode_message(SyncUpdate(forged)))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        observer.text.insert(0, "ok ")
        await alice.wait_text(lambda text: text.startswith("ok "))
        assert str(alice.text) == str(observer.text) and "\ufffd" not in str(alice.text)
    room = server.rooms.get_key(ROOM)
    assert room is not None and not room.failed and str(room.text) == str(observer.text)


PENDING: dict[str, Callable[[int, int], bytes]] = {
    "structs past the client's clock": lambda _victim, _at: section(600, 5, string(b"Z")),
    "text after skipped clocks": lambda _victim, _at: section(
        600, 0, string(b"a"), skip(3), string(b"Z", origin=(600, 0))
    ),
    "text placed by a clock the server lacks": lambda _victim, _at: section(
        600, 0, string(b"Z", origin=(999, 3))
    ),
    "the victim's next clocks skipped and deleted": lambda victim, at: section(
        victim, at, skip(1000), deletes=deleting(victim, at, 1000)
    ),
    "the victim's next clocks deleted after text placed by a clock the server lacks": (
        lambda victim, at: section(
            victim, at, string(b"Z" * 1000, origin=(999, 3)), deletes=deleting(victim, at, 1000)
        )
    ),
}


@pytest.mark.parametrize("forge", PENDING.values(), ids=PENDING.keys())
async def test_an_update_that_would_wait_pending_is_refused(
    server: CollabServer, forge: Callable[[int, int], bytes]
) -> None:
    """The CRDT keeps what it cannot integrate yet pending, and what pending structs become
    differs between Yjs and the server's CRDT core (the copies would disagree for good); a
    pending deletion deletes its client's next edits after they were acknowledged; some mixes
    crash the core. Such an update is refused with 4020 (an honest client that sends one lost
    an update on the way: its reconnect brings it), and every copy agrees afterwards."""
    async with alice_and_carol(server) as (victim, observer):
        victim.text.insert(0, "0123456789")
        await observer.wait_text(lambda text: "0123456789" in text)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            forged = forge(victim.doc.client_id, 10)
            await mallory.send(encode_message(SyncUpdate(forged)))
            assert await mallory.wait_closed() == ErrorCode.RESYNC
        victim.text.insert(0, "typed later ")
        await observer.wait_text(lambda text: text.startswith("typed later 0123456789"))
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text == str(observer.text) == str(victim.text))
    room = server.rooms.get_key(ROOM)
    assert room is not None and "Z" not in str(room.text)
    again: Doc[Any] = Doc()
    again.apply_update(room.doc.get_update())
    assert str(again.get("source", type=Text)) == str(room.text)


async def test_text_placed_by_its_own_later_clock_is_refused(server: CollabServer) -> None:
    """No client writes an item whose origin is its own clock, or a later one: every stock
    client fails to apply it."""
    async with YjsPeer(server.url, ROOM, user="honest") as honest:
        await asyncio.wait_for(honest.synced.wait(), 5)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            forged = section(600, 0, string(b"a"), string(b"Z", origin=(600, 1)))
            await mallory.send(encode_message(SyncUpdate(forged)))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        honest.text.insert(0, "kept ")
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text.startswith("kept "))
            assert "Z" not in str(later.text)


async def test_updates_that_crashed_the_crdt_core_leave_the_server_serving(
    repos: Path, tmp_path: Path
) -> None:
    """Three updates of one client (collected clocks past a gap, then text placed by them,
    then text before them) once took the whole process down in the server's CRDT core, each
    update on its own passing every check. None is applied now (the first two wait for the
    clocks they build on, the third is refused), and the server serves on."""
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    try:
        client = 4242
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            for forged in (
                section(client, 5, collected(2)),  # waits for clocks 0 to 4
                section(client, 6, string(b"pq r", origin=(client, 5))),  # waits too
                section(client, 2, string(b"pq r", origin=(client, 5))),  # no client writes
            ):
                await mallory.send(encode_message(SyncUpdate(forged)))
            assert await mallory.wait_closed() == ErrorCode.INVALID_UPDATE
        async with YjsPeer(server.url, ROOM, user="honest") as honest:
            await asyncio.wait_for(honest.synced.wait(), 5)
            honest.text.insert(0, "still here ")
            async with YjsPeer(server.url, ROOM, user="later") as later:
                await later.wait_text(lambda text: text.startswith("still here "))
        assert server.proc is not None and server.proc.returncode is None
    finally:
        await server.stop()


async def test_typing_that_comes_before_the_clocks_it_builds_on_waits_for_them(
    server: CollabServer,
) -> None:
    """A client whose update was lost with its connection reconnects and types at once: its
    typing can reach the server before its answer to the server's sync step 1 brings the
    lost update. The typing waits for it, then both are taken, and nobody is disconnected."""
    async with alice_and_carol(server) as (alice, observer):
        typist: Doc[Any] = Doc()
        typist.apply_update(alice.doc.get_update())
        text = typist.get("source", type=Text)
        state = typist.get_state()
        text.insert(0, "lost with the connection ")
        lost = typist.get_update(state)
        state = typist.get_state()
        text.insert(0, "typed at once ")
        typed = typist.get_update(state)
        await alice.send(encode_message(SyncUpdate(typed)))
        await asyncio.sleep(0.1)
        assert "typed at once" not in str(observer.text)
        await alice.send(encode_message(SyncStep2(lost)))
        await observer.wait_text(lambda t: t.startswith("typed at once lost with the connection "))
        assert alice.close_code is None and observer.close_code is None


@pytest.mark.parametrize("delete", [False, True], ids=["an insert", "a deletion"])
async def test_a_room_loaded_anew_knows_the_characters_past_the_bmp_it_holds(
    delete: bool,
) -> None:
    """A room made from a stored document (the characters' clocks not seen arriving) still
    refuses an edit inside one; a document of characters within the BMP is not read for
    them at all."""
    store = MemoryStore()
    await store.start()
    writer: Doc[Any] = Doc(client_id=7)
    writer.get("source", type=Text).insert(0, "ab " * 1000 + "a😀b")
    loaded: Doc[Any] = Doc()
    loaded.apply_update(writer.get_update())
    room = Room(DocId.parse(ROOM), loaded, store, last_seq=0, limits=YjsLimits())
    with pytest.raises(InvalidUpdate, match="inside a character"):
        room.receive_update(inside_a_pair(8, 7, 3001, delete))
    assert "\ufffd" not in str(room.text) and str(room.text).endswith("a😀b")
