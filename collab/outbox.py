"""A connection's bounded send queue and the task that drains it onto the socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from protocol.errors import ErrorCode

__all__ = ["Outbox"]

log = logging.getLogger("collab.outbox")
_CLOSE_TIMEOUT = 2.0


class Outbox:
    """Queues frames for one WebSocket; a peer that lets ``limit`` frames pile up is cut off.

    Nothing here blocks the caller: ``put`` enqueues or aborts, and :meth:`run` (a task per
    connection) does the sending.
    """

    def __init__(self, ws: web.WebSocketResponse, *, limit: int, name: str) -> None:
        self.ws = ws
        self.name = name
        self.limit = limit
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._close: tuple[ErrorCode, str] | None = None
        self.sent = 0

    @property
    def closing(self) -> bool:
        return self._close is not None

    def put(self, frame: bytes) -> None:
        if self._close is not None:
            return
        if self._queue.qsize() >= self.limit:
            self.abort(ErrorCode.SLOW_READER, f"send queue over {self.limit} frames")
            return
        self._queue.put_nowait(frame)

    def abort(self, code: ErrorCode, reason: str) -> None:
        """Close the connection with ``code``; frames still queued are dropped."""
        if self._close is not None:
            return
        log.warning("%s: closing with %d %s: %s", self.name, code, code.name, reason)
        self._close = (code, reason)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def finish(self) -> None:
        """Stop the sender once the queue is empty, without closing the socket."""
        self._queue.put_nowait(None)

    async def run(self) -> None:
        ws = self.ws
        try:
            while True:
                frame = await self._queue.get()
                if frame is None:
                    break
                await ws.send_bytes(frame)
                self.sent += 1
        except (ConnectionError, RuntimeError):
            return  # the peer went away; the reader side cleans up
        if self._close is not None:
            code, reason = self._close
            await close_ws(ws, code, reason)


async def close_ws(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with a code and reason, or drop the transport if the peer does not cooperate."""
    message = reason.encode("utf-8")[:120]
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), _CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionError, RuntimeError):
        transport = ws._req.transport if ws._req is not None else None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.abort()
