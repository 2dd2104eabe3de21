"""A deadline for each HTTP request's headers, so that a client trickling them cannot hold a socket.

aiohttp has no such timeout: its keep-alive timer only covers a connection with nothing sent,
and a byte at a time of a request line or header resets nothing. :class:`HeaderDeadlines` adds
one on public API. :class:`GuardedSite` listens with a protocol factory that puts a
:class:`_Guard` in front of the connection's aiohttp ``RequestHandler``; the guard arms a timer
when the connection opens. A middleware stops the timer when a request's headers are in (its
handler starts); the end of the request's task, which aiohttp ends once the response has been
written, arms it again for the next request on a keep-alive connection. A connection whose
timer fires is closed.

A WebSocket upgrade (a ``101`` response, seen by ``on_response_prepare``) hands the transport
straight to aiohttp's handler: from then on the guard is out of the path and a frame costs
nothing more than it does without it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["GuardedSite", "HeaderDeadlines"]

log = logging.getLogger("collab.http")


class _Guard(asyncio.Protocol):
    """One connection: forwards everything to aiohttp's handler, and closes the connection when
    the header deadline passes while no request is being handled."""

    __slots__ = ("_loop", "_timeout", "_timer", "inner", "transport")

    def __init__(self, inner: asyncio.Protocol, timeout: float) -> None:
        self.inner = inner
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    # the deadline

    def arm(self) -> None:
        """Start the clock for the next request's headers."""
        self.disarm()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self._timer = self._loop.call_later(self._timeout, self._expire)

    def rearm(self, _done: object = None) -> None:
        """:meth:`arm`, as a callback for the end of a request's task."""
        self.arm()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def detach(self) -> None:
        """Leave the path for good (the connection was upgraded): aiohttp's handler gets the
        transport's callbacks directly."""
        self.disarm()
        transport, self.transport = self.transport, None  # nothing arms the deadline again
        if transport is not None and transport.get_protocol() is self:
            transport.set_protocol(self.inner)

    def _expire(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        log.info(
            "%s: request headers not complete within %.1f s; closing",
            transport.get_extra_info("peername"),
            self._timeout,
        )
        if transport.get_write_buffer_size():
            transport.abort()  # a peer that does not read would hold a graceful close open
        else:
            transport.close()

    # asyncio.Protocol, forwarded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # not an isinstance check: uvloop's transports do not derive from asyncio's classes
        self.transport = cast("asyncio.Transport", transport)
        self.arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.transport = None
        self.inner.connection_lost(exc)


def _guard(request: web.BaseRequest) -> _Guard | None:
    transport = request.transport
    if transport is None:
        return None
    protocol = transport.get_protocol()
    return protocol if isinstance(protocol, _Guard) else None


class HeaderDeadlines:
    """Closes a connection whose request line and headers are not complete within ``timeout``
    seconds of the connection opening, or of the previous response ending.

    :meth:`install` adds its middleware and signal to an application; serve it with
    :class:`GuardedSite`. Once a request is being handled there is no deadline (its body has
    its own timeouts; a WebSocket lives for hours).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._middleware)
        app.on_response_prepare.append(self._on_response_prepare)

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        """``inner`` (a new connection's handler) behind a guard with this deadline."""
        return _Guard(inner, self.timeout)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = _guard(request)
        if guard is not None:
            guard.disarm()  # the headers are in
            # aiohttp runs each request in a task of its own that ends once the response has
            # been written: the next request's clock starts then
            task = asyncio.current_task()
            if task is not None:
                task.add_done_callback(guard.rearm)
        return await handler(request)

    @staticmethod
    async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if response.status == 101:  # switching protocols: no more HTTP on this connection
            guard = _guard(request)
            if guard is not None:
                guard.detach()


class GuardedSite(web.BaseSite):
    """A TCP site like ``web.TCPSite`` whose connections are guarded by ``deadlines``."""

    __slots__ = ("_bound_port", "_deadlines", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        deadlines: HeaderDeadlines,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, **kwargs)
        self._host = host
        self._port = port
        self._bound_port: int | None = None
        self._deadlines = deadlines

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, when asked for port 0)."""
        return self._port if self._bound_port is None else self._bound_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        protocol = self._deadlines.protocol

        def factory() -> asyncio.Protocol:
            return protocol(server())

        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        self._server = listener
        for sock in listener.sockets:
            self._bound_port = int(sock.getsockname()[1])
            break
