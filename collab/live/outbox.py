"""A connection's bounded send queue and the task that drains it onto the socket."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable

from aiohttp import web
from pycrdt import merge_updates

from protocol.errors import ErrorCode

from .traffic import Traffic

__all__ = ["Outbox", "SendBudget", "close_ws"]

log = logging.getLogger("collab.outbox")
_CLOSE_TIMEOUT = 2.0
_DIRECT_LIMIT = 64 * 1024  # bytes already buffered above which frames are queued instead
MAX_MERGE = 64  # updates merged into one frame when a peer has fallen behind

Encoder = Callable[[bytes], bytes]


def _framed(frame: bytes) -> bytes:
    """``frame`` as one unmasked, final binary WebSocket frame (header and payload)."""
    size = len(frame)
    if size < 126:
        header = bytes((0x82, size))
    elif size < 1 << 16:
        header = bytes((0x82, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x82, 127)) + size.to_bytes(8, "big")
    return header + frame


def _wire_size(size: int) -> int:
    """The bytes of an unmasked WebSocket frame with a payload of ``size`` bytes."""
    return size + (2 if size < 126 else 4 if size < 1 << 16 else 10)


class _LastWire:
    """The wire bytes last built for a direct write, by the identity of what they were built
    from.

    A broadcast hands the same object (an update list, an awareness payload, a frame) with
    the same encoder to every peer in a row, so its messages and WebSocket frames are built
    once and the same bytes are written to each socket. Holding the key objects keeps their
    identities from being reused while they are cached; each entry is one tuple, replaced
    whole.
    """

    __slots__ = ("_frame", "_message", "_payload", "_updates")

    def __init__(self) -> None:
        self._updates: tuple[list[bytes] | None, Encoder | None, bytes] = (None, None, b"")
        self._message: tuple[bytes | None, Encoder | None, bytes] = (None, None, b"")
        self._payload: tuple[bytes | None, Encoder | None, bytes] = (None, None, b"")
        self._frame: tuple[bytes | None, bytes] = (None, b"")

    def updates(self, updates: list[bytes], encode: Encoder) -> bytes:
        """Each update's frame, back to back (the order they were accepted in)."""
        last, last_encode, wire = self._updates
        if updates is not last or encode is not last_encode:
            if len(updates) == 1:
                wire = _framed(encode(updates[0]))
            else:
                wire = b"".join([_framed(encode(update)) for update in updates])
            self._updates = (updates, encode, wire)
        return wire

    def message(self, payload: bytes, encode: Encoder) -> bytes:
        """``encode(payload)``, for a peer that queues it (its sender frames it)."""
        last, last_encode, message = self._message
        if payload is not last or encode is not last_encode:
            message = encode(payload)
            self._message = (payload, encode, message)
        return message

    def payload(self, payload: bytes, encode: Encoder) -> bytes:
        last, last_encode, wire = self._payload
        if payload is not last or encode is not last_encode:
            wire = _framed(self.message(payload, encode))
            self._payload = (payload, encode, wire)
        return wire

    def frame(self, frame: bytes) -> bytes:
        last, wire = self._frame
        if frame is not last:
            wire = _framed(frame)
            self._frame = (frame, wire)
        return wire


_last = _LastWire()


class SendBudget:
    """The bytes queued for all the connections of one user together, and their cap: one
    user's many connections that do not read (each under its own cap) cannot hold the
    server's memory between them."""

    __slots__ = ("limit", "used", "user")

    def __init__(self, user: str, limit: int) -> None:
        self.user = user
        self.limit = limit  # 0: no cap
        self.used = 0


class Outbox:
    """Queues frames for one WebSocket; a peer that lets ``limit`` items or ``max_bytes`` bytes
    pile up is cut off (``SLOW_READER``).

    Nothing here blocks the caller: ``put`` enqueues or aborts, and :meth:`run` (a task per
    connection) does the sending. CRDT updates queued back to back for a peer that is behind
    are merged into one frame (fewer frames for the peer to decode, fewer system calls).
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        limit: int,
        name: str,
        max_bytes: int = 16 * 1024 * 1024,
        traffic: Traffic | None = None,
        budget: SendBudget | None = None,
    ) -> None:
        self.ws = ws
        self.budget = budget  # shared with the user's other connections
        self._ended = False  # the sender has stopped: nothing more is queued
        self.traffic = Traffic("") if traffic is None else traffic  # the endpoint's counters
        self.name = name
        self.limit = limit
        self.max_bytes = max_bytes
        self.queued_bytes = 0  # payload bytes of the queued items
        # Direct writes put whole frames on the transport, framed here as aiohttp's writer
        # frames them without compression (tests/collab/test_outbox_framing.py holds the two
        # to the same bytes); a compressed connection, or one whose transport is not known,
        # has every frame go through aiohttp. (``transport`` is ``CollabWebSocket``'s.)
        self._direct = not getattr(ws, "compress", False)
        self._items: collections.deque[bytes | tuple[bytes, Encoder] | None] = collections.deque()
        self._ready = asyncio.Event()
        self._close: tuple[ErrorCode, str] | None = None
        self.sent = 0

    @property
    def closing(self) -> bool:
        return self._close is not None

    @property
    def queued(self) -> int:
        """Frames waiting to be sent."""
        return len(self._items)

    def _push(self, item: bytes | tuple[bytes, Encoder]) -> None:
        if self._close is not None or self._ended:
            return
        size = len(item) if isinstance(item, bytes) else len(item[0])
        if len(self._items) >= self.limit:
            self.abort(ErrorCode.SLOW_READER, f"send queue over {self.limit} frames")
            return
        # one frame is always taken when nothing is queued: a document's whole state, which
        # its caps let grow past a queue's, can always be sent to one who reads
        alone = not self._items
        if self.queued_bytes + size > self.max_bytes and not alone:
            self.abort(ErrorCode.SLOW_READER, f"send queue over {self.max_bytes} bytes")
            return
        budget = self.budget
        if (
            budget is not None
            and budget.limit
            and budget.used + size > budget.limit
            and not (alone and budget.used == 0)
        ):
            self.abort(
                ErrorCode.SLOW_READER,
                f"send queues of {budget.user}'s connections over {budget.limit} bytes",
            )
            return
        self._count(size)
        self._items.append(item)
        self._ready.set()

    def _count(self, size: int) -> None:
        """``size`` bytes more queued (fewer, if negative)."""
        self.queued_bytes += size
        if self.budget is not None:
            self.budget.used += size

    def put(self, frame: bytes) -> None:
        """Send an encoded frame now if the socket is idle, else queue it."""
        transport = self._idle_transport()
        if transport is None:
            self._push(frame)
        else:
            wire = _last.frame(frame)
            transport.write(wire)
            self.sent += 1
            self.traffic.bytes_out += len(wire)

    def put_encoded(self, payload: bytes, encode: Encoder) -> None:
        """Send ``encode(payload)`` (never merged); a broadcast of one payload object with one
        encoder builds the frame once for all peers."""
        transport = self._idle_transport()
        if transport is None:
            self._push(_last.message(payload, encode))
        else:
            wire = _last.payload(payload, encode)
            transport.write(wire)
            self.sent += 1
            self.traffic.bytes_out += len(wire)

    def put_updates(self, updates: list[bytes], encode: Encoder) -> None:
        """Send CRDT updates, in order; ``encode`` turns one (possibly merged) update into a
        message.

        To a peer that keeps up they go in one write, built once for all the peers handed the
        same list object with the same encoder (a broadcast builds it once). For a peer that
        is behind they are queued, and merged with the updates queued next to them.
        """
        self.traffic.updates_out += len(updates)
        transport = self._idle_transport()
        if transport is None:
            for update in updates:
                self._push((update, encode))
        else:
            wire = _last.updates(updates, encode)
            transport.write(wire)
            self.sent += len(updates)
            self.traffic.bytes_out += len(wire)

    def _idle_transport(self) -> asyncio.Transport | None:
        """The transport, when frames may be written straight to it: nothing is queued, the
        socket is open and its write buffer is not backed up.

        Most frames go to peers that keep up: writing them in the broadcast loop saves a task
        wake-up and aiohttp's per-frame bookkeeping. Anything queued, a busy transport or a
        closing socket takes the queued path, which keeps order and backpressure.
        """
        if self._items or self._close is not None:
            return None
        transport: asyncio.Transport | None = getattr(self.ws, "transport", None)
        if transport is None or not self._direct:
            return None
        if (
            transport.is_closing()
            or self.ws.closed
            or transport.get_write_buffer_size() > _DIRECT_LIMIT
        ):
            return None
        return transport

    @property
    def close_code(self) -> int | None:
        """The code :meth:`abort` closes the connection with; ``None`` if it was not called.
        (The socket's own ``close_code`` is then the one the peer answered with.)"""
        return None if self._close is None else int(self._close[0])

    def abort(self, code: ErrorCode, reason: str) -> None:
        """Close the connection with ``code``; frames still queued are dropped."""
        if self._close is not None:
            return
        log.warning("%s: closing with %d %s: %s", self.name, code, code.name, reason)
        self.traffic.refuse("close", code)
        self._close = (code, reason)
        self._items.clear()
        self._count(-self.queued_bytes)
        self._items.append(None)
        self._ready.set()

    def finish(self) -> None:
        """Stop the sender once the queue is empty, without closing the socket."""
        self._items.append(None)
        self._ready.set()

    def _next_frame(self) -> bytes | None:
        item = self._items.popleft()
        if item is None:
            return None
        if isinstance(item, bytes):
            self._count(-len(item))
            return item
        update, encode = item
        self._count(-len(update))
        updates = [update]
        while self._items and len(updates) < MAX_MERGE:
            following = self._items[0]
            if not isinstance(following, tuple) or following[1] is not encode:
                break
            updates.append(following[0])
            self._count(-len(following[0]))
            self._items.popleft()
        if len(updates) > 1:
            update = merge_updates(*updates)
        return encode(update)

    async def run(self) -> None:
        """Send what is queued until :meth:`finish` or :meth:`abort`; the connection counts
        as open (``traffic.open``) while this runs."""
        self.traffic.open.add(self)
        try:
            await self._send_queued()
        finally:
            self.traffic.open.discard(self)
            # what was never sent leaves the user's budget, and nothing is queued after it
            self._ended = True
            self._items.clear()
            self._count(-self.queued_bytes)

    async def _send_queued(self) -> None:
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
                self.traffic.bytes_out += _wire_size(len(frame))
        except (ConnectionError, RuntimeError):
            return  # the peer went away; the reader side cleans up
        if self._close is not None:
            code, reason = self._close
            await close_ws(ws, code, reason)


async def close_ws(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with a code and reason, or drop the transport if the peer does not cooperate."""
    # a close frame's reason holds at most 123 bytes of UTF-8: cut on a character's boundary
    message = reason.encode("utf-8")[:123].decode("utf-8", errors="ignore").encode("utf-8")
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), _CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionError, RuntimeError):
        transport: asyncio.Transport | None = getattr(ws, "transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.abort()
