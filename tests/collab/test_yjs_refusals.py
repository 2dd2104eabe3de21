"""A stock client refused again and again is answered more and more slowly.

A stock y-websocket provider reconnects 100 ms after every close, whatever its code; these
tests do as it does, with raw WebSockets, against a real server."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from collab import Client, CollabServer
from protocol.errors import ErrorCode

MISSING = "demo/no-such-branch:README.md"


async def _refused(session: aiohttp.ClientSession, url: str) -> tuple[int | None, str, float]:
    """Connect, wait for the close; its code, its reason and how long it took."""
    started = time.monotonic()
    async with session.ws_connect(url) as ws:
        msg = await ws.receive(timeout=30)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        return ws.close_code, str(msg.extra or ""), time.monotonic() - started


async def test_the_same_refusal_again_is_closed_later_and_still_says_why(
    server: CollabServer,
) -> None:
    url = f"{server.url}/yjs/{MISSING}?user=pat"
    async with aiohttp.ClientSession() as session:
        waits = []
        for _ in range(3):
            code, reason, took = await _refused(session, url)
            assert code == ErrorCode.NOT_FOUND
            assert "no-such-branch" in reason
            waits.append(took)
            await asyncio.sleep(0.1)  # as a stock provider does
        assert waits[1] >= 0.45 and waits[2] >= 0.95, waits  # (delays of 0.5 s, then 1 s)

        # another room is a refusal of its own, answered at once; others are served meanwhile
        held = asyncio.ensure_future(_refused(session, url))
        async with Client(server.url, user="sam") as sam:
            doc = await sam.open("demo/main:README.md")
            doc.text += "still served"
            await sam.flush()
        _code, _reason, took = await _refused(session, f"{server.url}/yjs/demo/gone:a.txt?user=pat")
        code, _reason, held_for = await held
        assert code == ErrorCode.NOT_FOUND
        assert held_for >= 1.95 and took < held_for, (took, held_for)  # (a delay of 2 s)


async def test_a_stock_provider_refused_for_good_reconnects_a_few_times_not_ten_a_second(
    server: CollabServer,
) -> None:
    url = f"{server.url}/yjs/{MISSING}?user=pat"
    tries = 0
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            code, _reason, _took = await _refused(session, url)
            assert code == ErrorCode.NOT_FOUND
            tries += 1
            await asyncio.sleep(0.1)
    # without the delays, 4 s are about 30 tries; with them 0 + 0.5 + 1 + 2 s of waits
    assert tries <= 6, tries
