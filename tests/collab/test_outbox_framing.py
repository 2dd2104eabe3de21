"""The outbox writes whole WebSocket frames straight to a peer's transport; these must be the
very bytes aiohttp's own writer produces, or a peer could be sent what it cannot read. If an
aiohttp upgrade changes its framing, this fails before any peer sees it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter

from collab import CollabServer
from collab.live import outbox
from collab.server.websocket import CollabWebSocket


class _Sink(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _Protocol:
    """What aiohttp's writer needs of a protocol: a transport and an awaitable drain."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._paused = False

    async def _drain_helper(self) -> None:
        return None


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 1 << 20])
async def test_direct_frames_are_the_bytes_aiohttps_writer_sends(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    sink = _Sink()
    writer = WebSocketWriter(_Protocol(sink), sink, use_mask=False, compress=0)  # type: ignore[arg-type]
    await writer.send_frame(payload, WSMsgType.BINARY)
    assert outbox._framed(payload) == bytes(sink.data)


async def test_the_server_only_writes_directly_to_uncompressed_sockets(
    server: CollabServer,
) -> None:
    ws = server.websocket()
    assert not ws.compress  # frames built once for all peers are uncompressed frames
    assert outbox.Outbox(ws, limit=1, name="t")._direct
    compressed = CollabWebSocket(
        max_message=1024, heartbeat=None, autoping=True, compress=True, linger=1.0, lingering=set()
    )
    assert not outbox.Outbox(compressed, limit=1, name="t")._direct


class _Unread:
    """A WebSocket whose peer reads nothing: no transport to write to at once, and a send
    that waits for good (or fails, once ``gone``)."""

    transport = None
    closed = False

    def __init__(self) -> None:
        self.gone = False
        self.sent: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        if self.gone:
            raise ConnectionError("the peer went away")
        self.sent.append(data)
        await asyncio.Event().wait()

    async def close(self, **kwargs: Any) -> None:
        pass


async def test_one_frame_past_the_caps_is_taken_when_nothing_is_queued() -> None:
    """A document's state can outgrow a queue's cap: alone in the queue it is still sent;
    a second frame behind it is over the cap."""
    budget = outbox.SendBudget("ann", 1000)
    box = outbox.Outbox(_Unread(), limit=10, name="t", max_bytes=1000, budget=budget)  # type: ignore[arg-type]
    box.put(b"x" * 5000)
    assert not box.closing and budget.used == 5000
    box.put(b"y" * 10)
    assert box.closing and budget.used == 0


async def test_a_users_budget_comes_back_whole_when_a_sender_fails() -> None:
    """Frames put after the sender stopped (the peer gone, the reader side not yet told)
    are not queued, and what was queued leaves the user's budget."""
    budget = outbox.SendBudget("ann", 10_000_000)
    ws = _Unread()
    ws.gone = True
    box = outbox.Outbox(ws, limit=1000, name="t", budget=budget)  # type: ignore[arg-type]
    box.put(b"a" * 100)
    await box.run()
    for _ in range(100):
        box.put(b"b" * 100_000)
    box.finish()
    assert budget.used == 0 and box.queued_bytes == 0
