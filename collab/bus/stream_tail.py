"""``StreamTail``: one Redis stream read as it grows, by blocking ``XREAD``s on a connection of
its own.

The Redis bus hears the cluster's feed through it: every node reads every update of the
documents it holds there, so this read is paid once per update per node. A reply is handled
in the callback that receives it and the next read is sent from there, with no task woken
and no timer set per read (see ``collab.bus.resp``). Reading one entry per read, redis-py's
asyncio client took about 3.5 times the CPU.

A tail serves one connection. ``closed`` is done once the connection is lost or closed: with
the error when Redis went away, closed the connection, answered a read with an error, or did
not answer within ``timeout`` after a read's block ended (a stopped or cut-off Redis); with
``None`` when the owner closed it. Its owner then decides whether to open another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from collab.bus.resp import RespProtocol, command, open_resp

__all__ = ["Entry", "StreamTail"]

log = logging.getLogger("collab.bus")

Entry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry: its id and its fields."""

_CHECK_S = 1.0
"""How often a tail checks that its read was answered in time."""


class StreamTail(RespProtocol):
    """Reads ``key`` after the entry id ``0-<cursor()>``, ``count`` entries at most per read,
    each read blocking up to ``block_ms``, and hands every non-empty batch to ``deliver``
    (on the event loop, in order). ``cursor`` is asked before each read, so the owner moves
    it (as it takes entries, or to read again from elsewhere)."""

    def __init__(
        self,
        handshake: list[bytes],
        key: str,
        cursor: Callable[[], int],
        deliver: Callable[[list[Entry]], None],
        *,
        count: int,
        block_ms: int,
        timeout: float,
    ) -> None:
        super().__init__(handshake)
        self.key = key
        self.cursor = cursor
        self.deliver = deliver
        self.count = count
        self.block_ms = block_ms
        self.timeout = timeout
        self._asked_at: float | None = None  # when the handshake or the read under way was sent
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
        """Connect to the Redis at ``url`` (see ``open_resp``) and start reading."""
        return await open_resp(
            url,
            lambda handshake: cls(
                handshake, key, cursor, deliver, count=count, block_ms=block_ms, timeout=timeout
            ),
            timeout=timeout,
            name=name,
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._asked_at = self.loop.time()
        self._check = self.loop.call_later(_CHECK_S, self._watch)

    def started(self) -> None:
        self._ask()

    def reply(self, reply: Any) -> None:
        self._asked_at = None
        if isinstance(reply, ResponseError):
            self.finish(reply)
            return
        if reply is not None:  # None: the block ended with nothing new
            self._deliver(reply)
        if self.transport is not None:
            self._ask()

    def finish(self, exc: BaseException | None) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None
        super().finish(exc)

    # -- inside ---------------------------------------------------------------------------

    def _ask(self) -> None:
        assert self.transport is not None
        self.transport.write(
            command(
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
        self._asked_at = self.loop.time()

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
            limit = self.block_ms / 1000 + self.timeout if self.ready.done() else self.timeout
            if self.loop.time() - asked_at > limit:
                self.finish(TimeoutError(f"Redis did not answer within {limit:.1f} s"))
                return
        self._check = self.loop.call_later(_CHECK_S, self._watch)
