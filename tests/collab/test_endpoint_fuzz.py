"""Hypothesis throws random, truncated and mutated frames at both endpoints of a live server.

Whatever arrives, the offending connection is closed with a protocol code (or the frame was
valid and the connection lives on), and the room and its other peers are unaffected.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import DEMO_FILES, make_config
from yjsclient import YjsPeer

from collab import Client, CollabServer
from gitsync import create_demo_repo
from protocol import messages as m
from protocol.yjs import AwarenessMessage, SyncStep1, SyncUpdate, encode_message

ROOM = "demo/main:README.md"


@pytest.fixture(scope="module")
def fuzz_env(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[asyncio.AbstractEventLoop, CollabServer, Client]]:
    """One server and one watching client for a whole module of hypothesis examples."""
    root: Path = tmp_path_factory.mktemp("fuzz")
    create_demo_repo(root / "repos" / "demo", DEMO_FILES)
    loop = asyncio.new_event_loop()
    server = CollabServer(make_config(root / "repos", root / "data", heartbeat=30.0))
    loop.run_until_complete(server.start())
    watcher = Client(server.url, user="watcher")
    loop.run_until_complete(watcher.connect())
    loop.run_until_complete(watcher.open(ROOM))
    try:
        yield loop, server, watcher
    finally:
        loop.run_until_complete(watcher.close())
        loop.run_until_complete(server.stop())
        loop.close()


EXAMPLES = int(os.environ.get("COLLAB_FUZZ_EXAMPLES", "40"))

VALID_YJS = [
    encode_message(SyncStep1(b"\x00")),
    encode_message(SyncUpdate(b"\x00\x00")),
    encode_message(AwarenessMessage(b"\x01\x05\x01\x02{}")),
]
VALID_WS = [
    m.encode(m.Open(1, ROOM)),
    m.encode(m.Sync(1, m.SyncStep.UPDATE, b"\x00\x00")),
    m.encode(m.Ping(1)),
]


def _mutations(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    def mutate(base: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
        data = bytearray(base[: max(0, min(len(base), cut))] if cut < len(base) else base)
        for position, value in flips:
            if data:
                data[position % len(data)] = value
        return bytes(data)

    mutated = st.builds(
        mutate,
        st.sampled_from(seeds),
        st.integers(0, 64),
        st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=4),
    )
    return st.one_of(st.binary(max_size=256), mutated)


async def _send_and_close(url: str, frames: list[bytes]) -> int | None:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
        for frame in frames:
            if ws.closed:
                break
            await ws.send_bytes(frame)
        try:
            msg = await ws.receive(timeout=0.3)
            while msg.type is aiohttp.WSMsgType.BINARY:
                msg = await ws.receive(timeout=0.3)
        except TimeoutError:
            return None  # still open: everything it sent was acceptable
        return ws.close_code


async def _room_healthy(server: CollabServer, watcher: Client, text_before: str) -> None:
    room = server.rooms.get_key(ROOM)
    assert room is not None and not room.failed
    assert str(room.text) == text_before
    await watcher.flush()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(_mutations(VALID_YJS), min_size=1, max_size=4))
def test_fuzz_yjs_endpoint(
    fuzz_env: tuple[asyncio.AbstractEventLoop, CollabServer, Client], frames: list[bytes]
) -> None:
    loop, server, watcher = fuzz_env

    async def run() -> None:
        before = str(server.rooms.get_key(ROOM).text)  # type: ignore[union-attr]
        code = await _send_and_close(f"{server.url}/yjs/{ROOM}?user=fuzz", frames)
        assert code is None or code == 1000 or 4000 <= code < 4600 or code == 1009, code
        await _room_healthy(server, watcher, before)

    loop.run_until_complete(run())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(_mutations(VALID_WS), min_size=1, max_size=4))
def test_fuzz_ws_endpoint(
    fuzz_env: tuple[asyncio.AbstractEventLoop, CollabServer, Client], frames: list[bytes]
) -> None:
    loop, server, watcher = fuzz_env

    async def run() -> None:
        before = str(server.rooms.get_key(ROOM).text)  # type: ignore[union-attr]
        hello = m.encode(m.Hello(m.PROTOCOL_VERSION, None, "fuzz"))
        code = await _send_and_close(f"{server.url}/ws", [hello, *frames])
        assert code is None or code == 1000 or 4000 <= code < 4600 or code == 1009, code
        await _room_healthy(server, watcher, before)

    loop.run_until_complete(run())


def test_fuzz_left_room_usable(
    fuzz_env: tuple[asyncio.AbstractEventLoop, CollabServer, Client],
) -> None:
    loop, server, _watcher = fuzz_env

    async def run() -> None:
        async with YjsPeer(server.url, ROOM, user="after") as peer:
            await asyncio.wait_for(peer.synced.wait(), 5)
            peer.text += "[after fuzz]"
            await asyncio.sleep(0.2)
        room = server.rooms.get_key(ROOM)
        assert room is not None and str(room.text).endswith("[after fuzz]")

    loop.run_until_complete(run())
