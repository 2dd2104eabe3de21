"""An update whose integration would hold the event loop for long (the CRDT core's work is
super-linear in the clients it brings that the document does not know, and in the ranges of
text it deletes that the document had not deleted) is refused with 4009 before anything of
it is stored or sent on; honest reconnects, which carry what others wrote and the whole
delete set again, are taken."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text
from servers import make_config
from yjsclient import YjsPeer

from collab import CollabServer
from collab.live.room import DELETE_WORK
from protocol.errors import ErrorCode
from protocol.lib0 import write_var_uint
from protocol.yjs import SyncUpdate, YjsLimits, encode_message

ROOM = "demo/main:README.md"
LIMITS = YjsLimits()


def concurrent_inserts(first_client: int, count: int) -> bytes:
    """One update: ``count`` clients from ``first_client`` on each insert one character at
    the start of the text (as many people typing at once, each new to the document)."""
    update = bytearray()
    write_var_uint(update, count)
    for client in range(first_client, first_client + count):
        for number in (1, client, 0):
            write_var_uint(update, number)
        update += b"\x04\x01\x06source\x01x"
    return bytes(update + b"\x00")


def comb(client: int, start: int, count: int) -> bytes:
    """A delete set alone: every other clock of ``client`` from ``start``, ``count`` ranges."""
    update = bytearray(b"\x00\x01")
    for number in (client, count):
        write_var_uint(update, number)
    for clock in range(start, start + 2 * count, 2):
        write_var_uint(update, clock)
        update += b"\x01"
    return bytes(update)


async def stored_text(server: CollabServer) -> str:
    stored = await server.store.load(ROOM)
    assert stored is not None
    loaded: Doc[Any] = Doc()
    stored.apply_to(loaded)
    return str(loaded.get("source", type=Text))


async def test_an_update_writing_as_too_many_new_clients_is_refused(
    server: CollabServer,
) -> None:
    count = LIMITS.max_new_clients + 1
    async with YjsPeer(server.url, ROOM, user="honest") as honest:
        await asyncio.wait_for(honest.synced.wait(), 5)
        before = str(honest.text)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            await mallory.send(encode_message(SyncUpdate(concurrent_inserts(10**6, count))))
            assert await mallory.wait_closed(5) == ErrorCode.TOO_LARGE
            assert "clients the document does not know" in mallory.close_reason
        honest.text.insert(0, "kept ")  # the room goes on
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text == "kept " + before)
        assert honest.close_code is None
    assert await stored_text(server) == "kept " + before


@pytest.mark.parametrize(
    ("length", "ranges", "refused"),
    [(2_100_000, LIMITS.max_deleted_ranges + 1, True), (10_000, 5_000, False)],
    ids=["long-text-refused", "short-text-taken"],
)
async def test_a_delete_set_cutting_too_many_ranges_is_refused(
    server: CollabServer, length: int, ranges: int, refused: bool
) -> None:
    """A comb of ``max_deleted_ranges`` + 1 ranges out of one item of 2.1 million
    characters is refused (cutting it costs about ``room.DELETE_WORK``); out of a text short
    enough that cutting it costs little, a comb may have more ranges (a replace-all of
    5,000 matches in 10,000 characters is taken)."""
    assert refused == (ranges * length > DELETE_WORK)
    async with YjsPeer(server.url, ROOM, user="honest") as honest:
        await asyncio.wait_for(honest.synced.wait(), 5)
        honest.text.insert(0, "a" * length)  # one item of its client
        total = len(str(honest.text))
        client = honest.doc.client_id
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await mallory.wait_text(lambda text: len(text) >= length)
            await mallory.send(encode_message(SyncUpdate(comb(client, 0, ranges))))
            if refused:
                assert await mallory.wait_closed(5) == ErrorCode.TOO_LARGE
                assert "ranges the document has not deleted" in mallory.close_reason
            else:
                await honest.wait_text(lambda text: len(text) == total - ranges)
                assert mallory.close_code is None
        honest.text.insert(0, "kept ")
        expected = str(honest.text)
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text == expected)
        assert honest.close_code is None
    assert await stored_text(server) == expected


async def test_a_reconnect_after_many_wrote_and_deleted_is_taken(server: CollabServer) -> None:
    """A client comes back from a long time away: more people than ``max_new_clients``
    wrote into the document (they are known to it), it deleted more ranges than
    ``max_deleted_ranges`` in all (its sync step 2 sends each again), and while away it
    typed in a few sessions (clients new to the document) and deleted a little more."""
    people = LIMITS.max_new_clients + 44
    ranges = LIMITS.max_deleted_ranges + 500
    async with (
        YjsPeer(server.url, ROOM, user="alice") as alice,
        YjsPeer(server.url, ROOM, user="others") as others,
    ):
        await asyncio.wait_for(alice.synced.wait(), 5)
        await asyncio.wait_for(others.synced.wait(), 5)
        alice.text.insert(0, "b" * (2 * ranges))
        await others.wait_text(lambda text: text.startswith("b" * (2 * ranges)))
        for client in range(2000, 2000 + people):  # each wrote one update, as a live edit does
            writer: Doc[Any] = Doc(client_id=client)
            writer.apply_update(others.doc.get_update())
            state = writer.get_state()
            writer.get("source", type=Text).insert(0, "p")
            await others.send(encode_message(SyncUpdate(writer.get_update(state))))
        await alice.wait_text(lambda text: text.startswith("p" * people))
        for done in range(0, ranges, 2000):  # deleting every other "b", in a few edits
            with alice.doc.transaction():
                for k in range(done, min(done + 2000, ranges)):
                    alice.text.__delitem__(slice(people + k + 1, people + k + 2))
        await others.wait_text(lambda text: text.count("b") == ranges)
        copy = alice.doc
    for session in range(3):  # typed while away, in three sessions of the page
        writer = Doc(client_id=9000 + session)
        writer.apply_update(copy.get_update())
        state = writer.get_state()
        text = writer.get("source", type=Text)
        text.insert(len(text), f" away {session}")
        del text[0:1]
        copy.apply_update(writer.get_update(state))
    expected = str(copy.get("source", type=Text))
    again = YjsPeer(server.url, ROOM, user="alice")
    again.doc, again.text = copy, copy.get("source", type=Text)
    async with again, YjsPeer(server.url, ROOM, user="later") as later:
        await asyncio.wait_for(again.synced.wait(), 5)
        await again.send(encode_message(SyncUpdate(copy.get_update())))  # all of it, too
        await later.wait_text(lambda text: text == expected)
        assert again.close_code is None
    assert await stored_text(server) == expected


@pytest.mark.parametrize(("bound", "refused"), [(2, True), (0, False)], ids=["2", "none"])
async def test_the_bound_on_new_clients_is_the_servers_setting(
    repos: Path, tmp_path: Path, bound: int, refused: bool
) -> None:
    config = make_config(repos, tmp_path / "data", max_new_clients=bound)
    async with (
        CollabServer(config) as server,
        YjsPeer(server.url, ROOM, user="mallory") as mallory,
    ):
        await asyncio.wait_for(mallory.synced.wait(), 5)
        before = str(mallory.text)
        await mallory.send(encode_message(SyncUpdate(concurrent_inserts(10**6, 3))))
        if refused:
            assert await mallory.wait_closed(5) == ErrorCode.TOO_LARGE
        else:
            async with YjsPeer(server.url, ROOM, user="later") as later:
                await later.wait_text(lambda text: text == "xxx" + before)
            assert mallory.close_code is None
