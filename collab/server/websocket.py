"""The server's WebSocket response: an oversized message is refused with close code 4009, and
the peer gets to read it.

What aiohttp 3.14 does with a data frame whose declared length takes the message to
``max_msg_size`` or over (so a message of exactly ``max_msg_size`` bytes is refused too): its
reader raises as soon as it has the frame's header, before buffering any of the payload, and
the connection discards everything the peer sends after it. ``receive()`` then closes the
WebSocket itself, with 1009 and no reason, before the caller sees the ``ERROR`` message, and
closes the TCP connection straight after the close frame. The peer is usually still sending
the rest of its message; closing a socket with unread data makes the kernel send a reset, and
clients such as Node's ``ws`` (y-websocket's) then report 1006, a dropped connection, without
reading the close frame.

``receive()`` sends its close frame through :meth:`~aiohttp.web.WebSocketResponse.close`, so
:class:`CollabWebSocket` overrides it for that case: it sends 4009 ``TOO_LARGE`` with a reason,
and keeps a duplicate of the socket so that aiohttp's closing the transport does not end the
TCP connection. A task then sends FIN (after the close frame) and reads and discards what the
peer still sends until it closes its side, for at most ``linger`` seconds. Nothing is buffered.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import WSCloseCode, web
from aiohttp.abc import AbstractStreamWriter

from protocol.errors import ErrorCode

__all__ = ["CollabWebSocket"]


class CollabWebSocket(web.WebSocketResponse):
    """``web.WebSocketResponse`` that closes with 4009 ``TOO_LARGE`` (and says the limit)
    where aiohttp would close with 1009, for a message over ``max_message`` bytes.

    The lingering close runs in a task added to ``lingering``; cancel those to stop early.
    """

    def __init__(
        self,
        *,
        max_message: int,
        heartbeat: float | None,
        autoping: bool,
        compress: bool,
        linger: float,
        lingering: set[asyncio.Task[None]],
    ) -> None:
        # aiohttp refuses a message of max_msg_size bytes too: allow max_message itself
        super().__init__(
            max_msg_size=max_message + 1, heartbeat=heartbeat, autoping=autoping, compress=compress
        )
        self.max_message = max_message
        self._linger = linger
        self._lingering = lingering
        self._transport: asyncio.Transport | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter:
        self._transport = request.transport
        return await super().prepare(request)

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport (its request's), once prepared."""
        return self._transport

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code != WSCloseCode.MESSAGE_TOO_BIG:
            return await super().close(code=code, message=message, drain=drain)
        reason = f"message over the limit of {self.max_message} bytes".encode()
        transport = self._transport
        sock = None
        if not self.closed and transport is not None and not transport.is_closing():
            trsock = transport.get_extra_info("socket")
            if trsock is not None:
                sock = trsock.dup()  # keeps the connection open once aiohttp closes its socket
                sock.setblocking(False)  # for loop.sock_recv (uvloop's dup leaves it unset)
        try:
            closed = await super().close(code=ErrorCode.TOO_LARGE, message=reason, drain=drain)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        if sock is not None:
            assert transport is not None
            task = asyncio.create_task(_linger(transport, sock, self._linger))
            self._lingering.add(task)
            task.add_done_callback(self._lingering.discard)
            task.add_done_callback(lambda _task: sock.close())  # even if cancelled unstarted
        return closed


async def _linger(transport: asyncio.Transport, sock: socket.socket, timeout: float) -> None:
    """Half-close ``sock`` once ``transport`` has written everything (the close frame), then
    discard what the peer sends until it closes, for at most ``timeout`` seconds. The caller
    closes ``sock``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            while transport.get_write_buffer_size():
                await asyncio.sleep(0.01)
            sock.shutdown(socket.SHUT_WR)
            while await loop.sock_recv(sock, 65536):
                pass
    except (TimeoutError, OSError):
        pass
