"""A connection's bounded send queue and the task that drains it onto the socket."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterator

from aiohttp import web
from pycrdt import merge_updates

from protocol.errors import ErrorCode

__all__ = ["Outbox", "close_ws", "coalesced_writes"]

log = logging.getLogger("collab.outbox")
_CLOSE_TIMEOUT = 2.0
_DIRECT_LIMIT = 64 * 1024  # bytes already buffered above which frames are queued instead
MAX_MERGE = 64  # updates merged into one frame when a peer has fallen behind

Encoder = Callable[[bytes], bytes]


class _LastFrame:
    """The last frame built for a direct write, by the identity of what it was built from.

    A broadcast hands the same update object, with the same encoder, to every peer in a row,
    so its message and WebSocket frame are built once and written to each socket. Holding
    the key objects keeps their identities from being reused while they are cached; each
    entry is one tuple, replaced whole.
    """

    __slots__ = ("_encoded", "_framed")

    def __init__(self) -> None:
        self._encoded: tuple[bytes | None, Encoder | None, bytes] = (None, None, b"")
        self._framed: tuple[bytes | None, bytes] = (None, b"")

    def encoded(self, update: bytes, encode: Encoder) -> bytes:
        last_update, last_encode, frame = self._encoded
        if update is not last_update or encode is not last_encode:
            frame = encode(update)
            self._encoded = (update, encode, frame)
        return frame

    def framed(self, frame: bytes) -> bytes:
        """``frame`` as one unmasked, final binary WebSocket frame (header and payload)."""
        last_frame, wire = self._framed
        if frame is not last_frame:
            size = len(frame)
            if size < 126:
                header = bytes((0x82, size))
            elif size < 1 << 16:
                header = bytes((0x82, 126)) + size.to_bytes(2, "big")
            else:
                header = bytes((0x82, 127)) + size.to_bytes(8, "big")
            wire = header + frame
            self._framed = (frame, wire)
        return wire


_last = _LastFrame()

_pending: dict[asyncio.Transport, list[bytes]] | None = None
"""Frames written directly while :func:`coalesced_writes` is active, per transport."""


@contextlib.contextmanager
def coalesced_writes() -> Iterator[None]:
    """Join the frames written directly to each socket inside this block into one write.

    A broadcast of several updates (one group commit's worth) then costs one send per peer
    instead of one per update and peer. Nothing is reordered: the frames keep their order
    and are written when the block ends, before any queued frame can be sent.
    """
    global _pending
    if _pending is not None:  # nested: the outer block writes
        yield
        return
    pending: dict[asyncio.Transport, list[bytes]] = {}
    _pending = pending
    try:
        yield
    finally:
        _pending = None
        for transport, frames in pending.items():
            if not transport.is_closing():
                transport.write(frames[0] if len(frames) == 1 else b"".join(frames))


class Outbox:
    """Queues frames for one WebSocket; a peer that lets ``limit`` items pile up is cut off.

    Nothing here blocks the caller: ``put`` enqueues or aborts, and :meth:`run` (a task per
    connection) does the sending. CRDT updates queued back to back for a peer that is behind
    are merged into one frame (fewer frames for the peer to decode, fewer system calls).
    """

    def __init__(self, ws: web.WebSocketResponse, *, limit: int, name: str) -> None:
        self.ws = ws
        self.name = name
        self.limit = limit
        self._items: collections.deque[bytes | tuple[bytes, Encoder] | None] = collections.deque()
        self._ready = asyncio.Event()
        self._close: tuple[ErrorCode, str] | None = None
        self._transport: asyncio.Transport | None = None
        self.sent = 0

    @property
    def closing(self) -> bool:
        return self._close is not None

    def _push(self, item: bytes | tuple[bytes, Encoder] | None) -> None:
        if self._close is not None:
            return
        if len(self._items) >= self.limit:
            self.abort(ErrorCode.SLOW_READER, f"send queue over {self.limit} frames")
            return
        self._items.append(item)
        self._ready.set()

    def put(self, frame: bytes) -> None:
        """Send an encoded frame now if the socket is idle, else queue it."""
        if not self._items and self._close is None and self._write_now(frame):
            return
        self._push(frame)

    def _write_now(self, frame: bytes) -> bool:
        """Write one unmasked binary frame straight to an idle transport.

        Most frames go to peers that keep up: writing them here, in the broadcast loop,
        saves a task wake-up and aiohttp's per-frame bookkeeping. Anything queued, a busy
        transport or a closing socket takes the queued path, which keeps order and
        backpressure.
        """
        transport = self._transport
        if transport is None:
            request = self.ws._req
            if request is None or request.transport is None:
                return False
            transport = self._transport = request.transport
        if (
            transport.is_closing()
            or self.ws.closed
            or transport.get_write_buffer_size() > _DIRECT_LIMIT
        ):
            return False
        wire = _last.framed(frame)
        if _pending is None:
            transport.write(wire)
        else:
            _pending.setdefault(transport, []).append(wire)
        self.sent += 1
        return True

    def put_encoded(self, payload: bytes, encode: Encoder) -> None:
        """Send ``encode(payload)``; like :meth:`put_update`, a broadcast of one payload
        object with one encoder builds the frame once for all peers (never merged)."""
        self.put(_last.encoded(payload, encode))

    def put_update(self, update: bytes, encode: Encoder) -> None:
        """Send a CRDT update; ``encode`` turns one (possibly merged) update into a frame.

        The frame built for one peer is reused for the next peer handed the same update
        object with the same encoder (a broadcast builds it once)."""
        if (
            not self._items
            and self._close is None
            and self._write_now(_last.encoded(update, encode))
        ):
            return
        self._push((update, encode))

    def abort(self, code: ErrorCode, reason: str) -> None:
        """Close the connection with ``code``; frames still queued are dropped."""
        if self._close is not None:
            return
        log.warning("%s: closing with %d %s: %s", self.name, code, code.name, reason)
        self._close = (code, reason)
        self._items.clear()
        self._items.append(None)
        self._ready.set()

    def finish(self) -> None:
        """Stop the sender once the queue is empty, without closing the socket."""
        self._items.append(None)
        self._ready.set()

    def _next_frame(self) -> bytes | None:
        item = self._items.popleft()
        if item is None or isinstance(item, bytes):
            return item
        update, encode = item
        updates = [update]
        while self._items and len(updates) < MAX_MERGE:
            following = self._items[0]
            if not isinstance(following, tuple) or following[1] is not encode:
                break
            updates.append(following[0])
            self._items.popleft()
        if len(updates) > 1:
            update = merge_updates(*updates)
        return encode(update)

    async def run(self) -> None:
        ws = self.ws
        try:
            while True:
                if not self._items:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                frame = self._next_frame()
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
