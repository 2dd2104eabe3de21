"""A minimal y-websocket peer in Python, speaking raw frames, for endpoint and fault tests."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from protocol.yjs import (
    AuthDenied,
    AwarenessEntry,
    AwarenessMessage,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_awareness,
    decode_message,
    encode_awareness,
    encode_message,
)

__all__ = ["YjsPeer", "caret"]


def caret(anchor: int, head: int, client: int = 1) -> dict[str, Any]:
    """A caret as y-codemirror.next keeps it in its awareness state, and as the server relays
    it: relative positions at the items of ``client`` at clocks ``anchor`` and ``head``, every
    field there."""

    def position(clock: int) -> dict[str, Any]:
        return {"type": None, "tname": None, "item": {"client": client, "clock": clock}, "assoc": 0}

    return {"anchor": position(anchor), "head": position(head)}


class YjsPeer:
    """Connects to ``/yjs/<room>``, runs the sync handshake and mirrors ``source``."""

    def __init__(self, base_url: str, room: str, **query: str) -> None:
        self.url = f"{base_url}/yjs/{room}"
        self.query = query
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("source", type=Text)
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()
        self.denied: list[str] = []
        self.received: list[bytes] = []  # the updates the server sent, in order
        self.awareness: dict[int, dict[str, Any] | None] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._remote = False
        self.doc.observe(self._local_change)

    def _local_change(self, event: Any) -> None:
        self.changed.set()
        if not self._remote and self.ws is not None and not self.ws.closed:
            update = bytes(event.update)
            asyncio.get_running_loop().create_task(self.send(encode_message(SyncUpdate(update))))

    async def connect(self, *, handshake: bool = True) -> YjsPeer:
        self._session = aiohttp.ClientSession()
        self.ws = await self._session.ws_connect(self.url, params=self.query, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        if handshake:
            await self.send(encode_message(SyncStep1(self.doc.get_state())))
        return self

    async def send(self, frame: bytes) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_bytes(frame)

    async def set_awareness(self, client_id: int, clock: int, state: dict[str, Any] | None) -> None:
        payload = encode_awareness([AwarenessEntry(client_id, clock, state)])
        await self.send(encode_message(AwarenessMessage(payload)))

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    self._handle(decode_message(msg.data))
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    self.close_reason = str(msg.extra or "")
                    break
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    def _handle(self, message: Any) -> None:
        match message:
            case SyncStep1(state_vector=sv):
                diff = self.doc.get_update(sv)
                asyncio.get_running_loop().create_task(self.send(encode_message(SyncStep2(diff))))
            case SyncStep2(update=update) | SyncUpdate(update=update):
                self.received.append(update)
                self._remote = True
                try:
                    self.doc.apply_update(update)
                finally:
                    self._remote = False
                if isinstance(message, SyncStep2):
                    self.synced.set()
                self.changed.set()
            case AwarenessMessage(payload=payload):
                for entry in decode_awareness(payload):
                    self.awareness[entry.client_id] = entry.state
                self.changed.set()
            case AuthDenied(reason=reason):
                self.denied.append(reason)
                self.changed.set()

    async def wait_text(self, predicate: Any, timeout: float = 10.0) -> str:
        async with asyncio.timeout(timeout):
            while True:
                self.changed.clear()
                if predicate(str(self.text)):
                    return str(self.text)
                await self.changed.wait()

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()
        return self.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> YjsPeer:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
