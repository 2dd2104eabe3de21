"""``StreamTail``: one Redis stream read as it grows, by blocking ``XREAD``s on a connection of
its own.

The Redis bus hears the cluster's feed through it: every node reads every update of the
documents it holds there, so this read is paid once per update per node. It is written
against asyncio's protocol interface with hiredis's reply parser (the one redis-py parses
with) rather than through redis-py's client: a reply is handled in the callback that receives
it and the next read is sent from there, with no task woken and no timer set per read.
Reading one entry per read, redis-py's asyncio client took about 3.5 times the CPU (its
connection pool, retries, per-call timeout and reply callbacks around the same parser).

A tail serves one connection. ``closed`` is done once the connection is lost or closed: with
the error when Redis went away, closed the connection, answered a read with an error, or did
not answer within ``timeout`` after a read's block ended (a stopped or cut-off Redis); with
``None`` when the owner closed it. Its owner then decides whether to open another.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["Entry", "StreamTail"]

Entry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry: its id and its fields."""

log = logging.getLogger("collab.bus")

_CHECK_S = 1.0
"""How often a tail checks that its read was answered in time."""


def _command(*args: str | bytes | int) -> bytes:
    """One command in RESP (the request format of Redis)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _tls(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context a ``rediss://`` URL asks for, with the options redis-py reads from
    it: ``ssl_ca_certs``, ``ssl_certfile``/``ssl_keyfile``, ``ssl_cert_reqs`` and
    ``ssl_check_hostname``."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif options.get("ssl_cert_reqs") in ("optional", ssl.CERT_OPTIONAL):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    elif options.get("ssl_check_hostname") is False:
        context.check_hostname = False
    return context


class StreamTail(asyncio.Protocol):
    """Reads ``key`` after the entry id ``0-<cursor()>``, ``count`` entries at most per read,
    each read blocking up to ``block_ms``, and hands every non-empty batch to ``deliver``
    (on the event loop, in order). ``cursor`` is asked before each read, so the owner moves
    it (as it takes entries, or to read again from elsewhere)."""

    def __init__(
        self,
        key: str,
        cursor: Callable[[], int],
        deliver: Callable[[list[Entry]], None],
        *,
        count: int,
        block_ms: int,
        timeout: float,
        handshake: list[bytes],
    ) -> None:
        self.key = key
        self.cursor = cursor
        self.deliver = deliver
        self.count = count
        self.block_ms = block_ms
        self.timeout = timeout
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        """Done once Redis answered the handshake (its error if it refused it)."""
        self.closed: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._handshake = handshake
        self._unanswered = len(handshake)  # handshake replies still to come
        self._parser = hiredis.Reader(replyError=ResponseError)
        self._transport: asyncio.Transport | None = None
        self._asked_at: float | None = None  # when the read under way was sent
        self._check: asyncio.TimerHandle | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        key: str,
        cursor: Callable[[], int],
        deliver: Callable[[list[Entry]], None],
        *,
        count: int,
        block_ms: int,
        timeout: float,
        name: str = "",
    ) -> StreamTail:
        """Connect to the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``, with
        its user, password and database), say who it is and start reading."""
        options: dict[str, Any] = dict(parse_url(url))
        handshake: list[bytes] = []
        if options.get("password") is not None:
            user = options.get("username")
            auth = ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            handshake.append(_command(*auth))
        if options.get("db"):
            handshake.append(_command("SELECT", int(options["db"])))
        if name:
            handshake.append(_command("CLIENT", "SETNAME", name))
        handshake.append(_command("PING"))  # the last reply: Redis answers
        loop = asyncio.get_running_loop()

        def tail() -> StreamTail:
            return cls(
                key,
                cursor,
                deliver,
                count=count,
                block_ms=block_ms,
                timeout=timeout,
                handshake=handshake,
            )

        async with asyncio.timeout(timeout):
            if "path" in options:
                _transport, protocol = await loop.create_unix_connection(tail, options["path"])
            else:
                secure = _tls(options) if url.startswith("rediss://") else None
                _transport, protocol = await loop.create_connection(
                    tail, options.get("host", "localhost"), options.get("port", 6379), ssl=secure
                )
            try:
                await protocol.ready
            except BaseException:
                protocol.close()
                raise
        return protocol

    def close(self) -> None:
        """Close the connection; ``closed`` is done with ``None``."""
        self._finish(None)

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(b"".join(self._handshake))
        self._asked_at = self._loop.time()
        self._check = self._loop.call_later(_CHECK_S, self._watch)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        try:
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                if isinstance(reply, ResponseError):
                    raise reply
                if self._unanswered:
                    self._unanswered -= 1
                    if not self._unanswered:
                        self.ready.set_result(None)
                        self._ask()
                    continue
                self._asked_at = None
                if reply is not None:  # None: the block ended with nothing new
                    self._deliver(reply)
                if self._transport is not None:
                    self._ask()
        except ResponseError as exc:  # a refusal
            self._finish(exc)
        except Exception as exc:  # a reply that cannot be parsed
            self._finish(RedisConnectionError(f"unreadable reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or RedisConnectionError("Connection closed by server."))

    # -- inside ---------------------------------------------------------------------------

    def _ask(self) -> None:
        assert self._transport is not None
        self._transport.write(
            _command(
                "XREAD",
                "COUNT",
                self.count,
                "BLOCK",
                self.block_ms,
                "STREAMS",
                self.key,
                f"0-{self.cursor()}",
            )
        )
        self._asked_at = self._loop.time()

    def _deliver(self, reply: list[Any]) -> None:
        entries = [
            (entry_id, dict(zip(fields[::2], fields[1::2], strict=True)))
            for _key, stream in reply
            for entry_id, fields in stream
        ]
        try:
            self.deliver(entries)
        except Exception:  # the owner's fault, not the connection's: read on
            log.exception("%s: handing on %d entries failed", self.key, len(entries))

    def _watch(self) -> None:
        asked_at = self._asked_at
        if asked_at is not None:
            limit = self.timeout if self._unanswered else self.block_ms / 1000 + self.timeout
            if self._loop.time() - asked_at > limit:
                self._finish(TimeoutError(f"Redis did not answer within {limit:.1f} s"))
                return
        self._check = self._loop.call_later(_CHECK_S, self._watch)

    def _finish(self, exc: BaseException | None) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        for future in (self.ready, self.closed):
            if not future.done():
                if exc is None:
                    future.set_result(None)
                else:
                    future.set_exception(exc)
        if self.ready.done() and not self.ready.cancelled():
            self.ready.exception()  # retrieved: a tail that failed before the handshake
        if self.closed.done() and not self.closed.cancelled():
            self.closed.exception()  # retrieved here; the owner awaits it too
