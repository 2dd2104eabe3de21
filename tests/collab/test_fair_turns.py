"""One connection that sends thousands of frames at once does not hold the others up: its
reader gives the event loop a turn every few frames, so another connection's frame that came
meanwhile is answered before the flood is through."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from collab import CollabServer
from collab.server.turns import FRAMES_PER_TURN, SECONDS_PER_TURN, Turns
from protocol import messages as m
from protocol.yjs import SyncStep1, SyncStep2, SyncUpdate, decode_message, encode_message

FLOOD = 3000
FLOODED = "demo/main:README.md"


def test_a_turn_is_due_every_few_frames_or_once_they_took_long() -> None:
    turns = Turns()
    now = time.perf_counter()
    assert [turns.due(now) for _ in range(FRAMES_PER_TURN)].count(True) == 1
    assert turns.due(time.perf_counter() - 2 * SECONDS_PER_TURN)  # one slow frame
    assert not turns.due(time.perf_counter())  # counted afresh from the turn


async def _welcomed(
    session: aiohttp.ClientSession, url: str, user: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{url}/ws")
    await ws.send_bytes(m.encode(m.Hello(m.PROTOCOL_VERSION, None, user)))
    assert isinstance(m.decode((await ws.receive()).data), m.Welcome)
    return ws


async def test_a_flood_of_frames_from_one_connection_lets_another_be_answered(
    server: CollabServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        flooder = await _welcomed(session, server.url, "flooder")
        other = await _welcomed(session, server.url, "other")
        pongs = 0

        async def count_pongs() -> None:
            nonlocal pongs
            while pongs < FLOOD:
                if isinstance(m.decode((await flooder.receive()).data), m.Pong):
                    pongs += 1

        counting = asyncio.create_task(count_pongs())
        for i in range(FLOOD):  # written at once: the server reads them together
            await flooder.send_bytes(m.encode(m.Ping(i)))
        await other.send_bytes(m.encode(m.Ping(FLOOD)))
        answer = m.decode((await asyncio.wait_for(other.receive(), 30)).data)
        assert answer == m.Pong(FLOOD)
        flooded_before = pongs
        await asyncio.wait_for(counting, 30)
        assert flooded_before < FLOOD // 2, flooded_before  # answered well before the flood's end
        await flooder.close()
        await other.close()


async def test_a_flood_of_updates_on_yjs_lets_another_document_be_answered(
    server: CollabServer,
) -> None:
    """1,500 one-character updates written at once to one document (under the update
    quota's burst): another document's sync step 1, sent right after, is answered while
    most of them are still to be applied."""
    writer: Doc[Any] = Doc(client_id=77)
    text = writer.get("source", type=Text)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    for _ in range(1500):
        text.insert(len(text), "x")
    async with aiohttp.ClientSession() as session:
        flooder = await session.ws_connect(f"{server.url}/yjs/{FLOODED}?user=flooder")
        other = await session.ws_connect(f"{server.url}/yjs/demo/main:src/app.py?user=other")
        await flooder.receive()  # the server's sync step 1: the room is loaded
        room = server.rooms.get_key(FLOODED)
        assert room is not None
        before = str(room.text).count("x")
        for update in updates:  # written at once: the server reads them together
            await flooder.send_bytes(encode_message(SyncUpdate(update)))
        await other.send_bytes(encode_message(SyncStep1(b"\x00")))
        while not isinstance(
            decode_message((await asyncio.wait_for(other.receive(), 30)).data), SyncStep2
        ):
            pass  # the server's own step 1 may come first
        applied = str(room.text).count("x") - before
        assert applied < len(updates) // 2, applied
        await flooder.close()
        await other.close()
