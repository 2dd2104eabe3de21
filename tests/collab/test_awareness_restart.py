"""Remote cursors come back at once after the server restarts, or after a reconnect.

A stock y-websocket client that reconnects re-sends its awareness state with the clock it
had; other clients ignore a state whose clock is not newer than theirs until its 15 s
renewal. The server relays entries with clocks of its own that increase across its
restarts (``collab.live.awareness_clock``), so the state is taken at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jsfleet import JsFleet, require_js
from serverproc import ServerProcess
from yjsclient import caret

from collab import CollabServer
from collab.live.awareness_clock import relay_clock

pytestmark = pytest.mark.js

ROOM = "demo/main:README.md"


@pytest.fixture(autouse=True)
def _require_js() -> None:
    require_js()


@pytest.fixture
async def fleet() -> AsyncIterator[JsFleet]:
    async with JsFleet() as f:
        yield f


async def _awareness(fleet: JsFleet, client: str) -> dict[str, object]:
    return dict((await fleet.call_ok("state", client=client))["awareness"])


async def _seconds_until_seen(fleet: JsFleet, client: str, key: str, limit: float) -> float:
    started = time.monotonic()
    while key not in await _awareness(fleet, client):
        if time.monotonic() - started > limit:
            pytest.fail(f"{client} did not see {key}'s cursor again within {limit} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_relay_clocks_increase_and_outrank_an_earlier_server() -> None:
    first = relay_clock(0)
    assert relay_clock(first) > first
    far_ahead = first + 10**9  # a predecessor that relayed far more than this one
    assert relay_clock(far_ahead) == far_ahead + 1
    assert relay_clock(0) >= first  # a later server starts at least where this one is
    assert relay_clock(0) < 2**53  # exact in a JavaScript number


async def test_cursors_are_back_at_once_after_kill_9(
    repos: Path, tmp_path: Path, fleet: JsFleet
) -> None:
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    try:
        ids = {}
        for name in ("ann", "ben"):
            reply = await fleet.call_ok(
                "open",
                client=name,
                url=f"{server.url}/yjs",
                room=ROOM,
                params={"user": name},
                awareness={"cursor": caret(1, 1)},
                max_backoff_ms=200,
            )
            ids[name] = str(reply["client_id"])
        await _seconds_until_seen(fleet, "ben", ids["ann"], 5)
        await _seconds_until_seen(fleet, "ann", ids["ben"], 5)

        await server.kill()
        for name in ("ann", "ben"):  # the close removes every remote state in y-websocket
            while ids["ann" if name == "ben" else "ben"] in await _awareness(fleet, name):
                await asyncio.sleep(0.02)
        await server.start()
        # well under the 15 s renewal that brought them back before
        waited = await asyncio.gather(
            _seconds_until_seen(fleet, "ben", ids["ann"], 5),
            _seconds_until_seen(fleet, "ann", ids["ben"], 5),
        )
        print(f"cursors back {max(waited):.3f} s after the restart")
        state = (await _awareness(fleet, "ben"))[ids["ann"]]
        assert state == {
            "cursor": caret(1, 1),
            "user": {"name": "ann"},
        }
    finally:
        await server.stop()


async def test_a_cursor_is_back_at_once_after_its_client_reconnects(
    server: CollabServer, fleet: JsFleet
) -> None:
    ids = {}
    for name in ("ann", "ben"):
        reply = await fleet.call_ok(
            "open",
            client=name,
            url=f"{server.url}/yjs",
            room=ROOM,
            params={"user": name},
            awareness={"cursor": caret(2, 2)},
        )
        ids[name] = str(reply["client_id"])
    await _seconds_until_seen(fleet, "ben", ids["ann"], 5)
    await fleet.call_ok("disconnect", client="ann")
    while ids["ann"] in await _awareness(fleet, "ben"):  # removed when ann's socket closed
        await asyncio.sleep(0.02)
    await fleet.call_ok("connect", client="ann")  # re-sends its state with the same clock
    await _seconds_until_seen(fleet, "ben", ids["ann"], 5)


async def test_a_client_that_reconnects_sees_the_others_cursors_at_once(
    server: CollabServer, fleet: JsFleet
) -> None:
    """y-websocket drops the other clients' states when its socket closes, and keeps their
    clocks: the table the server sends it on its new sync carries newer ones."""
    ids = {}
    for name in ("ann", "ben"):
        reply = await fleet.call_ok(
            "open",
            client=name,
            url=f"{server.url}/yjs",
            room=ROOM,
            params={"user": name},
            awareness={"cursor": caret(3, 3)},
        )
        ids[name] = str(reply["client_id"])
    await _seconds_until_seen(fleet, "ann", ids["ben"], 5)
    await fleet.call_ok("disconnect", client="ann")
    while ids["ben"] in await _awareness(fleet, "ann"):  # removed as ann's socket closed
        await asyncio.sleep(0.02)
    await fleet.call_ok("connect", client="ann")
    await _seconds_until_seen(fleet, "ann", ids["ben"], 5)  # not at ben's 15 s renewal


async def test_a_stock_client_joins_a_document_with_more_than_64_people(
    server: CollabServer, fleet: JsFleet
) -> None:
    """A stock client sends back every awareness state it receives, the whole table it is
    sent on its sync among them: that echo is no message over the limit."""
    people = 70
    for n in range(people):
        await fleet.call_ok(
            "open",
            client=f"p{n}",
            url=f"{server.url}/yjs",
            room=ROOM,
            params={"user": f"p{n}"},
            awareness={"cursor": caret(1, 1)},
        )
    await fleet.call_ok(
        "open",
        client="late",
        url=f"{server.url}/yjs",
        room=ROOM,
        params={"user": "late"},
        awareness={"cursor": caret(1, 1)},
    )
    started = time.monotonic()
    while len(await _awareness(fleet, "late")) < people + 1:
        assert time.monotonic() - started < 10, len(await _awareness(fleet, "late"))
        await asyncio.sleep(0.05)
    for name in ["late", *(f"p{n}" for n in range(people))]:
        assert (await fleet.call_ok("state", client=name))["closes"] == [], name
