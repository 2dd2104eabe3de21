"""Request bodies read with a size cap and timeouts, so that a slow client cannot hold a socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

__all__ = ["BodyError", "iter_body", "read_body"]


class BodyError(Exception):
    """The body was too large (413) or too slow (408); ``message`` says which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.message + "\n")


async def iter_body(
    request: web.Request, *, limit: int, idle_timeout: float, min_rate: float
) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk, as it arrives.

    Raises ``BodyError(413)`` once more than ``limit`` bytes came, and ``BodyError(408)`` when
    nothing arrives for ``idle_timeout`` seconds or, after the first ``idle_timeout`` seconds,
    the body falls below an average of ``min_rate`` bytes per second (a client trickling a
    byte at a time is cut off as surely as a silent one)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = 0
    while True:
        now = loop.time()
        # by time t, at least (t - start - idle_timeout) * min_rate bytes must have come
        deadline = start + idle_timeout + total / min_rate if min_rate > 0 else float("inf")
        wait = min(idle_timeout, deadline - now)
        if wait <= 0:
            raise BodyError(408, f"request body too slow (under {min_rate:.0f} bytes/s)")
        try:
            async with asyncio.timeout(wait):
                chunk = await request.content.readany()
        except TimeoutError:
            raise BodyError(408, "request body timed out") from None
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise BodyError(413, f"request body over the limit of {limit} bytes")
        yield chunk


async def read_body(
    request: web.Request, *, limit: int, idle_timeout: float, min_rate: float
) -> bytes:
    """The whole body, read with :func:`iter_body`'s cap and timeouts."""
    chunks = [
        chunk
        async for chunk in iter_body(
            request, limit=limit, idle_timeout=idle_timeout, min_rate=min_rate
        )
    ]
    return b"".join(chunks)
