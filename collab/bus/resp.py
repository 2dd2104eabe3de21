"""RESP connections of our own: a Redis connection opened from a URL, for the two paths every
update takes, the store's writes (``RespPipe``) and the feed's reads (``StreamTail``).

Both are asyncio protocols with hiredis's reply parser (the one redis-py parses with) rather
than redis-py's client: on this path redis-py's connection pool, retries, per-call timeouts
and reply callbacks cost more CPU than the exchange itself. Everything else (loading
scripts, reading settings, the leases) goes through redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["RespPipe", "RespProtocol", "command", "open_resp", "tls"]

P = TypeVar("P", bound="RespProtocol")


def command(*args: str | bytes | int) -> bytes:
    """One command in RESP (the request format of Redis)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _error(message: str) -> ResponseError:
    """An error reply as redis-py types it where we tell them apart (hiredis's parser calls
    this for each one, as redis-py's own parser has it do)."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


def tls(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context a ``rediss://`` URL asks for: the one redis-py's own TLS connection
    builds from the URL's options (``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_password``, ``ssl_cert_reqs``, ``ssl_check_hostname``,
    ``ssl_min_version``, ``ssl_ciphers``), so that both connect alike."""
    settings = {key: value for key, value in options.items() if key != "connection_class"}
    return SSLConnection(**settings).ssl_context.get()


class RespProtocol(asyncio.Protocol):
    """One connection to Redis that first says who it is (``handshake``: AUTH, SELECT,
    CLIENT SETNAME, PING) and hands every later reply to :meth:`reply`.

    ``ready`` is done once every handshake command was answered (with the first refusal,
    if one was refused); ``closed`` once the connection is closed or lost: with the error
    when Redis went away, closed it, or sent what cannot be parsed; with ``None`` when
    :meth:`close` closed it.
    """

    def __init__(self, handshake: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.loop = loop
        self._handshake = handshake
        self._unanswered = len(handshake)  # handshake replies still to come
        self._parser = hiredis.Reader(replyError=_error)
        self.transport: asyncio.Transport | None = None

    def reply(self, reply: Any) -> None:
        """One reply after the handshake (an error reply as a ``ResponseError``)."""
        raise NotImplementedError

    def started(self) -> None:
        """The handshake was answered."""

    def close(self) -> None:
        """Close the connection; ``closed`` is done with ``None``."""
        self.finish(None)

    def finish(self, exc: BaseException | None) -> None:
        """The connection is over (``exc``: why, unless closed on purpose)."""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()
        for future in (self.ready, self.closed):
            if not future.done():
                if exc is None:
                    future.set_result(None)
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved: the owner may be awaiting the other one

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(b"".join(self._handshake))

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        try:
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                if self._unanswered:
                    if isinstance(reply, ResponseError):
                        raise reply
                    self._unanswered -= 1
                    if not self._unanswered:
                        self.ready.set_result(None)
                        self.started()
                    continue
                self.reply(reply)
                if self.transport is None:
                    return
        except ResponseError as exc:  # the handshake refused
            self.finish(exc)
        except hiredis.ProtocolError as exc:
            self.finish(RedisConnectionError(f"unreadable reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            exc = RedisConnectionError("Connection closed by server.")
        elif isinstance(exc, OSError):  # (a reset: the same loss as a close, told the same)
            lost = RedisConnectionError(f"connection to Redis lost: {exc}")
            lost.__cause__ = exc
            exc = lost
        self.finish(exc)


async def open_resp(
    url: str, factory: Callable[[list[bytes]], P], *, timeout: float, name: str = ""
) -> P:
    """Connect to the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``, with its
    user, password and database) with the protocol ``factory(handshake)`` makes, once the
    handshake is answered; within ``timeout`` seconds or ``TimeoutError``."""
    options: dict[str, Any] = dict(parse_url(url))
    handshake: list[bytes] = []
    if options.get("password") is not None:
        user = options.get("username")
        auth = ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
        handshake.append(command(*auth))
    if options.get("db"):
        handshake.append(command("SELECT", int(options["db"])))
    if name:
        handshake.append(command("CLIENT", "SETNAME", name))
    handshake.append(command("PING"))  # the last reply: Redis answers
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        if "path" in options:
            _transport, protocol = await loop.create_unix_connection(
                lambda: factory(handshake), options["path"]
            )
        else:
            _transport, protocol = await loop.create_connection(
                lambda: factory(handshake),
                options.get("host", "localhost"),
                options.get("port", 6379),
                ssl=tls(options) if options.get("connection_class") is SSLConnection else None,
            )
        try:
            await protocol.ready
        except BaseException:
            protocol.close()
            raise
    return protocol


class RespPipe(RespProtocol):
    """Commands sent in batches, each batch's replies in one list, in the order sent (error
    replies in the list as ``ResponseError``s, as redis-py's ``raise_on_error=False``).
    A batch still waiting when the connection ends fails with its error."""

    def __init__(self, handshake: list[bytes]) -> None:
        super().__init__(handshake)
        # (replies expected, replies so far, the batch's future), oldest first
        self._waiting: deque[tuple[int, list[Any], asyncio.Future[list[Any]]]] = deque()

    def send(self, commands: list[bytes]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        if not commands:
            future.set_result([])
            return future
        if self.transport is None:
            future.set_exception(RedisConnectionError("the connection to Redis is closed"))
            return future
        self._waiting.append((len(commands), [], future))
        self.transport.write(b"".join(commands))
        return future

    def reply(self, reply: Any) -> None:
        if not self._waiting:
            raise hiredis.ProtocolError("a reply to nothing sent")
        expected, replies, future = self._waiting[0]
        replies.append(reply)
        if len(replies) == expected:
            self._waiting.popleft()
            if not future.done():
                future.set_result(replies)

    def finish(self, exc: BaseException | None) -> None:
        super().finish(exc)
        waiting, self._waiting = self._waiting, deque()
        for _expected, _replies, future in waiting:
            if not future.done():
                future.set_exception(exc or RedisConnectionError("the connection was closed"))
